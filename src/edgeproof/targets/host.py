"""Detect the machine edgeproof runs on: CPU, memory, ONNX Runtime build and providers, governor."""

from __future__ import annotations

import os
import platform
import socket
from datetime import UTC, datetime
from pathlib import Path

import onnx
import onnxruntime as ort
import psutil
from pydantic import BaseModel, ConfigDict

import edgeproof
from edgeproof.platform_facts import platform_facts
from edgeproof.records import EnvFingerprint, TargetRef


def cpu_model(root: str = "/") -> str:
    cpuinfo = Path(root, "proc/cpuinfo")
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_governor(root: str = "/") -> str | None:
    """The cpufreq governor of cpu0, or None where the kernel does not expose it (VMs, containers)."""
    try:
        return Path(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


def cpu_flags(root: str = "/") -> list[str]:
    try:
        for line in Path(root, "proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.partition(":")[2].split()
    except OSError:
        pass
    return []


class HostLoad(BaseModel):
    """How busy this machine was at one moment: what a shared host's timings depend on beyond its hardware."""

    model_config = ConfigDict(extra="forbid")

    at: str
    load_avg_1m: float
    load_avg_5m: float
    load_avg_15m: float
    cores: int
    cpu_mhz: float | None = None
    governor: str | None = None

    def describe(self) -> str:
        clock = f", {self.cpu_mhz:.0f} MHz" if self.cpu_mhz else ""
        governor = f", governor {self.governor}" if self.governor else ""
        return f"load average {self.load_avg_1m:.2f}/{self.load_avg_5m:.2f}/{self.load_avg_15m:.2f} (1/5/15 min) on {self.cores} cores{clock}{governor}"


def cpu_mhz() -> float | None:
    """The CPU's current clock as the kernel reports it (cpufreq, else /proc/cpuinfo); None where hidden."""
    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError):
        freq = None
    return round(freq.current, 1) if freq is not None and freq.current > 0 else None


def host_load() -> HostLoad:
    """This machine's load now: load averages, online cores, clock and governor."""
    one, five, fifteen = os.getloadavg()
    return HostLoad(
        at=datetime.now(UTC).isoformat(timespec="seconds"),
        load_avg_1m=round(one, 2),
        load_avg_5m=round(five, 2),
        load_avg_15m=round(fifteen, 2),
        cores=psutil.cpu_count(logical=True) or 1,
        cpu_mhz=cpu_mhz(),
        governor=cpu_governor(),
    )


def fingerprint() -> EnvFingerprint:
    """Everything about this machine that can change a measurement, recorded with every run."""
    flags = set(cpu_flags())
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "sve") if f in flags]
    extra = {"isa": ",".join(isa), "machine": platform.machine()}
    build = ort.get_build_info() if hasattr(ort, "get_build_info") else ""
    if build:
        extra["onnxruntime_build"] = build.removeprefix("ORT Build Info: ")
    if hasattr(os, "sched_getaffinity"):
        extra["affinity"] = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    extra |= platform_facts()  # compiler, driver, board and kernel facts the BOM states
    return EnvFingerprint(
        hostname=socket.gethostname(),
        os=f"{platform.system()} {platform.release()}",
        cpu_model=cpu_model(),
        cpu_cores=psutil.cpu_count(logical=True) or 1,
        ram_gib=round(psutil.virtual_memory().total / 2**30, 2),
        python=platform.python_version(),
        onnxruntime=ort.__version__,
        onnx=onnx.__version__,
        providers=list(ort.get_available_providers()),
        edgeproof=edgeproof.__version__,
        governor=cpu_governor(),
        extra=extra,
    )


# The target id of this machine, wherever a board id could stand.
HOST_ID = "host"


def host_target() -> TargetRef:
    return TargetRef(id=HOST_ID, kind="host")
