"""Harness overhead: edgeproof's single-stream loop vs a bare session.run loop on the same session.

Blocks of each alternate (leading arm alternated) so machine drift hits both equally; the figure
is the ratio of per-inference medians. Target: <= 1.02.
"""

from __future__ import annotations

import time

import numpy as np

from _common import DIGITS_MODEL, write_result
from edgeproof.measure.scenarios import back_to_back
from edgeproof.measure.session import open_session
from edgeproof.model import load_model, resolve_inputs, synthetic_feeds
from edgeproof.records import RuntimeSettings

BLOCKS = 30
PER_BLOCK = 200
TARGET = 1.02


def bare_loop(sess, feed, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        sess.run(None, feed)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def main() -> None:
    feed = synthetic_feeds(resolve_inputs(load_model(DIGITS_MODEL)))
    sess = open_session(DIGITS_MODEL, RuntimeSettings(intra_op_threads=1))
    back_to_back(sess.run, [feed], 100)
    harness, bare = [], []
    for block in range(BLOCKS):
        arms = [("harness", lambda: back_to_back(sess.run, [feed], PER_BLOCK)), ("bare", lambda: bare_loop(sess, feed, PER_BLOCK))]
        if block % 2:
            arms.reverse()
        for name, fn in arms:
            (harness if name == "harness" else bare).extend(fn())
    med_h, med_b = float(np.median(harness)), float(np.median(bare))
    ratio = med_h / med_b
    print(f"harness median {med_h * 1000:.1f} µs, bare median {med_b * 1000:.1f} µs, ratio {ratio:.4f} (target ≤ {TARGET})")
    write_result(
        "harness_overhead",
        {
            "model": str(DIGITS_MODEL.name),
            "method": f"{BLOCKS} interleaved blocks of {PER_BLOCK} inferences per arm, same session, 1 thread",
            "harness_median_ms": med_h,
            "bare_median_ms": med_b,
            "ratio": ratio,
            "target": TARGET,
            "met": ratio <= TARGET,
            "provenance": "measured:perf_counter_ns",
        },
    )


if __name__ == "__main__":
    main()
