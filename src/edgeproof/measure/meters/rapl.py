"""CPU package and DRAM energy from RAPL counters in powercap sysfs (``intel-rapl:*/energy_uj``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgeproof.measure.meters._base import CounterMeter, MeterError, Probe
from edgeproof.measure.meters._sysfs import numeric_key, read_sysfs_label, read_sysfs_number

_ZONE_DIR = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")


@dataclass(frozen=True)
class RaplZone:
    """One RAPL power zone: its sysfs folder, domain (``package-0``, ``dram``...) and wrap value."""

    path: Path
    domain: str
    max_energy_j: float | None

    def read_j(self) -> float:
        return read_sysfs_number(self.path / "energy_uj") / 1e6


def powercap_dir(root: str | Path = "/") -> Path:
    return Path(root) / "sys/class/powercap"


def find_rapl_zones(root: str | Path = "/") -> list[RaplZone]:
    """Zones to sum for CPU energy: every package zone and every DRAM zone.

    Core/uncore subzones are inside their package's count and ``psys`` covers the packages too,
    so adding either would count the same joules twice. MMIO zones mirror the MSR ones.
    """
    base = powercap_dir(root)
    if not base.is_dir():
        return []
    zones = []
    for path in sorted(base.iterdir(), key=numeric_key):
        match = _ZONE_DIR.match(path.name)
        if match is None or not (path / "energy_uj").exists():
            continue
        domain = read_sysfs_label(path / "name") or path.name
        if not (domain.startswith("package") or domain == "dram"):
            continue
        if match.group(2) is not None:
            parent = read_sysfs_label(base / f"intel-rapl:{match.group(1)}" / "name") or f"intel-rapl:{match.group(1)}"
            domain = f"{parent}/{domain}"
        zones.append(RaplZone(path=path, domain=domain, max_energy_j=_max_range_j(path)))
    return zones


def rapl_meter(zones: list[RaplZone]) -> CounterMeter:
    """A meter summing the given zones, named ``rapl:<domain>+<domain>...``."""
    if not zones:
        raise MeterError("no RAPL zone to measure")
    return CounterMeter(
        name="rapl:" + "+".join(z.domain for z in zones),
        read_counters_j=lambda: [z.read_j() for z in zones],
        wrap_j=[z.max_energy_j for z in zones],
        sources=[str(z.path / "energy_uj") for z in zones],
    )


def probe_rapl(root: str | Path = "/") -> Probe:
    """The RAPL meter of this host, or why there is none (absent, no zones, or unreadable counters)."""
    base = powercap_dir(root)
    if not base.is_dir():
        return Probe([], f"no RAPL ({base} absent)")
    zones = find_rapl_zones(root)
    if not zones:
        return Probe([], f"no RAPL (no package or dram zone under {base})")
    try:
        for zone in zones:
            zone.read_j()
    except MeterError as err:
        return Probe([], f"RAPL unreadable ({err}; run as root or make energy_uj readable)")
    return Probe([rapl_meter(zones)])


def _max_range_j(zone: Path) -> float | None:
    try:
        return read_sysfs_number(zone / "max_energy_range_uj") / 1e6
    except MeterError:
        return None
