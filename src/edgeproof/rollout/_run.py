"""Running a plan against the fleet its ``[target]`` table names: the fleet simulator (simulated time) or the boards of an
inventory through their agents (wall-clock time); the gates' thresholds; the loops that step the controller.

::

    [target]                       [target]
    kind = "simulated"             kind = "agents"
    devices = 2000                 boards = "boards.toml"      # a farm inventory; its agents' --label give cohort, region
    seed = 3                       devices = ["cam-1", "cam-2"]  # optional: these boards only (default: all of them)
                                   workload_s = 5.0     # each poll, each agent runs its active slot's model this long …
                                   workload_runs = 500  # … or this many calls (whichever ends first), recording telemetry

A fleet of agents feeds the gates by itself: each poll, every agent started with ``--telemetry DIR`` runs its
workload (what its active slot holds, labelled with the rollout's cohort for it), the driver pulls the segment
frames it does not hold yet into ``folder/telemetry/<device>/`` and ingests them into ``folder/fleet.duckdb``.
An agent that records no telemetry is journalled once with why (``telemetry-off``); its stratum's gates see no data.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeproof.agent import AgentError
from edgeproof.errors import DataError, EdgeproofError
from edgeproof.fleet._simulate import Fault, FleetSpec
from edgeproof.fleet._store import FleetStore, IngestReport
from edgeproof.rollout._controller import TERMINAL, Controller, State
from edgeproof.rollout._journal import Journal
from edgeproof.rollout._plan import Plan, load_plan, validate_plan
from edgeproof.rollout._transport import FleetTransport, SimulatedFleet

if TYPE_CHECKING:
    from edgeproof.contract import Rollback
    from edgeproof.rollout._agents import AgentFleet

STORE_NAME = "fleet.duckdb"
TELEMETRY_DIR = "telemetry"
DEFAULT_WORKLOAD_S = 5.0


def gate_thresholds(plan: Plan) -> Rollback:
    """The contract's ``[rollback]`` thresholds (defaults without a contract), with the plan's ``gates.min_devices`` over them."""
    from edgeproof.contract import Rollback, load_contract

    rollback = load_contract(plan.gates.contract).rollback if plan.gates.contract is not None else None
    rollback = rollback if rollback is not None else Rollback()
    if plan.gates.min_devices is not None:
        rollback = rollback.model_copy(update={"min_devices": plan.gates.min_devices})
    return rollback


def simulated_fleet(plan: Plan, folder: Path) -> SimulatedFleet:
    """The fleet simulator the plan's ``[target]`` describes: ``kind = "simulated"``, devices, seed, internal_frac, faults."""
    t = plan.target
    if t.get("kind", "simulated") != "simulated":
        raise DataError(f"{plan.path}: target.kind: {t.get('kind')!r}, not a simulated fleet")
    try:
        faults = tuple(Fault(**f) for f in t.get("fault", []))
        spec = FleetSpec(devices=int(t.get("devices", 2000)), seed=int(t.get("seed", 0)), faults=faults)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{plan.path}: target: {exc}") from None
    return SimulatedFleet(spec, folder, float(t.get("internal_frac", 0.1)))


def agent_fleet(plan: Plan) -> AgentFleet:
    """The boards of the plan's ``[target] boards`` inventory (those ``devices`` names, else all), each connected through its agent."""
    from edgeproof.farm.inventory import LOCAL_ID, load_inventory
    from edgeproof.rollout._agents import AgentFleet

    t = plan.target
    boards = load_inventory(t["boards"])
    wanted = list(t.get("devices") or [b for b in boards if b != LOCAL_ID])
    unknown = [d for d in wanted if d not in boards]
    if unknown:
        raise DataError(f"{plan.path}: target.devices: {unknown[0]!r} is not a board of {t['boards']} (it has {', '.join(sorted(boards))})")
    if not wanted:
        raise DataError(f"{plan.path}: target.boards: {t['boards']} lists no boards to roll out to")
    return AgentFleet([boards[d] for d in wanted])


