"""The report's first screen: the pick against fp32 and the Pareto front, and the verdict per target with its binding clause."""

from __future__ import annotations

import math
from dataclasses import dataclass

import plotly.graph_objects as go

from edgeproof.records import ClauseResult, Figure, RunRecord, Verdict
from edgeproof.report._collect import Found, Inputs
from edgeproof.report._html import (
    Section,
    absent_section,
    badge,
    chip,
    esc,
    kind_badges,
    muted,
    note,
    provenance_kind,
    provenance_label,
    source,
    table,
    unavailable,
)
from edgeproof.report._labels import model_variant
from edgeproof.report._plots import PASS, colour, plot_html, ptext, wants_log_axis
from edgeproof.report._verdicts import REGRESSION_PREFIX, judged_run, p95_budget_ms, verdict_sources
from edgeproof.search import Candidate, SearchResult, TargetOutcome

LATENCY, P50, DROP = "p95_ms", "p50_ms", "accuracy_drop_pp"
# The decision shows the pick, fp32 and the front; past this many rows (and CDF lines) the rest waits behind a disclosure.
MAX_SHOWN = 6
CHOSEN, FP32, FRONT = "chosen", "fp32", "Pareto front"


@dataclass(frozen=True)
class RoleStyle:
    """How a role is drawn wherever the decision's candidates appear (the decision plot, the latency CDF)."""

    colour: str
    symbol: str
    size: int


ROLE_STYLE = {
    CHOSEN: RoleStyle("#d69e2e", "star", 20),
    FP32: RoleStyle("#1d2430", "square", 12),
    FRONT: RoleStyle(PASS, "circle", 12),
}
PLOT_PX = 290
# a plot beside a table: small margins, the legend on top where the axis title does not need the room
COMPACT = {
    "margin": {"l": 56, "r": 12, "t": 34, "b": 46},
    "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "left", "x": 0, "font": {"size": 12}},
    "font": {"size": 12},
}


@dataclass(frozen=True)
class Shown:
    """A candidate the decision shows, with the role(s) it plays (a pick on the front is both chosen and front)."""

    candidate: Candidate
    roles: tuple[str, ...]

    @property
    def role(self) -> str:
        return self.roles[0]

    @property
    def label(self) -> str:
        return f"{self.candidate.id} {' + '.join(self.roles)}"


@dataclass(frozen=True)
class Decision:
    """One target of one search: the candidates the first screen shows, and the front members left for the disclosure."""

    found: Found
    outcome: TargetOutcome
    shown: list[Shown]
    more_front: list[Candidate]

    @property
    def result(self) -> SearchResult:
        result: SearchResult = self.found.item
        return result


def role_colour(shown: Shown, index: int) -> str:
    """The pick and fp32 keep their colours in every figure; front members take the shared palette."""
    return ROLE_STYLE[shown.role].colour if shown.role != FRONT else colour(index)


def fp32_candidate(result: SearchResult, outcome: TargetOutcome) -> Candidate | None:
    """The fp32 candidate the pick was compared with; else the fastest fp32 candidate on the target (by p50)."""
    by_id = {c.id: c for c in result.candidates}
    named = outcome.selection.vs_fp32.fp32_candidate if outcome.selection.vs_fp32 is not None else None
    named = named or next((c.rival for c in outcome.confirmations if c.role == "fp32"), None)
    if named in by_id:
        return by_id[named]
    fp32 = [by_id[cid] for cid in outcome.candidates if cid in by_id and by_id[cid].precision == "fp32"]
    timed = [c for c in fp32 if c.value(P50) is not None]
    return min(timed, key=lambda c: c.value(P50) or 0.0) if timed else (fp32[0] if fp32 else None)


def decision(found: Found, outcome: TargetOutcome) -> Decision:
    """Chosen, fp32, then the Pareto front by p95, at most ``MAX_SHOWN`` of them."""
    result: SearchResult = found.item
    by_id = {c.id: c for c in result.candidates}
    roles: dict[str, list[str]] = {}
    chosen = outcome.selection.chosen
    if chosen in by_id:
        roles[chosen] = [CHOSEN]
    fp32 = fp32_candidate(result, outcome)
    if fp32 is not None:
        roles.setdefault(fp32.id, []).append(FP32)
    front = sorted(
        (by_id[cid] for cid in outcome.pareto if cid in by_id), key=lambda c: (c.value(LATENCY) is None, c.value(LATENCY) or 0.0)
    )
    for c in front:
        roles.setdefault(c.id, []).append(FRONT)
    ordered = list(roles)  # chosen, then fp32, then the front by p95
    shown = [Shown(by_id[cid], tuple(roles[cid])) for cid in ordered[:MAX_SHOWN]]
    more = [by_id[cid] for cid in ordered[MAX_SHOWN:]]
    return Decision(found, outcome, shown, more)


