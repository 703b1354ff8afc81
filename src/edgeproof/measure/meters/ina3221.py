"""Jetson board power from the INA3221 rail monitors in sysfs, sampled and integrated over each window."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from edgeproof.measure.meters._base import MeterError, PolledPowerMeter, Probe
from edgeproof.measure.meters._sysfs import numeric_key, read_sysfs_label, read_sysfs_number

# Rails that carry the whole module's input power, by JetPack generation (Orin/Xavier NX/TX2, Nano).
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")

_HWMON_LABEL = re.compile(r"^in(\d+)_label$")
_IIO_RAIL_NAME = re.compile(r"^rail_name_(\d+)$")


@dataclass(frozen=True)
class Ina3221Rail:
    """One monitored rail: watts = product of its files' readings × ``scale``.

    That is one power file in mW (scale 1e-3), or a current in mA and a bus voltage in mV (scale 1e-6).
    """

    name: str
    paths: tuple[Path, ...]
    scale: float

    def read_power_w(self) -> float:
        return math.prod(read_sysfs_number(p) for p in self.paths) * self.scale


def ina3221_drivers(root: str | Path = "/") -> list[Path]:
    """Driver folders: ``ina3221x`` on downstream (older) kernels, ``ina3221`` on mainline ones."""
    return sorted((Path(root) / "sys/bus/i2c/drivers").glob("ina3221*"))


def find_ina3221_rails(root: str | Path = "/") -> list[Ina3221Rail]:
    """Every labelled rail of every INA3221 chip, in hwmon layout (``inN_label``, ``currN_input``,
    ``inN_input``) or downstream iio layout (``rail_name_N``, ``in_powerN_input`` ...)."""
    rails = []
    for driver in ina3221_drivers(root):
        for device in sorted((p for p in driver.iterdir() if p.is_dir()), key=numeric_key):
            subfolders = [*device.glob("hwmon/hwmon*"), *device.glob("iio:device*")]
            for folder in [device, *sorted(subfolders, key=numeric_key)]:
                rails += _rails_in(folder)
    return rails


def _rails_in(folder: Path) -> list[Ina3221Rail]:
    rails = []
    for path in sorted(folder.iterdir()):
        if match := _HWMON_LABEL.match(path.name):
            n = match.group(1)
            power, current, voltage = folder / f"power{n}_input", folder / f"curr{n}_input", folder / f"in{n}_input"
        elif match := _IIO_RAIL_NAME.match(path.name):
            n = match.group(1)
            power, current, voltage = (folder / f"in_{kind}{n}_input" for kind in ("power", "current", "voltage"))
        else:
            continue
        name = read_sysfs_label(path)
        if name is None:
            continue
        if power.exists():
            rails.append(Ina3221Rail(name, (power,), 1e-3))
        elif current.exists() and voltage.exists():
            rails.append(Ina3221Rail(name, (current, voltage), 1e-6))
    return rails


def ina3221_meter(root: str | Path = "/", rail: str | None = None, interval_s: float = 0.05) -> PolledPowerMeter:
    """A sampled meter on the rail named ``rail`` (default: the board input rail, VDD_IN or POM_5V_IN)."""
    rails = {r.name: r for r in find_ina3221_rails(root)}
    wanted = [rail] if rail is not None else list(INPUT_RAILS)
    for name in wanted:
        if name in rails:
            chosen = rails[name]
            chosen.read_power_w()  # an unreadable rail fails here, not in the middle of a window
            return PolledPowerMeter(f"ina3221:{name}", chosen.read_power_w, interval_s=interval_s)
    found = ", ".join(rails) or "none"
    raise MeterError(f"no INA3221 rail named {' or '.join(wanted)} (rails found: {found})")


def probe_ina3221(root: str | Path = "/", interval_s: float = 0.05) -> Probe:
    """The board-input INA3221 meter, or why there is none."""
    if not ina3221_drivers(root):
        return Probe([], f"no INA3221 ({Path(root) / 'sys/bus/i2c/drivers'}/ina3221* absent)")
    try:
        return Probe([ina3221_meter(root, interval_s=interval_s)])
    except MeterError as err:
        return Probe([], f"INA3221 unusable ({err})")
