"""Latency statistics: interval coverage on synthetic distributions, session variance, warnings."""

import numpy as np
import pytest
from scipy import stats as sps

from edgeproof.measure.stats import summarize

DISTRIBUTIONS = {
    # skewed shapes typical of latency: lognormal body, gamma, and a shifted exponential
    "lognormal": (lambda rng, n: 0.6 * rng.lognormal(0.0, 0.25, n), lambda q: 0.6 * sps.lognorm.ppf(q, 0.25)),
    "gamma": (lambda rng, n: rng.gamma(4.0, 0.15, n), lambda q: sps.gamma.ppf(q, 4.0, scale=0.15)),
    "shifted-exp": (lambda rng, n: 0.5 + rng.exponential(0.05, n), lambda q: 0.5 + sps.expon.ppf(q, scale=0.05)),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("n_sessions", [1, 3])
def test_p95_interval_covers_true_p95(name, n_sessions):
    draw, ppf = DISTRIBUTIONS[name]
    true_p95 = ppf(0.95)
    rng = np.random.default_rng(1234)
    trials = 200
    covered = 0
    for _ in range(trials):
        stats = summarize([draw(rng, 200).tolist() for _ in range(n_sessions)])
        iv = stats.ci["p95"]
        covered += iv.low <= true_p95 <= iv.high
    assert covered / trials >= 0.90, f"{name}: coverage {covered / trials:.3f}"


def test_interval_widens_with_session_to_session_variance():
    rng = np.random.default_rng(7)
    steady = [(0.6 * rng.lognormal(0, 0.1, 300)).tolist() for _ in range(3)]
    drifting = [(scale * 0.6 * rng.lognormal(0, 0.1, 300)).tolist() for scale in (0.94, 1.0, 1.06)]
    width = lambda s: s.ci["p50"].high - s.ci["p50"].low  # noqa: E731
    assert width(summarize(drifting)) > 3 * width(summarize(steady))
    assert any("session medians differ" in w for w in summarize(drifting).warnings)
    assert not any("session medians differ" in w for w in summarize(steady).warnings)


def test_point_estimates_are_pooled_quantiles():
    sessions = [[1.0, 2.0, 3.0], [4.0, 5.0]]
    stats = summarize(sessions)
    assert stats.n_samples == 5 and stats.n_sessions == 2
    assert stats.p50_ms == pytest.approx(3.0)
    assert stats.min_ms == 1.0 and stats.max_ms == 5.0
    assert stats.mean_ms == pytest.approx(3.0)


def test_single_session_warns_and_empty_is_refused():
    stats = summarize([[1.0] * 50])
    assert any("only one session" in w for w in stats.warnings)
    with pytest.raises(ValueError):
        summarize([[]])
