"""Pure selection: the Pareto front over measured axes and the contract's lexicographic pick with a tie tolerance.

The pick: hard budgets first (a candidate is feasible when its verdict passes; waivers count),
then ``[preferences] minimize`` in order. At each metric every candidate within the tolerance of
the best stays (``best + max(rel_tol × |best|, absolute floor)``): 2% by default, because
session-to-session noise of p50/p95 on a shared host is of that order (see NOTES), so a smaller
difference is not evidence. A metric that is unavailable for any remaining candidate (energy
on a host without a meter) is skipped, with a note, never compared against a missing value.
After the preferences come fixed tie-breaks: p95, worst-slice drop, peak RSS, model size; a tie
left after all of them goes to the best exact value of the first metric that was used.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeproof.search._records import Candidate, Fp32Comparison, Selection, SelectionStep

DEFAULT_REL_TOL = 0.02
# Absolute tie floors where a relative tolerance around zero means nothing (a 0 pp drop, no fallback).
ABS_TOL = {"accuracy_drop_pp": 0.25, "cpu_fallback_frac": 0.005}
TIE_BREAKS = ("p95_ms", "accuracy_drop_pp", "peak_rss_mib", "model_size_mib")
PARETO_AXES = ("p95_ms", "accuracy_drop_pp", "energy_mj_per_inference", "peak_rss_mib")


def tolerance(metric: str, best: float, rel_tol: float) -> float:
    """How far above the best a value may be and still tie with it."""
    return max(rel_tol * abs(best), ABS_TOL.get(metric, 0.0))


def usable_axes(candidates: Sequence[Candidate], axes: Sequence[str] = PARETO_AXES) -> tuple[list[str], list[str]]:
    """Axes every candidate has a value for, and a note for each axis left out (with the reason given)."""
    used, notes = [], []
    for axis in axes:
        missing = [c for c in candidates if c.value(axis) is None]
        if not missing:
            used.append(axis)
            continue
        why = missing[0].figures[axis].provenance.split(":", 1)[-1] if axis in missing[0].figures else "not recorded"
        notes.append(f"{axis} unavailable for {len(missing)} of {len(candidates)} candidates ({why}); the front uses the other axes")
    return used, notes


def dominates(a: Candidate, b: Candidate, axes: Sequence[str]) -> bool:
    """``a`` is no worse than ``b`` on every axis and better on at least one (all axes are minimised)."""
    va = [a.value(x) for x in axes]
    vb = [b.value(x) for x in axes]
    return all(x <= y for x, y in zip(va, vb)) and any(x < y for x, y in zip(va, vb))  # type: ignore[operator]


def pareto_front(candidates: Sequence[Candidate], axes: Sequence[str]) -> list[str]:
    """Ids of the candidates no other candidate dominates on ``axes``, in input order."""
    if not axes:
        return [c.id for c in candidates]
    return [c.id for c in candidates if not any(dominates(o, c, axes) for o in candidates if o is not c)]


def metric_order(preferences: Sequence[str]) -> list[tuple[str, str]]:
    """The order the pick ranks by: the contract's preferences, then the fixed tie-breaks."""
    order = [(m, "preference") for m in preferences]
    return order + [(m, "tie-break") for m in TIE_BREAKS if m not in preferences]


def rank(pool: Sequence[Candidate], preferences: Sequence[str], rel_tol: float = DEFAULT_REL_TOL) -> tuple[str | None, list[SelectionStep]]:
    """Lexicographic pick among ``pool`` (feasibility not checked here); returns the id and every step."""
    remaining = list(pool)
    steps: list[SelectionStep] = []
    first_used: str | None = None
    for metric, source in metric_order(preferences):
        if len(remaining) <= 1:
            break
        missing = [c for c in remaining if c.value(metric) is None]
        if missing:
            why = missing[0].figures[metric].provenance.split(":", 1)[-1] if metric in missing[0].figures else "not recorded"
            steps.append(
                SelectionStep(
                    metric=metric, source=source, used=False, note=f"skipped: unavailable for {len(missing)} of {len(remaining)} ({why})"
                )
            )
            continue
        values = {c.id: c.value(metric) or 0.0 for c in remaining}  # none missing: checked above
        best = min(values.values())
        tol = tolerance(metric, best, rel_tol)
        kept = [c for c in remaining if values[c.id] <= best + tol]
        steps.append(
            SelectionStep(
                metric=metric,
                source=source,
                used=True,
                best=best,
                tolerance=tol,
                kept=[c.id for c in kept],
                dropped=[c.id for c in remaining if c not in kept],
            )
        )
        first_used = first_used or metric
        remaining = kept
    if not remaining:
        return None, steps
    if len(remaining) > 1 and first_used is not None:
        remaining.sort(key=lambda c: c.value(first_used))  # type: ignore[arg-type,return-value]
    return remaining[0].id, steps


