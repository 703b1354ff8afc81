"""Board simulator: roofline per kernel, partitioning and copies, power modes, thermal RC soak, host profile."""

from edgeproof.simulate.compat import CompatRow, compat_matrix
from edgeproof.simulate.hostprofile import HostProfile, calibrate, host_profile, load_profile, save_profile
from edgeproof.simulate.run import HOST_ID, simulate_run

__all__ = [
    "HOST_ID",
    "CompatRow",
    "HostProfile",
    "calibrate",
    "compat_matrix",
    "host_profile",
    "load_profile",
    "save_profile",
    "simulate_run",
]
