"""The energy-meter interface: name a window, get its joules back; a meter that cannot measure says why."""

from __future__ import annotations

import abc
import bisect
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeproof.errors import EdgeproofError


class MeterError(EdgeproofError):
    """An energy meter is absent or unreadable, or lost its reading during a window."""


@dataclass(frozen=True)
class EnergyWindow:
    """Energy used between ``begin_window(name)`` and ``end_window(name)`` on one meter.

    ``meter`` is the meter's name, ready for ``Figure.measured(..., meter=window.meter)``;
    ``avg_power_w`` is derived from the other two figures.
    """

    name: str
    energy_j: float
    duration_s: float
    meter: str
    avg_power_w: float = field(init=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.energy_j) and self.energy_j >= 0.0):
            raise ValueError(f"window {self.name!r} on {self.meter}: energy must be finite and >= 0, got {self.energy_j}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0.0):
            raise ValueError(f"window {self.name!r} on {self.meter}: duration must be > 0 s, got {self.duration_s}")
        object.__setattr__(self, "avg_power_w", self.energy_j / self.duration_s)


class EnergyMeter(abc.ABC):
    """One source of joules. Windows may overlap; each name is open at most once at a time.

    Subclasses implement ``_begin`` (returns the state to keep for the window) and ``_end``
    (turns that state into ``(energy_j, duration_s)``); the public methods check the names.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._open: dict[str, Any] = {}

    def begin_window(self, name: str) -> None:
        """Start measuring a window called ``name`` (must not already be open on this meter)."""
        if name in self._open:
            raise ValueError(f"energy window {name!r} is already open on {self.name}")
        self._open[name] = self._begin()

    def end_window(self, name: str) -> EnergyWindow:
        """Stop the window ``name`` and return its energy and duration."""
        try:
            state = self._open.pop(name)
        except KeyError:
            raise ValueError(f"energy window {name!r} is not open on {self.name}") from None
        energy_j, duration_s = self._end(state)
        return EnergyWindow(name=name, energy_j=energy_j, duration_s=duration_s, meter=self.name)

    @property
    def open_windows(self) -> tuple[str, ...]:
        """Names of the windows begun and not yet ended."""
        return tuple(self._open)

    def close(self) -> None:
        """Drop open windows and release threads, processes or handles the meter holds."""
        self._open.clear()
        self._release()

    def __enter__(self) -> EnergyMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    @abc.abstractmethod
    def _begin(self) -> Any: ...

    @abc.abstractmethod
    def _end(self, state: Any) -> tuple[float, float]: ...

    def _release(self) -> None:  # noqa: B027  (a hook: most meters hold nothing to free)
        """Free what the meter holds; nothing by default."""


@dataclass(frozen=True)
class Probe:
    """What one kind of meter found on a host: its meters, or one phrase saying why there are none."""

    meters: list[EnergyMeter]
    absent: str = ""


class CounterMeter(EnergyMeter):
    """Energy from cumulative counters read at both ends of a window (RAPL zones, hwmon energy inputs).

    ``read_counters_j`` returns one reading per counter; ``wrap_j[i]`` is the value at which counter
    ``i`` wraps to zero (None for counters that never wrap). A counter that wraps more than once
    within one window cannot be told apart from one that wrapped once, so keep windows shorter than
    the wrap period (minutes to hours for RAPL, depending on power).
    """

    def __init__(
        self,
        name: str,
        read_counters_j: Callable[[], list[float]],
        wrap_j: Sequence[float | None],
        sources: Sequence[str],
    ) -> None:
        super().__init__(name)
        self._read = read_counters_j
        self._wrap_j = list(wrap_j)
        self._sources = list(sources)

    def _begin(self) -> tuple[float, list[float]]:
        readings = self._read()
        return time.perf_counter(), readings

    def _end(self, state: tuple[float, list[float]]) -> tuple[float, float]:
        readings = self._read()
        end_s = time.perf_counter()
        start_s, start_readings = state
        total_j = 0.0
        for before, after, wrap, source in zip(start_readings, readings, self._wrap_j, self._sources):
            total_j += counter_delta_j(before, after, wrap, source)
        return total_j, end_s - start_s


def counter_delta_j(before_j: float, after_j: float, wrap_j: float | None, source: str) -> float:
    """Energy between two readings of a cumulative counter, allowing one wrap-around at ``wrap_j``."""
    delta = after_j - before_j
    if delta >= 0:
        return delta
    if wrap_j is None:
        raise MeterError(f"{source} went backwards ({before_j} J -> {after_j} J): counter reset, window energy unknown")
    return delta + wrap_j


class PolledPowerMeter(EnergyMeter):
    """Energy from a power reading sampled in a background thread and integrated (trapezoid rule).

    A reading is also taken at the exact start and end of every window, so a window's integral
    is bounded by real samples. The thread runs only while a window is open.
    """

    def __init__(self, name: str, read_power_w: Callable[[], float], interval_s: float = 0.05) -> None:
        if interval_s <= 0:
            raise ValueError(f"sampling interval must be > 0 s, got {interval_s}")
        super().__init__(name)
        self._read_power_w = read_power_w
        self.interval_s = interval_s
        self._trace = PowerTrace()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: MeterError | None = None

    def _sample(self) -> float:
        # Stamped before the read: a window's end sample is never later than the end_window call.
        t_s = time.perf_counter()
        self._trace.add(t_s, self._read_power_w())
        return t_s

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sample()
            except MeterError as err:
                self._error = err
                return

    def _begin(self) -> float:
        start_s = self._sample()
        if self._thread is None:
            self._error = None
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, name=f"energy:{self.name}", daemon=True)
            self._thread.start()
        return start_s

    def _end(self, start_s: float) -> tuple[float, float]:
        try:
            end_s = self._sample()
            times_s, power_w = self._trace.between(start_s, end_s)
            error = self._error
        finally:
            if self._open:
                self._trace.drop_before(min(self._open.values()))
            else:
                self._release()
        if error is not None:
            raise error
        return integrate_power_j(times_s, power_w, start_s, end_s), end_s - start_s

    def _release(self) -> None:  # noqa: B027  (a hook: most meters hold nothing to free)
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._trace.clear()


class PowerTrace:
    """Thread-safe time-ordered (seconds, watts) samples."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: list[tuple[float, float]] = []

    def add(self, t_s: float, power_w: float) -> None:
        with self._lock:
            self._samples.append((t_s, power_w))

    def between(self, start_s: float, end_s: float) -> tuple[list[float], list[float]]:
        """Samples with start_s <= t <= end_s, plus the nearest one outside each end, in time order."""
        with self._lock:
            samples = sorted(self._samples)
        before = [s for s in samples if s[0] < start_s][-1:]
        inside = [s for s in samples if start_s <= s[0] <= end_s]
        after = [s for s in samples if s[0] > end_s][:1]
        chosen = before + inside + after
        return [t for t, _ in chosen], [p for _, p in chosen]

    def latest_time(self) -> float | None:
        with self._lock:
            return max((t for t, _ in self._samples), default=None)

    def drop_before(self, t_s: float) -> None:
        """Forget samples no open window needs, keeping the last one before ``t_s``."""
        with self._lock:
            self._samples.sort()
            keep_from = max(0, sum(1 for t, _ in self._samples if t < t_s) - 1)
            del self._samples[:keep_from]

    def clear(self) -> None:
        with self._lock:
            self._samples.clear()


def integrate_power_j(times_s: Sequence[float], power_w: Sequence[float], start_s: float, end_s: float) -> float:
    """Joules between ``start_s`` and ``end_s`` from power samples (trapezoid rule, linear at the edges).

    Samples must be in time order and cover the window: the first at or before ``start_s``,
    the last at or after ``end_s``.
    """
    if end_s < start_s:
        raise ValueError(f"window ends ({end_s}) before it starts ({start_s})")
    first = bisect.bisect_right(times_s, start_s)
    last = bisect.bisect_left(times_s, end_s)
    points = [(start_s, _interpolate(times_s, power_w, start_s))]
    points += zip(times_s[first:last], power_w[first:last])
    points.append((end_s, _interpolate(times_s, power_w, end_s)))
    return sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in zip(points, points[1:]))


def interpolate_counter_j(times_s: Sequence[float], energy_j: Sequence[float], at_s: float) -> float:
    """Cumulative energy at ``at_s`` by linear interpolation between the readings around it."""
    return _interpolate(times_s, energy_j, at_s)


def _interpolate(times_s: Sequence[float], values: Sequence[float], at_s: float) -> float:
    if not times_s or not times_s[0] <= at_s <= times_s[-1]:
        covered = f"[{times_s[0]}, {times_s[-1]}]" if times_s else "nothing"
        raise ValueError(f"samples cover {covered}, not {at_s}")
    i = bisect.bisect_left(times_s, at_s)
    if times_s[i] == at_s:
        return values[i]
    t0, t1 = times_s[i - 1], times_s[i]
    return values[i - 1] + (values[i] - values[i - 1]) * (at_s - t0) / (t1 - t0)
