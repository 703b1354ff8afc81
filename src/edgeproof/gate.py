"""Release gate: contract verdict plus statistical regression checks against a baseline, per target."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
from scipy import stats as sps

from edgeproof.errors import RecordError
from edgeproof.measure.interleaved import InterleaveOptions
from edgeproof.measure.reference import normalised_run
from edgeproof.measure.runner import ProfileOptions
from edgeproof.model import Model, same_interface
from edgeproof.records import ClauseResult, Figure, GateRegression, RunRecord, RuntimeSettings, Verdict, outcome_of

Progress = Callable[[str, float], None]
CONFIDENCE = 0.95
# Record mode's latency regression clauses also ask that the slowdown be significant at this level,
# one-sided (``regression_fails``).
REGRESSION_ALPHA = 0.01
# Accuracy: a slice fails when the paired test says the candidate is worse at this level.
ACCURACY_ALPHA = 0.05


@dataclass(frozen=True)
class RatioEstimate:
    """candidate / baseline for one statistic, with a 95% interval."""

    metric: str
    ratio: float
    low: float
    high: float
    method: str
    units: int
    # degrees of freedom of the interval's t quantile; None: a normal interval
    df: float | None = None

    def one_sided_low(self, alpha: float = REGRESSION_ALPHA) -> float:
        """The ratio's one-sided (1 - alpha) lower bound, from the same standard error as its 95%
        interval (log scale, the interval's lower half; its t quantile where it had one)."""
        if self.low <= 0.0 or not math.isfinite(self.low):
            return 0.0
        two_sided = float(sps.norm.ppf(0.5 + CONFIDENCE / 2) if self.df is None else sps.t.ppf(0.5 + CONFIDENCE / 2, self.df))
        one_sided = float(sps.norm.ppf(1 - alpha) if self.df is None else sps.t.ppf(1 - alpha, self.df))
        se = (math.log(self.ratio) - math.log(self.low)) / two_sided
        return math.exp(math.log(self.ratio) - one_sided * se)

    def describe(self) -> str:
        """Plain words: ``3.2% slower (95% CI 1.1% to 5.0%)``."""
        change = self.ratio - 1.0
        word = "slower" if change > 0 else "faster"
        return f"{abs(change):.1%} {word} (95% CI {self.low - 1:+.1%} to {self.high - 1:+.1%}, {self.method})"


def _t_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and Student-t interval of log ratios."""
    mean = float(values.mean())
    if len(values) < 2:
        return mean, -math.inf, math.inf
    half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def _exp(metric: str, mean: float, lo: float, hi: float, method: str, units: int, df: float | None = None) -> RatioEstimate:
    return RatioEstimate(metric, math.exp(mean), math.exp(lo), math.exp(hi), method, units, df)


def is_interleaved_pair(base: RunRecord, cand: RunRecord) -> bool:
    a, b = base.interleave, cand.interleave
    return a is not None and b is not None and a.partner_run_id == cand.run_id and b.partner_run_id == base.run_id


def paired_ratio_of(
    base_sessions: list[list[float]], cand_sessions: list[list[float]], blocks: int, block_size: int, q: float
) -> RatioEstimate:
    """Ratio from interleaved blocks. The centre (q = 0.5) uses per-block median ratios: their median
    within each session pair, then a t interval over pairs, floored by the t interval over all blocks.
    A tail quantile uses each pair's pooled quantile ratio, with a t interval over pairs."""
    metric = f"p{round(q * 100)}"
    per_pair, per_block = [], []
    for sa, sb in zip(base_sessions, cand_sessions):
        a = np.asarray(sa).reshape(blocks, block_size)
        b = np.asarray(sb).reshape(blocks, block_size)
        if q == 0.5:
            r = np.log(np.median(b, axis=1) / np.median(a, axis=1))
            per_block.extend(r.tolist())
            per_pair.append(float(np.median(r)))
        else:
            per_pair.append(float(np.log(np.quantile(b, q) / np.quantile(a, q))))
    mean, lo, hi = _t_interval(np.asarray(per_pair))
    if per_block:
        _, b_lo, b_hi = _t_interval(np.asarray(per_block))
        half_blocks = (b_hi - b_lo) / 2
        lo, hi = min(lo, mean - half_blocks), max(hi, mean + half_blocks)
    return _exp(metric, mean, lo, hi, f"interleaved, {len(per_pair)} session pairs", len(per_pair), max(1, len(per_pair) - 1))


def regression_decided(
    p50_pct: float, p95_pct: float, blocks: int, block_size: int
) -> Callable[[list[list[float]], list[list[float]]], bool]:
    """Whether interleaved sessions settle the centre and p95 regression clauses: each ratio's
    interval lies wholly above its limit (a regression) or wholly at or below it (no regression).
    The gate adds session pairs while this is False (``InterleaveOptions.max_pairs``)."""
    limits = {0.5: 1.0 + p50_pct / 100.0, 0.95: 1.0 + p95_pct / 100.0}

    def decided(base_sessions: list[list[float]], cand_sessions: list[list[float]]) -> bool:
        for q, limit in limits.items():
            est = paired_ratio_of(base_sessions, cand_sessions, blocks, block_size, q)
            if est.low <= limit < est.high:
                return False
        return True

    return decided


def paired_ratio(base: RunRecord, cand: RunRecord, q: float) -> RatioEstimate:
    layout = base.interleave
    assert layout is not None, "paired_ratio needs an interleaved pair (is_interleaved_pair)"
    return paired_ratio_of(
        [s.samples_ms for s in base.sessions], [s.samples_ms for s in cand.sessions], layout.blocks, layout.block_size, q
    )


@dataclass(frozen=True)
class BetweenRun:
    """How far two runs of the same model on one host drift apart, as the standard deviation of
    log(run_b / run_a): per raw latency quantile (``sd_log``), and for the p50 normalised by the
    reference workload (``normalised_sd_log``: the whole A/A spread, sessions' own spread included).
    Each comes from A/A runs in the history for this host or a stated default."""

    sd_log: dict[str, float]
    source: str  # "history" or "default"
    pairs: int  # A/A pairs it was measured from (below MIN_AA_PAIRS: the default was used)
    normalised_sd_log: float = 0.0
    normalised_source: str = "default"
    normalised_pairs: int = 0

    def describe(self) -> str:
        """Where the raw term came from."""
        if self.source == "history":
            return f"between-run spread measured from {self.pairs} A/A run pairs in the history for this host"
        return (
            f"between-run spread: stated default (consecutive runs' p50 ratios 0.94–1.04, p95 0.88–1.09 on a 2-core host; "
            f"{self.pairs} of {MIN_AA_PAIRS} A/A run pairs for this host in the history)"
        )

    def describe_normalised(self) -> str:
        """Where the normalised p50's term came from."""
        sd = f"sd {self.normalised_sd_log:.1%} in log"
        if self.normalised_source == "history":
            return f"between-run term {sd}, the spread of {self.normalised_pairs} A/A run pairs with the reference workload in the history for this host"
        return (
            f"between-run term {sd}: stated default (A/A spread of consecutive 3-session runs' model/reference p50 on a 2-core host "
            f"at load average 11–14; {self.normalised_pairs} of {MIN_AA_PAIRS} A/A run pairs with the reference workload for this host in the history)"
        )


# From NOTES.md (40 fresh runs, 2.5–97.5% of consecutive runs' ratios): p50 0.94–1.04 → half-width
# 0.050 in log → sd 0.026; p95 0.88–1.09 → sd 0.055; p99 was not measured: p95's, widened by 30%.
DEFAULT_SD_LOG = {"p50": 0.026, "p95": 0.055, "p99": 0.072}
# Measured 2026-12-02 08:00–08:11 UTC on this 2-core host at load average 11–14 by
# benchmarks/gate_power.py --record-mode (53 A/A pairs of consecutive `check`-like runs of the digits
# model, 3 sessions each, the reference probe after each session): sd of the log p50 ratio 0.026
# normalised by the reference, 0.0695 raw. This is the whole A/A spread (the sessions' own included).
DEFAULT_NORMALISED_SD_LOG = 0.026
MIN_AA_PAIRS = 10


def default_between_run(pairs: int = 0, normalised_pairs: int = 0) -> BetweenRun:
    return BetweenRun(
        sd_log=dict(DEFAULT_SD_LOG),
        source="default",
        pairs=pairs,
        normalised_sd_log=DEFAULT_NORMALISED_SD_LOG,
        normalised_source="default",
        normalised_pairs=normalised_pairs,
    )


def _env_key(record: RunRecord) -> tuple:
    env = record.env
    return (env.hostname, env.cpu_model, env.cpu_cores, env.onnxruntime, record.target.id, record.settings.model_dump_json())


def reference_mismatch(base: RunRecord, cand: RunRecord) -> str | None:
    """Why the two runs cannot be compared as model/reference (None when they can)."""
    missing = [side for side, r in (("baseline", base), ("candidate", cand)) if r.reference is None]
    if missing:
        return (
            f"the {' and the '.join(missing)} record{'s have' if len(missing) > 1 else ' has'} no reference workload "
            "(written by an older edgeproof, or not a single-stream host run)"
        )
    assert base.reference is not None and cand.reference is not None
    if base.reference.workload != cand.reference.workload:
        return f"the records timed different reference workloads ({base.reference.workload} vs {cand.reference.workload})"
    return None


def between_run_from_history(runs: list[RunRecord], like: RunRecord) -> BetweenRun:
    """The between-run spread for ``like``'s host (same host, CPU, ONNX Runtime, target and runtime
    settings): consecutive measured runs of one model and scenario are A/A pairs. With at least
    ``MIN_AA_PAIRS`` of them each raw quantile's sd of log ratios is used, else the stated default.
    Pairs where both runs timed the same reference workload give the normalised p50's term, the sd
    of their model/reference log differences, likewise."""
    key = _env_key(like)
    groups: dict[tuple, list[RunRecord]] = {}
    for run in runs:
        if run.kind == "measured" and run.interleave is None and _env_key(run) == key:
            groups.setdefault((run.model.sha256, run.scenario.name, run.scenario.rate_hz), []).append(run)
    logs: dict[str, list[float]] = {"p50": [], "p95": [], "p99": []}
    norm_logs: list[float] = []
    for group in groups.values():
        group.sort(key=lambda r: r.created_at)
        for a, b in zip(group, group[1:]):
            for name in logs:
                q = int(name[1:]) / 100
                logs[name].append(run_log_quantile(b, q) - run_log_quantile(a, q))
            if reference_mismatch(a, b) is None:
                assert a.reference is not None and b.reference is not None
                norm_logs.append(normalised_run(b.reference)[0] - normalised_run(a.reference)[0])
    pairs = len(logs["p50"])
    found = default_between_run(pairs, len(norm_logs))
    if pairs >= MIN_AA_PAIRS:
        found = replace(found, sd_log={k: float(np.std(v, ddof=1)) for k, v in logs.items()}, source="history")
    if len(norm_logs) >= MIN_AA_PAIRS:
        found = replace(found, normalised_sd_log=float(np.std(norm_logs, ddof=1)), normalised_source="history")
    return found


def unpaired_ratio(base: RunRecord, cand: RunRecord, q: float, between: BetweenRun | None = None) -> RatioEstimate | None:
    """Ratio from independent runs: Welch interval on the log of per-session quantiles, widened by
    the between-run spread (``between``, in quadrature) where given: sessions of one run share that
    run's drift, so their spread alone misses how far two runs minutes apart differ.

    The p50 of two runs that both timed the same reference workload is compared as model/reference
    instead (``normalised_ratio``). None when either side has fewer than two sessions (no
    session-level variance to judge by)."""
    if len(base.sessions) < 2 or len(cand.sessions) < 2:
        return None
    if q == 0.5 and reference_mismatch(base, cand) is None:
        return normalised_ratio(base, cand, between)
    metric = f"p{round(q * 100)}"
    la, lb = session_log_quantiles(base, q), session_log_quantiles(cand, q)
    units = len(la) + len(lb)
    if between is None:
        # simulated runs: the sessions are all there is; Welch interval on their mean
        va, vb = la.var(ddof=1) / len(la), lb.var(ddof=1) / len(lb)
        diff = float(lb.mean() - la.mean())
        if va + vb <= 0:
            return _exp(metric, diff, diff, diff, "sessions (no spread)", units)
        df = (va + vb) ** 2 / ((va**2) / (len(la) - 1) + (vb**2) / (len(lb) - 1))
        half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, df)) * math.sqrt(va + vb)
        return _exp(metric, diff, diff - half, diff + half, f"Welch over {len(la)}+{len(lb)} sessions", units, df)
    # two runs made apart: each run's median over its sessions, so that one session hit by a burst of
    # other load does not move the run (the median's variance is about pi/2 that of the mean), and
    # the between-run term in quadrature: sessions of one run share its drift
    diff = float(np.median(lb) - np.median(la))
    within = math.pi / 2 * (la.var(ddof=1) / len(la) + lb.var(ddof=1) / len(lb))
    sd = between.sd_log.get(metric, max(between.sd_log.values()))
    half = float(sps.norm.ppf(0.5 + CONFIDENCE / 2)) * math.sqrt(within + sd**2)
    method = f"median over {len(la)}+{len(lb)} sessions + {between.describe()}"
    return _exp(metric, diff, diff - half, diff + half, method, units)


