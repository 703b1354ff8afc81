"""The cold-start child: a fresh interpreter that loads what a deployed application loads — ONNX
Runtime and numpy, nothing of edgeproof's — then times session creation and the first inference and
reads its peak RSS. Run as ``python -m edgeproof.measure._coldstart_child`` with a JSON request on
stdin (see ``coldstart.measure_cold_start``); the two edgeproof ``__init__`` files it passes through are empty."""

import json
import sys
import time


def _status_mib(field: str) -> float:
    """A memory figure from /proc/self/status (VmRSS, VmHWM) in MiB.

    VmHWM is used for the peak rather than getrusage's ru_maxrss, which Linux carries over
    from the parent across fork+exec and so would report the parent's peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def main(request: dict) -> dict:
    t_import = time.perf_counter_ns()
    import numpy as np
    import onnxruntime as ort

    import_ms = (time.perf_counter_ns() - t_import) / 1e6
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = request["intra_op_threads"]
    opts.inter_op_num_threads = request["inter_op_threads"]
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = levels[request["graph_optimization_level"]]
    opts.log_severity_level = 4
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
    sess = ort.InferenceSession(request["model"], sess_options=opts, providers=request["providers"])
    t1 = time.perf_counter_ns()
    sess.run(None, feeds)
    t2 = time.perf_counter_ns()
    for _ in range(request["runs_after_load"]):
        sess.run(None, feeds)
    return {
        "import_ms": import_ms,
        "session_ms": (t1 - t0) / 1e6,
        "first_inference_ms": (t2 - t1) / 1e6,
        "load_time_ms": (t2 - t0) / 1e6,
        "rss_before_session_mib": rss_before,
        "peak_rss_mib": _status_mib("VmHWM"),
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.stdin.read()))))
