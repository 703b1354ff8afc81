"""A short simulated fleet for ``make demo``: an injected silent fallback on one chip revision fires its alarm, and the playbook says what to do.

Call ``run_fleet_demo(out_dir)`` (or ``python -m edgeproof.fleet.demo --out DIR``); it returns 0 when the
injected fault fired its alarm in the faulty strata and nowhere else, 1 otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeproof.fleet._alarms import evaluate_alarms
from edgeproof.fleet._playbook import load_playbook
from edgeproof.fleet._simulate import Fault, FleetSimulator, FleetSpec, Release
from edgeproof.fleet._store import FleetStore
from edgeproof.fleet._text import firing_lines, summary_line

if TYPE_CHECKING:
    from edgeproof.contract import Rollback

FAULTY_CHIP = "A2"


def run_fleet_demo(out: Path, devices: int = 3000, seed: int = 0, hours: float = 12.0, rollback: Rollback | None = None) -> int:
    """Simulate ``devices`` devices (half on a candidate release that falls back to the CPU on chip revision A2),
    ingest their segments, judge the alarms and print the firing ones with their playbook steps."""
    t0 = time.perf_counter()
    out = Path(out)
    spool, store_path = out / "spool", out / "fleet.duckdb"
    shutil.rmtree(spool, ignore_errors=True)
    store_path.unlink(missing_ok=True)
    fault = Fault("provider-fallback", release="candidate", chip_revision=FAULTY_CHIP, rate=0.05)
    sim = FleetSimulator(FleetSpec(devices=devices, seed=seed, faults=(fault,)))
    candidate = Release("candidate", "ca" * 32, "fw-1")
    sim.set_release(np.arange(0, devices, 2), candidate, "canary")
    paths = sim.write(spool, hours)
    print(
        f"simulated {devices} devices for {hours:g} h (board simulator per board and region, labelled simulated) -> {len(paths)} segment file(s)"
    )
    with FleetStore(store_path) as store:
        report = store.ingest([spool])
        print(
            f"ingested {report.rows_read} rows in {report.seconds:.2f} s: {report.windows} windows, {report.events} events, "
            f"{report.duplicates} duplicates dropped, {report.rejected} refused"
        )
        alarms = evaluate_alarms(store, "canary", "control", rollback, window_h=hours)
    print(summary_line(alarms))
    for line in firing_lines(alarms, load_playbook()):
        print(line)
    fired = {v.stratum["chip_revision"] for v in alarms.firing if v.alarm == "fallback_rate"}
    elsewhere = [v for v in alarms.firing if v.stratum["chip_revision"] != FAULTY_CHIP]
    print(f"fleet demo took {time.perf_counter() - t0:.1f} s")
    return 0 if fired == {FAULTY_CHIP} and not elsewhere else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/demo/fleet"))
    parser.add_argument("--devices", type=int, default=3000)
    args = parser.parse_args()
    return run_fleet_demo(args.out, args.devices)


if __name__ == "__main__":
    sys.exit(main())