def session_log_quantiles(record: RunRecord, q: float) -> np.ndarray:
    """log of each session's ``q`` quantile."""
    return np.log([np.quantile(s.samples_ms, q) for s in record.sessions])


def run_log_quantile(record: RunRecord, q: float) -> float:
    """A run's latency quantile as record mode compares it: the median over its sessions (log)."""
    if len(record.sessions) == 0:
        return math.log(getattr(record.latency, f"p{round(q * 100)}_ms"))
    return float(np.median(session_log_quantiles(record, q)))


def normalised_ratio(base: RunRecord, cand: RunRecord, between: BetweenRun | None = None) -> RatioEstimate:
    """p50 ratio of two runs that both timed the same reference workload interleaved with the model:
    (model/reference of the candidate) / (model/reference of the baseline), so drift of the host's
    speed between the runs cancels. Normal interval whose sd is the normalised between-run term
    (``between``; the stated default where None), an A/A spread that holds the sessions' own; or, when
    a run's probe blocks scatter more than that (a burst of load), their spread
    (``edgeproof.measure.reference.normalised_run``)."""
    assert base.reference is not None and cand.reference is not None
    between = between or default_between_run()
    (ma, va), (mb, vb) = normalised_run(base.reference), normalised_run(cand.reference)
    diff = mb - ma
    half = float(sps.norm.ppf(0.5 + CONFIDENCE / 2)) * math.sqrt(max(va + vb, between.normalised_sd_log**2))
    units = len(base.reference.probes) + len(cand.reference.probes)
    method = (
        f"model/reference ({cand.reference.workload} timed interleaved after each session), {units} sessions' probe blocks "
        f"+ {between.describe_normalised()}"
    )
    return _exp("p50", diff, diff - half, diff + half, method, units)


