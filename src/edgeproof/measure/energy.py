"""Energy windows on whatever meter this host has, and a one-line reason when it has none.

Usage, after Zeus::

    meter = best_meter()
    if meter is None:
        figure = Figure.unavailable("mJ", why_unavailable())
    else:
        meter.begin_window("run")
        ...                                   # the work
        window = meter.end_window("run")      # EnergyWindow(name, energy_j, duration_s, meter, avg_power_w)

Meters, best first: the Jetson board-input rail (INA3221 sysfs, then tegrastats), Zeus (NVML GPUs and
RAPL CPUs), RAPL via powercap sysfs, hwmon energy counters, hwmon power sensors. An external meter's
CSV log is never detected; build an ``ExternalCsvMeter`` or call ``csv_windows`` with its path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeproof.measure.meters._base import (
    CounterMeter,
    EnergyMeter,
    EnergyWindow,
    MeterError,
    PolledPowerMeter,
    Probe,
    integrate_power_j,
)
from edgeproof.measure.meters.external_csv import ExternalCsvMeter, MeterLog, csv_windows, load_meter_csv
from edgeproof.measure.meters.hwmon import HwmonSensor, find_hwmon_sensors, hwmon_meter, probe_hwmon
from edgeproof.measure.meters.ina3221 import INPUT_RAILS, Ina3221Rail, find_ina3221_rails, ina3221_meter, probe_ina3221
from edgeproof.measure.meters.rapl import RaplZone, find_rapl_zones, probe_rapl, rapl_meter
from edgeproof.measure.meters.tegrastats import (
    TegrastatsMeter,
    TegrastatsSample,
    find_tegrastats,
    integrate_tegrastats_log,
    parse_tegrastats_line,
    probe_tegrastats,
    tegrastats_trace,
)
from edgeproof.measure.meters.zeus_monitor import ZeusMeter, find_zeus_devices, probe_zeus

__all__ = [
    "INPUT_RAILS",
    "CounterMeter",
    "EnergyMeter",
    "EnergyWindow",
    "ExternalCsvMeter",
    "HwmonSensor",
    "Ina3221Rail",
    "MeterError",
    "MeterLog",
    "PolledPowerMeter",
    "Probe",
    "RaplZone",
    "TegrastatsMeter",
    "TegrastatsSample",
    "ZeusMeter",
    "best_meter",
    "csv_windows",
    "detect_meters",
    "find_hwmon_sensors",
    "find_ina3221_rails",
    "find_rapl_zones",
    "find_tegrastats",
    "find_zeus_devices",
    "hwmon_meter",
    "ina3221_meter",
    "integrate_power_j",
    "integrate_tegrastats_log",
    "load_meter_csv",
    "parse_tegrastats_line",
    "probe_all",
    "probe_hwmon",
    "probe_ina3221",
    "probe_rapl",
    "probe_tegrastats",
    "probe_zeus",
    "rapl_meter",
    "tegrastats_trace",
    "why_unavailable",
]


def probe_all(root: str | Path = "/", interval_s: float = 0.05) -> list[Probe]:
    """Every kind of meter's findings under ``root``, best kind first.

    Zeus reads the real host (NVML, /sys), so it is asked only when ``root`` is ``/``.
    ``interval_s`` is the sampling interval of meters that integrate power readings.
    """
    probes = [
        probe_ina3221(root, interval_s=interval_s),
        probe_tegrastats(root, interval_ms=max(1, round(interval_s * 1e3))),
    ]
    if Path(root) == Path("/"):
        probes.append(probe_zeus())
    probes += [probe_rapl(root), probe_hwmon(root, interval_s=interval_s)]
    return probes


def detect_meters(root: str | Path = "/", interval_s: float = 0.05) -> list[EnergyMeter]:
    """All usable energy meters under ``root``, best first (see the module docstring for the order)."""
    return [meter for probe in probe_all(root, interval_s) for meter in probe.meters]


def best_meter(root: str | Path = "/", interval_s: float = 0.05) -> EnergyMeter | None:
    """The best energy meter under ``root``, or None; the others found are closed."""
    meters = detect_meters(root, interval_s)
    for other in meters[1:]:
        other.close()
    return meters[0] if meters else None


@contextmanager
def opened_meter(root: str | Path = "/") -> Iterator[EnergyMeter | None]:
    """``best_meter`` for the length of a measurement, closed after it (its threads, processes or
    handles released) even when the measurement fails."""
    meter = best_meter(root)
    try:
        yield meter
    finally:
        if meter is not None:
            meter.close()


def why_unavailable(root: str | Path = "/") -> str:
    """One line naming what each kind of meter lacks here, e.g. ``no RAPL (/sys/class/powercap absent), ...``.

    Meaningful when ``best_meter(root)`` is None; kinds that did find a meter are left out, so the
    line is empty when every kind found one.
    """
    probes = probe_all(root)
    for probe in probes:
        for meter in probe.meters:
            meter.close()
    return ", ".join(probe.absent for probe in probes if not probe.meters)
