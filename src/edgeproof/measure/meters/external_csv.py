"""An external power meter's CSV log (timestamps + power or cumulative energy), integrated over run windows."""

from __future__ import annotations

import csv
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edgeproof.errors import DataError
from edgeproof.measure.meters._base import EnergyMeter, EnergyWindow, integrate_power_j, interpolate_counter_j

_TIME_COLUMNS = ("timestamp", "time", "time_s", "unix_s", "unix_time", "datetime", "date_time", "t")
# Normalised column name -> factor to watts / joules.
_POWER_COLUMNS = {"power_w": 1.0, "power": 1.0, "watts": 1.0, "power_mw": 1e-3}
_ENERGY_COLUMNS = {"energy_j": 1.0, "energy": 1.0, "joules": 1.0, "energy_mj": 1e-3, "energy_wh": 3600.0}


@dataclass(frozen=True)
class MeterLog:
    """A parsed meter CSV: unix-second timestamps on the meter's clock and watts or cumulative joules."""

    source: str
    kind: str
    times_s: list[float]
    values: list[float]

    def energy_j(self, start_s: float, end_s: float, window: str = "window") -> float:
        """Joules between two instants on the meter's clock; a DataError when the log does not cover them."""
        if start_s < self.times_s[0] or end_s > self.times_s[-1]:
            raise DataError(
                f"{self.source}: {window} [{_iso(start_s)}, {_iso(end_s)}] lies outside the CSV's "
                f"[{_iso(self.times_s[0])}, {_iso(self.times_s[-1])}] (check the clock offset)"
            )
        if self.kind == "power":
            return integrate_power_j(self.times_s, self.values, start_s, end_s)
        return interpolate_counter_j(self.times_s, self.values, end_s) - interpolate_counter_j(self.times_s, self.values, start_s)


def load_meter_csv(path: str | Path, time_column: str | None = None, value_column: str | None = None) -> MeterLog:
    """Parse a meter CSV with a header row.

    The time column holds unix seconds or ISO 8601 (naive times are local time). The value column is
    power (``power_w``, ``power_mw``, ``Power (W)`` ...) or cumulative energy (``energy_j``,
    ``energy_mj``, ``energy_wh``); energy is preferred when both exist. Column names are matched after
    lower-casing and turning non-alphanumerics into ``_``. Any bad row is a DataError naming file:line.
    """
    path = Path(path)
    try:
        with path.open(newline="") as file:
            text = file.read()
    except OSError as err:
        raise DataError(f"{path}: cannot read meter CSV ({err.strerror or err})") from err
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: meter CSV is empty")
    names = [_normalise(h) for h in header]
    time_index = _pick_column(path, names, header, [_normalise(time_column)] if time_column else list(_TIME_COLUMNS), "time")
    kind, value_index, factor = _pick_value(path, names, header, value_column)
    times_s: list[float] = []
    values: list[float] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{reader.line_num}"
        if len(row) != len(header):
            raise DataError(f"{where}: expected {len(header)} fields, got {len(row)}")
        t_s = _parse_time(row[time_index], where)
        value = _parse_value(row[value_index], header[value_index], where) * factor
        if times_s and t_s < times_s[-1]:
            raise DataError(f"{where}: timestamp goes back in time ({row[time_index].strip()})")
        if kind == "power" and value < 0:
            raise DataError(f"{where}: negative power {row[value_index].strip()} in {header[value_index]!r}")
        if kind == "energy" and values and value < values[-1]:
            raise DataError(f"{where}: cumulative energy {header[value_index]!r} decreases; is it per-interval energy?")
        times_s.append(t_s)
        values.append(value)
    if len(times_s) < 2:
        raise DataError(f"{path}: meter CSV needs at least 2 data rows, got {len(times_s)}")
    return MeterLog(source=str(path), kind=kind, times_s=times_s, values=values)


def csv_windows(
    path: str | Path,
    windows: Sequence[tuple[str, float, float]],
    clock_offset_s: float = 0.0,
    time_column: str | None = None,
    value_column: str | None = None,
) -> list[EnergyWindow]:
    """Energy of each ``(name, start_unix_s, end_unix_s)`` host window from a meter CSV.

    ``clock_offset_s`` is how far the meter's clock runs ahead of the host's: the window
    [start, end] on the host is [start + offset, end + offset] in the CSV.
    """
    log = load_meter_csv(path, time_column, value_column)
    meter = f"external:{Path(path).name}"
    result = []
    for name, start_s, end_s in windows:
        energy_j = log.energy_j(start_s + clock_offset_s, end_s + clock_offset_s, window=f"window {name!r}")
        result.append(EnergyWindow(name=name, energy_j=energy_j, duration_s=end_s - start_s, meter=meter))
    return result


class ExternalCsvMeter(EnergyMeter):
    """Windows timed on the host clock, energy read from the meter's CSV when each window ends.

    The CSV is re-read at every ``end_window`` so a log that the meter keeps appending to works;
    it must already cover the window's end by then.
    """

    def __init__(
        self,
        path: str | Path,
        clock_offset_s: float = 0.0,
        time_column: str | None = None,
        value_column: str | None = None,
    ) -> None:
        super().__init__(f"external:{Path(path).name}")
        self.path = Path(path)
        self.clock_offset_s = clock_offset_s
        self._columns = (time_column, value_column)

    def _begin(self) -> tuple[float, float]:
        return time.time(), time.perf_counter()

    def _end(self, state: tuple[float, float]) -> tuple[float, float]:
        end_unix_s, end_s = time.time(), time.perf_counter()
        start_unix_s, start_s = state
        log = load_meter_csv(self.path, *self._columns)
        offset = self.clock_offset_s
        return log.energy_j(start_unix_s + offset, end_unix_s + offset), end_s - start_s


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def _pick_column(path: Path, names: list[str], header: list[str], wanted: list[str], role: str) -> int:
    for name in wanted:
        if name in names:
            return names.index(name)
    raise DataError(f"{path}: no {role} column (looked for {', '.join(wanted)}; header has {', '.join(header)})")


def _pick_value(path: Path, names: list[str], header: list[str], value_column: str | None) -> tuple[str, int, float]:
    if value_column is not None:
        name = _normalise(value_column)
        if name in _ENERGY_COLUMNS:
            return "energy", _pick_column(path, names, header, [name], "energy"), _ENERGY_COLUMNS[name]
        if name in _POWER_COLUMNS:
            return "power", _pick_column(path, names, header, [name], "power"), _POWER_COLUMNS[name]
        units = ", ".join([*_POWER_COLUMNS, *_ENERGY_COLUMNS])
        raise DataError(f"{path}: value column {value_column!r} names no known unit (use one of {units})")
    for kind, table in (("energy", _ENERGY_COLUMNS), ("power", _POWER_COLUMNS)):
        for name, factor in table.items():
            if name in names:
                return kind, names.index(name), factor
    raise DataError(f"{path}: no power or energy column (e.g. power_w, energy_j; header has {', '.join(header)})")


def _parse_time(cell: str, where: str) -> float:
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            raise DataError(f"{where}: timestamp {text!r} is neither unix seconds nor ISO 8601") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: timestamp {text!r} is not finite")
    return value


def _parse_value(cell: str, column: str, where: str) -> float:
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {column} {text!r} is not finite")
    return value


def _iso(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, UTC).isoformat(timespec="milliseconds")