def latency_ratio(base: RunRecord, cand: RunRecord, q: float, between: BetweenRun | None = None) -> RatioEstimate | None:
    """Interleaved pairs give a paired ratio; two measured runs made apart add ``between`` (the stated
    default where None); simulated runs carry no run-to-run drift, and of one board profile are
    compared on the simulator's spread alone (``edgeproof.simulate.spread``)."""
    if is_interleaved_pair(base, cand):
        return paired_ratio(base, cand, q)
    if is_record_mode(base, cand):
        return unpaired_ratio(base, cand, q, between or default_between_run())
    from edgeproof.simulate.spread import across_profiles

    return across_profiles(unpaired_ratio(base, cand, q), base, cand)


def is_record_mode(base: RunRecord, cand: RunRecord) -> bool:
    """Two measured runs made apart (not an interleaved pair): host drift between them is part of the ratio."""
    return not is_interleaved_pair(base, cand) and base.kind == "measured" and cand.kind == "measured"


def record_mode_terms(base: RunRecord, cand: RunRecord, between: BetweenRun | None) -> list[str]:
    """How record mode compared the latency of two runs made apart, and which between-run term it
    used from where: the verdict says so (``Verdict.record_mode``)."""
    if not is_record_mode(base, cand):
        return []
    between = between or default_between_run()
    why_raw = reference_mismatch(base, cand)
    if why_raw is None:
        assert cand.reference is not None
        p50 = f"p50 compared as model/reference ({cand.reference.workload}), so drift of the host's speed cancels; {between.describe_normalised()}"
    else:
        p50 = f"p50 compared raw: {why_raw}; {between.describe()}"
    tails = "p95 and p99 compared raw (the reference probe tracks the centre, not the tails); " + between.describe()
    return [p50, tails]