def primary_search(inputs: Inputs) -> Found | None:
    """The search the folder is about: the one whose pick was gated or put in a BOM, else the one with the most candidates."""
    if not inputs.searches:
        return None
    gate_folders = {g.rel.rpartition("/")[0] for g in inputs.gates}
    shipped = {f.item.model.sha256 for f in inputs.runs if f.rel.rpartition("/")[0] in gate_folders}
    shipped |= {b.item.model_sha256 for b in inputs.boms}

    def rank(f: Found) -> tuple[bool, int]:
        result: SearchResult = f.item
        picks = {result.candidate(o.selection.chosen).variant_sha256 for o in result.outcomes if o.selection.chosen is not None}
        return bool(picks & shipped), len(result.candidates)

    return max(inputs.searches, key=rank)


def decisions(inputs: Inputs) -> list[Decision]:
    """Every target of every search, the primary search first."""
    primary = primary_search(inputs)
    ordered = [primary, *(f for f in inputs.searches if f is not primary)] if primary is not None else []
    return [decision(f, o) for f in ordered for o in f.item.outcomes]


def split_primary(found: list[Decision]) -> tuple[list[Decision], list[Decision]]:
    """(the primary search's targets, every other search's): the others wait behind a disclosure."""
    primary = [d for d in found if d.found is found[0].found] if found else []
    return primary, found[len(primary) :]


def interval_text(figure: Figure | None, digits: int = 3) -> str:
    """``0.461 ms [0.443–0.494]`` with the interval muted; "unavailable" (reason in the tooltip) without a value."""
    if figure is None:
        return unavailable("not recorded")
    if figure.value is None:
        return unavailable(figure.provenance.split(":", 1)[-1])
    span = f'<span class="ci">[{figure.interval[0]:.{digits}g}–{figure.interval[1]:.{digits}g}]</span>' if figure.interval else ""
    return f"{figure.value:.{digits}g}{span}"


def is_reference(c: Candidate, runs_by_id: dict[str, RunRecord]) -> bool:
    """Whether this candidate is the float model every drop is measured against (so its drop is zero by definition)."""
    references = {r.evaluation.reference_sha256 for r in runs_by_id.values() if r.evaluation is not None}
    return c.variant_sha256 in references


def drop_cell(c: Candidate, runs_by_id: dict[str, RunRecord]) -> str:
    figure = c.figures.get(DROP)
    if (figure is None or figure.value is None) and is_reference(c, runs_by_id):
        return muted("the reference")
    if figure is None or figure.value is None:
        return interval_text(figure)
    where = f' <span class="muted">{esc(c.worst_slice)}</span>' if c.worst_slice else ""
    return f'<span class="fig">{figure.value:+.2f} pp</span>{where} {badge(figure.provenance)}'.replace("+-", "−")


def stage_text(c: Candidate) -> str:
    """How far the race took the candidate: its figures are evidence only when measured in full."""
    samples = f", {c.samples} samples" if c.samples else ""
    return "measured in full" + samples if c.measured_in_full else f"{c.stage} only{samples} (screening)"


def role_tags(s: Shown) -> str:
    return "".join(f'<span class="role r-{esc(role.split()[0].lower())}">{esc(role)}</span>' for role in s.roles)


def evidence_line(figure: Figure | None, c: Candidate) -> str:
    """The kind of evidence as a badge, then what measured or simulated it and how far the race took the candidate."""
    if figure is None:
        return muted("no latency recorded")
    return f"{provenance_label(figure.provenance)} {muted('· ' + stage_text(c))}"


