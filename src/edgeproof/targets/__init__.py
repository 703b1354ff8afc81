"""Board catalog (cited TOML specs, all simulated), firmware profiles, and host detection."""

from edgeproof.targets.catalog import get_target, load_catalog, load_target_file
from edgeproof.targets.firmware import FirmwareProfile, GovernorSpec, default_firmware, load_firmware, resolve_firmware
from edgeproof.targets.spec import PRECISIONS, AcceleratorSpec, CpuSpec, PowerMode, Target

__all__ = [
    "PRECISIONS",
    "AcceleratorSpec",
    "CpuSpec",
    "FirmwareProfile",
    "GovernorSpec",
    "PowerMode",
    "Target",
    "default_firmware",
    "get_target",
    "load_catalog",
    "load_firmware",
    "load_target_file",
    "resolve_firmware",
]