def record_mode_advice(regressions: list[ClauseResult], base: RunRecord, cand: RunRecord) -> list[str]:
    """When a latency clause of two runs made apart fails or its interval straddles the limit, the
    decision rests on record mode: say so and name the interleaved measurement that would settle it."""
    if not is_record_mode(base, cand):
        return []
    resting = [
        r.clause
        for r in regressions
        if r.clause in ("regression.p50", "regression.p95", "regression.p99")
        and r.interval is not None
        and r.budget is not None
        and (r.status == "fail" or r.interval[0] <= r.budget < r.interval[1])
    ]
    if not resting:
        return []
    return [
        f"{', '.join(resting)} rest on two runs measured apart (record mode, between-run term included); "
        "for evidence, measure both models interleaved: edgeproof gate --measure BASELINE_MODEL CANDIDATE_MODEL"
    ]


def _unverified_ratio(clause: str, pct: float, why: str) -> ClauseResult:
    """A ratio clause with no evidence to judge it by: unverified, saying why."""
    return ClauseResult(
        clause=clause, status="unverified", value=None, budget=1 + pct / 100, unit="x", provenance="unavailable:" + why, note=why
    )


def cumulative_clauses(contract, anchor: tuple[RunRecord, RunRecord] | None) -> list[ClauseResult]:
    """``regression.cumulative_*``: the candidate against the lineage's anchor release. ``anchor`` is
    (anchor run, candidate run) measured interleaved in this gate run; runs of other days are not
    comparable, so without such a pair each clause set in the contract is unverified."""
    out = []
    for name, pct in contract.regression.cumulative_clauses().items():
        clause = f"regression.{name}"
        stat = name.removeprefix("cumulative_")
        why = None
        if anchor is None:
            why = "no anchor release measured in this gate run: give --anchor-bom or --anchor-model with --measure"
        elif not is_interleaved_pair(*anchor):
            why = "anchor and candidate were not measured interleaved in one run (records of other days are not comparable)"
        if why is not None:
            out.append(_unverified_ratio(clause, pct, why))
            continue
        assert anchor is not None
        base, cand = anchor
        anchor_name = f"anchor {base.model.name} ({base.model.sha256[:12]})"
        if stat == "energy":
            found = energy_clause(base, cand, pct)
            if found is None:
                out.append(_unverified_ratio(clause, pct, "energy unavailable on the anchor or the candidate run"))
                continue
            result = found
        else:
            result = ratio_clause(stat, paired_ratio(base, cand, 0.5 if stat == "p50" else 0.95), pct, cand.latency_provenance)
        out.append(result.model_copy(update={"clause": clause, "note": f"vs {anchor_name}: {result.note}"}))
    return out


