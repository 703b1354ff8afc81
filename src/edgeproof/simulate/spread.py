"""Which spread compares two simulated runs: the simulator's own when one board profile made both, its validation error when not.

A board profile's error against published figures (``Simulation.latency_interval_rel``, ±20–30%)
says how far its absolute latency may be from the real board's. Two candidates simulated on the same
board with the same profile share that error: it moves both the same way and cannot reorder them, so
they are compared on the simulator's within-board spread alone (the seeded jitter model's sessions,
the interval ``edgeproof.figures`` and the gate's ratio already carry). Runs simulated by different
profiles (another board, another profile or firmware version, the host profile) do not share it:
their ratio's interval widens by both profiles' errors.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from edgeproof.records import RunRecord

if TYPE_CHECKING:
    from edgeproof.gate import RatioEstimate


def shared_profile(a: RunRecord, b: RunRecord) -> bool:
    """True when one board profile (board, catalog version, firmware version) simulated both runs."""
    sa, sb = a.simulation, b.simulation
    return a.kind == b.kind == "simulated" and sa is not None and sb is not None and sa.profile == sb.profile


def unshared_log_half_width(a: RunRecord, b: RunRecord) -> tuple[float, str] | None:
    """For two simulated runs of different profiles: the half-width, in log ratio, that their
    profiles' errors add to a comparison (the two errors in quadrature), and why. None when the runs
    share a profile (or either was not simulated), so nothing is added."""
    if shared_profile(a, b) or a.kind != "simulated" or b.kind != "simulated":
        return None
    sa, sb = a.simulation, b.simulation
    assert sa is not None and sb is not None
    rels = [s.latency_interval_rel for s in (sa, sb) if s.latency_interval_rel is not None]
    half = math.sqrt(sum(math.log1p(r) ** 2 for r in rels))
    return half, f"simulated by different profiles ({sa.profile} vs {sb.profile}): their errors against the boards do not cancel"


def across_profiles(est: RatioEstimate | None, a: RunRecord, b: RunRecord) -> RatioEstimate | None:
    """The gate's latency ratio of ``b`` over ``a``, widened by both profiles' errors where two
    simulated runs do not share a profile (see ``unshared_log_half_width``); as given otherwise."""
    unshared = unshared_log_half_width(a, b)
    if est is None or unshared is None:
        return est
    half, why = unshared
    return replace(est, low=est.low * math.exp(-half), high=est.high * math.exp(half), method=f"{est.method}; {why}")
