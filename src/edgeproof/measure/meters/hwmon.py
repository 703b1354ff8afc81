"""Energy and power sensors in hwmon sysfs: ``energy*_input`` (µJ counters) and ``power*_input`` (µW)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgeproof.measure.meters._base import (
    CounterMeter,
    EnergyMeter,
    MeterError,
    PolledPowerMeter,
    Probe,
)
from edgeproof.measure.meters._sysfs import numeric_key, read_sysfs_label, read_sysfs_number

_ENERGY_FILE = re.compile(r"^energy(\d+)_input$")
_POWER_FILE = re.compile(r"^power(\d+)_(input|average)$")
# Labels that name a whole device or socket; a per-core counter alone would understate the work.
_WHOLE_DEVICE_LABEL = re.compile(r"sock|pack|total|board|sys|vin|_in\b", re.IGNORECASE)


@dataclass(frozen=True)
class HwmonSensor:
    """One hwmon channel: ``kind`` is ``energy`` (µJ counter) or ``power`` (µW reading)."""

    path: Path
    kind: str
    chip: str
    label: str

    @property
    def meter_name(self) -> str:
        return f"hwmon:{self.chip}/{self.label}"

    def read(self) -> float:
        """Joules for an energy counter, watts for a power sensor."""
        return read_sysfs_number(self.path) / 1e6


def hwmon_dir(root: str | Path = "/") -> Path:
    return Path(root) / "sys/class/hwmon"


def find_hwmon_sensors(root: str | Path = "/") -> list[HwmonSensor]:
    """Energy and power channels of every hwmon chip; a power channel is left out when its energy twin exists."""
    base = hwmon_dir(root)
    if not base.is_dir():
        return []
    sensors = []
    for chip_dir in sorted(base.glob("hwmon*"), key=numeric_key):
        chip = read_sysfs_label(chip_dir / "name") or chip_dir.name
        files = sorted(p.name for p in chip_dir.iterdir())
        energy_channels = {m.group(1) for m in map(_ENERGY_FILE.match, files) if m}
        power_channels: dict[str, str] = {}
        for match in filter(None, map(_POWER_FILE.match, files)):
            # Prefer the instantaneous reading over the driver's running average when both exist.
            if power_channels.get(match.group(1)) != "input":
                power_channels[match.group(1)] = match.group(2)
        for channel in sorted(energy_channels, key=int):
            label = read_sysfs_label(chip_dir / f"energy{channel}_label") or f"energy{channel}"
            sensors.append(HwmonSensor(chip_dir / f"energy{channel}_input", "energy", chip, label))
        for channel, suffix in sorted(power_channels.items(), key=lambda kv: int(kv[0])):
            if channel in energy_channels:
                continue
            label = read_sysfs_label(chip_dir / f"power{channel}_label") or f"power{channel}"
            sensors.append(HwmonSensor(chip_dir / f"power{channel}_{suffix}", "power", chip, label))
    return sensors


def hwmon_meter(sensor: HwmonSensor, interval_s: float = 0.05) -> EnergyMeter:
    """A counter meter for an energy channel, a sampled-and-integrated meter for a power channel."""
    if sensor.kind == "energy":
        return CounterMeter(sensor.meter_name, lambda: [sensor.read()], wrap_j=[None], sources=[str(sensor.path)])
    return PolledPowerMeter(sensor.meter_name, sensor.read, interval_s=interval_s)


def probe_hwmon(root: str | Path = "/", interval_s: float = 0.05) -> Probe:
    """Readable hwmon energy/power meters, energy counters and whole-device labels first, or why none."""
    base = hwmon_dir(root)
    if not base.is_dir():
        return Probe([], f"no hwmon power sensor ({base} absent)")
    sensors = find_hwmon_sensors(root)
    if not sensors:
        return Probe([], f"no hwmon power sensor (no power*/energy* inputs under {base})")
    readable, errors = [], []
    for sensor in sensors:
        try:
            sensor.read()
            readable.append(sensor)
        except MeterError as err:
            errors.append(str(err))
    if not readable:
        return Probe([], f"no readable hwmon power sensor ({errors[0]})")
    readable.sort(key=lambda s: (s.kind != "energy", not _WHOLE_DEVICE_LABEL.search(s.label)))
    return Probe([hwmon_meter(s, interval_s) for s in readable])