def ratio_clause(metric: str, est: RatioEstimate | None, tolerance_pct: float, provenance: str, apart: bool = False) -> ClauseResult:
    """``regression.<metric>`` (p50, p95, p99) judged by ``regression_fails``; unverified when there
    is no interval (named all the same, so a waiver for it applies). ``apart``: the two runs were
    made apart (record mode)."""
    limit = 1.0 + tolerance_pct / 100.0
    clause = f"regression.{metric}"
    if est is None:
        return ClauseResult(
            clause=clause,
            status="unverified",
            value=None,
            budget=limit,
            unit="x",
            provenance=provenance,
            note="fewer than two sessions on a side: no interval to judge a regression by",
        )
    failed = regression_fails(est, limit, apart)
    bound = f"one-sided {1 - REGRESSION_ALPHA:.0%} bound ×{est.one_sided_low():.3f}"
    if not apart:
        verdict = "regression" if failed else ("not significant" if est.low <= 1.0 <= est.high else "within tolerance")
        verdict += f" at ±{tolerance_pct:g}% tolerance"
    elif failed:
        verdict = f"a regression beyond the ±{tolerance_pct:g}% tolerance, significant ({bound})"
    elif est.ratio > limit:
        verdict = f"beyond the ±{tolerance_pct:g}% tolerance but not significant ({bound}): passed, record mode"
    else:
        verdict = f"within the ±{tolerance_pct:g}% tolerance"
    return ClauseResult(
        clause=clause,
        status="fail" if failed else "pass",
        value=est.ratio,
        budget=limit,
        unit="x",
        margin=limit - (est.ratio if apart else est.low),
        interval=(est.low, est.high),
        provenance=provenance,
        note=f"{est.describe()}; {verdict}",
    )


def regression_fails(est: RatioEstimate, limit: float, apart: bool = False) -> bool:
    """Whether a latency ratio is a regression beyond ``limit``.

    Measured together (interleaved, or on one simulator), the whole 95% interval must lie above the
    limit: such intervals are a few percent wide, so a slowdown 2 points past a 3% limit is caught
    while one just under it is not failed by chance. Two runs made apart (record mode) leave
    intervals ±5% wide, where that rule would catch a 10% slowdown barely half the time; there the
    estimate must lie beyond the limit and the slowdown be significant (the one-sided
    1 - REGRESSION_ALPHA bound above 1), so a same-speed pair fails at most REGRESSION_ALPHA of the time."""
    if not apart:
        return est.low > limit
    return est.ratio > limit and est.one_sided_low() > 1.0


def discordant(base_pred: list[int], cand_pred: list[int], labels: list[int]) -> tuple[int, int]:
    """(b, c): rows only the baseline got right, rows only the candidate got right."""
    y = np.asarray(labels)
    base_ok = np.asarray(base_pred) == y
    cand_ok = np.asarray(cand_pred) == y
    return int(np.sum(base_ok & ~cand_ok)), int(np.sum(~base_ok & cand_ok))


def mcnemar_worse_p(base_pred: list[int], cand_pred: list[int], labels: list[int]) -> tuple[float, int, int]:
    """One-sided exact McNemar: p that the candidate is not worse, given b (only baseline right)
    and c (only candidate right) discordant pairs."""
    b, c = discordant(base_pred, cand_pred, labels)
    return drop_beyond_margin_p(b, c, len(labels), 0.0), b, c


def drop_beyond_margin_p(b: int, c: int, n: int, margin: float) -> float:
    """One-sided p that the paired right/wrong drop (b − c) / n is at most ``margin`` (a share of
    rows): the exact McNemar test at ``margin`` 0, else a score z test on the paired difference."""
    if margin <= 0:
        return 1.0 if b + c == 0 else float(sps.binom.sf(b - 1, b + c, 0.5))
    drop = (b - c) / n
    var = (b + c) / n - drop**2
    if var <= 0:
        return 0.0 if drop > margin else 1.0
    return float(sps.norm.sf((drop - margin) / math.sqrt(var / n)))


def paired_error_worse_p(
    base_scores: list[float], cand_scores: list[float], higher_is_better: bool, margin: float = 0.0
) -> tuple[float, float, float, float]:
    """One-sided paired t-test on per-row score differences (candidate − baseline, signed so that
    positive is worse): p that the candidate is not worse by more than ``margin``, the mean worsening
    and its 95% interval."""
    diff = np.asarray(cand_scores, dtype=np.float64) - np.asarray(base_scores, dtype=np.float64)
    if higher_is_better:
        diff = -diff
    mean = float(diff.mean())
    if len(diff) < 2:
        return 1.0, mean, -math.inf, math.inf
    se = float(diff.std(ddof=1) / math.sqrt(len(diff)))
    if se == 0:
        return (0.0 if mean > margin else 1.0), mean, mean, mean
    t = (mean - margin) / se
    half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, len(diff) - 1)) * se
    return float(sps.t.sf(t, len(diff) - 1)), mean, mean - half, mean + half


def _unpaired(clause: str, value: float | None, why: str) -> ClauseResult:
    return ClauseResult(
        clause=clause, status="unverified", value=value, budget=None, unit="acc", provenance="measured:evaluation", note=why
    )


def accuracy_margin(contract, slice_name: str, output: str | None, base_value: float | None) -> tuple[float, str]:
    """How much worse the contract lets a slice's output get (its floor: ``max_drop_pp`` as a share,
    ``max_increase`` as is, ``max_increase_pct`` of the baseline's value) and the floor's words; 0 where
    the contract sets none (then any significant worsening fails)."""
    section = contract.slices.get(slice_name) if contract is not None else None
    if section is None:
        return 0.0, ""
    for out, unit, limit in section.floors():
        if out != output:
            continue
        if unit == "max_drop_pp":
            return limit / 100.0, f"{unit} = {limit:g}"
        if unit == "max_increase":
            return limit, f"{unit} = {limit:g}"
        if base_value is not None:
            return abs(base_value) * limit / 100.0, f"{unit} = {limit:g}"
    return 0.0, ""


