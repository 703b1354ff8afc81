"""Thermal soak: lumped RC temperature under sustained periodic load, with a hysteresis governor."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from edgeproof.targets.firmware import GovernorSpec
from edgeproof.targets.spec import ThermalSpec

_MAX_STEPS = 20_000


@dataclass(frozen=True)
class LoadPoint:
    """What one inference costs at a given governor clock factor."""

    latency_ms: float
    dynamic_energy_j: float


@dataclass
class SoakResult:
    """Time series (one entry per governor poll) and the events and summaries of a soak."""

    step_s: float
    ambient_c: float
    rate_hz: float | None
    t_s: list[float] = field(default_factory=list)
    temperature_c: list[float] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    clock_factor: list[float] = field(default_factory=list)
    throughput_ips: list[float] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)

    @property
    def sustained_w(self) -> float:
        """Mean power over the last quarter of the soak (after the thermal transient)."""
        tail = self.power_w[-max(1, len(self.power_w) // 4) :]
        return sum(tail) / len(tail)

    @property
    def peak_c(self) -> float:
        return max(self.temperature_c)

    @property
    def first_trip_s(self) -> float | None:
        return next((e["t_s"] for e in self.events if e["event"] == "trip"), None)

    @property
    def throttled_s(self) -> float:
        return sum(self.step_s for f in self.clock_factor if f < 1.0)

    def to_dict(self) -> dict:
        """The fields of a run's ``SoakTrace`` that the soak itself knows."""
        trip = self.first_trip_s
        before = [lat for t, lat in zip(self.t_s, self.latency_ms) if trip is None or t < trip]
        after = [lat for t, lat in zip(self.t_s, self.latency_ms) if trip is not None and t >= trip]
        return {
            "duration_s": self.t_s[-1] + self.step_s if self.t_s else 0.0,
            "step_s": self.step_s,
            "ambient_c": self.ambient_c,
            "rate_hz": self.rate_hz,
            "t_s": self.t_s,
            "temperature_c": self.temperature_c,
            "power_w": self.power_w,
            "latency_ms": self.latency_ms,
            "clock_factor": self.clock_factor,
            "throughput_ips": self.throughput_ips,
            "throttle_events": self.events,
            "first_trip_s": trip,
            "throttled_s": self.throttled_s,
            "peak_temperature_c": self.peak_c,
            "sustained_w": self.sustained_w,
            "mean_latency_before_trip_ms": sum(before) / len(before) if before else None,
            "mean_latency_after_trip_ms": sum(after) / len(after) if after else None,
        }


def rc_step(temperature_c: float, power_w: float, ambient_c: float, thermal: ThermalSpec, dt_s: float) -> float:
    """Exact solution of C dT/dt = P - (T - T_amb)/R over dt with P held constant."""
    steady = ambient_c + power_w * thermal.r_th_c_per_w
    tau = thermal.r_th_c_per_w * thermal.c_th_j_per_c
    return steady + (temperature_c - steady) * math.exp(-dt_s / tau)


def idle_equilibrium_c(idle_w_at: Callable[[float], float], ambient_c: float, thermal: ThermalSpec) -> float:
    """Temperature a board settles at while idle (idle power rises with temperature through leakage)."""
    temp = ambient_c
    for _ in range(50):
        temp = ambient_c + idle_w_at(temp) * thermal.r_th_c_per_w
    return temp


def soak(
    load_at: Callable[[float], LoadPoint],
    idle_w_at: Callable[[float], float],
    thermal: ThermalSpec,
    governor: GovernorSpec,
    duration_s: float,
    ambient_c: float,
    rate_hz: float | None = None,
) -> SoakResult:
    """Run sustained load for ``duration_s`` from idle equilibrium at ``ambient_c``.

    Every governor poll the board runs at a clock factor set by a three-level governor with
    hysteresis: 1 below trip_c; the firmware's throttled factor from trip_c until the temperature
    falls to clear_c; that factor squared at the junction limit (max_junction_c), released one
    hysteresis band (trip_c - clear_c) below it. Inferences run back to back (rate_hz None) or at
    rate_hz when the latency allows; power = idle (with leakage at the current temperature) +
    inferences/s x dynamic energy per inference; the temperature follows the RC model.
    """
    steps = max(1, math.ceil(duration_s / governor.poll_interval_s))
    step = governor.poll_interval_s if steps <= _MAX_STEPS else duration_s / _MAX_STEPS
    steps = min(steps, _MAX_STEPS)
    band = governor.trip_c - governor.clear_c
    result = SoakResult(step_s=step, ambient_c=ambient_c, rate_hz=rate_hz)
    temp = idle_equilibrium_c(idle_w_at, ambient_c, thermal)
    level = 0
    for i in range(steps):
        t = i * step
        new = _governor_level(level, temp, governor, thermal.max_junction_c, band)
        if new != level:
            event = "trip" if new > level else "clear"
            result.events.append({"t_s": t, "event": event, "level": new, "temperature_c": round(temp, 3)})
            level = new
        factor = governor.throttled_clock_factor**level
        point = load_at(factor)
        max_ips = 1000.0 / point.latency_ms
        ips = max_ips if rate_hz is None else min(rate_hz, max_ips)
        power = idle_w_at(temp) + ips * point.dynamic_energy_j
        result.t_s.append(t)
        result.temperature_c.append(temp)
        result.power_w.append(power)
        result.latency_ms.append(point.latency_ms)
        result.clock_factor.append(factor)
        result.throughput_ips.append(ips)
        temp = rc_step(temp, power, ambient_c, thermal, step)
    return result


def _governor_level(level: int, temp: float, governor: GovernorSpec, limit_c: float, band: float) -> int:
    """0 = full clock, 1 = throttled, 2 = hard-throttled at the junction limit (hysteresis on both)."""
    if temp >= limit_c:
        return 2
    if level == 2:
        return 2 if temp > limit_c - band else 1
    if level == 0 and temp >= governor.trip_c:
        return 1
    if level == 1 and temp <= governor.clear_c:
        return 0
    return level
