"""The operating point a simulation runs at: power mode, firmware caps, threads and throttling."""

from __future__ import annotations

from dataclasses import dataclass, replace

from edgeproof.errors import TargetError
from edgeproof.targets.firmware import FirmwareProfile
from edgeproof.targets.spec import PowerMode, Target


@dataclass(frozen=True)
class OperatingPoint:
    """Effective clocks (after firmware caps, power cap and governor) and the threads in use."""

    power_mode: str
    cpu_clock_ghz: float
    cpu_cores: int
    threads: int
    accel_clock_mhz: float | None
    accel_units_frac: float
    memory_bandwidth_gbs: float
    # Multiplier the power cap put on the mode's clocks (1.0: not capped).
    cap_factor: float = 1.0
    # Multiplier the thermal governor put on top (1.0: not throttled).
    throttle_factor: float = 1.0

    def throttled(self, factor: float) -> OperatingPoint:
        """The same point with the governor's clock factor applied to both clocks."""
        scale = factor / self.throttle_factor
        return replace(
            self,
            cpu_clock_ghz=self.cpu_clock_ghz * scale,
            accel_clock_mhz=None if self.accel_clock_mhz is None else self.accel_clock_mhz * scale,
            throttle_factor=factor,
        )


def _dynamic_peak_w(target: Target, mode: PowerMode, threads: int) -> float:
    cpu = mode.cpu_dynamic_w * threads / mode.cpu_cores
    return max(cpu, mode.accel_dynamic_w)


def operating_point(target: Target, firmware: FirmwareProfile, power_mode: str | None = None, threads: int | None = None) -> OperatingPoint:
    """Resolve the power mode (argument, else firmware boot mode, else board default), apply the
    firmware's clock caps, and lower both clocks as far as the mode's power cap requires.

    Dynamic power scales with clock^dvfs_exponent, so the cap factor is
    ((cap - idle) / peak dynamic) ^ (1 / dvfs_exponent) when the peak would exceed the cap. The cap
    holds at the 25 °C leakage reference: leakage from a hot board comes on top (as on boards whose
    power modes are static clock tables rather than a closed power loop).
    """
    name, mode = target.mode(power_mode or firmware.power_mode)
    n_threads = threads or mode.cpu_cores
    if not 1 <= n_threads <= mode.cpu_cores:
        raise TargetError(f"threads={n_threads}: power mode {name!r} of {target.id} has {mode.cpu_cores} cores online")
    cpu_clock = min(mode.cpu_clock_ghz, firmware.cpu_clock_cap_ghz or mode.cpu_clock_ghz)
    accel_clock = mode.accel_clock_mhz
    if accel_clock is not None and firmware.accel_clock_mhz is not None:
        accel_clock = min(accel_clock, firmware.accel_clock_mhz)
    cap = 1.0
    peak = _dynamic_peak_w(target, mode, n_threads)
    if mode.power_cap_w is not None and peak > 0 and mode.idle_w + peak > mode.power_cap_w:
        headroom = mode.power_cap_w - mode.idle_w
        if headroom <= 0:
            raise TargetError(
                f"power mode {name!r} of {target.id}: idle power {mode.idle_w} W already exceeds its cap {mode.power_cap_w} W"
            )
        cap = (headroom / peak) ** (1.0 / target.dvfs_exponent)
    return OperatingPoint(
        power_mode=name,
        cpu_clock_ghz=cpu_clock * cap,
        cpu_cores=mode.cpu_cores,
        threads=n_threads,
        accel_clock_mhz=None if accel_clock is None else accel_clock * cap,
        accel_units_frac=mode.accel_units_frac,
        memory_bandwidth_gbs=mode.memory_bandwidth_gbs or target.memory.bandwidth_gbs,
        cap_factor=cap,
    )
