"""Host fitness before measuring: governor, other load, thermal state, free memory, a timing probe."""

from __future__ import annotations

import os
import time

import numpy as np
import psutil

from edgeproof.records import FitnessCheck, HostFitness
from edgeproof.targets.host import cpu_governor

# Limits: other processes using more than a fifth of the machine, or a probe whose run-to-run
# spread exceeds 10%, make sub-5% latency differences unreadable.
_MAX_OTHER_LOAD = 0.20
_MAX_PROBE_CV = 0.10
_MIN_FREE_GIB = 1.0
_MAX_TEMP_C = 85.0


def _probe_cv(repeats: int = 15) -> float:
    """Coefficient of variation of a fixed numeric kernel: how steady this machine's clock is now."""
    a = np.random.default_rng(0).random((128, 128), dtype=np.float32)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(20):
            a = a @ a
            a /= np.abs(a).max()
        times.append(time.perf_counter_ns() - t0)
    arr = np.array(times[2:], dtype=np.float64)
    return float(arr.std() / arr.mean())


def _other_load(window_s: float = 0.5) -> float:
    """Share of all cores busy with other processes over a short window (0..1)."""
    me = psutil.Process(os.getpid())
    me.cpu_percent(None)
    psutil.cpu_percent(None)
    time.sleep(window_s)
    total = psutil.cpu_percent(None) / 100.0
    mine = me.cpu_percent(None) / 100.0 / (psutil.cpu_count() or 1)
    return max(0.0, total - mine)


def check_host(temperature_c: float | None = None) -> HostFitness:
    """Run every check; the host is fit only when all pass. Unreadable sensors are noted, not failed."""
    checks = []
    gov = cpu_governor()
    checks.append(
        FitnessCheck(
            name="cpu governor",
            ok=gov in (None, "performance"),
            value=gov or "not exposed",
            detail="" if gov in (None, "performance") else "set 'performance' so clocks do not ramp during a run",
        )
    )
    load = _other_load()
    checks.append(
        FitnessCheck(
            name="other load",
            ok=load <= _MAX_OTHER_LOAD,
            value=f"{load:.0%} of all cores",
            detail="" if load <= _MAX_OTHER_LOAD else "other processes compete for the CPU; timings will be noisy",
        )
    )
    free_gib = psutil.virtual_memory().available / 2**30
    checks.append(
        FitnessCheck(
            name="free memory",
            ok=free_gib >= _MIN_FREE_GIB,
            value=f"{free_gib:.1f} GiB",
            detail="" if free_gib >= _MIN_FREE_GIB else "low memory: paging would distort latency and RSS",
        )
    )
    if temperature_c is None:
        checks.append(FitnessCheck(name="thermal", ok=True, value="no sensor", detail="no temperature sensor readable"))
    else:
        hot = temperature_c >= _MAX_TEMP_C
        checks.append(
            FitnessCheck(
                name="thermal",
                ok=not hot,
                value=f"{temperature_c:.0f} °C",
                detail="near throttling; let it cool" if hot else "",
            )
        )
    cv = _probe_cv()
    checks.append(
        FitnessCheck(
            name="timing probe",
            ok=cv <= _MAX_PROBE_CV,
            value=f"cv {cv:.1%}",
            detail="" if cv <= _MAX_PROBE_CV else "a fixed kernel's time varies a lot: the machine is busy or throttling",
        )
    )
    return HostFitness(fit=all(c.ok for c in checks), checks=checks)