def candidate_rows(d: Decision, runs_by_id: dict[str, RunRecord]) -> list[list[str]]:
    """Candidate (roles, contract outcome, what its latency rests on), p50, p95, worst-slice drop."""
    rows = []
    for s in d.shown:
        c = s.candidate
        p95 = c.figures.get(LATENCY)
        rows.append(
            [
                f"{role_tags(s)} <b>{esc(c.id)}</b> {esc(c.name)} {chip(c.verdict.outcome)}"
                f'<div class="evidence">{evidence_line(p95, c)}</div>',
                f'<span class="fig">{interval_text(c.figures.get(P50))}</span>',
                f'<span class="fig">{interval_text(p95)}</span>',
                drop_cell(c, runs_by_id),
            ]
        )
    return rows


def ratio_text(ratio: float, low: float | None, high: float | None) -> str:
    return f"×{ratio:.3g}" + (f" (95% CI {low:.3g}–{high:.3g})" if low is not None and high is not None else "")


def simulated_badge(d: Decision) -> str:
    """A badge naming the board model when the target's candidates were simulated, so a simulated pick never reads as measured."""
    by_id = {c.id: c for c in d.result.candidates}
    for cid in d.outcome.candidates:
        latency = by_id[cid].figures.get(LATENCY) if cid in by_id else None
        if latency is not None and provenance_kind(latency.provenance) == "simulated":
            return f" {badge(latency.provenance, detail=True)}"
    return ""


def headline(d: Decision) -> str:
    """What was picked on this target, and how it compares with fp32 on which evidence."""
    o = d.outcome
    sel = o.selection
    board = simulated_badge(d)
    if sel.chosen is None:
        if o.outcome == "undecided":
            why = "; ".join(o.undecided_because[:2]) or "no candidate was measured in full"
            head = f"{chip('undecided')} <b>Could not decide on {esc(o.target)}</b>{board}"
            return f'<p class="headline">{head}</p><p class="vs">{esc(why)}</p>'
        ex = o.explanation
        why = f"{esc(ex.why.rstrip('.'))}. Binding clause <code>{esc(ex.binding_clause)}</code>." if ex is not None else ""
        head = f"{chip('fail')} <b>No candidate meets every hard clause on {esc(o.target)}</b>{board}"
        return f'<p class="headline">{head}</p><p class="vs">{why}</p>'
    chosen = d.result.candidate(sel.chosen)
    head = f'<p class="headline">{chip("pass")} <b>Chosen on {esc(o.target)}: {esc(chosen.id)} {esc(chosen.name)}</b>{board}</p>'
    v = sel.vs_fp32
    if v is None:
        return head + f'<p class="vs">{muted("No fp32 candidate to compare with on this target.")}</p>'
    if v.fp32_candidate == chosen.id:
        said = next((n for n in sel.notes if n.startswith("nothing beats fp32")), "")
        return head + f'<p class="vs">The pick is fp32 itself{": " + esc(said) if said else "."}</p>'
    p50 = ratio_text(v.p50_ratio, *(v.p50_interval or (None, None)))
    p95 = ratio_text(v.p95_ratio, *(v.p95_interval or (None, None)))
    screening = "" if v.p50_interval is not None else " (screening only: not interleaved)"
    line = (
        f"Against fp32 ({esc(v.fp32_candidate)}), {esc(v.method)}{screening}: <b>p50 {esc(p50)}</b>, <b>p95 {esc(p95)}</b> "
        f"{muted('(below 1: faster)')} {badge(f'measured:{v.method}')}"
    )
    if v.slower:
        line += f' <span class="over">slower than fp32</span> {muted(v.why)}'
    return head + f'<p class="vs">{line}</p>'


def confirmations_html(d: Decision) -> str:
    """The interleaved comparisons that confirmed the pick (ratios are pick / rival: below 1, the pick is faster)."""
    items = []
    for c in d.outcome.confirmations:
        won = "a tie" if c.winner is None else f"{c.winner} wins"
        items.append(
            f"{esc(c.pick)} / {esc(c.rival)} ({esc(c.role)}): p50 {esc(ratio_text(c.p50.ratio, c.p50.low, c.p50.high))}, "
            f"p95 {esc(ratio_text(c.p95.ratio, c.p95.low, c.p95.high))}, {c.pairs} pairs → {esc(won)} "
            f"{muted(c.decided_by)} {badge(f'measured:{c.method}')}"
        )
    if not items:
        return ""
    return (
        f"<details><summary>{len(items)} interleaved confirmation(s) of the pick</summary><ul><li>"
        + "</li><li>".join(items)
        + "</li></ul></details>"
    )


