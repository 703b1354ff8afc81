"""System readings for the sampler thread: RSS, PSI, power, temperature, throttle, power mode and firmware.

Each reading is None when this device does not expose it: unavailable, never zero. Power and temperature
go through edgeproof's meter interface when the rest of edgeproof is installed next to the recorder; a
device with only ``edgeproof.telemetry`` reports them as unavailable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class SystemReading:
    """One sampler reading; None where the device does not expose the quantity."""

    rss_bytes: int | None
    memory_psi_some_avg10: float | None
    cpu_psi_some_avg10: float | None
    temperature_c: float | None
    throttle_count: int | None
    power_mode: str | None
    firmware: str | None


def read_rss_bytes(root: Path = Path("/")) -> int | None:
    """Resident set size of this process, from ``/proc/self/statm``."""
    try:
        return int((root / "proc/self/statm").read_text().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


def read_psi_some_avg10(resource: str, root: Path = Path("/")) -> float | None:
    """``some avg10`` of ``/proc/pressure/<resource>`` (percent of time stalled), None without PSI."""
    try:
        text = (root / "proc/pressure" / resource).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("some "):
            fields = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
            try:
                return float(fields["avg10"])
            except (KeyError, ValueError):
                return None
    return None


def read_throttle_count(root: Path = Path("/")) -> int | None:
    """Thermal throttle events the CPUs have counted since boot (x86 ``thermal_throttle``), None where absent."""
    counts = []
    for path in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/thermal_throttle/*_throttle_count")):
        try:
            counts.append(int(path.read_text().strip()))
        except (OSError, ValueError):
            continue
    return sum(counts) if counts else None


def read_power_mode(root: Path = Path("/")) -> str | None:
    """The Jetson nvpmodel mode (``/var/lib/nvpmodel/status``, e.g. ``pmode:0001``), None elsewhere."""
    try:
        text = (root / "var/lib/nvpmodel/status").read_text().strip()
    except OSError:
        return None
    return text.split()[0] if text else None


def read_firmware(root: Path = Path("/")) -> str | None:
    """The board support package release (``/etc/nv_tegra_release`` first line), None elsewhere."""
    try:
        line = (root / "etc/nv_tegra_release").read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return None
    return line.lstrip("# ") or None


def read_temperature_c(root: Path = Path("/")) -> float | None:
    """Hottest readable sensor through edgeproof's thermal reader, None without a sensor or without edgeproof.measure."""
    try:
        from edgeproof.measure.thermal import max_temperature_c
    except ImportError:
        return None
    return max_temperature_c(root)


def read_system(root: Path = Path("/")) -> SystemReading:
    return SystemReading(
        rss_bytes=read_rss_bytes(root),
        memory_psi_some_avg10=read_psi_some_avg10("memory", root),
        cpu_psi_some_avg10=read_psi_some_avg10("cpu", root),
        temperature_c=read_temperature_c(root),
        throttle_count=read_throttle_count(root),
        power_mode=read_power_mode(root),
        firmware=read_firmware(root),
    )


class PowerWindow:
    """Energy over each window through edgeproof's energy meters (begin/end window); unavailable when there is no meter."""

    def __init__(self, root: Path = Path("/")) -> None:
        self.meter: Any = None
        self.why_unavailable = ""
        try:
            from edgeproof.measure.energy import best_meter, why_unavailable
        except ImportError:
            self.why_unavailable = "edgeproof.measure is not installed on this device"
            return
        self.meter = best_meter(root)
        if self.meter is None:
            self.why_unavailable = why_unavailable(root)
        else:
            self.meter.begin_window("telemetry")

    def next_window(self) -> tuple[float, float] | None:
        """(joules, average watts) since the last call, and start the next window; None without a meter."""
        if self.meter is None:
            return None
        window = self.meter.end_window("telemetry")
        self.meter.begin_window("telemetry")
        return float(window.energy_j), float(window.avg_power_w)

    def close(self) -> None:
        if self.meter is not None:
            self.meter.close()
            self.meter = None
