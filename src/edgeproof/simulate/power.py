"""Power model and energy: watts for each phase of an inference, energy as their integral over time."""

from __future__ import annotations

from dataclasses import dataclass

from edgeproof.simulate.point import OperatingPoint
from edgeproof.simulate.timing import Timeline
from edgeproof.targets.spec import Target

_LEAKAGE_REF_C = 25.0


def idle_w(target: Target, op: OperatingPoint, temperature_c: float) -> float:
    """Idle power of the mode, plus leakage that grows with temperature above 25 °C."""
    mode = target.power_modes[op.power_mode]
    return mode.idle_w + target.thermal.leakage_w_per_c * max(0.0, temperature_c - _LEAKAGE_REF_C)


def dynamic_w(target: Target, op: OperatingPoint, device: str) -> float:
    """Extra watts while a unit is busy at the operating point's clocks.

    The mode's dynamic power (all its online cores, or the accelerator, at the mode's clocks) is
    scaled by the threads in use and by (clock / mode clock)^dvfs_exponent. A copy or a launch
    keeps one CPU core busy.
    """
    mode = target.power_modes[op.power_mode]
    cpu_ratio = (op.cpu_clock_ghz / mode.cpu_clock_ghz) ** target.dvfs_exponent
    per_core = mode.cpu_dynamic_w / mode.cpu_cores * cpu_ratio
    if device == "cpu":
        return per_core * op.threads
    if device == "accel":
        assert op.accel_clock_mhz is not None and mode.accel_clock_mhz is not None
        return mode.accel_dynamic_w * (op.accel_clock_mhz / mode.accel_clock_mhz) ** target.dvfs_exponent
    return per_core


@dataclass(frozen=True)
class PowerTrace:
    """Piecewise-constant power over one inference: (start µs, duration µs, watts) per phase."""

    segments: tuple[tuple[float, float, float], ...]
    idle_w: float

    @property
    def energy_j(self) -> float:
        return sum(d_us * w for _, d_us, w in self.segments) / 1e6

    @property
    def dynamic_energy_j(self) -> float:
        """Energy above idle: what an inference adds to a board that would sit idle anyway."""
        return sum(d_us * (w - self.idle_w) for _, d_us, w in self.segments) / 1e6

    @property
    def duration_us(self) -> float:
        return sum(d for _, d, _ in self.segments)

    @property
    def mean_w(self) -> float:
        return self.energy_j / (self.duration_us / 1e6) if self.duration_us else self.idle_w


def power_trace(timeline: Timeline, target: Target, op: OperatingPoint, temperature_c: float) -> PowerTrace:
    """Power over one inference at a board temperature (idle, leakage and the busy unit)."""
    base = idle_w(target, op, temperature_c)
    return PowerTrace(
        tuple((p.start_us, p.duration_us, base + dynamic_w(target, op, p.device)) for p in timeline.phases),
        base,
    )