def choose(candidates: Sequence[Candidate], preferences: Sequence[str], rel_tol: float = DEFAULT_REL_TOL) -> Selection:
    """The contract's pick: feasible and eligible candidates only, then ``rank`` by the preferences."""
    pool = [c for c in candidates if c.feasible and c.eligible]
    notes = [f"{c.id} meets the contract but is not eligible: {c.ineligible_reason}" for c in candidates if c.feasible and not c.eligible]
    chosen, steps = rank(pool, preferences, rel_tol)
    selection = Selection(chosen=chosen, considered=[c.id for c in pool], steps=steps, rel_tolerance=rel_tol, notes=notes)
    if chosen is not None:
        picked = next(c for c in pool if c.id == chosen)
        selection.vs_fp32 = compare_to_fp32(picked, candidates, selection)
    return selection


def compare_to_fp32(chosen: Candidate, candidates: Sequence[Candidate], selection: Selection) -> Fp32Comparison | None:
    """Chosen vs the fastest fp32 candidate (p50) on its target, and why when the chosen is slower.

    "Slower" means a p50 more than the selection's tolerance above fp32's. The reason names what
    ruled the faster fp32 candidate out: the contract, its precision list, or the preference that
    ranked it lower.
    """
    fp32 = [c for c in candidates if c.precision == "fp32" and c.target == chosen.target]
    if not fp32:
        return None
    ref = min(fp32, key=lambda c: c.value("p50_ms"))  # type: ignore[arg-type,return-value]
    p50 = chosen.value("p50_ms") / ref.value("p50_ms")  # type: ignore[operator]
    p95 = chosen.value("p95_ms") / ref.value("p95_ms")  # type: ignore[operator]
    slower = chosen.id != ref.id and p50 > 1.0 + selection.rel_tolerance
    why = _why_slower(chosen, ref, selection) if slower else ""
    return Fp32Comparison(fp32_candidate=ref.id, p50_ratio=p50, p95_ratio=p95, slower=slower, why=why)


def _why_slower(chosen: Candidate, ref: Candidate, selection: Selection) -> str:
    if not ref.feasible:
        binding = ref.verdict.binding_clause or "a hard clause"
        return f"the faster fp32 candidate {ref.id} fails the contract ({binding})"
    if not ref.eligible:
        return f"the faster fp32 candidate {ref.id} is not eligible: {ref.ineligible_reason}"
    for step in selection.steps:
        if ref.id in step.dropped:
            return (
                f"{step.source} {step.metric} ranks before p50: {chosen.id} has {chosen.value(step.metric):.4g}, "
                f"fp32 {ref.id} {ref.value(step.metric):.4g} (tolerance {step.tolerance:.3g})"
            )
    return f"fp32 {ref.id} tied on every ranked metric and lost on the exact value of the first"


def off_front_note(chosen: Candidate, candidates: Sequence[Candidate], axes: Sequence[str], selection: Selection) -> str | None:
    """Why the pick is not on the Pareto front, or None when it is.

    The front spans every candidate on the front's axes only; the pick is made among feasible,
    eligible candidates by the contract's preferences with a tie tolerance, so a candidate can
    dominate it and still not be the pick. The note names that candidate and what ruled it out.
    """
    rival = next((c for c in candidates if dominates(c, chosen, axes)), None)
    if rival is None:
        return None
    if not rival.feasible:
        why = f"fails the contract ({rival.verdict.binding_clause})"
    elif not rival.eligible:
        why = f"is not eligible ({rival.ineligible_reason})"
    else:
        lost = next((s for s in selection.steps if rival.id in s.dropped), None)
        why = f"ranked lower on {lost.source} {lost.metric}" if lost else "lost the final tie-break"
        why += f" within the {selection.rel_tolerance:.0%} tie tolerance"
    return f"{chosen.id} is not on the Pareto front: {rival.id} dominates it on {', '.join(axes)} but {why}"
