"""The gate result: outcome per target and every regression clause vs the baseline, ratios with their intervals."""

from __future__ import annotations

import plotly.graph_objects as go

from edgeproof.outcome import overall
from edgeproof.records import ClauseResult, Verdict
from edgeproof.report._collect import Inputs
from edgeproof.report._html import Section, absent_section, badge, card, chip, esc, fmt, muted, note, provenance_kind, source, table
from edgeproof.report._plots import GREY, STATUS_COLOUR, plot_html, ptext
from edgeproof.report._verdicts import REGRESSION_PREFIX, value_cell

RATIO_UNIT = "x"


def regression_clauses(verdict: Verdict) -> list[ClauseResult]:
    return [c for c in verdict.clauses if c.clause.startswith(REGRESSION_PREFIX)]


def _ratio(clause: ClauseResult) -> float:
    assert clause.value is not None, "the forest plots only clauses with a value"
    return clause.value


def forest_figure(clauses: list[ClauseResult]) -> go.Figure | None:
    """Each ratio clause as a point with its interval and the limit it must stay under."""
    ratios = [c for c in clauses if c.unit == RATIO_UNIT and c.value is not None]
    if not ratios:
        return None
    names = [ptext(c.clause.removeprefix(REGRESSION_PREFIX)) for c in ratios]
    fig = go.Figure()
    for status in ("pass", "fail", "waived", "unverified"):
        rows = [(n, c) for n, c in zip(names, ratios) if c.status == status]
        if not rows:
            continue
        intervals = [c.interval for _, c in rows]
        fig.add_trace(
            go.Scatter(
                x=[_ratio(c) for _, c in rows],
                y=[n for n, _ in rows],
                mode="markers",
                name=status,
                marker={"size": 11, "color": STATUS_COLOUR[status]},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "thickness": 2,
                    "width": 6,
                    "color": STATUS_COLOUR[status],
                    "array": [(iv[1] - _ratio(c)) if iv else 0 for iv, (_, c) in zip(intervals, rows)],
                    "arrayminus": [(_ratio(c) - iv[0]) if iv else 0 for iv, (_, c) in zip(intervals, rows)],
                },
                customdata=[[ptext(c.note), ptext(c.provenance)] for _, c in rows],
                hovertemplate="%{y}: candidate/baseline %{x:.4g}<br>%{customdata[0]}<br>%{customdata[1]}<extra></extra>",
            )
        )
    limits = [(n, c) for n, c in zip(names, ratios) if c.budget is not None]
    if limits:
        fig.add_trace(
            go.Scatter(
                x=[c.budget for _, c in limits],
                y=[n for n, _ in limits],
                mode="markers",
                name="limit",
                marker={"symbol": "line-ns-open", "size": 22, "color": "#1d2430", "line": {"width": 2.5}},
                hovertemplate="%{y}: limit %{x:.4g}<extra></extra>",
            )
        )
    fig.add_vline(x=1.0, line={"color": GREY, "width": 1, "dash": "dot"})
    fig.update_xaxes(type="log", title_text="candidate / baseline (1 = no change; log scale; bars: 95% interval)")
    fig.update_yaxes(autorange="reversed", automargin=True)
    return fig


def _clause_row(c: ClauseResult) -> list[str]:
    value = esc(f"{c.value:.4g}×") if c.unit == RATIO_UNIT and c.value is not None else value_cell(c.value, c.unit, c.provenance)
    limit = esc(f"{c.budget:.4g}×") if c.unit == RATIO_UNIT and c.budget is not None else esc(fmt(c.budget, c.unit))
    return [f"<code>{esc(c.clause)}</code>", chip(c.status), value, limit, badge(c.provenance, detail=True), esc(c.note)]


def target_block(rel: str, index: int, verdict: Verdict) -> str:
    regressions = regression_clauses(verdict)
    contract = len(verdict.clauses) - len(regressions)
    failing = [c.clause for c in verdict.clauses if c.status == "fail"]
    title = f"{esc(verdict.target)} {chip(verdict.outcome)} {source(rel)}"
    body = (
        "<p>"
        + esc(
            f"{contract} contract clause(s) (see the contract verdict above) and {len(regressions)} regression clause(s) vs the baseline."
            + (f" Failing: {', '.join(failing)}." if failing else "")
        )
        + "</p>"
    )
    if not regressions:
        return card(title, body + muted("No baseline was given, so the gate judged the contract only."))
    fig = forest_figure(regressions)
    if fig is not None:
        ratios = sum(1 for c in regressions if c.unit == RATIO_UNIT and c.value is not None)
        body += plot_html(fig, f"plot-gate-{index}", height=max(240, 110 + 42 * ratios))
    body += table(["clause", "status", "value", "limit", "evidence", "note"], [_clause_row(c) for c in regressions])
    return card(title, body)


def section(inputs: Inputs) -> Section:
    if not inputs.gates:
        return absent_section("gate", "Gate result", "No gate ran in this folder: `edgeproof gate --out DIR` writes gate.json.")
    body = note(
        "The release gate: every contract clause plus the candidate against the baseline. Latency ratios come with "
        "95% intervals; a regression fails when its whole interval lies above the limit (between stored records "
        "measured apart: when its estimate lies beyond the limit and the slowdown is significant, one-sided 99%). "
        "Accuracy is a paired "
        "test on the same inputs."
    )
    blocks, index, kinds = [], 0, set()
    for f in inputs.gates:
        blocks.append(f"<p>{source(f.rel)}: {chip(overall(v.outcome for v in f.item.verdicts))} over {len(f.item.verdicts)} target(s)</p>")
        for verdict in f.item.verdicts:
            blocks.append(target_block(f.rel, index, verdict))
            kinds |= {provenance_kind(c.provenance) for c in regression_clauses(verdict)}
            index += 1
    return Section("gate", "Gate result", body + "".join(blocks), frozenset(kinds))
