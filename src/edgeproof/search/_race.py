"""Pure racing rules: each candidate's interval per stage, what prunes it, what the pick still needs, who wins a confirmation.

A candidate moves through three stages: ``screened`` (one short session, no cold start), ``timed``
(the full fresh-session timing) and ``full`` (plus cold start in fresh processes, per-node placement
and the evaluation on the slices, once per variant and graph optimisation level). Its latency interval at each stage is the record's 95% interval
widened by the drift expected between runs made one after another at different times: one session
misses session-to-session variance entirely (consecutive single-session p50s spanned 0.94–1.04 on a
quiet host, and sequential runs under load disagreed with interleaved re-measurement by 20–30%; see
NOTES), so a screening interval is widened by 15%, a multi-session one by 5%. A simulated board
does not drift.

A candidate is pruned only on certain evidence: when a hard budget breaks with interval certainty
(the lower bound over a latency budget, from enough samples to say it; a slice floor, the model
size or the interface, which are exact), or when its optimistic bound on the binding quantity loses to another candidate's
pessimistic bound by more than the pick's tie tolerance. The binding quantity is the first metric
in the contract's preference order (then the fixed tie-breaks) that every candidate has; a metric
unavailable on the target (energy without a meter) is skipped as the pick skips it; one that only a
later stage measures (peak RSS, load time, placement; accuracy before evaluation) stops preference
pruning, since the pick would rank by it first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from edgeproof.search._records import Candidate
from edgeproof.search._select import DEFAULT_REL_TOL, metric_order, tolerance

# Relative drift added to each side of a latency interval, by stage (see the module docstring).
DRIFT = {"screened": 0.15, "timed": 0.05, "full": 0.05}
LATENCY_METRICS = frozenset({"p50_ms", "p90_ms", "p95_ms", "p99_ms"})
# Figures only the full treatment measures (cold start, per-node placement).
FULL_ONLY = frozenset({"load_time_ms", "peak_rss_mib", "cpu_fallback_frac"})
_LATENCY_CLAUSES = {"budgets.p95_ms": "p95_ms", "budgets.p99_ms": "p99_ms"}
_QUANTILES = {"p50_ms": 0.5, "p90_ms": 0.9, "p95_ms": 0.95, "p99_ms": 0.99}
# A tail quantile's lower bound is evidence only with this many samples beyond it: from 40 samples
# the p99 interval is the largest few samples, and one burst of other load puts them anywhere.
MIN_TAIL_SAMPLES = 5
_EXACT_CLAUSES = ("slices.", "model.", "budgets.model_size_mib")

Prune = tuple[str, str]  # (kind: "slower" | "budget", reason)


def bounds(cand: Candidate, metric: str) -> tuple[float, float] | None:
    """(optimistic, pessimistic) value of ``metric`` for ``cand`` at its stage; None without a value."""
    figure = cand.figures.get(metric)
    if figure is None or figure.value is None:
        return None
    if metric not in LATENCY_METRICS:
        return figure.value, figure.value
    low, high = figure.interval or (figure.value, figure.value)
    drift = 0.0 if cand.kind == "simulated" else DRIFT[cand.stage]
    return low * (1.0 - drift), high * (1.0 + drift)


def estimable(cand: Candidate, metric: str) -> bool:
    """Whether ``cand``'s samples put at least ``MIN_TAIL_SAMPLES`` beyond the quantile ``metric``
    (always for a simulated board and for figures that are not latency quantiles)."""
    q = _QUANTILES.get(metric)
    if q is None or cand.kind == "simulated":
        return True
    return cand.samples * (1.0 - q) >= MIN_TAIL_SAMPLES


def pending(cand: Candidate, metric: str, evaluated: bool = True) -> bool:
    """Whether a later stage of ``cand`` will measure ``metric`` (so a missing value says nothing yet).

    Accuracy is evaluated with the full treatment (``evaluated`` is False when the search has no
    data: accuracy then never comes)."""
    if metric == "accuracy_drop_pp":
        return evaluated and cand.stage != "full"
    return metric in FULL_ONLY and cand.stage != "full"


def binding_metric(cands: Sequence[Candidate], preferences: Sequence[str], evaluated: bool = True) -> str | None:
    """The metric the pick ranks by first among ``cands``, or None while a later stage could change it."""
    if not cands:
        return None
    for metric, _ in metric_order(preferences):
        missing = [c for c in cands if c.value(metric) is None]
        if not missing:
            return metric
        if any(pending(c, metric, evaluated) for c in missing):
            return None
    return None


def certain_breaks(cand: Candidate) -> list[str]:
    """Hard clauses ``cand`` breaks on evidence: any failing clause once measured in full; before
    that, a latency budget below the interval's optimistic bound, or an exact clause."""
    if cand.stage == "full":
        return [r.clause for r in cand.verdict.clauses if r.status == "fail"]
    broken = []
    for result in cand.verdict.clauses:
        if result.status != "fail":
            continue
        metric = _LATENCY_CLAUSES.get(result.clause)
        if metric is not None:
            if not estimable(cand, metric):
                continue
            span = bounds(cand, metric)
            if span is not None and result.budget is not None and span[0] > result.budget:
                broken.append(result.clause)
        elif result.clause.startswith(_EXACT_CLAUSES):
            broken.append(result.clause)
    return broken


def _break_reason(cand: Candidate, clauses: list[str]) -> str:
    first = next(r for r in cand.verdict.clauses if r.clause == clauses[0])
    metric = _LATENCY_CLAUSES.get(first.clause)
    if metric is not None and cand.stage != "full":
        span = bounds(cand, metric)
        assert span is not None
        what = f"{first.clause}: at least {span[0]:.4g} {first.unit} ({cand.stage}) > {first.budget:.4g} {first.unit}"
    else:
        value = "no data" if first.value is None else f"{first.value:.4g} {first.unit}"
        what = f"{first.clause}: {value} against {first.budget:.4g} {first.unit}"
    more = f" (+{len(clauses) - 1} more)" if len(clauses) > 1 else ""
    return f"breaks {what}{more}"


