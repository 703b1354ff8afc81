"""Pure infeasibility explanation: best value per hard clause, the binding clause, the escalation step that applies.

The binding clause is the clause no candidate meets (the one furthest from its budget when
several are unmet; a clause no candidate has data for counts as furthest, since no variant on
this target can meet it). When every clause is met by some candidate but none meets all, it is
the clause that removes the candidate the preferences would otherwise have picked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from edgeproof.contract import Contract, EscalationStep
from edgeproof.outcome import Outcome
from edgeproof.records import ClauseResult
from edgeproof.search._records import Candidate, ClauseBest, EscalationAdvice, Explanation, Skipped
from edgeproof.search._select import DEFAULT_REL_TOL, rank

# Which escalation options can move each kind of clause, most direct first.
CLAUSE_OPTIONS: dict[str, tuple[str, ...]] = {
    "latency": (
        "better-quantization",
        "smaller-backbone",
        "pruning",
        "different-accelerator",
        "power-mode",
        "firmware-update",
        "runtime-update",
        "relax-budget",
        "waiver",
    ),
    "accuracy": ("better-quantization", "mixed-precision", "relax-budget", "waiver"),
    "memory": ("better-quantization", "smaller-backbone", "pruning", "runtime-update", "relax-budget", "waiver"),
    "energy": (
        "power-mode",
        "different-accelerator",
        "better-quantization",
        "smaller-backbone",
        "pruning",
        "firmware-update",
        "relax-budget",
        "waiver",
    ),
    "thermal": ("power-mode", "firmware-update", "different-accelerator", "relax-budget", "waiver"),
    "fallback": ("different-accelerator", "runtime-update", "firmware-update", "relax-budget", "waiver"),
    # no candidate has data for the clause: only measuring elsewhere or waiving it helps
    "no-data": ("different-accelerator", "waiver"),
}
_BUDGET_KINDS = {
    "p95_ms": "latency",
    "p99_ms": "latency",
    "load_time_ms": "latency",
    "peak_rss_mib": "memory",
    "model_size_mib": "memory",
    "energy_mj_per_inference": "energy",
    "sustained_w": "energy",
    "temperature_c": "thermal",
    "cpu_fallback_frac": "fallback",
}


def clause_kind(clause: str) -> str:
    """latency / accuracy / memory / energy / thermal / fallback for a clause id."""
    if clause.startswith("slices."):
        return "accuracy"
    return _BUDGET_KINDS[clause.removeprefix("budgets.")]


def _met(result: ClauseResult, allow_unverified: bool) -> bool:
    return result.status in ("pass", "waived") or (result.status == "unverified" and allow_unverified)


def _relative_margin(result: ClauseResult) -> float:
    """Margin over budget as a fraction of it; no data is -inf (it cannot be met here)."""
    if result.margin is None or result.budget is None:
        return -math.inf
    if result.budget > 0:
        return result.margin / result.budget
    return 0.0 if result.margin >= 0 else -math.inf


def clause_bests(candidates: Sequence[Candidate]) -> list[ClauseBest]:
    """For every hard clause: the lowest value any candidate reached, by whom, and how many met it."""
    by_clause: dict[str, list[tuple[Candidate, ClauseResult]]] = {}
    for cand in candidates:
        for result in cand.verdict.clauses:
            by_clause.setdefault(result.clause, []).append((cand, result))
    bests = []
    for clause, rows in by_clause.items():
        valued = [(c, r) for c, r in rows if r.value is not None]
        first = rows[0][1]
        met = sum(_met(r, c.verdict.allow_unverified) for c, r in rows)
        if valued:
            cand, result = min(valued, key=lambda cr: cr[1].value)  # type: ignore[arg-type,return-value]
            bests.append(
                ClauseBest(
                    clause=clause,
                    budget=first.budget or 0.0,
                    unit=first.unit,
                    best_value=result.value,
                    best_candidate=cand.id,
                    met_by=met,
                    of=len(rows),
                )
            )
        else:
            bests.append(
                ClauseBest(
                    clause=clause,
                    budget=first.budget or 0.0,
                    unit=first.unit,
                    best_value=None,
                    best_candidate=None,
                    met_by=met,
                    of=len(rows),
                    note=f"no candidate has data ({first.provenance})",
                )
            )
    return bests


def _closest(candidates: Sequence[Candidate]) -> Candidate:
    """Fewest unmet clauses, then the smallest summed relative shortfall."""

    def shortfall(c: Candidate) -> tuple[int, float]:
        unmet = [r for r in c.verdict.clauses if not _met(r, c.verdict.allow_unverified)]
        return len(unmet), sum(-_relative_margin(r) for r in unmet)

    return min(candidates, key=shortfall)


def _worst_unmet(cand: Candidate) -> ClauseResult:
    unmet = [r for r in cand.verdict.clauses if not _met(r, cand.verdict.allow_unverified)]
    return min(unmet, key=_relative_margin)


def _fmt(value: float | None, unit: str) -> str:
    return "no data" if value is None else f"{value:.4g} {unit}"


def explain_infeasible(
    target: str,
    candidates: Sequence[Candidate],
    contract: Contract,
    tried: Sequence[str] = (),
    rel_tol: float = DEFAULT_REL_TOL,
) -> Explanation:
    """Why no eligible candidate on ``target`` meets the contract, and whose move it is next.

    ``tried`` names escalation options the search itself already exercised (e.g.
    better-quantization, mixed-precision); the step that applies is the first in the contract's
    order offering an option for the binding clause's kind that the search did not already try.
    """
    pool = [c for c in candidates if c.eligible] or list(candidates)
    notes = []
    if len(pool) < len(candidates):
        notes.append(f"{len(candidates) - len(pool)} candidate(s) not eligible under [model] precisions are left out")
    bests = clause_bests(pool)
    unmet = [b for b in bests if b.met_by == 0]
    by_id = {c.id: c for c in pool}
    if unmet:

        def furthest(b: ClauseBest) -> float:
            if b.best_candidate is None:
                return -math.inf
            result = next(r for r in by_id[b.best_candidate].verdict.clauses if r.clause == b.clause)
            return _relative_margin(result)

        binding = min(unmet, key=furthest)
        closest = by_id[binding.best_candidate] if binding.best_candidate else _closest(pool)
        others = [b.clause for b in unmet if b is not binding]
        why = (
            f"no candidate meets {binding.clause}: the best is {_fmt(binding.best_value, binding.unit)} "
            f"({binding.best_candidate or 'none'}) against a budget of {binding.budget:.4g} {binding.unit}"
        )
        if others:
            why += f"; also unmet by every candidate: {', '.join(others)}"
    else:
        best_id, _ = rank(pool, contract.preferences.minimize, rel_tol)
        closest = by_id[best_id] if best_id else _closest(pool)
        worst = _worst_unmet(closest)
        binding = next(b for b in bests if b.clause == worst.clause)
        why = (
            f"every clause is met by some candidate, but none meets all; the candidate the preferences rank first, "
            f"{closest.id} ({closest.name}), fails {worst.clause} at {_fmt(worst.value, worst.unit)} "
            f"against {worst.budget:.4g} {worst.unit}"
        )
    kind = "no-data" if binding.best_value is None else clause_kind(binding.clause)
    advice, advice_note = escalation_for(kind, contract.escalation, tried)
    return Explanation(
        target=target,
        clauses=bests,
        binding_clause=binding.clause,
        why=why,
        closest_candidate=closest.id,
        closest_fails=[r.clause for r in closest.verdict.clauses if not _met(r, closest.verdict.allow_unverified)],
        escalation=advice,
        escalation_note=advice_note,
        notes=notes,
    )


def decide_target(
    target: str,
    group: Sequence[Candidate],
    chosen: str | None,
    not_measured: Sequence[Skipped],
    time_budget_s: float,
    elapsed_s: float,
    needed_s: float | None = None,
) -> tuple[Outcome, list[str]]:
    """Whether ``target`` passes, fails on evidence or could not be decided, and what would decide it.

    ``group`` holds the candidates judged on evidence (measured in full, or breaking a hard budget
    with certainty). Pass when a candidate was chosen. Undecided when ``group`` is empty (the time
    budget or ``--max-candidates`` ran out first, or none could run; ``needed_s`` estimates the
    ``--time-budget`` that would finish), or when an eligible candidate fails no clause on evidence
    but lacks data for one. Else fail: every candidate judged fails on evidence (or is not eligible).
    """
    if chosen is not None:
        return "pass", []
    if not group:
        return "undecided", _nothing_measured(target, not_measured, time_budget_s, elapsed_s, needed_s)
    by_reason: dict[str, list[str]] = {}
    for cand in group:
        if cand.eligible and cand.verdict.outcome == "undecided":
            for why in cand.verdict.undecided_because:
                by_reason.setdefault(why, []).append(cand.id)
    if not by_reason:
        return "fail", []
    return "undecided", [f"nothing fails on evidence for {', '.join(ids)}, but {why}" for why, ids in by_reason.items()]


def _nothing_measured(
    target: str, not_measured: Sequence[Skipped], time_budget_s: float, elapsed_s: float, needed_s: float | None = None
) -> list[str]:
    """Why no candidate on ``target`` was measured, one line per cause, each with what would measure one."""
    causes: dict[str, list[Skipped]] = {}
    for s in not_measured:
        cause = "time" if s.reason.startswith("time budget") else "cap" if "max-candidates" in s.reason else "run"
        causes.setdefault(cause, []).append(s)
    lines = []
    for cause, items in causes.items():
        names = ", ".join(f"{s.id} {s.name}" for s in items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
        if cause == "time":
            rerun = (
                f"rerun with --time-budget {math.ceil(needed_s)} or more to finish (estimated from the time each stage took)"
                if needed_s is not None and needed_s > elapsed_s
                else f"rerun with --time-budget above {math.ceil(elapsed_s)} to measure more"
            )
            lines.append(
                f"the time budget ({time_budget_s:g} s) was spent before any candidate on {target} was measured in full "
                f"({len(items)} not measured in full: {names}); the search stopped after {elapsed_s:.0f} s, so {rerun}"
            )
        elif cause == "cap":
            lines.append(f"--max-candidates was reached before any candidate on {target} ({len(items)} not measured: {names}); raise it")
        else:
            lines.append(f"no candidate on {target} could run ({len(items)}: {names}): {items[0].reason}")
    return lines or [f"no candidate on {target} was measured"]


def escalation_for(kind: str, steps: Sequence[EscalationStep], tried: Sequence[str] = ()) -> tuple[EscalationAdvice | None, str]:
    """The first escalation step with an option for ``kind`` the search has not tried; else the first with any."""
    wanted = CLAUSE_OPTIONS[kind]
    applicable = [(s, [o for o in s.options if o in wanted]) for s in steps]
    applicable = [(s, opts) for s, opts in applicable if opts]
    if not applicable:
        listed = ", ".join(wanted)
        return None, f"no [[escalation]] step in the contract lists an option for a {kind} clause ({listed})"
    for step, opts in applicable:
        fresh = [o for o in opts if o not in tried]
        if fresh:
            return EscalationAdvice(owner=step.owner, options=fresh, tried_by_search=[o for o in opts if o in tried], note=step.note), ""
    step, opts = applicable[0]
    note = "every applicable option was already tried by this search"
    return EscalationAdvice(owner=step.owner, options=opts, tried_by_search=opts, note=step.note), note
