"""Agent overhead: the same model measured through the device agent (``device:local``) and directly on the
host, interleaved round by round (the leading arm alternating), so machine drift hits both alike.

Each round is one fresh session per arm, timed single-stream; the figure is the median over rounds of
the per-round ratio agent p50 / host p50. Target: 0.97–1.03 (the agent times with the same kind of
loop, on the board, so the link adds nothing to a sample).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from _common import DIGITS_MODEL, write_result
from edgeproof.measure.runner import ProfileOptions
from edgeproof.records import RuntimeSettings
from edgeproof.runners import HostRunner
from edgeproof.runners.agent import AgentRunner

ROUNDS = 16
SAMPLES = 400
LOW, HIGH = 0.97, 1.03


def main() -> None:
    os.environ.setdefault("EDGEPROOF_HOME", tempfile.mkdtemp(prefix="edgeproof-bench-"))
    options = ProfileOptions(
        min_sessions=1, max_sessions=1, samples_per_session=SAMPLES, warmup=50, time_budget_s=60, cold_start_repeats=0, profile_nodes=False
    )
    settings = RuntimeSettings(intra_op_threads=1)
    host_p50, agent_p50 = [], []
    with HostRunner(check_fitness=False) as host, AgentRunner("device:local") as agent:
        arms = [(host, host.prepare(DIGITS_MODEL, options), host_p50), (agent, agent.prepare(DIGITS_MODEL, options), agent_p50)]
        for round_ in range(ROUNDS):
            for runner, prepared, out in arms if round_ % 2 == 0 else arms[::-1]:
                out.append(runner.run(prepared, settings, options).latency.p50_ms)
    ratios = np.array(agent_p50) / np.array(host_p50)
    ratio = float(np.median(ratios))
    low, high = (float(x) for x in np.quantile(ratios, [0.25, 0.75]))
    print(
        f"agent p50 {np.median(agent_p50) * 1000:.1f} µs, host p50 {np.median(host_p50) * 1000:.1f} µs, ratio {ratio:.4f} (target {LOW}–{HIGH})"
    )
    write_result(
        "agent_overhead",
        {
            "model": DIGITS_MODEL.name,
            "method": f"{ROUNDS} rounds, one fresh session per arm per round ({SAMPLES} timed inferences), arms alternating, 1 thread",
            "host_p50_ms": host_p50,
            "agent_p50_ms": agent_p50,
            "ratio_median": ratio,
            "ratio_iqr": [low, high],
            "target": [LOW, HIGH],
            "met": LOW <= ratio <= HIGH,
            "provenance": "measured:perf_counter_ns (host) and measured:agent:local",
        },
    )


if __name__ == "__main__":
    main()
