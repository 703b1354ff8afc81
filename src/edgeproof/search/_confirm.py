"""Claims confirmed interleaved: the pick against fp32 and its close runners-up, in fresh session pairs, as the gate measures.

The race's one-after-another figures are screening only: under load they disagreed with interleaved
re-measurement by 20–30% (NOTES). Before a pick is reported, it is measured against the fastest
fp32 candidate and against every runner-up whose interval overlaps its own, interleaved through the
runner interface (``Runner.run_ab``, each arm at its own run point's settings). A rival the
contract's preference order favours on that evidence becomes the pick; if nothing beats fp32, fp32
is picked and the result says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from edgeproof.gate import RatioEstimate, paired_ratio, paired_ratio_of
from edgeproof.measure.interleaved import InterleaveOptions
from edgeproof.measure.runner import Prepared, ProfileOptions
from edgeproof.records import RunRecord, RuntimeSettings
from edgeproof.runners import Runner
from edgeproof.search._race import Ratio, binding_metric, bounds, certain_breaks, confirm_winner
from edgeproof.search._racing import Race
from edgeproof.search._records import Candidate, Confirmation, Fp32Comparison, RatioInterval, Selection
from edgeproof.search._select import DEFAULT_REL_TOL, tolerance

# Per comparison, as the gate measures (``gate.measure_pair``): fresh session pairs of alternating
# blocks, PAIRS at first and STEP more at a time while the comparison is open, up to MAX_PAIRS (the
# speed-up vs fp32) or MAX_RUNNER_UP_PAIRS (a runner-up), or the time budget. Each arm of a pair is
# timed for about ARM_PAIR_S seconds (at least MIN_SAMPLES samples) in blocks of 3 to 20: most of
# the noise is between pairs (fresh sessions, bursts of other load), so many short pairs pin a
# ratio down faster than a few long ones. With both sessions' spinning off a digits pair costs ~0.2 s
# (40 pairs in 7 s at load 4), so the reported speed-up may take up to MAX_PAIRS pairs.
PAIRS = 6
STEP = 2
MAX_PAIRS = 80
MAX_RUNNER_UP_PAIRS = 12
ARM_PAIR_S = 0.25
MIN_SAMPLES = 18
# The speed-up vs fp32 is a reported figure: pairs go on until its p50 interval lies within
# ±PRECISION of the ratio (log scale), so that two independent measurements of the same two files
# agree within about 3%; the binding metric's verdict is waited for up to MAX_RUNNER_UP_PAIRS pairs
# (p95 under other load may never settle).
PRECISION = 0.02
# Pairs stop being added when, projected to the most pairs a comparison gets, the p50 interval would
# still be wider than FUTILE × PRECISION (fresh sessions of some INT8 graphs are bimodal here).
FUTILE = 2.0
MAX_RUNNERS_UP = 2
Role = Literal["fp32", "runner-up"]
_QUANTILE = {"p50_ms": 0.5, "p95_ms": 0.95, "p99_ms": 0.99}


def interleave_plan(p50_ms: float, max_pairs: int = MAX_PAIRS) -> InterleaveOptions:
    """Pairs and blocks for one comparison, sized to the candidates' speed: blocks of 3 to 20
    samples, 6 to 20 blocks a session; warm-ups twice a block (5 to 30)."""
    samples = int(min(400, max(MIN_SAMPLES, ARM_PAIR_S * 1000.0 / max(p50_ms, 1e-3))))
    block = int(min(20, max(3, samples // 20)))
    blocks = int(min(20, max(6, samples // block)))
    return InterleaveOptions(
        pairs=PAIRS, blocks=blocks, block_size=block, warmup=min(30, max(5, 2 * block)), max_pairs=max_pairs, step=STEP
    )


def half_width(est: RatioEstimate) -> float:
    """Half the width of a ratio's 95% interval, relative (log scale): 0.02 is ±2%."""
    return (math.log(est.high) - math.log(est.low)) / 2.0


