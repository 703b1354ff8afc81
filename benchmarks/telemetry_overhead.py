"""Telemetry overhead: the recorder's hot path per inference, around a no-op callable, interleaved with a bare no-op loop.

A difference of ``session.run`` p50s is buried in 1–6 µs of noise, so the hot path is timed around a
callable that does nothing: blocks of recorded calls alternate with blocks of bare calls (leading arm
alternated), and each pair gives one per-call difference in thread CPU time (wall time is reported too:
on a shared machine it is dominated by other processes' bursts). Target: <= 1 µs p50 and mean. Confidence
(10 logits), input quality (32×32 image) and the sampler's aggregation (ring buffer into the sketch)
are off the hot path; their own cost per computation is reported beside it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import write_result
from edgeproof.telemetry import Labels, Recorder, TelemetryConfig, confidence, image_quality

BLOCKS = 400
PER_BLOCK = 1000
TARGET_NS = 1000.0


def per_call_ns(fn, arg, n: int) -> tuple[float, float]:
    """(thread CPU time, wall time) per call over ``n`` calls."""
    cpu, wall = time.thread_time_ns, time.perf_counter_ns
    c0, w0 = cpu(), wall()
    for _ in range(n):
        fn(arg)
    return (cpu() - c0) / n, (wall() - w0) / n


def cost_ns(fn, repeats: int = 2000) -> dict[str, float]:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return {"p50_ns": float(statistics.median(samples)), "mean_ns": float(statistics.fmean(samples))}


def main() -> None:
    noop = lambda x: x
    with tempfile.TemporaryDirectory() as tmp:
        # sample_every=0: the hot path alone (sampled confidence/quality are timed separately below).
        config = TelemetryConfig(directory=Path(tmp), labels=Labels(device_id="bench", cohort="bench"), sample_every=0)
        rec = Recorder(config, read_power=False)
        rec.enable(start_thread=False)
        recorded = rec.wrap(noop)
        per_call_ns(recorded, 1, PER_BLOCK)
        per_call_ns(noop, 1, PER_BLOCK)
        diffs, wall_diffs, drain_ns = [], [], []
        for block in range(BLOCKS):
            arms = [(True, recorded), (False, noop)]
            if block % 2:
                arms.reverse()
            timed = {is_recorded: per_call_ns(fn, 1, PER_BLOCK) for is_recorded, fn in arms}
            diffs.append(timed[True][0] - timed[False][0])
            wall_diffs.append(timed[True][1] - timed[False][1])
            t0 = time.perf_counter_ns()
            rec.tick()
            drain_ns.append((time.perf_counter_ns() - t0) / PER_BLOCK)
        rec.close()
    logits = np.random.default_rng(0).normal(size=(1, 10)).astype(np.float32)
    image = np.random.default_rng(1).random((1, 1, 32, 32), dtype=np.float32)
    p50, mean = float(statistics.median(diffs)), float(statistics.fmean(diffs))
    result = {
        "hot_path_ns_per_inference": {
            "p50": p50,
            "mean": mean,
            "p95": float(np.percentile(diffs, 95)),
            "blocks": BLOCKS,
            "calls_per_block": PER_BLOCK,
            "clock": "thread CPU time (time.thread_time_ns): time the recorder adds on the calling thread, without preemption by other processes",
            "target_ns": TARGET_NS,
            "passes": p50 <= TARGET_NS and mean <= TARGET_NS,
        },
        "hot_path_wall_ns_per_inference": {
            "p50": float(statistics.median(wall_diffs)),
            "mean": float(statistics.fmean(wall_diffs)),
            "p95": float(np.percentile(wall_diffs, 95)),
            "note": "wall clock includes preemption by other load on the machine; the longer recorded arm catches more of it",
        },
        "sampler_aggregation_ns_per_inference": {"p50": float(statistics.median(drain_ns)), "mean": float(statistics.fmean(drain_ns))},
        "confidence_10_logits": cost_ns(lambda: confidence(logits)),
        "input_quality_32x32": cost_ns(lambda: image_quality(image)),
    }
    print(
        f"hot path: p50 {p50:.0f} ns, mean {mean:.0f} ns per inference (target <= {TARGET_NS:.0f} ns: "
        f"{'pass' if result['hot_path_ns_per_inference']['passes'] else 'FAIL'}); "
        f"confidence {result['confidence_10_logits']['p50_ns'] / 1e3:.1f} µs, input quality {result['input_quality_32x32']['p50_ns'] / 1e3:.1f} µs "
        f"(on sampled inferences only)"
    )
    write_result("telemetry_overhead", result)


if __name__ == "__main__":
    main()
