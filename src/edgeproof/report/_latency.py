"""Latency CDF per candidate from the raw samples of every run record, with its percentile table."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from edgeproof.figures import latency_figure
from edgeproof.records import RunRecord
from edgeproof.report._collect import Found, Inputs
from edgeproof.report._decision import MAX_SHOWN, Decision, decisions, role_colour, split_primary, stage_text
from edgeproof.report._html import Section, absent_section, badge, esc, note, provenance_kind, source, table
from edgeproof.report._labels import run_label, simulated, unique_labels
from edgeproof.report._plots import colour, plot_html, ptext, simulated_name, wants_log_axis
from edgeproof.report._verdicts import p95_budget_ms

MAX_POINTS = 1500
# At most this many lines per plot: a legend past it is read by nobody.
MAX_LINES = MAX_SHOWN
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


def _interval(record: RunRecord, key: str) -> str:
    figure = latency_figure(record, f"{key}_ms")
    span = f' <span class="muted">[{figure.interval[0]:.4g}–{figure.interval[1]:.4g}]</span>' if figure.interval else ""
    return f"{figure.value:.4g}{span}"


def legend_height_px(labels: list[str]) -> int:
    """Room for a legend under the plot: plotly fits as many entries in a row as their text allows."""
    per_row = max(1, int(LEGEND_WIDTH_PX // (LEGEND_CHAR_PX * max(len(label) for label in labels) + 50)))
    return LEGEND_ROW_PX * -(-len(labels) // per_row)


def cdf_figure(
    records: list[RunRecord], labels: list[str], budget_ms: float | None, colours: list[str] | None = None, legend_px: int = 0
) -> go.Figure:
    """One CDF line per run, coloured by ``colours`` (the decision's roles) or the shared palette."""
    fig = go.Figure()
    for i, (rec, label) in enumerate(zip(records, labels)):
        x, y = cdf_points([s.samples_ms for s in rec.sessions])
        sim = simulated(rec)
        name = simulated_name(ptext(label), sim)
        fig.add_trace(
            go.Scatter(
                # arrays, not lists: plotly checks a list element by element (most of a report's build time)
                x=np.asarray(x),
                y=np.asarray(y),
                mode="lines",
                name=name,
                line={"color": colours[i] if colours else colour(i), "width": 2.2, "dash": "dash" if sim else "solid", "shape": "hv"},
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
    fig.update_layout(showlegend=True, legend={"font": {"size": 11}, "maxheight": legend_px + 30 if legend_px else None})
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
    found: list[Found], labels: list[str], budget_ms: float | None, plot_id: str, colours: list[str] | None = None
) -> tuple[str, str]:
    """(plot, table) for a group of runs."""
    records = [f.item for f in found]
    legend_px = legend_height_px(labels)
    figure = cdf_figure(records, labels, budget_ms, colours, legend_px)
    return plot_html(figure, plot_id, height=PLOT_PX + legend_px), table(_HEADERS, _rows(found, labels))


def run_groups(found: list[Found], size: int = MAX_LINES) -> list[list[Found]]:
    """Runs by the folder their file is in, each group cut to at most ``size`` so no legend outgrows its plot."""
    folders: dict[str, list[Found]] = {}
    for f in found:
        folders.setdefault(f.rel.rpartition("/")[0], []).append(f)
    return [runs[i : i + size] for runs in folders.values() for i in range(0, len(runs), size)]


def _group_title(group: list[Found]) -> str:
    folder = group[0].rel.rpartition("/")[0]
    return f"{folder or 'top folder'}: {len(group)} run(s)"


def _others_html(others: list[Found], budget: float | None, closed: bool) -> str:
    """Runs that are not search candidates (profile, check, gate, simulate), a plot per folder of at most ``MAX_LINES`` lines."""
    parts = []
    for i, group in enumerate(run_groups(others)):
        labels = unique_labels([run_label(f.item) for f in group], [f.rel for f in group])
        plot, rows = _block(group, labels, budget, "plot-latency-cdf" if i == 0 else f"plot-latency-cdf-{i}")
        parts.append(f"<h3>{esc(_group_title(group))}</h3>{plot}{rows}")
    if not closed:
        return "".join(parts)
    return f"<details><summary>{len(others)} other run(s): profile, check, gate, simulate and confirmation runs</summary>{''.join(parts)}</details>"


def _decision_html(d: Decision, index: int, runs: dict[str, Found], budget: float | None) -> str:
    """The CDF of the pick, fp32 and the front on one target; every candidate's percentiles behind a disclosure."""
    shown = [(s, runs[s.candidate.run_id]) for s in d.shown if s.candidate.run_id in runs]
    body = f"<h3>{esc(d.outcome.target)}: the pick, fp32 and the Pareto front {source(d.found.rel)}</h3>"
    if shown:
        labels = [f"{s.label} · {s.candidate.name} · {stage_text(s.candidate)}" for s, _ in shown]
        colours = [role_colour(s, i) for i, (s, _) in enumerate(shown)]
        plot, rows = _block([f for _, f in shown], labels, budget, f"plot-latency-cdf-search-{index}", colours)
        body += plot + rows
    else:
        body += note("None of the shown candidates has a run record in this folder.")
    everyone = [runs[cid] for cid in (d.result.candidate(c).run_id for c in d.outcome.candidates) if cid in runs]
    if everyone:
        labels = [f"{c.id} {c.name} · {c.target}" for c in (d.result.candidate(cid) for cid in d.outcome.candidates) if c.run_id in runs]
        body += f"<details><summary>Percentiles of all {len(everyone)} candidate runs on {esc(d.outcome.target)}</summary>"
        body += table(_HEADERS, _rows(everyone, labels)) + "</details>"
    return body


def section(inputs: Inputs) -> Section:
    if not inputs.runs:
        return absent_section(
            "latency",
            "Latency CDF",
            "No run records in this folder: `edgeproof profile --json`, `simulate --json` or `gate --out` write them.",
        )
    budget = p95_budget_ms(inputs)
    body = note(
        "Every timed inference of every session, pooled, as a cumulative distribution: the further left and the steeper, the better. "
        "Solid lines are measured; dashed lines are simulated from a board model. A candidate the race only screened or timed "
        "has fewer samples than one measured in full, and its line is screening, not evidence."
    )
    found = decisions(inputs)
    runs = {f.item.run_id: f for f in inputs.runs}
    candidates = {c.run_id for f in inputs.searches for c in f.item.candidates}
    primary, more = split_primary(found)
    body += "".join(_decision_html(d, i, runs, budget) for i, d in enumerate(primary))
    if more:
        blocks = "".join(_decision_html(d, len(primary) + i, runs, budget) for i, d in enumerate(more))
        body += f"<details><summary>{len(more)} more search target(s) in this folder</summary>{blocks}</details>"
    others = [f for f in inputs.runs if f.item.run_id not in candidates]
    if others:
        body += _others_html(others, budget, closed=bool(found))
    kinds = frozenset(provenance_kind(f.item.latency_provenance) for f in inputs.runs)
    return Section("latency", "Latency CDF", body, kinds)
