"""The ``workload`` verb's inferences: the active slot's model run on synthetic feeds, each call timed, errors counted.

A board in the field runs its application; a board in a rollout test has no application, so the agent
stands in for one: it runs the model its active A/B slot holds (what the device runs), with feeds shaped
from the model's own inputs (symbolic dimensions as 1), and records what it saw as telemetry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeproof_agent._fault import Fault

# ONNX tensor element types the synthetic feeds know, by onnxruntime's type string
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


@dataclass
class WorkloadRun:
    """What one workload ran: each successful call's wall time, how many calls raised, when, on which providers."""

    samples_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    providers: list[str] = field(default_factory=list)
    start_unix_ns: int = 0
    end_unix_ns: int = 0

    @property
    def calls(self) -> int:
        return len(self.samples_ms) + self.errors


def synthetic_feeds(inputs: list[tuple[str, str, list[object]]], seed: int = 0) -> dict[str, np.ndarray]:
    """One feed per model input ``(name, type, shape)``: uniform in [0, 1) for floats, small integers otherwise."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for name, type_, shape in inputs:
        dtype = _DTYPES.get(type_)
        if dtype is None:
            raise Fault("model", f"input {name} is a {type_}; the workload makes feeds of {', '.join(_DTYPES)} only")
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in shape]
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.random(dims).astype(dtype)
        else:
            feeds[name] = rng.integers(0, 2, dims).astype(dtype)
    return feeds


def run_workload(model: Path, runs: int | None, seconds: float | None) -> WorkloadRun:
    """Call ``model`` ``runs`` times, or for ``seconds`` (whichever ends first when both are given), one thread on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for a model it cannot load
        raise Fault("model", f"the active slot's model does not load in ONNX Runtime ({str(exc).splitlines()[0][:200]})") from None
    feeds = synthetic_feeds([(i.name, i.type, list(i.shape)) for i in session.get_inputs()])
    out = WorkloadRun(providers=list(session.get_providers()), start_unix_ns=time.time_ns())
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9) if seconds is not None else None
    while (runs is None or out.calls < runs) and (deadline is None or clock() < deadline):
        t0 = clock()
        try:
            session.run(None, feeds)
        except Exception as exc:  # a call that raises is an inference error the telemetry counts, not the end of the workload
            out.errors += 1
            out.first_error = out.first_error or str(exc).splitlines()[0][:200]
            continue
        out.samples_ms.append((clock() - t0) / 1e6)
    out.end_unix_ns = time.time_ns()
    return out
