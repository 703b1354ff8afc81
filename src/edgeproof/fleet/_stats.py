"""Simultaneous intervals for the fleet's alarms: exact Poisson and binomial bounds for sparse counts, a rank interval for shifts."""

from __future__ import annotations

from math import comb

import numpy as np
from scipy import stats


def poisson_bounds(count: float, exposure: float, alpha: float) -> tuple[float, float]:
    """Exact (Garwood) one-sided bounds of a Poisson rate, each at level ``alpha``: (lower, upper) per unit of exposure."""
    if exposure <= 0:
        return 0.0, float("inf")
    lo = float(stats.chi2.ppf(alpha, 2 * count) / 2) if count > 0 else 0.0
    hi = float(stats.chi2.ppf(1 - alpha, 2 * count + 2) / 2)
    return lo / exposure, hi / exposure


def binomial_bounds(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """Exact (Clopper–Pearson) one-sided bounds of a proportion, each at level ``alpha``."""
    if trials <= 0:
        return 0.0, 1.0
    lo = float(stats.beta.ppf(alpha, successes, trials - successes + 1)) if successes > 0 else 0.0
    hi = float(stats.beta.ppf(1 - alpha, successes + 1, trials - successes)) if successes < trials else 1.0
    return lo, hi


def rank_interval_exists(n_cohort: int, n_control: int, alpha: float) -> bool:
    """Whether a two-sided ``1 - alpha`` Mann–Whitney interval exists with these many devices a side: the
    most extreme ranking has exact probability 2 / C(n + m, n), which must lie within ``alpha``. Below
    that every shift is inside the interval, so the data cannot tell a shift from none."""
    if n_cohort < 1 or n_control < 1:
        return False
    return 2.0 / float(comb(n_cohort + n_control, n_cohort)) <= alpha


def shift_interval(cohort: np.ndarray, control: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """Hodges–Lehmann shift of ``cohort`` over ``control`` and its two-sided ``1 - alpha`` interval (Mann–Whitney inversion).

    The interval's ends are order statistics of all pairwise differences; the critical rank uses the
    normal approximation of the Mann–Whitney statistic (each side here has at least a few devices).
    """
    diffs = (cohort[:, None] - control[None, :]).ravel()
    n_c, n_k, n = cohort.size, control.size, diffs.size
    z = float(stats.norm.ppf(1 - alpha / 2))
    k = int(np.floor(n_c * n_k / 2 - z * np.sqrt(n_c * n_k * (n_c + n_k + 1) / 12)))
    k = min(max(k, 0), n - 1)
    picks = np.partition(diffs, sorted({k, n - 1 - k, n // 2}))
    return float(picks[n // 2]), float(picks[k]), float(picks[n - 1 - k])
