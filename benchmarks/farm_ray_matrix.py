"""The board matrix on a local Ray cluster: two local agents stand in for two chip revisions, two models
each (a 2 × 2 matrix), one actor per board placed through its ``board:<id>`` resource. The rev-b board
is switched off for good the moment its first profile starts, so its cells must come back as errors
with the reason while rev-a's cells complete; no cell of the dead board may pass.

Ray is the ``farm`` extra (and in the bench lock); the cluster is local and offline: no dashboard, no
usage stats, ``num_cpus=2``, an 80 MiB object store, a short temp dir.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from _common import DIGITS_MODEL, write_result
from edgeproof.measure.runner import ProfileOptions
from edgeproof.records import RuntimeSettings

CONTRACT = """
[contract]
name = "farm-matrix"
owner = "ml-team@example.com"
targets = ["host"]

[model]
path = "{model}"

[budgets]
scenario = "single-stream"
p95_ms = "500 ms"
model_size_mib = "2 MiB"
"""

# rev-b's agent behind a power switch: once the DEAD file exists, it never starts again.
SWITCHED_AGENT = """
import os, sys
if os.path.exists({dead!r}):
    sys.stderr.write("no route to host: board powered off\\n")
    sys.exit(1)
os.execv(sys.executable, [sys.executable, "-m", "edgeproof_agent", *sys.argv[1:]])
"""


def mlp(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def kill_for_good_when_profiling_starts(state_dir: Path, dead: Path, seen: dict) -> threading.Thread:
    def watch() -> None:
        holder = state_dir / "board.holder.json"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                pid = json.loads(holder.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.02)
                continue
            dead.touch()
            os.kill(pid, signal.SIGKILL)
            seen["killed_pid"] = pid
            return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def main() -> None:
    from edgeproof.agent import local_state_dir
    from edgeproof.farm.matrix import MatrixPlan, matrix_outcome, select_devices
    from edgeproof.farm.ray_farm import OBJECT_STORE_BYTES, run_matrix_on_ray

    # On a loaded 2-core machine the raylet's 30 s wait for its metrics agent can run out at start.
    os.environ.setdefault("RAY_agent_register_timeout_ms", "180000")
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "180")
    work = Path(tempfile.mkdtemp(prefix="edgeproof-farm-"))
    os.environ["EDGEPROOF_HOME"] = str(work / "home")
    dead = work / "rev-b.dead"
    wrapper = work / "switched_agent.py"
    wrapper.write_text(SWITCHED_AGENT.format(dead=str(dead)))
    boards = work / "boards.toml"
    boards.write_text(
        '[devices.rev-a]\nchip_revision = "a"\ntransport = "local"\n\n'
        f'[devices.rev-b]\nchip_revision = "b"\ntransport = "local"\nagent = "{sys.executable} {wrapper}"\n'
    )
    os.environ["EDGEPROOF_BOARDS"] = str(boards)
    contract = work / "edgeproof.toml"
    contract.write_text(CONTRACT.format(model=DIGITS_MODEL))
    models = [DIGITS_MODEL, mlp(work / "mlp.onnx")]
    plan = MatrixPlan(models=models, devices=select_devices("all-devices"), contract=contract)
    options = ProfileOptions(
        min_sessions=2, max_sessions=2, samples_per_session=200, warmup=20, time_budget_s=30, cold_start_repeats=1, profile_nodes=False
    )
    rev_b = next(d for d in plan.devices if d.id == "rev-b")
    seen: dict = {}
    watcher = kill_for_good_when_profiling_starts(local_state_dir(rev_b), dead, seen)
    started = time.monotonic()
    cells = run_matrix_on_ray(plan, RuntimeSettings(), options, temp_dir="/tmp/ep-ray-bench")
    wall_s = time.monotonic() - started
    watcher.join(5)
    import ray

    ray.shutdown()
    rows = [
        {
            "model": c.model.name,
            "device": c.target_id,
            "outcome": c.outcome,
            "p95_ms": c.record.latency.p95_ms if c.record else None,
            "provenance": c.record.latency_provenance if c.record else None,
            "chip_revision": c.record.env.extra.get("chip_revision") if c.record else None,
            "error": c.error,
        }
        for c in cells
    ]
    for row in rows:
        print(
            f"{row['model']:>12} on {row['device']:<14} {row['outcome']:<6} "
            + (f"p95 {row['p95_ms']:.3f} ms ({row['provenance']})" if row["p95_ms"] is not None else f"— {row['error']}")
        )
    good = [r for r in rows if r["device"] == "device:rev-a"]
    lost = [r for r in rows if r["device"] == "device:rev-b"]
    met = (
        len(rows) == 4
        and all(r["outcome"] in ("pass", "fail") and r["provenance"] == "measured:agent:rev-a" for r in good)
        and all(r["outcome"] == "error" and "board lost" in (r["error"] or "") for r in lost)
        and matrix_outcome(cells) != "pass"
    )
    print(f"matrix on Ray in {wall_s:.1f} s; rev-b killed (pid {seen.get('killed_pid')}); acceptance {'met' if met else 'NOT met'}")
    write_result(
        "farm_ray_matrix",
        {
            "method": "2 models × 2 local agents (chip revisions a, b) on a local Ray head (num_cpus=2, no dashboard, "
            f"usage stats off, object store {OBJECT_STORE_BYTES // 2**20} MiB); rev-b's agent SIGKILLed and switched off "
            "when its first profile took the board lock",
            "ray_version": ray.__version__,
            "cells": rows,
            "matrix_outcome": matrix_outcome(cells),
            "wall_s_including_ray_start": wall_s,
            "met": met,
        },
    )
    if not met:
        sys.exit(1)


if __name__ == "__main__":
    main()