def agent_workload(plan: Plan) -> tuple[int | None, float | None]:
    """The workload each agent runs a poll, from ``[target]``: ``workload_runs`` calls and/or ``workload_s`` seconds
    (``DEFAULT_WORKLOAD_S`` seconds when neither is set)."""
    t = plan.target
    runs, seconds = t.get("workload_runs"), t.get("workload_s")
    if runs is not None and (not isinstance(runs, int) or isinstance(runs, bool) or runs < 1):
        raise DataError(f"{plan.path}: target.workload_runs: must be a whole number of calls >= 1, got {runs!r}")
    if seconds is not None and (not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 < seconds <= 600):
        raise DataError(f"{plan.path}: target.workload_s: must be seconds in (0, 600], got {seconds!r}")
    if runs is None and seconds is None:
        seconds = DEFAULT_WORKLOAD_S
    return runs, None if seconds is None else float(seconds)


class AgentTelemetry:
    """Each poll: every agent runs its workload and records it, the new segment frames are pulled into
    ``folder/telemetry/<device>/`` and ingested into the store the gates read (ingest is idempotent per record)."""

    def __init__(
        self,
        agents: AgentFleet,
        store: FleetStore,
        folder: Path,
        control: str,
        clock: Callable[[], float],
        runs: int | None = None,
        seconds: float | None = DEFAULT_WORKLOAD_S,
    ) -> None:
        self.agents, self.store, self.folder, self.control, self.clock = agents, store, folder, control, clock
        self.runs, self.seconds = runs, seconds
        self.workloads: dict[str, dict[str, Any]] = {}  # each device's last workload reply

    def cohorts(self, journal: Journal) -> dict[str, str]:
        """The cohort each device's telemetry is labelled with: that of the last send it was part of (a wave's name, or
        the rolled-back cohort), else the gates' control cohort, as the fleet simulator labels its devices."""
        out = {d.device_id: self.control for d in self.agents.inventory()}
        for e in journal.of_kind("send"):
            out.update(dict.fromkeys(e["devices"], e["cohort"]))
        return out

    def __call__(self) -> IngestReport:
        journal = Journal(self.folder)
        cohorts = self.cohorts(journal)
        for device in self.agents.inventory():
            d = device.device_id
            off = self.agents.telemetry_off.get(d)
            lacking = [k for k in ("region", "chip_revision") if not device.labels.get(k)]
            if off is None and lacking:
                off = f"no {' or '.join(lacking)} label (agent --label or the inventory): the fleet store refuses windows without it"
            if off is not None:
                self._note(journal, "telemetry-off", d, off)
                continue
            try:
                self.workloads[d] = reply = self.agents.run_workload(d, cohorts[d], self.runs, self.seconds)
                for warning in reply.get("warnings") or []:
                    self._note(journal, "telemetry-error", d, str(warning))
                self.agents.pull_telemetry(d, self.folder / TELEMETRY_DIR / d)
            except AgentError as exc:  # the device's gates lack this poll's data; reconciling it will say if it is gone
                self._note(journal, "telemetry-error", d, str(exc))
        return self.store.ingest([self.folder / TELEMETRY_DIR]) if (self.folder / TELEMETRY_DIR).is_dir() else IngestReport()

    def _note(self, journal: Journal, kind: str, device: str, reason: str) -> None:
        """Journal why a device's telemetry is missing, once per device and reason."""
        digest = hashlib.sha256(reason.encode()).hexdigest()[:12]
        journal.append({"id": f"{kind}:{device}:{digest}", "kind": kind, "at_s": self.clock(), "device": device, "reason": reason})


@dataclass
class Fleet:
    """The fleet a plan's ``[target]`` names, opened: its kind, its transport, the store its gates read and its clock;
    ``collect`` (a fleet of agents) gathers the devices' telemetry into the store before each step."""

    kind: str
    transport: FleetTransport
    store: FleetStore
    clock: Callable[[], float]
    close: Callable[[], None]
    collect: Callable[[], object] | None = None