def accuracy_clauses(base: RunRecord, cand: RunRecord, contract=None) -> list[ClauseResult]:
    """``regression.accuracy.<slice>`` (the first judged output) and ``regression.accuracy.<slice>.<output>``
    (the others): a paired test per slice suited to the metric. Right/wrong rows (top1, topk) take a
    McNemar-type test; continuous scores (mse, mae, cosine, a user's) a one-sided paired t-test on
    per-row differences. Fails when the candidate is worse than the baseline by more than the slice's
    floor in ``contract`` (``accuracy_margin``; any worsening where it sets none) at ``ACCURACY_ALPHA``:
    one rule for "worse enough to block", the floor the search holds candidates to."""
    if not (base.evaluation and cand.evaluation):
        return []
    bev, cev = base.evaluation, cand.evaluation
    outputs = list(cev.outputs) or [""]
    out = []
    for name, cs in cand.evaluation.slices.items():
        bs = bev.slices.get(name)
        for k, output in enumerate(outputs):
            clause = f"regression.accuracy.{name}" + (f".{output}" if k else "")
            om = cs.outputs.get(output)
            value = om.value if om is not None else cs.accuracy
            metric = cev.outputs.get(output, cev.metric)
            base_om = bs.outputs.get(output) if bs is not None else None
            base_value = base_om.value if base_om is not None else (bs.accuracy if bs is not None else None)
            margin, floor = accuracy_margin(contract, name, output if k else None, base_value)
            beyond = f" beyond the floor ({floor})" if margin > 0 else ""
            same_rows = bs is not None and bs.slice_id == cs.slice_id
            b_rows, c_rows = bev.scores.get(name, {}).get(output), cev.scores.get(name, {}).get(output)
            if om is not None and (metric == "top1" or metric.startswith("topk:")) and same_rows and b_rows and c_rows:
                # right/wrong per row: the discordant rows decide
                b, c = discordant([int(r) for r in b_rows], [int(r) for r in c_rows], [1] * len(c_rows))
                p = drop_beyond_margin_p(b, c, len(c_rows), margin)
                note = f"{metric}: {b} inputs only the baseline got right, {c} only the candidate; one-sided p{beyond} = {p:.3g}"
                method = "paired, exact McNemar" if margin <= 0 else "paired, McNemar-type z test against the floor"
            elif om is not None and same_rows and b_rows and c_rows and len(b_rows) == len(c_rows):
                p, mean, lo, hi = paired_error_worse_p(b_rows, c_rows, om.higher_is_better, margin)
                note = f"{metric}: candidate worse by {mean:.4g} per row (95% CI {lo:.4g} to {hi:.4g}); one-sided p{beyond} = {p:.3g}"
                method = "paired t on per-row differences"
            elif k == 0 and cev.labels.get(name) and bev.labels.get(name) == cev.labels.get(name) and bev.predictions.get(name):
                labels = cev.labels[name]
                b, c = discordant(bev.predictions[name], cev.predictions.get(name, []), labels)
                p = drop_beyond_margin_p(b, c, len(labels), margin)
                note = f"{b} inputs only the baseline got right, {c} only the candidate; one-sided p{beyond} = {p:.3g}"
                method = "paired, exact McNemar" if margin <= 0 else "paired, McNemar-type z test against the floor"
            else:
                out.append(_unpaired(clause, value, "baseline and candidate lack paired per-row scores on the same slice"))
                continue
            out.append(
                ClauseResult(
                    clause=clause,
                    status="fail" if p < ACCURACY_ALPHA else "pass",
                    value=value,
                    budget=base_value,
                    unit=metric,
                    provenance=f"measured:evaluation ({method})",
                    note=note,
                )
            )
    return out


def fallback_ops(record: RunRecord) -> dict[str, int]:
    """Count of nodes per op type placed off the primary provider."""
    counts: dict[str, int] = {}
    if record.placement:
        for n in record.placement.nodes:
            if n.provider != record.placement.primary_provider:
                counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def fallback_clause(base: RunRecord, cand: RunRecord) -> ClauseResult | None:
    """Any node on the CPU fallback that the baseline did not have fails (counted per op type, since
    variants rename nodes). Without placement on both sides there is nothing to compare."""
    if base is None or cand.placement is None or base.placement is None:
        return None
    before = fallback_ops(base)
    new = {op: n - before.get(op, 0) for op, n in fallback_ops(cand).items() if n > before.get(op, 0)}
    total_new = sum(new.values())
    detail = ", ".join(f"{op} ×{n}" for op, n in sorted(new.items()))
    return ClauseResult(
        clause="regression.new_fallback_nodes",
        status="fail" if total_new else "pass",
        value=float(total_new),
        budget=0.0,
        unit="nodes",
        margin=float(-total_new),
        provenance=cand.placement.provenance,
        note=(f"new CPU-fallback nodes: {detail}" if total_new else "no new CPU-fallback nodes")
        + f" (primary {cand.placement.primary_provider})",
    )


