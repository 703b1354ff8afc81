"""Runs in a fresh interpreter on the board: import, session creation, first inference and peak RSS."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

_RUNS_AFTER_LOAD = 20


def _status_mib(field: str) -> float:
    """VmRSS or VmHWM from /proc/self/status in MiB (VmHWM, not ru_maxrss, which Linux carries
    over from the parent across fork+exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def cold_start(request: dict[str, Any]) -> dict[str, float]:
    t_import = time.perf_counter_ns()
    import numpy as np

    from edgeproof_agent._timing import open_session

    import_ms = (time.perf_counter_ns() - t_import) / 1e6
    with np.load(request["npz"], allow_pickle=False) as npz:
        feeds = {name: npz[name] for name in npz.files}
    rss_before = _status_mib("VmRSS")
    t0 = time.perf_counter_ns()
    session = open_session(request["model"], request["settings"])
    t1 = time.perf_counter_ns()
    session.run(None, feeds)
    t2 = time.perf_counter_ns()
    for _ in range(_RUNS_AFTER_LOAD):
        session.run(None, feeds)
    return {
        "import_ms": import_ms,
        "session_ms": (t1 - t0) / 1e6,
        "first_inference_ms": (t2 - t1) / 1e6,
        "load_time_ms": (t2 - t0) / 1e6,
        "rss_before_session_mib": rss_before,
        "peak_rss_mib": _status_mib("VmHWM"),
    }


if __name__ == "__main__":
    print(json.dumps(cold_start(json.loads(sys.stdin.read()))))