@dataclass(frozen=True)
class Point:
    """A shown candidate on the decision plot: its p95 (with interval) and worst-slice drop (0 for the float reference)."""

    shown: Shown
    p95: Figure
    p95_ms: float
    drop_pp: float
    reference: bool

    @property
    def error(self) -> tuple[float, float]:
        """(above, below) the p95: the interval's reach either side."""
        low, high = self.p95.interval or (self.p95_ms, self.p95_ms)
        return high - self.p95_ms, self.p95_ms - low

    def hover(self) -> str:
        c, p95 = self.shown.candidate, self.p95
        lines = (
            f"{c.id} {c.name} ({' + '.join(self.shown.roles)})",
            f"p95 {self.p95_ms:.4g} ms" + (f" [{p95.interval[0]:.4g}–{p95.interval[1]:.4g}]" if p95.interval else ""),
            f"{p95.provenance}, {stage_text(c)}",
            "the float reference: drops are measured against it"
            if self.reference
            else f"worst-slice drop {self.drop_pp:+.2f} pp ({c.worst_slice})",
        )
        return "<br>".join(ptext(line) for line in lines)


def decision_points(d: Decision, runs_by_id: dict[str, RunRecord]) -> list[Point]:
    points = []
    for s in d.shown:
        c = s.candidate
        p95, drop = c.figures.get(LATENCY), c.value(DROP)
        if p95 is None or p95.value is None:
            continue
        reference = drop is None and is_reference(c, runs_by_id)
        if drop is not None or reference:
            points.append(Point(s, p95, p95.value, drop if drop is not None else 0.0, reference))
    return points


def decision_figure(d: Decision, runs_by_id: dict[str, RunRecord], budget_ms: float | None) -> tuple[go.Figure | None, str]:
    """p95 (with its interval) against the worst-slice drop for the shown candidates, the pick as the star; and a
    sentence for a p95 budget too far right to draw without squashing the candidates into a corner."""
    points = decision_points(d, runs_by_id)
    if not points:
        return None, ""
    fig = go.Figure()
    for role, style in ROLE_STYLE.items():
        members = [p for p in points if p.shown.role == role]
        if not members:
            continue
        sim = any(provenance_kind(p.p95.provenance) == "simulated" for p in members)
        fig.add_trace(
            go.Scatter(
                x=[p.p95_ms for p in members],
                y=[p.drop_pp for p in members],
                mode="markers+text",
                name=role + (" [simulated]" if sim else ""),
                text=[ptext(p.shown.candidate.id) for p in members],
                textposition="top right",
                cliponaxis=False,
                marker={"color": style.colour, "symbol": style.symbol, "size": style.size, "line": {"width": 1, "color": "#ffffff"}},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [p.error[0] for p in members],
                    "arrayminus": [p.error[1] for p in members],
                    "color": style.colour,
                    "thickness": 1.5,
                    "width": 4,
                },
                hovertext=[p.hover() for p in members],
                hoverinfo="text",
            )
        )
    drops = [p.drop_pp for p in points]
    top, bottom = min(drops) - max(0.3, (max(drops) - min(drops)) * 0.15), max(drops) + max(0.3, (max(drops) - min(drops)) * 0.15)
    xs = [x for p in points for x in (p.p95_ms - p.error[1], p.p95_ms + p.error[0]) if x > 0]
    off_edge = ""
    if budget_ms is not None and budget_ms <= max(xs) * 1.5:
        fig.add_trace(budget_line(budget_ms, top, bottom))
        xs.append(budget_ms)
    elif budget_ms is not None:
        off_edge = f"The contract's p95 budget, {budget_ms:g} ms, lies far to the right of every candidate shown."
    log = wants_log_axis(min(xs), max(xs))
    title = "p95 latency (ms), 95% interval" + (", log" if log else "")
    fig.update_xaxes(title_text=title, type="log" if log else "linear", range=x_range(min(xs), max(xs), log))
    # drops grow downwards: better is up
    fig.update_yaxes(title_text="worst-slice drop (pp)", range=[bottom, top], zeroline=True)
    return fig, off_edge


