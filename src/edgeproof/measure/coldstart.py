"""Cold start and peak memory, measured in a fresh Python process so nothing is warm or shared."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgeproof.errors import ModelError
from edgeproof.model import InputSpec
from edgeproof.records import ColdStart, RuntimeSettings

_RUNS_AFTER_LOAD = 20


_CHILD_TIMEOUT_S = 600


def _status_mib(field: str) -> float:
    """A memory figure from /proc/self/status (VmRSS, VmHWM) in MiB.

    VmHWM is used for the peak rather than getrusage's ru_maxrss, which Linux carries over
    from the parent across fork+exec and so would report the parent's peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _child(request: dict) -> dict:
    """Runs inside the fresh process: time session creation and the first inference, then peak RSS."""
    t_import = time.perf_counter_ns()
    from edgeproof.measure.session import open_session

    settings = RuntimeSettings.model_validate(request["settings"])
    import_ms = (time.perf_counter_ns() - t_import) / 1e6
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in request["inputs"]:
        dtype = np.dtype(spec["dtype"])
        shape = tuple(spec["shape"])
        feeds[spec["name"]] = rng.random(shape).astype(dtype) if np.issubdtype(dtype, np.floating) else np.zeros(shape, dtype)
    if request.get("npz"):
        with np.load(request["npz"]) as npz:
            for name in feeds:
                arr = npz[name]
                feeds[name] = np.ascontiguousarray(arr if arr.shape == feeds[name].shape else arr[0]).astype(feeds[name].dtype)
    rss_before = _status_mib("VmRSS")
    t0 = time.perf_counter_ns()
    sess = open_session(request["model"], settings)
    t1 = time.perf_counter_ns()
    sess.run(None, feeds)
    t2 = time.perf_counter_ns()
    for _ in range(_RUNS_AFTER_LOAD):
        sess.run(None, feeds)
    return {
        "import_ms": import_ms,
        "session_ms": (t1 - t0) / 1e6,
        "first_inference_ms": (t2 - t1) / 1e6,
        "load_time_ms": (t2 - t0) / 1e6,
        "rss_before_session_mib": rss_before,
        "peak_rss_mib": _status_mib("VmHWM"),
    }


def measure_cold_start(
    model_path: str | Path, settings: RuntimeSettings, specs: list[InputSpec], npz: str | None = None, repeats: int = 3
) -> list[ColdStart]:
    """Run the cold start ``repeats`` times, each in a new interpreter; one record per run."""
    request = {
        "model": str(Path(model_path).resolve()),
        "settings": settings.model_dump(),
        "inputs": [{"name": s.name, "dtype": s.dtype.str, "shape": list(s.shape)} for s in specs],
        "npz": str(Path(npz).resolve()) if npz else None,
    }
    results = []
    for _ in range(repeats):
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "edgeproof.measure.coldstart"],
                input=json.dumps(request),
                capture_output=True,
                text=True,
                timeout=_CHILD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise ModelError(
                f"{model_path}: cold-start process took over {_CHILD_TIMEOUT_S} s (session creation or first inference hangs)"
            ) from None
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ModelError(f"{model_path}: cold-start process failed ({tail})")
        try:
            results.append(ColdStart.model_validate_json(proc.stdout.strip().splitlines()[-1]))
        except (IndexError, ValueError):
            raise ModelError(f"{model_path}: cold-start process printed no result (stdout: {proc.stdout.strip()[:120]!r})") from None
    return results


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.stdin.read()))))
