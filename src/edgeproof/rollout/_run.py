"""Running a plan against the fleet simulator: the plan's ``[target]`` table, the gates' thresholds, the simulated-time loop."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from edgeproof.errors import DataError, EdgeproofError
from edgeproof.fleet._simulate import Fault, FleetSpec
from edgeproof.rollout._controller import TERMINAL, Controller, State
from edgeproof.rollout._journal import Journal
from edgeproof.rollout._plan import Plan, load_plan, validate_plan
from edgeproof.rollout._transport import SimulatedFleet

if TYPE_CHECKING:
    from edgeproof.contract import Rollback


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
        raise DataError(f"{plan.path}: target.kind: only 'simulated' fleets can be driven yet, got {t.get('kind')!r}")
    try:
        faults = tuple(Fault(**f) for f in t.get("fault", []))
        spec = FleetSpec(devices=int(t.get("devices", 2000)), seed=int(t.get("seed", 0)), faults=faults)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{plan.path}: target: {exc}") from None
    return SimulatedFleet(spec, folder, float(t.get("internal_frac", 0.1)))


def run_simulated(controller: Controller, fleet: SimulatedFleet, step_h: float = 1.0, max_h: float = 240.0) -> State:
    """Step the controller and the simulated fleet in turn until the rollout ends (its last sends reconciled with what the
    devices report), pauses, or ``max_h`` simulated hours pass."""
    state = controller.step()
    while (state.phase not in TERMINAL or state.pending or state.unreconciled) and not state.paused and fleet.sim.hours < max_h:
        fleet.advance(step_h)
        state = controller.step()
    return state


def drive(folder: Path, plan_path: Path | None = None, actor: str = "cli", step_h: float = 1.0, max_h: float = 240.0) -> State:
    """Start the plan at ``plan_path`` in ``folder`` (None: go on with the one journalled there, e.g. after the
    controller's process was killed) and drive it over the plan's simulated fleet, which persists in ``folder``."""
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
    fleet = simulated_fleet(plan, folder)
    try:
        try:
            checked, waves = validate_plan(plan, fleet.inventory())
            controller = Controller(checked, fleet, fleet.store, folder, fleet.now_s, gate_thresholds(checked))
            controller.start(waves, actor)
        except EdgeproofError:
            if fresh:  # refused at submit: leave no fleet behind that a later start would take for this one's
                fleet.close()
                _remove_new(folder, before)
            raise
        return run_simulated(controller, fleet, step_h, max_h)
    finally:
        fleet.close()


def _remove_new(folder: Path, before: set[Path] | None) -> None:
    """Remove what appeared in ``folder`` since ``before`` was listed (None: the folder itself was new)."""
    if before is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for path in set(folder.iterdir()) - before:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