def _point_ratio_clause(clause: str, b: Figure, c: Figure, tolerance_pct: float, digits: str, unit: str) -> ClauseResult | None:
    """candidate / baseline of a figure judged on its point ratio; None unless both sides have it."""
    if b.value is None or c.value is None or b.value <= 0:
        return None
    ratio = c.value / b.value
    limit = 1.0 + tolerance_pct / 100.0
    return ClauseResult(
        clause=clause,
        status="fail" if ratio > limit else "pass",
        value=ratio,
        budget=limit,
        unit="x",
        margin=limit - ratio,
        provenance=c.provenance,
        note=f"{b.value:{digits}} → {c.value:{digits}} {unit}",
    )


def memory_clause(base: RunRecord, cand: RunRecord, tolerance_pct: float) -> ClauseResult | None:
    """Peak memory has no interval worth the name (three cold starts), so it is judged on the point ratio."""
    return _point_ratio_clause("regression.peak_rss", base.peak_rss_mib, cand.peak_rss_mib, tolerance_pct, ".1f", "MiB")


def energy_clause(base: RunRecord, cand: RunRecord, tolerance_pct: float) -> ClauseResult | None:
    """Only when both sides have energy; when either lacks it, the contract's energy clause already says unverified."""
    return _point_ratio_clause(
        "regression.energy", base.energy_mj_per_inference, cand.energy_mj_per_inference, tolerance_pct, ".4g", "mJ per inference"
    )


def check_baseline(base: RunRecord, cand: RunRecord) -> None:
    """A baseline must describe the same thing measured the same way; anything else is bad input."""
    where = f"baseline {base.run_id}"
    if base.target.id != cand.target.id:
        raise RecordError(f"{where} is for target {base.target.id!r}, the candidate for {cand.target.id!r}")
    if base.scenario.name != cand.scenario.name or base.scenario.rate_hz != cand.scenario.rate_hz:
        raise RecordError(f"{where} ran scenario {base.scenario.name}, the candidate {cand.scenario.name}")
    bi, ci = base.inputs, cand.inputs
    if bi and ci and bi != ci:
        raise RecordError(f"{where} is for another model: inputs {bi} vs the candidate's {ci}")
    differs = same_interface(base.model.io, cand.model.io)
    if differs:
        raise RecordError(f"{where} is for another model: {differs} (baseline vs candidate)")


def gate_target(
    contract,
    cand: RunRecord,
    base: RunRecord | None = None,
    allow_unverified: bool = False,
    today: date | None = None,
    anchor: tuple[RunRecord, RunRecord] | None = None,
    between: BetweenRun | None = None,
) -> Verdict:
    """One target's verdict: every contract clause, then regressions vs the baseline (if given).

    ``anchor`` is (anchor release's run, candidate's run) measured interleaved in the same gate run,
    for the contract's ``cumulative_*`` clauses. ``between`` is the host's between-run spread for
    two measured runs made apart (record mode); the stated default where None.

    Waivers, the outcome and what would decide an undecided verdict follow the same rules as the
    contract's own clauses (``edgeproof.contract.apply_waivers``, ``edgeproof.records.outcome_of``).
    A baseline that fails its contract on evidence is refused; one that leaves it undecided is not.
    """
    from edgeproof.contract import apply_waivers, evaluate, undecided_because

    today = today or date.today()
    verdict = evaluate(contract, cand, today=today, allow_unverified=allow_unverified)
    if base is None:
        return verdict
    check_baseline(base, cand)
    base_verdict = evaluate(contract, base, today=today, allow_unverified=allow_unverified)
    if base_verdict.outcome == "fail":
        raise RecordError(
            f"baseline {base.run_id} fails its own contract (binding clause {base_verdict.binding_clause}); refused as a baseline"
        )
    tol = contract.regression
    apart = is_record_mode(base, cand)
    regressions: list[ClauseResult] = [
        ratio_clause(name, latency_ratio(base, cand, q, between), pct, cand.latency_provenance, apart)
        for name, q, pct in (("p50", 0.50, tol.p50_pct), ("p95", 0.95, tol.p95_pct), ("p99", 0.99, tol.p99_pct))
    ]
    regressions += [
        c
        for c in (memory_clause(base, cand, tol.peak_rss_pct), energy_clause(base, cand, tol.energy_pct), fallback_clause(base, cand))
        if c
    ]
    regressions += accuracy_clauses(base, cand, contract)
    regressions += cumulative_clauses(contract, anchor)
    regressions, applied, expired = apply_waivers(regressions, contract.waivers, cand.target.id, today, allow_unverified)
    clauses = verdict.clauses + regressions
    outcome = outcome_of(clauses, allow_unverified)
    binding = verdict.binding_clause
    failing = [r.clause for r in regressions if r.status == "fail"]
    without_data = [r.clause for r in regressions if r.status == "unverified" and not allow_unverified]
    if verdict.outcome != "fail" and failing:
        # a regression shown by evidence outranks a contract clause without data
        binding = failing[0]
    elif verdict.outcome == "pass" and without_data:
        binding = without_data[0]
    return verdict.model_copy(
        update={
            "outcome": outcome,
            "passed": outcome == "pass",
            "clauses": clauses,
            "binding_clause": binding,
            "undecided_because": undecided_because(clauses, allow_unverified),
            "waivers_applied": verdict.waivers_applied + applied,
            "waivers_expired": verdict.waivers_expired + expired,
            "regressions": [GateRegression.of(r) for r in regressions],
            "advice": record_mode_advice(regressions, base, cand),
            "record_mode": record_mode_terms(base, cand, between),
        }
    )


