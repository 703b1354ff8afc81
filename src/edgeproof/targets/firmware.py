"""Firmware profiles: versioned TOML with boot power mode, clock caps, thermal governor and watchdog."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from edgeproof.errors import TargetError
from edgeproof.targets.spec import FrozenSpec, Target

FIRMWARE_DIR = Path(__file__).parent / "firmware"


class GovernorSpec(FrozenSpec):
    """Thermal governor: throttle at trip_c, release at clear_c (hysteresis), polled every poll_interval_s."""

    trip_c: float
    clear_c: float
    throttled_clock_factor: float = Field(gt=0, le=1)
    poll_interval_s: float = Field(gt=0)

    @model_validator(mode="after")
    def _hysteresis(self) -> GovernorSpec:
        if self.clear_c >= self.trip_c:
            raise ValueError(f"clear_c ({self.clear_c}) must be below trip_c ({self.trip_c})")
        return self


class FirmwareProfile(FrozenSpec):
    """What the board's firmware decides: boot power mode, clock caps, governor, watchdog."""

    board: str
    version: str
    description: str = ""
    power_mode: str | None = None
    # Caps below the power mode's clocks (None: the mode's clocks stand).
    accel_clock_mhz: float | None = Field(default=None, gt=0)
    cpu_clock_cap_ghz: float | None = Field(default=None, gt=0)
    # An inference longer than this resets the board (None: no watchdog on the inference task).
    watchdog_timeout_ms: float | None = Field(default=None, gt=0)
    governor: GovernorSpec
    sources: dict[str, str] = Field(default_factory=dict)
    file: str = ""

    def check_against(self, target: Target) -> None:
        """Raise TargetError if this profile does not belong to ``target`` or names an unknown mode."""
        where = self.file or f"firmware {self.version}"
        if self.board != target.id:
            raise TargetError(f"{where}: board {self.board!r} does not match target {target.id!r}")
        if self.power_mode is not None and self.power_mode not in target.power_modes:
            raise TargetError(f"{where}: power_mode {self.power_mode!r} is not one of {sorted(target.power_modes)}")
        if self.accel_clock_mhz is not None and target.accelerator is None:
            raise TargetError(f"{where}: accel_clock_mhz given but {target.id} has no accelerator")


def load_firmware(path: str | Path) -> FirmwareProfile:
    """Load one firmware profile TOML; any problem becomes one TargetError naming the file and field."""
    from edgeproof.targets.catalog import parse_toml_model

    return parse_toml_model(Path(path), FirmwareProfile, require_sources=False)


def default_firmware(target: Target) -> FirmwareProfile:
    """The stock firmware profile of a board: ``firmware/<board id>.toml`` next to the board's own
    TOML (for boards from an extra catalog directory), else the one shipped with edgeproof."""
    candidates = [FIRMWARE_DIR / f"{target.id}.toml"]
    if target.file:
        candidates.insert(0, Path(target.file).parent / "firmware" / f"{target.id}.toml")
    for path in candidates:
        if path.is_file():
            return load_firmware(path)
    raise TargetError(
        f"no stock firmware profile for {target.id!r} (looked for {', '.join(map(str, candidates))}); pass one with --firmware"
    )


def resolve_firmware(target: Target, firmware: FirmwareProfile | str | Path | None) -> FirmwareProfile:
    """The firmware to simulate: the given profile or file, else the board's stock profile; checked."""
    if firmware is None:
        profile = default_firmware(target)
    elif isinstance(firmware, FirmwareProfile):
        profile = firmware
    else:
        profile = load_firmware(firmware)
    profile.check_against(target)
    return profile
