"""The fleet side of telemetry: idempotent ingest into DuckDB, alarms per stratum against a control cohort, playbooks, a fleet simulator.

::

    with FleetStore(".edgeproof/fleet.duckdb") as store:
        store.ingest(["spool/"])                                   # segment files, any order, any repeats
        report = evaluate_alarms(store, "canary", "control", contract.rollback)
        steps = load_playbook()
        for v in report.firing:
            print(v.alarm, v.stratum_label, steps[v.alarm].action)
"""

import importlib
from typing import TYPE_CHECKING, Any

# Imported on first use, so a process that only ingests does not load the statistics or the contract models.
if TYPE_CHECKING:
    from edgeproof.fleet._alarms import ALARM_NAMES, ALARMS, AlarmReport, AlarmSpec, AlarmVerdict, Side, evaluate_alarms
    from edgeproof.fleet._flatten import REQUIRED_LABELS, Flat, flatten
    from edgeproof.fleet._frames import FrameProblem, read_frames, write_segment
    from edgeproof.fleet._playbook import ACTIONS, DEFAULT_PLAYBOOK, PlaybookStep, load_playbook
    from edgeproof.fleet._simulate import Fault, FleetSimulator, FleetSpec, Release, Sending, load_scenario
    from edgeproof.fleet._store import Commit, FleetStore, IngestReport

_WHERE = {
    "ACTIONS": "edgeproof.fleet._playbook",
    "ALARMS": "edgeproof.fleet._alarms",
    "ALARM_NAMES": "edgeproof.fleet._alarms",
    "AlarmReport": "edgeproof.fleet._alarms",
    "AlarmSpec": "edgeproof.fleet._alarms",
    "AlarmVerdict": "edgeproof.fleet._alarms",
    "Commit": "edgeproof.fleet._store",
    "DEFAULT_PLAYBOOK": "edgeproof.fleet._playbook",
    "Fault": "edgeproof.fleet._simulate",
    "Flat": "edgeproof.fleet._flatten",
    "FleetSimulator": "edgeproof.fleet._simulate",
    "FleetSpec": "edgeproof.fleet._simulate",
    "FleetStore": "edgeproof.fleet._store",
    "FrameProblem": "edgeproof.fleet._frames",
    "IngestReport": "edgeproof.fleet._store",
    "PlaybookStep": "edgeproof.fleet._playbook",
    "REQUIRED_LABELS": "edgeproof.fleet._flatten",
    "Release": "edgeproof.fleet._simulate",
    "Sending": "edgeproof.fleet._simulate",
    "Side": "edgeproof.fleet._alarms",
    "evaluate_alarms": "edgeproof.fleet._alarms",
    "flatten": "edgeproof.fleet._flatten",
    "load_playbook": "edgeproof.fleet._playbook",
    "load_scenario": "edgeproof.fleet._simulate",
    "read_frames": "edgeproof.fleet._frames",
    "write_segment": "edgeproof.fleet._frames",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'edgeproof.fleet' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


__all__ = [
    "ACTIONS",
    "ALARMS",
    "ALARM_NAMES",
    "DEFAULT_PLAYBOOK",
    "REQUIRED_LABELS",
    "AlarmReport",
    "AlarmSpec",
    "AlarmVerdict",
    "Commit",
    "Fault",
    "Flat",
    "FleetSimulator",
    "FleetSpec",
    "FleetStore",
    "FrameProblem",
    "IngestReport",
    "PlaybookStep",
    "Release",
    "Sending",
    "Side",
    "evaluate_alarms",
    "flatten",
    "load_playbook",
    "load_scenario",
    "read_frames",
    "write_segment",
]
