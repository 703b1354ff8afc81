"""Simulated latency samples from a deterministic base latency and a documented, seeded noise model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeproof.targets.spec import JitterSpec


def sample_sessions(base_ms: Sequence[Sequence[float]], jitter: JitterSpec, seed: int) -> list[list[float]]:
    """One list of samples per session: sample = base × session factor × lognormal noise + spike.

    - session factor ~ exp(N(0, session_sigma)), drawn once per session (cache/placement luck of
      a fresh process, which a within-session bootstrap cannot see);
    - per-sample noise ~ exp(N(0, sigma)), median 1;
    - a spike (interrupt, preemption) with probability spike_prob, Exponential(mean spike_ms).

    ``base_ms`` gives each session's noise-free latency per sample (constant, or following a
    soak's latency over time). The same seed gives the same samples.
    """
    rng = np.random.default_rng(seed)
    sessions = []
    for bases in base_ms:
        b = np.asarray(bases, dtype=float)
        factor = float(np.exp(rng.normal(0.0, jitter.session_sigma)))
        noise = np.exp(rng.normal(0.0, jitter.sigma, size=b.size))
        hit = rng.random(b.size) < jitter.spike_prob
        spikes = np.where(hit, rng.exponential(jitter.spike_ms, size=b.size), 0.0) if jitter.spike_ms > 0 else 0.0
        sessions.append([float(v) for v in b * factor * noise + spikes])
    return sessions