def x_range(low: float, high: float, log: bool, pad: float = 0.12) -> list[float]:
    """The axis range with room either side for the labels (plotly takes a log axis's range in log10)."""
    if log:
        lo, hi = math.log10(low), math.log10(high)
        return [lo - (hi - lo) * pad, hi + (hi - lo) * pad]
    span = (high - low) or abs(high) or 1.0
    return [low - span * pad, high + span * pad]


def budget_line(budget_ms: float, top: float, bottom: float) -> go.Scatter:
    """The contract's p95 budget as a labelled vertical line (a trace: an annotated vline misplaces itself on a log axis)."""
    return go.Scatter(
        x=[budget_ms, budget_ms],
        y=[bottom, top],
        mode="lines+text",
        text=["", f"p95 budget {budget_ms:g} ms"],
        textposition="bottom left",
        textfont={"color": "#c0392b", "size": 11},
        showlegend=False,
        line={"color": "#c0392b", "width": 1.5, "dash": "dot"},
        hoverinfo="skip",
    )


def decision_card(d: Decision, index: int, runs_by_id: dict[str, RunRecord], budget_ms: float | None) -> str:
    o = d.outcome
    counts = f"{len(o.candidates)} candidate(s) on this target, {len(o.pareto)} on the Pareto front"
    if o.race is not None:
        counts += f"; {o.race.raced} raced, {o.race.pruned} pruned, {o.race.measured_full} measured in full"
    body = headline(d)
    tbl = table(["candidate", "p50 ms [95% CI]", "p95 ms [95% CI]", "worst-slice drop"], candidate_rows(d, runs_by_id), cls="decision")
    if d.more_front:
        tbl += note(
            f"{len(d.more_front)} more on the Pareto front: "
            + ", ".join(f"{c.id} {c.name}" for c in d.more_front)
            + " (see the Pareto chart)."
        )
    fig, off_edge = decision_figure(d, runs_by_id, budget_ms)
    plot = (
        plot_html(fig, f"plot-decision-{index}", height=PLOT_PX, layout=COMPACT, modebar=False) + (note(off_edge) if off_edge else "")
        if fig is not None
        else muted("No shown candidate has both a p95 and a worst-slice drop to plot.")
    )
    return (
        f'<div class="decision-card" id="decision-{index}"><div class="decision-head">{headline_source(d)} {muted(counts)}</div>{body}'
        f'<div class="decision-grid"><div>{tbl}{confirmations_html(d)}</div><div>{plot}</div></div></div>'
    )


def target_line(d: Decision, index: int) -> str:
    """One line for a further target of the search: its outcome and pick, linked to its card further down."""
    o = d.outcome
    sel = o.selection
    what = f"chose {esc(sel.chosen)} {esc(d.result.candidate(sel.chosen).name)}" if sel.chosen is not None else ""
    if sel.chosen is None and o.explanation is not None:
        what = f"binding clause <code>{esc(o.explanation.binding_clause)}</code>"
    elif sel.chosen is None and o.undecided_because:
        what = esc(o.undecided_because[0])
    return f'Also on <b>{esc(o.target)}</b>{simulated_badge(d)}: {chip(o.outcome)} {what} (<a href="#decision-{index}">below</a>)'


def headline_source(d: Decision) -> str:
    return f"<b>{esc(d.result.model.name)}</b> {muted('search')} {source(d.found.rel)}"


def judged(inputs: Inputs, rel: str) -> str:
    """What a verdict judged: the model and variant of the run record written beside it, where there is one."""
    run = judged_run(inputs, rel)
    return f"{esc(model_variant(run))} <code>{esc(run.model.sha256[:8])}</code>" if run is not None else muted("not named in the folder")


def clause_text(c: ClauseResult) -> str:
    """``0.46 ms of 5 ms (margin 4.54 ms)``; ratios as ×, with their interval where the clause has one."""
    ratio = c.unit == "x"
    unit = "" if ratio else f" {c.unit}"
    if c.value is None:
        return unavailable(c.provenance.split(":", 1)[-1])
    value = f"×{c.value:.3g}" if ratio else f"{c.value:.3g}{unit}"
    if c.interval is not None:
        value += f" (95% CI {c.interval[0]:.3g}–{c.interval[1]:.3g})"
    if c.budget is None:
        return esc(value)
    budget = f"×{c.budget:.3g}" if ratio else f"{c.budget:.3g}{unit}"
    margin = f", margin {c.margin:.3g}{unit}" if c.margin is not None and not ratio else ""
    return esc(f"{value} against {budget}{margin}")