def gate(
    contract,
    candidates: list[RunRecord],
    baselines: list[RunRecord] | None = None,
    allow_unverified: bool = False,
    today: date | None = None,
    anchors: list[tuple[RunRecord, RunRecord]] | None = None,
    between: BetweenRun | None = None,
) -> list[Verdict]:
    """One verdict per candidate target (a board matrix), each against the baseline of the same target
    (and the anchor pair of the same target, for cumulative clauses)."""
    anchor_of = {pair[1].target.id: pair for pair in anchors or []}
    by_target: dict[str, RunRecord] = {}
    for b in baselines or []:
        if b.target.id in by_target:
            raise RecordError(f"two baselines for target {b.target.id!r}")
        by_target[b.target.id] = b
    seen = set()
    for c in candidates:
        if c.target.id in seen:
            raise RecordError(f"two candidates for target {c.target.id!r}")
        seen.add(c.target.id)
    orphan = set(by_target) - seen
    if orphan:
        raise RecordError(f"baseline(s) for target(s) {sorted(orphan)} have no candidate")
    return [
        gate_target(contract, c, by_target.get(c.target.id), allow_unverified, today, anchor_of.get(c.target.id), between)
        for c in candidates
    ]


def measure_pair(
    contract,
    baseline_model: Model | str | Path,
    candidate_model: Model | str | Path,
    target: str = "host",
    settings: RuntimeSettings | None = None,
    ab: InterleaveOptions | None = None,
    power_mode: str | None = None,
    firmware: str | Path | None = None,
    progress: Progress | None = None,
    meter=None,
    limits_pct: tuple[float, float] | None = None,
    evaluate: bool = True,
    options: ProfileOptions | None = None,
) -> tuple[RunRecord, RunRecord]:
    """Measure a baseline and a candidate model interleaved on ``target``'s runner (fresh session
    pairs, more pairs while a latency regression clause is still open) and attach the contract's
    per-slice evaluation to each record (unless ``evaluate`` is False). Returns (baseline,
    candidate), ready for ``gate``. ``limits_pct`` are the p50 and p95 limits that decide when to
    stop adding pairs (default: the contract's step tolerances); ``meter`` is an energy meter for
    the host (e.g. an external CSV). Both arms are fed the same inputs: ``options``' (``--shape``,
    ``--inputs``), else the contract's data rows and ``[model.feeds]`` at its ``[budgets] shape``."""
    from edgeproof.accuracy import evaluate_for_contract
    from edgeproof.measure.runner import feeds_for_contract
    from edgeproof.runners import runner_for

    ab = ab or InterleaveOptions()
    p50_pct, p95_pct = limits_pct or (contract.regression.p50_pct, contract.regression.p95_pct)
    decided = regression_decided(p50_pct, p95_pct, ab.blocks, ab.block_size)
    options = feeds_for_contract(options or ProfileOptions(), contract)
    with runner_for(target, power_mode=power_mode, firmware=firmware, meter=meter) as runner:
        models = (runner.prepare(baseline_model, options), runner.prepare(candidate_model, options))
        records = runner.run_ab(models[0], models[1], settings, options, ab, decided, progress)
    if not evaluate:
        return records[0], records[1]
    base, cand = (r.model_copy(update={"evaluation": evaluate_for_contract(contract, m.model)}) for r, m in zip(records, models))
    return base, cand


def measure_anchor(
    contract,
    anchor_model: Model | str | Path,
    candidate_model: Model | str | Path,
    target: str = "host",
    settings: RuntimeSettings | None = None,
    ab: InterleaveOptions | None = None,
    power_mode: str | None = None,
    firmware: str | Path | None = None,
    progress: Progress | None = None,
    meter=None,
    options: ProfileOptions | None = None,
) -> tuple[RunRecord, RunRecord]:
    """The anchor release's model and the candidate, interleaved on ``target`` in this run, for the
    contract's ``cumulative_*`` clauses (pairs are added while those are undecided)."""
    limits = contract.regression.cumulative_clauses()
    p50 = limits.get("cumulative_p50", contract.regression.p50_pct)
    p95 = limits.get("cumulative_p95", 1e6)  # no p95 limit: p95 never keeps the run going
    return measure_pair(
        contract,
        anchor_model,
        candidate_model,
        target,
        settings,
        ab,
        power_mode,
        firmware,
        progress,
        meter,
        (p50, p95),
        evaluate=False,
        options=options,
    )