class StopRule:
    """When a comparison has pairs enough (``Decided``), and why it stopped (``why``).

    Its ratio on quantile ``q`` must be settled (wholly below 1, wholly above, or wholly within the
    tie tolerance ``rel_tol``) — waited for up to MAX_RUNNER_UP_PAIRS pairs when ``precision`` is
    given — and, with ``precision``, its p50 interval within ±precision. It stops early when:
    ``out_of_time`` says the budget is spent; ``seconds_left`` is shorter than the next step of pairs
    takes at the pace so far (the budget is kept, not overrun by a step); or, from
    MAX_RUNNER_UP_PAIRS pairs on, the interval's width projected to ``max_pairs`` pairs (shrinking as
    1/sqrt(pairs)) is still more than FUTILE times ``precision`` — more pairs would not narrow it
    enough to be worth their time."""

    def __init__(
        self,
        ab: InterleaveOptions,
        q: float,
        rel_tol: float,
        precision: float | None,
        out_of_time: Callable[[], bool] | None = None,
        seconds_left: Callable[[], float] | None = None,
    ) -> None:
        self.ab, self.q, self.limit, self.precision = ab, q, 1.0 + rel_tol, precision
        self.out_of_time, self.seconds_left = out_of_time, seconds_left
        self.started = time.monotonic()
        self.why = ""

    def __call__(self, base: list[list[float]], cand: list[list[float]]) -> bool:
        ab, n = self.ab, len(base)
        if self.out_of_time is not None and self.out_of_time():
            self.why = "the time budget was spent"
            return True
        per_pair = (time.monotonic() - self.started) / max(n, 1)
        if self.seconds_left is not None and n < ab.max_pairs and self.seconds_left() < per_pair * ab.step:
            self.why = f"{ab.step} more pairs (about {per_pair * ab.step:.0f} s) would not fit in the time budget left"
            return True
        est = paired_ratio_of(base, cand, ab.blocks, ab.block_size, self.q)
        settled = est.high < 1.0 or est.low > 1.0 or (est.low >= 1.0 / self.limit and est.high <= self.limit)
        if self.precision is None:
            self.why = "settled" if settled else ""
            return settled
        if not settled and n < MAX_RUNNER_UP_PAIRS:
            return False
        width = half_width(est if self.q == 0.5 else paired_ratio_of(base, cand, ab.blocks, ab.block_size, 0.5))
        if width <= math.log1p(self.precision):
            self.why = f"the p50 interval was within ±{self.precision:.0%}"
            return True
        projected = width * math.sqrt(n / ab.max_pairs)
        if n >= MAX_RUNNER_UP_PAIRS and projected > FUTILE * math.log1p(self.precision):
            self.why = (
                f"the p50 interval (±{math.expm1(width):.1%} after {n} pairs) would still be about ±{math.expm1(projected):.1%} "
                f"at {ab.max_pairs}: more pairs would not narrow it to ±{self.precision:.0%}"
            )
            return True
        if n >= ab.max_pairs:
            self.why = f"{ab.max_pairs} pairs, the most a comparison gets"
        return False


# The comparison's StopRule, under the name the gate's own stop rule has (``gate.regression_decided``).
stop_rule = StopRule


def measure_ratio(
    runner: Runner,
    preps: tuple[Prepared, Prepared],
    settings: tuple[RuntimeSettings, RuntimeSettings],
    options: ProfileOptions,
    p50_ms: float,
    q: float = 0.5,
    rel_tol: float = DEFAULT_REL_TOL,
    precision: float | None = PRECISION,
    out_of_time: Callable[[], bool] | None = None,
    seconds_left: Callable[[], float] | None = None,
) -> tuple[RunRecord, RunRecord, InterleaveOptions, str]:
    """A (baseline) and B interleaved in fresh session pairs through ``runner`` (``Runner.run_ab``,
    each arm at its own settings), pairs added until ``stop_rule`` says enough. The search confirms
    its pick this way, and a re-measurement of the same two files (``benchmarks/search_speed.py``)
    repeats it independently. ``p50_ms`` (the faster arm's, roughly) sizes the blocks; without
    ``precision`` (a decision only) at most MAX_RUNNER_UP_PAIRS pairs run. Returns both records,
    the layout and why the pairs stopped."""
    ab = interleave_plan(p50_ms, MAX_PAIRS if precision is not None else MAX_RUNNER_UP_PAIRS)
    decided = stop_rule(ab, q, rel_tol, precision, out_of_time, seconds_left)
    base, cand = runner.run_ab(preps[0], preps[1], settings, options, ab, decided)
    return base, cand, ab, decided.why


def overlaps(cand: Candidate, pick: Candidate, metric: str, rel_tol: float) -> bool:
    """Whether ``cand`` could be as good as ``pick`` on ``metric``: its optimistic bound within the
    pick's pessimistic bound plus the tie tolerance."""
    mine, theirs = bounds(cand, metric), bounds(pick, metric)
    if mine is None or theirs is None:
        return False
    return mine[0] <= theirs[1] + tolerance(metric, theirs[1], rel_tol)


