"""Staged rollout: a plan of waves gated by the fleet alarms, a crash-safe controller with a journal, and a fleet transport.

::

    plan = load_plan("rollout.toml")
    fleet = SimulatedFleet(FleetSpec(devices=2000), Path("out/rollout"))
    plan, waves = validate_plan(plan, fleet.inventory())
    ctl = Controller(plan, fleet, fleet.store, "out/rollout", fleet.now_s)
    ctl.start(waves, actor="me")
    run_simulated(ctl, fleet, step_h=1.0, max_h=72)
"""

from edgeproof.rollout._agents import AgentFleet, golden_path, latency_limit_ms
from edgeproof.rollout._controller import OPERATOR_VERBS, TERMINAL, Controller, State, fold, operator_command
from edgeproof.rollout._journal import Journal
from edgeproof.rollout._plan import Device, Gates, Plan, ReleaseRef, Wave, load_plan, select_waves, validate_plan
from edgeproof.rollout._run import drive, gate_thresholds, run_simulated, simulated_fleet
from edgeproof.rollout._transport import FleetTransport, Reported, SimulatedFleet

__all__ = [
    "OPERATOR_VERBS",
    "AgentFleet",
    "TERMINAL",
    "Controller",
    "Device",
    "FleetTransport",
    "Gates",
    "Journal",
    "Plan",
    "ReleaseRef",
    "Reported",
    "SimulatedFleet",
    "State",
    "Wave",
    "drive",
    "fold",
    "gate_thresholds",
    "golden_path",
    "latency_limit_ms",
    "load_plan",
    "operator_command",
    "run_simulated",
    "select_waves",
    "simulated_fleet",
    "validate_plan",
]