def open_fleet(plan: Plan, folder: Path) -> Fleet:
    """Open the plan's fleet with its state in ``folder``: the simulator (which persists there) or the inventory's agents
    (whose slots persist on the boards; the gates' store is ``folder/fleet.duckdb``)."""
    if plan.target.get("kind", "simulated") == "simulated":
        sim = simulated_fleet(plan, folder)
        return Fleet("simulated", sim, sim.store, sim.now_s, sim.close)
    runs, seconds = agent_workload(plan)
    agents = agent_fleet(plan)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        store = FleetStore(folder / STORE_NAME)
    except BaseException:
        agents.close()
        raise

    def close() -> None:
        agents.close()
        store.close()

    collect = AgentTelemetry(agents, store, folder, plan.gates.control, time.time, runs, seconds)
    return Fleet("agents", agents, store, time.time, close, collect)


def _going_on(state: State) -> bool:
    """Whether a driver steps again: the rollout has not ended with its last sends reconciled, and is not paused."""
    return (state.phase not in TERMINAL or bool(state.pending) or bool(state.unreconciled)) and not state.paused


def run_agents(
    controller: Controller,
    poll_s: float = 10.0,
    max_h: float = 240.0,
    sleep: Callable[[float], None] = time.sleep,
    elapsed_s: Callable[[], float] = time.monotonic,
    collect: Callable[[], object] | None = None,
) -> State:
    """Step the controller every ``poll_s`` wall-clock seconds (the plan's soak times are real hours here) until the rollout
    ends with its last sends reconciled, pauses, or ``max_h`` hours pass; ``collect`` (the agents' telemetry into the
    gates' store) runs before each step after the first, so what is judged was recorded after the wave went out."""
    began = elapsed_s()
    state = controller.step()
    while _going_on(state):
        if elapsed_s() - began + poll_s > max_h * 3600.0:
            break
        sleep(poll_s)
        if collect is not None:
            collect()
        state = controller.step()
    return state


def run_simulated(controller: Controller, fleet: SimulatedFleet, step_h: float = 1.0, max_h: float = 240.0) -> State:
    """Step the controller and the simulated fleet in turn until the rollout ends (its last sends reconciled with what the
    devices report), pauses, or ``max_h`` simulated hours pass."""
    state = controller.step()
    while _going_on(state) and fleet.sim.hours < max_h:
        fleet.advance(step_h)
        state = controller.step()
    return state


def drive(
    folder: Path, plan_path: Path | None = None, actor: str = "cli", step_h: float = 1.0, max_h: float = 240.0, poll_s: float = 10.0
) -> State:
    """Start the plan at ``plan_path`` in ``folder`` (None: go on with the one journalled there, e.g. after the
    controller's process was killed) and drive it over the plan's fleet: the simulator (persisting in ``folder``,
    ``step_h`` simulated hours a step) or the inventory's agents (real time, a step every ``poll_s`` seconds).
    ``max_h`` bounds the run in the fleet's own hours."""
    journal = Journal(folder)
    started = journal.of_kind("start")
    if plan_path is None:
        if not started:
            raise DataError(f"{journal.path}: no rollout started here; use `edgeproof rollout start PLAN`")
        plan_path = Path(started[0]["plan"])
    elif started:
        raise DataError(f"{journal.path}: a rollout is already journalled here; `edgeproof rollout run` goes on with it")
    plan = load_plan(plan_path)
    fresh = not started
    before = set(folder.iterdir()) if folder.exists() else None
    try:
        fleet = open_fleet(plan, folder)
    except EdgeproofError:
        if fresh:
            _remove_new(folder, before)
        raise
    try:
        try:
            checked, waves = validate_plan(plan, fleet.transport.inventory())
            controller = Controller(checked, fleet.transport, fleet.store, folder, fleet.clock, gate_thresholds(checked))
            controller.start(waves, actor)
        except EdgeproofError:
            if fresh:  # refused at submit: leave no fleet behind that a later start would take for this one's
                fleet.close()
                _remove_new(folder, before)
            raise
        if isinstance(fleet.transport, SimulatedFleet):
            return run_simulated(controller, fleet.transport, step_h, max_h)
        return run_agents(controller, poll_s, max_h, collect=fleet.collect)
    finally:
        fleet.close()


def _remove_new(folder: Path, before: set[Path] | None) -> None:
    """Remove what appeared in ``folder`` since ``before`` was listed (None: the folder itself was new)."""
    if before is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for path in set(folder.iterdir()) - before:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
