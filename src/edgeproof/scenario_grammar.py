"""The scenario grammar shared by contracts and ``--scenario``: single-stream, periodic:HZ, server:HZ, offline."""

from __future__ import annotations

import math

from edgeproof.errors import suggest

SCENARIOS = ("single-stream", "periodic:HZ", "server:HZ", "offline")
SCENARIO_NAMES = ("single-stream", "periodic", "server", "offline")


def split_scenario(text: str) -> tuple[str, float | None]:
    """Split ``periodic:30`` (fixed rate) or ``server:30`` (Poisson arrivals) into (name, 30.0);
    single-stream and offline carry no rate. A malformed text is a ValueError whose message the
    caller places (a contract's ``file:line``, a command-line flag)."""
    kind, sep, rate = text.partition(":")
    if kind in ("single-stream", "offline"):
        if sep:
            raise ValueError(f"scenario {text!r}: {kind} takes no rate")
        return kind, None
    if kind in ("periodic", "server"):
        if not sep:
            raise ValueError(f"scenario {text!r} needs a rate: {kind}:HZ, e.g. {kind}:30")
        try:
            rate_hz = float(rate)
        except ValueError:
            rate_hz = math.nan
        if not 0 < rate_hz < math.inf:
            raise ValueError(f"{kind} rate must be a positive number of Hz, got {rate!r}")
        return kind, rate_hz
    raise ValueError(f"unknown scenario {text!r}{suggest(kind, SCENARIO_NAMES)}; expected one of {', '.join(SCENARIOS)}")
