"""Latency statistics whose intervals span sessions, and plain-spoken instability warnings."""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats as sps

QUANTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
CONFIDENCE = 0.95

# Thresholds for the instability warnings; chosen from the timing-noise notes for this class of machine
# (session-to-session p50 ratios within about ±5% are ordinary here).
_SESSION_SPREAD_WARN = 0.05
_TAIL_RATIO_WARN = 3.0
_WIDE_CI_WARN = 0.10
_MIN_SAMPLES_P99 = 100


class Interval(BaseModel):
    """A two-sided interval at ``level`` (95% unless said)."""

    model_config = ConfigDict(extra="forbid")
    low: float
    high: float
    level: float = 0.95


class LatencyStats(BaseModel):
    """Latency summary over all timed samples of all sessions; intervals span sessions (see ``summarize``).

    Defined here, below the run records that hold it, so statistics depend on nothing of ours."""

    model_config = ConfigDict(extra="forbid")
    n_samples: int
    n_sessions: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    ci: dict[str, Interval]
    ci_method: str
    warnings: list[str] = Field(default_factory=list)


def order_statistic_interval(sorted_ms: np.ndarray, q: float, level: float = CONFIDENCE) -> tuple[float, float]:
    """Distribution-free interval for the q-quantile from i.i.d. samples (binomial order statistics)."""
    n = len(sorted_ms)
    alpha = 1.0 - level
    lo_rank = int(sps.binom.ppf(alpha / 2, n, q))
    hi_rank = int(sps.binom.ppf(1 - alpha / 2, n, q)) + 1
    lo_rank = min(max(lo_rank - 1, 0), n - 1)
    hi_rank = min(max(hi_rank - 1, 0), n - 1)
    return float(sorted_ms[lo_rank]), float(sorted_ms[hi_rank])


def _session_interval(per_session: np.ndarray, centre: float, level: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval over per-session estimates (sessions are the independent units)."""
    k = len(per_session)
    se = float(np.std(per_session, ddof=1)) / math.sqrt(k)
    half = float(sps.t.ppf(0.5 + level / 2, df=k - 1)) * se
    return centre - half, centre + half


def summarize(sessions: list[list[float]], warn: bool = True) -> LatencyStats:
    """Summarise latency samples (ms) from one or more fresh sessions.

    Point estimates are quantiles of the pooled samples. Each 95% interval is the wider of
    a Student-t interval over the per-session quantiles (which carries session-to-session
    variance) and the order-statistic interval of the pooled samples (a floor for when a few
    sessions agree by chance). With one session only the latter exists, and a warning says so.
    ``warn=False`` leaves out the instability warnings, which speak of a noisy machine: a simulated
    run's spread is its jitter model's.
    """
    arrays = [np.asarray(s, dtype=np.float64) for s in sessions if len(s) > 0]
    if not arrays:
        raise ValueError("no latency samples to summarise")
    pooled = np.sort(np.concatenate(arrays))
    k = len(arrays)
    points = {name: float(np.quantile(pooled, q)) for name, q in QUANTILES.items()}
    ci: dict[str, Interval] = {}
    for name, q in QUANTILES.items():
        lo, hi = order_statistic_interval(pooled, q)
        if k >= 2:
            per_session = np.array([np.quantile(a, q) for a in arrays])
            t_lo, t_hi = _session_interval(per_session, points[name])
            lo, hi = min(lo, t_lo), max(hi, t_hi)
        ci[name] = Interval(low=lo, high=hi, level=CONFIDENCE)
    method = (
        f"t over {k} session quantiles, floored by the pooled order-statistic interval"
        if k >= 2
        else "order-statistic interval of one session (misses session-to-session variance)"
    )
    stats = LatencyStats(
        n_samples=int(len(pooled)),
        n_sessions=k,
        p50_ms=points["p50"],
        p90_ms=points["p90"],
        p95_ms=points["p95"],
        p99_ms=points["p99"],
        mean_ms=float(pooled.mean()),
        min_ms=float(pooled[0]),
        max_ms=float(pooled[-1]),
        ci=ci,
        ci_method=method,
    )
    if warn:
        stats.warnings = instability_warnings(arrays, stats)
    return stats


def instability_warnings(arrays: list[np.ndarray], stats: LatencyStats) -> list[str]:
    """Say why a run looks unstable, as pyperf does; an empty list means nothing stood out."""
    warnings: list[str] = []
    if len(arrays) == 1:
        warnings.append("only one session: the interval cannot include session-to-session variance; use --sessions 3 or more")
    else:
        medians = np.array([np.median(a) for a in arrays])
        spread = float(medians.max() / medians.min() - 1.0)
        if spread > _SESSION_SPREAD_WARN:
            warnings.append(f"session medians differ by {spread:.1%}: the machine is noisy or changed between sessions")
    if stats.p99_ms > _TAIL_RATIO_WARN * stats.p50_ms:
        warnings.append(f"p99 is {stats.p99_ms / stats.p50_ms:.1f}x p50: a long tail, often bursts of other load on the machine")
    p95 = stats.ci["p95"]
    rel_half = (p95.high - p95.low) / 2 / stats.p95_ms
    if rel_half > _WIDE_CI_WARN:
        warnings.append(f"p95 interval is ±{rel_half:.0%}: too noisy to judge small changes; add sessions or samples")
    if stats.n_samples < _MIN_SAMPLES_P99:
        warnings.append(f"p99 from {stats.n_samples} samples is close to the maximum; treat it as indicative")
    return warnings


def relative_half_width(stats: LatencyStats, key: str = "p95") -> float:
    """Half the width of a quantile's interval relative to its point estimate."""
    iv = stats.ci[key]
    point = getattr(stats, f"{key}_ms")
    return (iv.high - iv.low) / 2 / point
