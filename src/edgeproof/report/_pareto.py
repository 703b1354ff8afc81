"""The search's Pareto chart per target (p95 vs worst-slice accuracy drop, marker size = energy) and its pick."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from edgeproof.records import RunRecord
from edgeproof.report._collect import Found, Inputs
from edgeproof.report._decision import primary_search
from edgeproof.report._html import (
    Section,
    absent_section,
    badge,
    bullet_list,
    card,
    chip,
    esc,
    fmt,
    muted,
    note,
    provenance_kind,
    source,
    table,
    unavailable,
)
from edgeproof.report._plots import GREY, PASS, plot_html, ptext, wants_log_axis
from edgeproof.search import Candidate, SearchResult, TargetOutcome

LATENCY, DROP, ENERGY = "p95_ms", "accuracy_drop_pp", "energy_mj_per_inference"
MIN_MARKER_PX, MAX_MARKER_PX = 9.0, 38.0


def marker_sizes(energies: list[float | None]) -> list[float]:
    """Marker diameter by energy per inference (area ∝ energy); without a meter, the smallest marker."""
    known = [e for e in energies if e is not None and e > 0]
    top = max(known) if known else None
    return [
        MIN_MARKER_PX if e is None or top is None or e <= 0 else MIN_MARKER_PX + (MAX_MARKER_PX - MIN_MARKER_PX) * math.sqrt(e / top)
        for e in energies
    ]


def _hover(c: Candidate, sim: bool, accuracy: float | None) -> str:
    energy = c.figures.get(ENERGY)
    energy_text = "energy unavailable" if energy is None or energy.value is None else f"{energy.value:.4g} mJ/inference"
    worst = (
        f"worst slice {c.worst_slice}" + (f" at {accuracy:.2%} top-1" if accuracy is not None else "") if c.worst_slice else "no slice data"
    )
    failing = c.failing()
    verdict = "meets the contract" if c.feasible else f"fails {', '.join(failing[:4])}" + ("…" if len(failing) > 4 else "")
    tag = " [simulated]" if sim else ""
    latency = c.figures[LATENCY].provenance if LATENCY in c.figures else "latency not recorded"
    return "<br>".join(ptext(s) for s in (f"{c.id}: {c.name}{tag}", f"{c.target}: {latency}", worst, energy_text, verdict))


def _group(c: Candidate, outcome: TargetOutcome) -> str:
    if c.id == outcome.selection.chosen:
        return "chosen"
    if not c.feasible:
        return "fails the contract"
    return "Pareto front" if c.id in outcome.pareto else "feasible, dominated"


# A star reads smaller than a circle of the same size, a cross larger.
_SCALE = {"chosen": 1.4, "fails the contract": 0.7}
_STYLE = {
    "Pareto front": {"color": PASS, "symbol": "circle"},
    "feasible, dominated": {"color": "#2b6cb0", "symbol": "circle"},
    "fails the contract": {"color": GREY, "symbol": "x"},
    "chosen": {"color": "#d69e2e", "symbol": "star"},
}


def pareto_figure(candidates: list[Candidate], outcome: TargetOutcome, accuracy_of: dict[str, float | None]) -> go.Figure | None:
    """Candidates with a p95 and a worst-slice drop, grouped by what the contract made of them."""
    plotted = [c for c in candidates if c.value(LATENCY) is not None and c.value(DROP) is not None]
    if not plotted:
        return None
    sizes = dict(zip((c.id for c in plotted), marker_sizes([c.value(ENERGY) for c in plotted])))
    fig = go.Figure()
    for group, style in _STYLE.items():
        members = [c for c in plotted if _group(c, outcome) == group]
        if not members:
            continue
        sim = [provenance_kind(c.figures[LATENCY].provenance) == "simulated" for c in members]
        fig.add_trace(
            go.Scatter(
                x=[c.value(LATENCY) for c in members],
                y=[c.value(DROP) for c in members],
                mode="markers",
                name=group,
                marker={
                    "size": [sizes[c.id] * _SCALE.get(group, 1.0) for c in members],
                    "color": style["color"],
                    "symbol": style["symbol"],
                    "opacity": 0.85,
                    "line": {"width": [0 if c.value(ENERGY) is not None else 2 for c in members], "color": "#1d2430"},
                },
                hovertext=[_hover(c, s, accuracy_of.get(c.id)) for c, s in zip(members, sim)],
                hoverinfo="text",
            )
        )
    p95s = [v for v in (c.value(LATENCY) for c in plotted) if v is not None]
    log = wants_log_axis(min(p95s), max(p95s))
    # latency is never negative: a lone candidate must not centre the axis on zero
    fig.update_xaxes(title_text="p95 latency (ms)" + (", log scale" if log else ""), type="log" if log else "linear", rangemode="tozero")
    fig.update_yaxes(title_text="worst-slice drop (pp), up = better", autorange="reversed", zeroline=True)
    return fig


def _worst_accuracy(c: Candidate, runs_by_id: dict[str, RunRecord]) -> float | None:
    rec = runs_by_id.get(c.run_id)
    if rec is None or rec.evaluation is None or c.worst_slice not in rec.evaluation.slices:
        return None
    return rec.evaluation.slices[c.worst_slice].accuracy


def _figure_cell(c: Candidate, key: str) -> str:
    fig = c.figures.get(key)
    if fig is None or fig.value is None:
        return unavailable(fig.provenance if fig is not None else "not recorded")
    return esc(fmt(fig.value, fig.unit))


def candidate_table(candidates: list[Candidate], outcome: TargetOutcome) -> str:
    rows = []
    for c in candidates:
        rows.append(
            [
                esc(c.id),
                esc(c.name),
                badge(c.figures[LATENCY].provenance, detail=True) if LATENCY in c.figures else muted("—"),
                chip(c.verdict.outcome),
                "yes" if c.id in outcome.pareto else "",
                _figure_cell(c, LATENCY),
                _figure_cell(c, DROP) + (f' <span class="muted">{esc(c.worst_slice)}</span>' if c.worst_slice else ""),
                _figure_cell(c, ENERGY),
                esc(", ".join(c.failing()) or ("" if c.eligible else c.ineligible_reason)),
            ]
        )
    return table(["id", "candidate", "evidence", "contract", "front", "p95", "worst-slice drop", "energy", "failing / ineligible"], rows)


def selection_html(result: SearchResult, outcome: TargetOutcome) -> str:
    sel = outcome.selection
    parts = []
    if sel.chosen is not None:
        chosen = next((c.name for c in result.candidates if c.id == sel.chosen), "(not among the candidates in the file)")
        artifact = f" (written as <code>{esc(outcome.chosen_artifact)}</code>)" if outcome.chosen_artifact else ""
        parts.append(f"<p><b>Chosen:</b> {esc(sel.chosen)} {esc(chosen)}{artifact}, among {len(sel.considered)} feasible candidate(s).</p>")
        if sel.vs_fp32 is not None:
            v = sel.vs_fp32
            parts.append(
                f"<p>Against the fastest fp32 candidate {esc(v.fp32_candidate)}: p50 ×{v.p50_ratio:.3g}, p95 ×{v.p95_ratio:.3g}. {esc(v.why)}</p>"
            )
    else:
        parts.append(f"<p>{chip('fail')} <b>No candidate meets every hard clause on {esc(outcome.target)}.</b></p>")
    if sel.steps:
        parts.append(
            table(
                ["metric", "from", "used", "best", "tolerance", "kept", "dropped", "note"],
                [
                    [
                        f"<code>{esc(s.metric)}</code>",
                        esc(s.source),
                        "yes" if s.used else "no",
                        esc(fmt(s.best)),
                        esc(fmt(s.tolerance)),
                        esc(", ".join(s.kept)),
                        esc(", ".join(s.dropped)),
                        esc(s.note),
                    ]
                    for s in sel.steps
                ],
            )
        )
    ex = outcome.explanation
    if ex is not None:
        parts.append(
            f"<p><b>Why nothing fits:</b> {esc(ex.why)} Binding clause <code>{esc(ex.binding_clause)}</code>; "
            f"closest candidate {esc(ex.closest_candidate or 'none')} fails {esc(', '.join(ex.closest_fails) or 'nothing')}.</p>"
        )
        if ex.escalation is not None:
            parts.append(
                f"<p><b>Next:</b> {esc(ex.escalation.owner)} — {esc(', '.join(ex.escalation.options))}. {esc(ex.escalation.note)}</p>"
            )
    notes = [*sel.notes, *outcome.pareto_notes]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    return "".join(parts)


def outcome_card(found: Found, index: int, outcome: TargetOutcome, runs_by_id: dict[str, RunRecord]) -> str:
    result: SearchResult = found.item
    by_id = {c.id: c for c in result.candidates}
    candidates = [by_id[cid] for cid in outcome.candidates if cid in by_id]
    sim = any(provenance_kind(c.figures[LATENCY].provenance) == "simulated" for c in candidates if LATENCY in c.figures)
    title = f"{esc(outcome.target)} {chip(outcome.outcome)} {badge('simulated:') if sim else ''} {source(found.rel)}"
    body = ""
    fig = pareto_figure(candidates, outcome, {c.id: _worst_accuracy(c, runs_by_id) for c in candidates})
    if fig is not None:
        tag = " [simulated]" if sim else ""
        body += plot_html(fig, f"plot-pareto-{index}", height=460, title=f"{ptext(outcome.target)}: {len(candidates)} candidates{tag}")
        body += note(
            "Marker area grows with energy per inference; a ringed smallest marker means energy is unavailable for that candidate (no meter), not zero."
        )
    else:
        body += muted("No candidate has both a p95 and a worst-slice drop to plot.")
    body += selection_html(result, outcome)
    body += f"<details><summary>All {len(candidates)} candidates</summary>{candidate_table(candidates, outcome)}</details>"
    return card(title, body)


def section(inputs: Inputs) -> Section:
    if not inputs.searches:
        return absent_section(
            "pareto",
            "Pareto chart",
            "No optimize run in this folder: `edgeproof optimize MODEL --contract C --out DIR` writes search.json.",
        )
    runs_by_id = {f.item.run_id: f.item for f in inputs.runs}
    body = note(
        "Every candidate the search measured or simulated, per target: p95 latency against the accuracy drop on its worst slice. "
        "The Pareto front holds the candidates no other beats on every axis the search used; the star is the contract's pick."
    )
    primary = primary_search(inputs)
    ordered = [f for f in inputs.searches if f is primary] + [f for f in inputs.searches if f is not primary]
    index, kinds, blocks = 0, set(), []
    for found in ordered:
        result = found.item
        block = ""
        if result.skipped:
            block += (
                f"<details><summary>{esc(found.rel)}: {len(result.skipped)} candidate(s) skipped</summary>"
                + bullet_list(f"{esc(s.name)}: {esc(s.reason)}" for s in result.skipped)
                + "</details>"
            )
        for outcome in result.outcomes:
            block += outcome_card(found, index, outcome, runs_by_id)
            index += 1
        blocks.append(block)
        kinds |= {provenance_kind(c.figures[LATENCY].provenance) for c in result.candidates if LATENCY in c.figures}
    body += blocks[0]
    if blocks[1:]:
        body += f"<details><summary>{len(blocks) - 1} more search(es) in this folder</summary>{''.join(blocks[1:])}</details>"
    return Section("pareto", "Pareto chart", body, frozenset(kinds))
