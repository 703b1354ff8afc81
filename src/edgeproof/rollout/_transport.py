"""The fleet transport: how the controller sends a release to devices and reads back what they report; the fleet simulator implements it."""

from __future__ import annotations

import json
import os
import pickle
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeproof.fleet._simulate import FleetSimulator, FleetSpec, Release
from edgeproof.fleet._store import FleetStore
from edgeproof.records import write_atomic
from edgeproof.rollout._plan import Device, ReleaseRef

SNAPSHOT_NAME = "fleet-sim.pickle"
SEND_LOG_NAME = "fleet-sends.jsonl"


@dataclass(frozen=True)
class Reported:
    """What a device says it runs: model hash, firmware version and the last intent it handled.

    A device with A/B slots also names its active slot and whether that slot is committed (passed its health
    check), and ``reverted`` says why it reverted ``intent`` by itself (its health check failed, or it did not
    boot): it then runs what it ran before, not what ``intent`` sent. ``firmware_sha256`` is the sha256 of the
    firmware image its active slot holds (None where it holds a version only, or the transport has no images)."""

    model_sha256: str
    firmware_version: str
    intent: str
    slot: str | None = None
    committed: bool = True
    reverted: str | None = None
    firmware_sha256: str | None = None


class FleetTransport(Protocol):
    """Sends releases to devices and reads back their reported state."""

    def inventory(self) -> list[Device]: ...

    def send(self, device_ids: list[str], release: ReleaseRef, intent: str, cohort: str) -> None: ...

    def reported(self, device_ids: list[str]) -> dict[str, Reported]: ...


class SimulatedFleet:
    """A ``FleetSimulator`` behind the transport: a send switches the devices' release and cohort labels, time runs by
    ``advance`` (segments written and ingested into the store the gates read), every send is counted per (device, intent).

    The fleet outlives its controller: each send is logged durably before it applies, and each ``advance`` ends with
    a snapshot of the simulator; opening the folder again restores the snapshot and replays the sends logged after it,
    so a controller killed with ``kill -9`` finds the fleet as it left it.
    """

    def __init__(self, spec: FleetSpec, folder: Path, internal_frac: float = 0.1) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.spool = folder / "spool"
        snapshot = folder / SNAPSHOT_NAME
        applied_lines = 0
        if snapshot.exists():
            self.sim, applied_lines = pickle.loads(snapshot.read_bytes())
        else:
            self.sim = FleetSimulator(spec)
        self.store = FleetStore(folder / "fleet.duckdb")
        n = self.sim.spec.devices
        ids = [str(d) for d in self.sim.device_id]
        self.index = {d: i for i, d in enumerate(ids)}
        internal = np.random.default_rng(self.sim.spec.seed + 1).random(n) < internal_frac
        self._inventory = [
            Device(
                ids[i],
                {
                    "cohort": "internal" if internal[i] else "field",
                    "region": str(self.sim.region_name[i]),
                    "chip_revision": str(self.sim.chip[i]),
                    "board": self.sim.spec.boards[int(self.sim.board[i])].target,
                },
            )
            for i in range(n)
        ]
        self.applied_intent = [""] * n
        self.sends: Counter[tuple[str, str]] = Counter()
        self._log_lines = 0
        log = folder / SEND_LOG_NAME
        if log.exists():
            for line in log.read_bytes().split(b"\n"):
                try:
                    sent = json.loads(line)
                except json.JSONDecodeError:
                    continue  # empty, or torn by a kill mid-write: that send never happened
                self._apply(sent, replay=self._log_lines >= applied_lines)
                self._log_lines += 1
        if not snapshot.exists():
            self._snapshot()

    def _apply(self, sent: dict[str, Any], replay: bool = True) -> None:
        idx = [self.index[d] for d in sent["devices"]]
        if replay:
            self.sim.set_release(idx, Release(*sent["release"]), sent["cohort"])
        for d, i in zip(sent["devices"], idx):
            self.sends[(d, sent["intent"])] += 1
            self.applied_intent[i] = sent["intent"]

    def _snapshot(self) -> None:
        write_atomic(self.folder / SNAPSHOT_NAME, pickle.dumps((self.sim, self._log_lines)))

    def inventory(self) -> list[Device]:
        return list(self._inventory)

    def send(self, device_ids: list[str], release: ReleaseRef, intent: str, cohort: str) -> None:
        sent = {
            "devices": device_ids,
            "release": [release.name, release.model_sha256, release.firmware_version],
            "intent": intent,
            "cohort": cohort,
        }
        fd = os.open(self.folder / SEND_LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(sent) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self._log_lines += 1
        self._apply(sent)

    def reported(self, device_ids: list[str]) -> dict[str, Reported]:
        out: dict[str, Reported] = {}
        for d in device_ids:
            i = self.index[d]
            rel = self.sim.releases[int(self.sim.release[i])]
            out[d] = Reported(rel.model_sha256, rel.firmware_version, self.applied_intent[i])
        return out

    def now_s(self) -> float:
        return self.sim.hours * 3600.0

    def advance(self, hours: float) -> None:
        """Simulate ``hours`` of the fleet, ingest what arrived, and snapshot the simulator."""
        self.store.ingest(self.sim.write(self.spool, hours))
        self._snapshot()

    def close(self) -> None:
        self.store.close()