@dataclass
class Confirmed:
    """What confirming one target's pick found: the pick (maybe changed), the comparisons, notes, records."""

    chosen: str
    confirmations: list[Confirmation] = field(default_factory=list)
    vs_fp32: Fp32Comparison | None = None
    notes: list[str] = field(default_factory=list)
    records: dict[str, RunRecord] = field(default_factory=dict)


def _ratio(base: RunRecord, cand: RunRecord, q: float) -> RatioInterval:
    est = paired_ratio(base, cand, q)
    return RatioInterval(ratio=est.ratio, low=est.low, high=est.high)


def _interleaved(
    race: Race, pick: Candidate, rival: Candidate, metric: str, precision: float | None
) -> tuple[RunRecord, RunRecord, InterleaveOptions, str]:
    """Rival (A) and pick (B) interleaved in fresh session pairs, each at its own run point's settings."""
    runners = race.runners
    a, b = race.entry(rival.id), race.entry(pick.id)
    options = replace(runners.options_for("timed"), scenario="single-stream")
    preps = (runners.prepared(a.built.variant.path, a.point, options), runners.prepared(b.built.variant.path, b.point, options))
    if any(p.scenario.name != "single-stream" for p in preps):
        preps = (
            runners.runner(a.point.target).prepare(a.built.variant.path, options),
            runners.runner(b.point.target).prepare(b.built.variant.path, options),
        )
    p50 = min(v for v in (pick.value("p50_ms"), rival.value("p50_ms")) if v is not None)
    return measure_ratio(
        runners.runner(b.point.target),
        preps,
        (runners.settings(a.point), runners.settings(b.point)),
        options,
        p50,
        _QUANTILE.get(metric, 0.5),
        race.rel_tol,
        precision,
        lambda: race.clock.out(keep_reserve=False),
        lambda: race.clock.budget_s - race.clock.elapsed_s,
    )


def _compare(race: Race, pick: Candidate, rival: Candidate, role: Role, metric: str, out: Confirmed) -> Confirmation:
    # the speed-up vs fp32 is a reported figure: measured to PRECISION; a runner-up needs a decision only
    precision = PRECISION if role == "fp32" else None
    base, cand, ab, stopped = _interleaved(race, pick, rival, metric, precision)
    ratios = {"p50_ms": _ratio(base, cand, 0.5), "p95_ms": _ratio(base, cand, 0.95), "p99_ms": _ratio(base, cand, 0.99)}
    as_tuples: dict[str, Ratio] = {k: (r.ratio, r.low, r.high) for k, r in ratios.items()}
    winner, why = confirm_winner(pick, rival, as_tuples, race.contract.preferences.minimize, race.rel_tol)
    pairs = base.interleave.pairs if base.interleave is not None else ab.pairs
    key = f"confirm-{pick.id}-vs-{rival.id}"
    out.records[f"{key}-a"], out.records[f"{key}-b"] = base, cand
    return Confirmation(
        pick=pick.id,
        rival=rival.id,
        role=role,
        p50=ratios["p50_ms"],
        p95=ratios["p95_ms"],
        pairs=pairs,
        method=f"interleaved, {pairs} fresh session pairs of {ab.blocks}×{ab.block_size} samples, single-stream"
        + (f", pairs added until the p50 interval was within ±{precision:.0%} (at most {ab.max_pairs})" if precision else "")
        + (f"; stopped: {stopped}" if stopped else ""),
        winner=winner,
        decided_by=why,
    )


def _can_take_over(race: Race, rival: Candidate) -> tuple[bool, str]:
    """Whether a rival that won may become the pick: eligible and, once measured in full, feasible."""
    if not rival.eligible:
        return False, f"{rival.id} is not eligible ({rival.ineligible_reason})"
    if rival.stage != "full":
        if race.clock.out(keep_reserve=False):
            return False, f"{rival.id} could not be measured in full within the time budget"
        entry = race.entry(rival.id)
        if not race.measure(entry, "full"):
            return False, f"{rival.id} could not run: {entry.failed}"
        rival = race.entry(rival.id).candidate  # type: ignore[assignment]
    if not rival.feasible:
        return False, f"{rival.id} does not meet the contract ({rival.verdict.binding_clause or 'a hard clause'})"
    return True, ""


def fastest_fp32(cands: list[Candidate]) -> Candidate | None:
    fp32 = [c for c in cands if c.precision == "fp32" and c.value("p50_ms") is not None]
    return min(fp32, key=lambda c: c.value("p50_ms")) if fp32 else None  # type: ignore[arg-type,return-value]


