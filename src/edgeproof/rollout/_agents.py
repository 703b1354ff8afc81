"""Edgeproof agents as the rollout's fleet: a send is each agent's health-gated A/B ``update``, what runs is read back from its hello.

::

    fleet = AgentFleet([Device(id="cam-1"), Device(id="cam-2", transport="ssh://pi@10.0.0.7")])
    plan, waves = validate_plan(load_plan("rollout.toml"), fleet.inventory())
    Controller(plan, fleet, store, "out/rollout", time.time).start(waves, actor="me")

A device checks a release with its golden inputs and the outputs recorded for them, read from an ``.npz``
beside the release's model (``golden_path``), and with the contract's latency budget as its BOM states it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeproof.agent import AgentClient, AgentError, Hello, connect
from edgeproof.errors import DataError
from edgeproof.farm.inventory import Device as Board
from edgeproof.rollout._plan import Device, ReleaseRef
from edgeproof.rollout._transport import Reported

GOLDEN_SUFFIX = ".golden.npz"
# the contract's latency budgets a health check can hold a p50 to, tightest meaning first
LATENCY_CLAUSES = ("budgets.p50_ms", "budgets.p95_ms", "budgets.p99_ms")


@dataclass(frozen=True)
class HealthCheck:
    """What a device is asked to show before it commits a release: its golden file and the p50 limit with its source."""

    golden: Path
    p50_limit_ms: float
    limit_source: str


def golden_path(release: ReleaseRef, chip_revision: str | None) -> Path:
    """The golden inputs and recorded outputs (``input__<name>``, ``output__<name>``) a device checks ``release`` with.

    Beside the release's model: ``<stem>.golden.<chip_revision>.npz`` where the outputs were recorded per hardware
    class (an accelerator's arithmetic differs), else ``<stem>.golden.npz``. DataError naming both when neither exists."""
    stem = release.model.with_suffix("")
    own = stem.with_name(f"{stem.name}.golden.{chip_revision}.npz") if chip_revision else None
    if own is not None and own.exists():
        return own
    shared = stem.with_name(stem.name + GOLDEN_SUFFIX)
    if not shared.exists():
        also = f" or {own.name}" if own is not None else ""
        raise DataError(
            f"{release.model.parent}: no golden file {shared.name}{also} for release {release.name}; devices check a release with one"
        )
    return shared


def latency_limit_ms(release: ReleaseRef) -> tuple[float, str]:
    """The health check's p50 limit: the contract's tightest latency budget the release's BOM states, and which clause.

    A p95 or p99 budget bounds the p50 from above, so a p50 over it fails the contract whatever the tail does."""
    from edgeproof.bom import read_bom

    facts = read_bom(release.bom)
    for clause in LATENCY_CLAUSES:
        budgets = [c.budget for t in facts.targets.values() for c in t.clauses if c.clause == clause and c.budget is not None]
        if budgets:
            return min(budgets), f"{clause} budget in {release.bom.name}"
    raise DataError(f"{release.bom}: states no latency budget ({', '.join(LATENCY_CLAUSES)}) to hold a device's health check to")


def _labels(board: Board, hello: Hello) -> dict[str, str]:
    """The labels a selector matches: the agent's own (``--label``), the inventory's chip revision, the slot's firmware,
    and the board a release's BOM must pass on: the inventory's catalog board, else the agent's ``--board``, else, for a
    local agent, this host."""
    from edgeproof.targets.host import HOST_ID  # loads onnxruntime: only when a fleet of agents is driven

    labels = dict(hello.labels)
    catalog_board = board.board or hello.fingerprint.get("board") or (HOST_ID if board.transport == "local" else None)
    if catalog_board:
        labels.setdefault("board", str(catalog_board))
    if board.chip_revision is not None:
        said = labels.setdefault("chip_revision", board.chip_revision)
        if said != board.chip_revision:
            raise DataError(f"device:{board.id}: {board.source} says chip_revision {board.chip_revision!r}, its agent says {said!r}")
    if hello.slots is not None and hello.slots.firmware_version is not None:
        labels["firmware_version"] = hello.slots.firmware_version
    return labels


def _reported(device_id: str, hello: Hello) -> Reported:
    """What a device's hello says it runs, for the controller to reconcile with what it sent."""
    slots = hello.slots
    if slots is None:
        raise AgentError(f"device:{device_id}: its agent reports no A/B slots; install an edgeproof-agent with the update verb")
    if slots.error is not None:
        raise AgentError(f"device:{device_id}: {slots.error}")
    last = slots.last_update
    # a pending slot's intent has not ended: name the one before it, so a resend lets the agent finish the check
    intent = last.intent if last is not None else (slots.intent if slots.committed else None)
    return Reported(
        model_sha256=slots.active_model_sha256 or "",
        firmware_version=slots.firmware_version or "",
        intent=intent or "",
        slot=slots.active,
        reverted=(last.reason or "reverted by the device") if last is not None and last.self_reverted else None,
        committed=slots.committed,
        firmware_sha256=slots.firmware_sha256,
    )


class AgentFleet:
    """Boards reached through their agents (local processes, SSH, labgrid) behind the fleet transport.

    Each board is connected once (its hello checked: A/B slots, readable slot state); ``sends`` counts
    the updates asked of each (device, intent), and ``updates`` keeps each device's last ``update`` reply (with where its p50 limit came from)."""

    def __init__(self, boards: Sequence[Board], connect_to: Callable[[Board], tuple[AgentClient, Hello]] = connect) -> None:
        self.clients: dict[str, AgentClient] = {}
        self._inventory: list[Device] = []
        self._checks: dict[str, tuple[float, str]] = {}
        self.sends: Counter[tuple[str, str]] = Counter()
        self.updates: dict[str, dict[str, Any]] = {}
        self.telemetry_off: dict[str, str] = {}  # device -> why its agent records no telemetry
        try:
            for board in boards:
                client, hello = connect_to(board)
                self.clients[board.id] = client
                _reported(board.id, hello)  # refuse an agent without slots, or with unreadable slot state, now
                self._inventory.append(Device(board.id, _labels(board, hello)))
                if hello.telemetry_off is not None:
                    self.telemetry_off[board.id] = hello.telemetry_off
        except BaseException:
            self.close()
            raise

    def inventory(self) -> list[Device]:
        return list(self._inventory)

    def health_check(self, release: ReleaseRef, device_id: str) -> HealthCheck:
        """The golden file and latency limit ``device_id`` checks ``release`` with."""
        if release.name not in self._checks:
            self._checks[release.name] = latency_limit_ms(release)
        limit, source = self._checks[release.name]
        labels = next(d.labels for d in self._inventory if d.device_id == device_id)
        return HealthCheck(golden_path(release, labels.get("chip_revision")), limit, source)

    def send(self, device_ids: list[str], release: ReleaseRef, intent: str, cohort: str) -> None:
        """Ask each device to ``update`` to ``release`` for ``intent``; each commits it or reverts by itself.

        ``cohort`` labels the simulator's telemetry; an agent labels its own. Every device is asked before an
        AgentError names the ones that refused (they do not report the intent, so the controller asks them again)."""
        checks = {d: self.health_check(release, d) for d in device_ids}  # a missing golden file stops the send before any device
        model = release.model.read_bytes()
        image = release.firmware_image.read_bytes() if release.firmware_image is not None else None
        goldens = {path: path.read_bytes() for path in {c.golden for c in checks.values()}}
        refused: list[str] = []
        for d in device_ids:
            client, check = self.clients[d], checks[d]
            self.sends[(d, intent)] += 1
            try:
                # the image goes up under the sha256 the plan pins: the agent stores nothing that hashes otherwise
                firmware_image = client.put(image, release.firmware_sha256 or None) if image is not None else None
                reply = client.request(
                    "update",
                    intent=intent,
                    model=client.put(model, release.model_sha256 or None),
                    golden=client.put(goldens[check.golden]),
                    firmware=release.firmware_version,
                    firmware_image=firmware_image,
                    p50_limit_ms=check.p50_limit_ms,
                )
            except AgentError as exc:
                refused.append(str(exc))
                continue
            self.updates[d] = {**reply, "p50_limit_source": check.limit_source}
        if refused:
            raise AgentError(f"{len(refused)} of {len(device_ids)} device(s) did not take intent {intent}: {refused[0]}")

    def reported(self, device_ids: list[str]) -> dict[str, Reported]:
        return {d: _reported(d, self.clients[d].hello()) for d in device_ids}

    def run_workload(self, device_id: str, cohort: str, runs: int | None = None, seconds: float | None = None) -> dict[str, Any]:
        """Have ``device_id`` run its active slot's model and record the window, labelled with the rollout's ``cohort`` and
        the inventory's region and chip revision (the model and firmware labels are the device's own: what its slot holds)."""
        labels = next(d.labels for d in self._inventory if d.device_id == device_id)
        asked = {"cohort": cohort, **{k: labels[k] for k in ("region", "chip_revision") if labels.get(k)}}
        return self.clients[device_id].workload(asked, runs=runs, seconds=seconds)

    def pull_telemetry(self, device_id: str, into: Path) -> int:
        """Append the device's segment frames the lab does not hold yet to its copies in ``into``; returns the bytes pulled.

        The copy of each segment file is a prefix of the device's, so its size is the offset to pull from."""
        into.mkdir(parents=True, exist_ok=True)
        offsets = {p.name: p.stat().st_size for p in into.iterdir() if p.is_file()}
        pulled = 0
        for got in self.clients[device_id].pull_telemetry(offsets):
            with (into / got.name).open("ab") as f:
                if f.tell() != got.offset:  # another puller wrote it meanwhile: the prefix no longer holds
                    raise AgentError(f"device:{device_id}: {into / got.name} holds {f.tell()} bytes, the pull starts at {got.offset}")
                f.write(got.data)
            pulled += len(got.data)
        return pulled

    def close(self) -> None:
        clients, self.clients = self.clients, {}  # closing twice closes nothing twice
        for client in clients.values():
            try:
                client.bye()
            except AgentError:
                pass  # already gone: closing the link below is all there is left to do
            client.link.close()
