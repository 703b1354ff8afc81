"""Latency CDF per candidate from the raw samples of every run record, with its percentile table."""

from __future__ import annotations

import plotly.graph_objects as go

from edgeproof.figures import latency_figure
from edgeproof.records import RunRecord
from edgeproof.report._collect import Found, Inputs
from edgeproof.report._html import Section, absent_section, badge, esc, note, provenance_kind, source, table
from edgeproof.report._labels import run_label, simulated, unique_labels
from edgeproof.report._plots import colour, plot_html, ptext, simulated_name, wants_log_axis
from edgeproof.report._verdicts import verdict_sources

MAX_POINTS = 1500
PLOT_PX = 440
# What the legend under a plot needs: about 7 px per character at 11 px, 19 px per row, 1100 px across.
LEGEND_CHAR_PX, LEGEND_ROW_PX, LEGEND_WIDTH_PX = 6.5, 19, 1100


def cdf_points(sessions_ms: list[list[float]], max_points: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """Empirical CDF of all samples pooled: (sorted latency, fraction at or below), thinned to ``max_points``."""
    pooled = sorted(v for s in sessions_ms for v in s)
    n = len(pooled)
    if n == 0:
        return [], []
    step = max(1, -(-n // max_points))
    idx = list(range(step - 1, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return [pooled[i] for i in idx], [(i + 1) / n for i in idx]


def p95_budget_ms(inputs: Inputs) -> float | None:
    """The contract's p95 budget, when every verdict in the folder states the same one."""
    budgets = {c.budget for _, v in verdict_sources(inputs) for c in v.clauses if c.clause == "budgets.p95_ms" and c.budget is not None}
    return budgets.pop() if len(budgets) == 1 else None


def _interval(record: RunRecord, key: str) -> str:
    figure = latency_figure(record, f"{key}_ms")
    span = f' <span class="muted">[{figure.interval[0]:.4g}–{figure.interval[1]:.4g}]</span>' if figure.interval else ""
    return f"{figure.value:.4g}{span}"


def legend_height_px(labels: list[str]) -> int:
    """Room for a legend under the plot: plotly fits as many entries in a row as their text allows."""
    per_row = max(1, int(LEGEND_WIDTH_PX // (LEGEND_CHAR_PX * max(len(label) for label in labels) + 50)))
    return LEGEND_ROW_PX * -(-len(labels) // per_row)


def cdf_figure(
    records: list[RunRecord], labels: list[str], budget_ms: float | None, emphasis: list[bool] | None = None, legend_px: int = 0
) -> go.Figure:
    """One CDF line per run; ``emphasis`` (Pareto front, chosen) draws some lines bold and the rest faint."""
    fig = go.Figure()
    for i, (rec, label) in enumerate(zip(records, labels)):
        x, y = cdf_points([s.samples_ms for s in rec.sessions])
        sim = simulated(rec)
        name = simulated_name(ptext(label), sim)
        bold = emphasis is None or emphasis[i]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                name=name,
                opacity=1.0 if bold else 0.45,
                line={"color": colour(i), "width": 2.5 if bold else 1.2, "dash": "dash" if sim else "solid", "shape": "hv"},
                hovertemplate=f"{name}<br>%{{x:.4g}} ms: %{{y:.1%}} of samples<br>{ptext(rec.latency_provenance)}<extra></extra>",
            )
        )
    fig.add_hline(y=0.95, line={"color": "#8a94a6", "width": 1, "dash": "dot"}, annotation_text="p95", annotation_position="top left")
    if budget_ms is not None:
        # a trace, not an annotated vline: annotations on a log axis take log10 coordinates
        fig.add_trace(
            go.Scatter(
                x=[budget_ms, budget_ms],
                y=[0, 1],
                mode="lines",
                name=f"contract p95 budget {budget_ms:g} ms",
                line={"color": "#c0392b", "width": 1.5, "dash": "dot"},
                hoverinfo="name",
            )
        )
    log = wants_log_axis(min(r.latency.min_ms for r in records), max(r.latency.max_ms for r in records))
    fig.update_xaxes(title_text="latency per inference (ms)" + (", log scale" if log else ""), type="log" if log else "linear")
    fig.update_yaxes(title_text="fraction of inferences at or below", tickformat=".0%", range=[0, 1.02])
    # plotly caps a legend at half the figure and scrolls the rest; room was made for all of it
    fig.update_layout(legend={"font": {"size": 11}, "maxheight": legend_px + 30 if legend_px else None})
    return fig


def _rows(found: list[Found], labels: list[str]) -> list[list[str]]:
    rows = []
    for f, label in zip(found, labels):
        rec: RunRecord = f.item
        lat = rec.latency
        rows.append(
            [
                esc(label),
                source(f.rel),
                badge(rec.latency_provenance),
                f"{lat.n_samples} in {lat.n_sessions}",
                esc(rec.scenario.name),
                _interval(rec, "p50"),
                _interval(rec, "p95"),
                _interval(rec, "p99"),
            ]
        )
    return rows


_HEADERS = ["run", "file", "evidence", "samples in sessions", "scenario", "p50 ms [95% CI]", "p95 ms [95% CI]", "p99 ms [95% CI]"]


def _block(
    found: list[Found], labels: list[str], budget_ms: float | None, plot_id: str, emphasis: list[bool] | None = None
) -> tuple[str, str]:
    """(plot, table) for a group of runs."""
    records = [f.item for f in found]
    legend_px = legend_height_px(labels)
    figure = cdf_figure(records, labels, budget_ms, emphasis, legend_px)
    return plot_html(figure, plot_id, height=PLOT_PX + legend_px), table(_HEADERS, _rows(found, labels))


def section(inputs: Inputs) -> Section:
    if not inputs.runs:
        return absent_section(
            "latency",
            "Latency CDF per candidate",
            "No run records in this folder: `edgeproof profile --json`, `simulate --json` or `gate --out` write them.",
        )
    budget = p95_budget_ms(inputs)
    body = note(
        "Every timed inference of every session, pooled, as a cumulative distribution: the further left and the steeper, the better. "
        "Solid lines are measured; dashed lines are simulated from a board model."
    )
    searched = {
        c.run_id: (f.rel, c, outcome)
        for f in inputs.searches
        for outcome in f.item.outcomes
        for c in f.item.candidates
        if c.id in outcome.candidates
    }
    others = [f for f in inputs.runs if f.item.run_id not in searched]
    if others:
        labels = unique_labels([run_label(f.item) for f in others], [f.rel for f in others])
        plot, rows = _block(others, labels, budget, "plot-latency-cdf")
        body += plot + rows
    candidates = [f for f in inputs.runs if f.item.run_id in searched]
    if candidates:
        labels, emphasis = [], []
        for f in candidates:
            _, c, outcome = searched[f.item.run_id]
            labels.append(f"{c.id} {c.name} · {c.target}")
            emphasis.append(c.id in outcome.pareto or c.id == outcome.selection.chosen)
        plot, rows = _block(candidates, labels, budget, "plot-latency-cdf-search", emphasis)
        sources = ", ".join(sorted({searched[f.item.run_id][0] for f in candidates}))
        body += f"<h3>Search candidates ({esc(sources)})</h3>"
        body += note("Bold lines are on the Pareto front or chosen; faint lines were dominated or failed the contract.")
        body += plot + f"<details><summary>All {len(candidates)} candidate runs</summary>{rows}</details>"
    kinds = frozenset(provenance_kind(f.item.latency_provenance) for f in inputs.runs)
    return Section("latency", "Latency CDF per candidate", body, kinds)
