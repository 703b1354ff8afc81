"""Timing loops for the MLPerf scenarios: single-stream, periodic/server (fixed or Poisson rate), offline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgeproof.errors import DataError
from edgeproof.scenario_grammar import split_scenario

Feeds = dict[str, np.ndarray]
RunFn = Callable[[None, Feeds], object]

# Sleep until this close to a scheduled start, then spin: sleep() overshoots by ~50-100 µs here.
_SPIN_NS = 200_000


@dataclass(frozen=True)
class Scenario:
    """A parsed ``--scenario``: ``single-stream``, ``periodic:HZ`` (fixed rate), ``server:HZ`` (Poisson), ``offline``."""

    name: str
    rate_hz: float | None = None
    deadline_ms: float | None = None

    @property
    def poisson(self) -> bool:
        return self.name == "server"

    @property
    def label(self) -> str:
        return self.name if self.rate_hz is None else f"{self.name}:{self.rate_hz:g}"


def parse_scenario(text: str, deadline_ms: float | None = None) -> Scenario:
    """The Scenario a ``--scenario`` text names; a paced scenario's deadline defaults to one period."""
    try:
        name, rate_hz = split_scenario(text)
    except ValueError as exc:
        raise DataError(f"--scenario: {exc}") from None
    if rate_hz is None:
        return Scenario(name)
    return Scenario(name, rate_hz, deadline_ms if deadline_ms is not None else 1000.0 / rate_hz)


def back_to_back(run: RunFn, feeds: list[Feeds], n: int) -> list[float]:
    """Single-stream: one inference after another; per-inference wall time in ms.

    The loop body is kept to two clock reads and one call so the harness adds almost nothing
    (benchmarks/harness_overhead.py checks it against a bare loop)."""
    clock = time.perf_counter_ns
    k = len(feeds)
    out = [0] * n
    for i in range(n):
        f = feeds[i % k]
        t0 = clock()
        run(None, f)
        out[i] = clock() - t0
    return [ns / 1e6 for ns in out]


@dataclass
class PacedResult:
    latency_ms: list[float]  # scheduled arrival to completion: what a caller waiting on the result sees
    queueing_ms: list[float]  # scheduled arrival to start of inference
    service_ms: list[float] = field(default_factory=list)


def _wait_until(deadline_ns: int) -> None:
    clock = time.perf_counter_ns
    remaining = deadline_ns - clock()
    if remaining > _SPIN_NS:
        time.sleep((remaining - _SPIN_NS) / 1e9)
    while clock() < deadline_ns:
        pass


def paced(run: RunFn, feeds: list[Feeds], n: int, rate_hz: float, poisson: bool, seed: int = 0) -> PacedResult:
    """Periodic (fixed rate) or server (Poisson arrivals) with one worker: a late inference delays the
    next, so queueing shows up in the latency as it would on a single-accelerator device."""
    rng = np.random.default_rng(seed)
    gaps_s = rng.exponential(1.0 / rate_hz, n) if poisson else np.full(n, 1.0 / rate_hz)
    arrivals_ns = (np.cumsum(gaps_s) * 1e9).astype(np.int64)
    clock = time.perf_counter_ns
    origin = clock()
    k = len(feeds)
    result = PacedResult([], [], [])
    for i in range(n):
        arrival = origin + int(arrivals_ns[i])
        _wait_until(arrival)
        start = clock()
        run(None, feeds[i % k])
        done = clock()
        result.latency_ms.append((done - arrival) / 1e6)
        result.queueing_ms.append((start - arrival) / 1e6)
        result.service_ms.append((done - start) / 1e6)
    return result


def batched_feeds(feeds: list[Feeds], batch: int) -> list[Feeds]:
    """Stack single-sample feeds into batches along axis 0 (for offline throughput)."""
    k = len(feeds)
    out = []
    for start in range(0, max(k, batch), batch):
        idx = [(start + j) % k for j in range(batch)]
        out.append({name: np.concatenate([feeds[i][name] for i in idx], axis=0) for name in feeds[0]})
    return out