def verdict_row(inputs: Inputs, rel: str, v: Verdict) -> list[str]:
    """Target, outcome with the kinds of evidence, the binding clause with its figure and provenance, what was judged."""
    binding = next((c for c in v.clauses if c.clause == v.binding_clause), None)
    failing = [c.clause for c in v.clauses if c.status == "fail"]
    if binding is None:
        bind = muted("none named")
    else:
        bind = f"<code>{esc(binding.clause)}</code> {chip(binding.status)} {clause_text(binding)} {provenance_label(binding.provenance)}"
    also = [c for c in failing if binding is None or c != binding.clause]
    if also:
        bind += f'<div class="over">{"also " if binding is not None and binding.status == "fail" else ""}fails: {esc(", ".join(also[:4]) + ("…" if len(also) > 4 else ""))}</div>'
    contract = [c for c in v.clauses if not c.clause.startswith(REGRESSION_PREFIX)]
    simulated = next((c.provenance for c in v.clauses if provenance_kind(c.provenance) == "simulated"), None)
    target = f"<b>{esc(v.target)}</b>" + (f" {badge(simulated)}" if simulated else "")
    kinds = kind_badges({provenance_kind(c.provenance) for c in contract} - {"unavailable"})
    return [target, f"{chip(v.outcome)} {kinds}", bind, f"{judged(inputs, rel)}<br>{source(rel)}"]


def verdicts_html(inputs: Inputs, picks: set[str]) -> str:
    """One row per verdict: the gate's first, then those that judged a pick (``picks``: variant sha256), then the rest."""
    gates = {f.rel for f in inputs.gates}

    def order(pair: tuple[str, Verdict]) -> tuple[bool, bool]:
        run = judged_run(inputs, pair[0])
        return pair[0] not in gates, run is None or run.model.sha256 not in picks

    pairs = sorted(verdict_sources(inputs), key=order)
    if not pairs:
        return note("No contract verdict in this folder: `edgeproof check --json` and `edgeproof gate --out` write them.")
    rows = [verdict_row(inputs, rel, v) for rel, v in pairs]
    return '<h3 class="verdicts">Verdict per target</h3>' + table(
        ["target", "verdict · evidence", "binding clause: the hard clause with the least room", "judged · file"], rows, cls="verdicts"
    )


def section(inputs: Inputs) -> Section:
    found = decisions(inputs)
    pairs = verdict_sources(inputs)
    if not found and not pairs:
        return absent_section(
            "decision",
            "Decision",
            "No search and no verdict in this folder: `edgeproof optimize` picks a candidate, `check` and `gate` judge one.",
        )
    runs_by_id = {f.item.run_id: f.item for f in inputs.runs}
    budget = p95_budget_ms(inputs)
    body = ""
    primary, others = split_primary(found)
    # a target with a pick leads; the search's other targets follow the verdicts, each named in a line under the first
    primary.sort(key=lambda d: d.outcome.selection.chosen is None)
    if primary:
        body += decision_card(primary[0], 0, runs_by_id, budget)
        body += "".join(f'<p class="also">{target_line(d, i)}</p>' for i, d in enumerate(primary[1:], 1))
    if not primary:
        body += note("No search in this folder, so no pick to weigh against fp32: `edgeproof optimize` writes search.json.")
    picks = {d.result.candidate(o).variant_sha256 for d in primary if (o := d.outcome.selection.chosen) is not None}
    body += verdicts_html(inputs, picks)
    body += "".join(decision_card(d, i, runs_by_id, budget) for i, d in enumerate(primary[1:], 1))
    if others:
        cards = "".join(decision_card(d, len(found) + i, runs_by_id, budget) for i, d in enumerate(others))
        body += f"<details><summary>{len(others)} more search target(s) in this folder</summary>{cards}</details>"
    kinds = {provenance_kind(s.candidate.figures[LATENCY].provenance) for d in found for s in d.shown if LATENCY in s.candidate.figures}
    kinds |= {provenance_kind(c.provenance) for _, v in pairs for c in v.clauses}
    return Section("decision", "Decision", body, frozenset(kinds))
