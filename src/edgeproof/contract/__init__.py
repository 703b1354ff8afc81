"""The budget contract: load a TOML contract, judge a run record against it, write the starter template."""

from __future__ import annotations

from edgeproof.contract._evaluate import apply_waivers, evaluate, undecided_because
from edgeproof.contract._fields import parse_scenario
from edgeproof.contract._load import load_contract
from edgeproof.contract._model import (
    ESCALATION_OPTIONS,
    METRICS,
    PRECISIONS,
    SLICE_KINDS,
    Budgets,
    Contract,
    DataSection,
    EscalationStep,
    HardClause,
    InputSpec,
    ModelSection,
    Preferences,
    Regression,
    Rollback,
    SliceSection,
    TransformEntry,
    Waiver,
)
from edgeproof.contract._template import template_text, write_template
from edgeproof.scenario_grammar import SCENARIOS

__all__ = [
    "ESCALATION_OPTIONS",
    "METRICS",
    "PRECISIONS",
    "SCENARIOS",
    "SLICE_KINDS",
    "Budgets",
    "Contract",
    "DataSection",
    "EscalationStep",
    "HardClause",
    "InputSpec",
    "ModelSection",
    "Preferences",
    "Regression",
    "Rollback",
    "SliceSection",
    "TransformEntry",
    "Waiver",
    "apply_waivers",
    "evaluate",
    "load_contract",
    "parse_scenario",
    "template_text",
    "undecided_because",
    "write_template",
]
