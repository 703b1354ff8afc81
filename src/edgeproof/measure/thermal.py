"""Temperatures from thermal zones and hwmon sensors, and a background sampler that reports the peak."""

from __future__ import annotations

import threading
from pathlib import Path

import psutil

from edgeproof.measure.meters._sysfs import numeric_key, read_sysfs_label

_ABSOLUTE_ZERO_C = -273.15


def read_temperatures(root: str | Path = "/") -> dict[str, float]:
    """Every readable temperature in °C, keyed ``thermal_zone0:<type>`` or ``hwmon2:<chip>/<label>``.

    Sensors that fail to read (many report EIO or ENODATA while idle) are left out. When ``root``
    is ``/`` and sysfs has none, psutil's view is used (keys ``<chip>/<label>``).
    """
    root = Path(root)
    temps: dict[str, float] = {}
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*"), key=numeric_key):
        value = _read_millidegrees(zone / "temp")
        if value is not None:
            temps[f"{zone.name}:{read_sysfs_label(zone / 'type') or 'unknown'}"] = value
    for chip in sorted((root / "sys/class/hwmon").glob("hwmon*"), key=numeric_key):
        chip_name = read_sysfs_label(chip / "name") or "unknown"
        for sensor in sorted(chip.glob("temp*_input"), key=numeric_key):
            value = _read_millidegrees(sensor)
            if value is None:
                continue
            channel = sensor.name.removesuffix("_input")
            label = read_sysfs_label(chip / f"{channel}_label") or channel
            temps[f"{chip.name}:{chip_name}/{label}"] = value
    if not temps and root == Path("/"):
        temps = _psutil_temperatures()
    return temps


def max_temperature_c(root: str | Path = "/") -> float | None:
    """The hottest readable sensor in °C, or None when no sensor is readable."""
    return max(read_temperatures(root).values(), default=None)


class ThermalSampler:
    """Samples every sensor in a background thread while the ``with`` block runs and keeps the peak.

    ``peak_c`` and ``peak_sensor`` stay None when no sensor is readable; that is "unknown", not cool.
    """

    def __init__(self, root: str | Path = "/", interval_s: float = 0.5) -> None:
        if interval_s <= 0:
            raise ValueError(f"sampling interval must be > 0 s, got {interval_s}")
        self.root = Path(root)
        self.interval_s = interval_s
        self.peak_c: float | None = None
        self.peak_sensor: str | None = None
        self.n_samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def sample(self) -> None:
        """Read every sensor once now and update the peak."""
        temps = read_temperatures(self.root)
        with self._lock:
            self.n_samples += 1
            for sensor, value in temps.items():
                if self.peak_c is None or value > self.peak_c:
                    self.peak_c, self.peak_sensor = value, sensor

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> ThermalSampler:
        self.sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="thermal-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.sample()


def _read_millidegrees(path: Path) -> float | None:
    try:
        value = int(path.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None
    return value if value > _ABSOLUTE_ZERO_C else None


def _psutil_temperatures() -> dict[str, float]:
    sensors = getattr(psutil, "sensors_temperatures", None)
    if sensors is None:
        return {}
    temps = {}
    for chip, entries in sensors().items():
        for i, entry in enumerate(entries, start=1):
            temps[f"{chip}/{entry.label or f'temp{i}'}"] = float(entry.current)
    return temps