def confirm(race: Race, target: str, selection: Selection) -> Confirmed:
    """Confirm ``selection``'s pick on ``target`` interleaved; may change the pick (see the module docstring)."""
    assert selection.chosen is not None
    out = Confirmed(chosen=selection.chosen)
    cands = race.candidates(target)
    pick = race.entry(selection.chosen).candidate
    assert pick is not None
    if pick.kind == "simulated":
        out.notes.append("simulated: the board model has no run-to-run drift, so no interleaved confirmation is needed")
        return out
    prefs = race.contract.preferences.minimize
    metric = binding_metric([c for c in cands if c.stage == "full"], prefs, race.evaluated) or "p95_ms"
    rivals = [
        c
        for c in cands
        if c.id != pick.id
        and c.eligible
        and c.stage != "screened"
        and not certain_breaks(c)
        and (c.stage != "full" or c.feasible)
        and overlaps(c, pick, metric, race.rel_tol)
    ]
    rivals.sort(key=lambda c: bounds(c, metric) or (0.0, 0.0))
    if len(rivals) > MAX_RUNNERS_UP:
        out.notes.append(
            f"{len(rivals) - MAX_RUNNERS_UP} more runner(s)-up overlap the pick on {metric} "
            f"({', '.join(c.id for c in rivals[MAX_RUNNERS_UP:])}); the closest {MAX_RUNNERS_UP} were confirmed"
        )
    fp32 = fastest_fp32(cands)
    # fp32 first: the speed-up it measures is what the search reports; a runner-up that takes
    # over the pick is then confirmed against fp32 in turn
    queue: list[tuple[Candidate, Role]] = [(fp32, "fp32")] if fp32 is not None else []
    queue += [(c, "runner-up") for c in rivals[:MAX_RUNNERS_UP]]
    while queue:
        rival, role = queue.pop(0)
        if rival.id == pick.id:
            continue
        if race.clock.out(keep_reserve=False):
            out.notes.append(f"{pick.id} vs {rival.id} not confirmed interleaved: the time budget was spent")
            continue
        race.report(f"confirming {pick.id} against {rival.id} interleaved", 0.0)
        found = _compare(race, pick, rival, role, metric, out)
        out.confirmations.append(found)
        if found.winner != rival.id:
            continue
        ok, why = _can_take_over(race, rival)
        if not ok:
            found.note = f"{rival.id} wins on evidence but stays out: {why}"
            continue
        taken = race.entry(rival.id).candidate
        assert taken is not None
        found.note = f"{rival.id} becomes the pick ({found.decided_by})"
        pick = taken
        out.chosen = pick.id
        if fp32 is not None and pick.id != fp32.id and not any({c.pick, c.rival} == {pick.id, fp32.id} for c in out.confirmations):
            queue.insert(0, (fp32, "fp32"))
    out.vs_fp32 = _vs_fp32(out, fp32, pick)
    if fp32 is not None and out.chosen == fp32.id and selection.chosen != fp32.id:
        lost = next(c for c in out.confirmations if c.rival == fp32.id and c.winner == fp32.id)
        out.notes.append(
            f"nothing beats fp32 on {target}: interleaved, {lost.pick} ran p50 ×{lost.p50.ratio:.3f} "
            f"(95% CI {lost.p50.low:.3f}–{lost.p50.high:.3f}) of {lost.rival}; fp32 ({fp32.id}) is the pick"
        )
    return out


def _vs_fp32(out: Confirmed, fp32: Candidate | None, pick: Candidate) -> Fp32Comparison | None:
    """The pick against fp32 from the interleaved comparison between exactly these two, if one ran."""
    if fp32 is None:
        return None
    if pick.id == fp32.id:
        return Fp32Comparison(fp32_candidate=fp32.id, p50_ratio=1.0, p95_ratio=1.0, slower=False, method="the pick is fp32")
    found = next((c for c in out.confirmations if {c.pick, c.rival} == {pick.id, fp32.id}), None)
    if found is None:
        return None
    p50, p95 = found.p50, found.p95
    if found.pick != pick.id:  # measured the other way round (fp32 was the pick then): invert
        p50 = RatioInterval(ratio=1 / p50.ratio, low=1 / p50.high, high=1 / p50.low)
        p95 = RatioInterval(ratio=1 / p95.ratio, low=1 / p95.high, high=1 / p95.low)
    slower = p50.low > 1.0
    return Fp32Comparison(
        fp32_candidate=fp32.id,
        p50_ratio=p50.ratio,
        p95_ratio=p95.ratio,
        slower=slower,
        why=(found.note or f"the contract's preference order: {found.decided_by}") if slower else "",
        method=found.method,
        p50_interval=(p50.low, p50.high),
        p95_interval=(p95.low, p95.high),
    )