def prune(
    cands: Sequence[Candidate], preferences: Sequence[str], rel_tol: float = DEFAULT_REL_TOL, evaluated: bool = True
) -> dict[str, Prune]:
    """Which candidates the race stops measuring, each with its kind and a reason naming the evidence.

    Only eligible candidates that break nothing can prune others on speed: a rival that later fails
    the contract prunes nobody once it is known to (call this again after every measurement).
    """
    out: dict[str, Prune] = {}
    for cand in cands:
        broken = certain_breaks(cand)
        if broken:
            out[cand.id] = ("budget", _break_reason(cand, broken))
    metric = binding_metric(cands, preferences, evaluated)
    if metric is None:
        return out
    rivals = [c for c in cands if c.eligible and c.id not in out and (c.stage != "full" or c.feasible)]
    for cand in cands:
        if cand.id in out:
            continue
        mine, floor_note = bounds(cand, metric), ""
        if not estimable(cand, metric):
            # too few samples for the tail's own lower bound; a tail quantile is never below the
            # median, so the median's lower bound is one (a 224² model's 20-sample screen needs it)
            median = bounds(cand, "p50_ms")
            if median is None:
                continue
            mine, floor_note = median, ", from its p50: too few samples for its own"
        assert mine is not None
        best = None
        for rival in rivals:
            if rival is cand:
                continue
            theirs = bounds(rival, metric)
            assert theirs is not None
            limit = theirs[1] + tolerance(metric, theirs[1], rel_tol)
            if mine[0] > limit and (best is None or limit < best[1]):
                best = (rival, limit, theirs[1])
        if best is not None:
            rival, limit, pessimistic = best
            unit = cand.figures[metric].unit
            out[cand.id] = (
                "slower",
                f"{metric} at least {mine[0]:.4g} {unit} ({cand.stage}{floor_note}) vs at most {pessimistic:.4g} {unit} for {rival.id} "
                f"({rival.stage}), beyond the {rel_tol:.0%} tie tolerance",
            )
    return out


def promise(cand: Candidate, metric: str | None) -> float:
    """Sort key, most promising first: the optimistic bound on the binding quantity (p50 when none yet)."""
    span = bounds(cand, metric or "p50_ms") or bounds(cand, "p50_ms")
    return span[0] if span is not None else math.inf


def still_needed(
    pool: Sequence[Candidate], preferences: Sequence[str], rel_tol: float = DEFAULT_REL_TOL, evaluated: bool = True
) -> list[str]:
    """Candidates of ``pool`` that must be measured in full before the pick is decided.

    Walks the pick's lexicographic order over ``pool`` (eligible candidates not known to fail): a
    metric some remaining candidate will only have after its full treatment means those candidates
    need it; at the end, the one the order puts first needs it (its verdict rests on cold start and
    placement). Empty when the pick is decided.
    """
    remaining = list(pool)
    first_used: str | None = None
    for metric, _ in metric_order(preferences):
        if len(remaining) <= 1:
            break
        missing = [c for c in remaining if c.value(metric) is None]
        waiting = [c.id for c in missing if pending(c, metric, evaluated)]
        if waiting:
            return waiting
        if missing:
            continue
        best = min(c.value(metric) for c in remaining)  # type: ignore[type-var]
        tol = tolerance(metric, best, rel_tol)  # type: ignore[arg-type]
        remaining = [c for c in remaining if c.value(metric) <= best + tol]  # type: ignore[operator]
        first_used = first_used or metric
    if not remaining:
        return []
    if first_used is not None:
        remaining.sort(key=lambda c: c.value(first_used))  # type: ignore[arg-type,return-value]
    top = remaining[0]
    return [] if top.stage == "full" else [top.id]


Ratio = tuple[float, float, float]  # (ratio, low, high) of pick / rival


def confirm_winner(
    pick: Candidate,
    rival: Candidate,
    ratios: Mapping[str, Ratio],
    preferences: Sequence[str],
    rel_tol: float = DEFAULT_REL_TOL,
    fmt: Callable[[float], str] = lambda v: f"{v:.3f}",
) -> tuple[str | None, str]:
    """Who the contract's preference order favours between the pick and a rival measured
    interleaved: on a latency metric the interleaved ratio decides when its interval excludes 1
    (else the two tie on it); on the others the candidates' own figures decide, with the pick's tie
    tolerance. Returns the winner's id (None for a tie on every metric) and what decided it."""
    for metric, source in metric_order(preferences):
        if metric in ratios:
            ratio, low, high = ratios[metric]
            where = f"interleaved {metric.removesuffix('_ms')} ×{fmt(ratio)} (95% CI {fmt(low)}–{fmt(high)})"
            if high < 1.0:
                return pick.id, f"{source} {metric}: {pick.id} faster, {where}"
            if low > 1.0:
                return rival.id, f"{source} {metric}: {rival.id} faster, {where}"
            continue
        a, b = pick.value(metric), rival.value(metric)
        if a is None or b is None:
            continue
        best = min(a, b)
        tol = tolerance(metric, best, rel_tol)
        if a > best + tol:
            return rival.id, f"{source} {metric}: {rival.id} has {b:.4g}, {pick.id} {a:.4g} (tolerance {tol:.3g})"
        if b > best + tol:
            return pick.id, f"{source} {metric}: {pick.id} has {a:.4g}, {rival.id} {b:.4g} (tolerance {tol:.3g})"
    return None, "tied on every metric compared"
