"""Judge one run record against a contract: pass / fail / unverified / waived per clause, and the binding clause."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any

from edgeproof.contract._fields import parse_scenario
from edgeproof.contract._model import Contract, HardClause, Waiver
from edgeproof.contract._units import dimension_for, to_canonical
from edgeproof.errors import RecordError
from edgeproof.figures import deadline_miss_figure, figures_of, jitter_figure, slice_provenance
from edgeproof.records import ClauseResult, Figure, RunRecord, ScenarioResult, Verdict, WaiverUse, outcome_of


@dataclass(frozen=True)
class _Observed:
    """What the record says for one clause, in the clause's canonical unit; value None means no data."""

    value: float | None
    provenance: str
    notes: tuple[str, ...] = ()
    upper: float | None = None  # upper end of the value's interval, where the record has one
    upper_label: str = "interval upper bound"


def evaluate(contract: Contract, record: RunRecord, today: date | None = None, allow_unverified: bool = False) -> Verdict:
    """Judge ``record`` against every hard clause of ``contract``.

    Each clause compares the record's point estimate with its budget (the interval's upper
    bound, where one exists, goes into the note). A clause without data is ``unverified``: it
    leaves the verdict undecided unless ``allow_unverified``, and then still reads
    ``unverified``. Waivers follow ``apply_waivers``. ``today`` defaults to the local date and
    decides which waivers have expired. The outcome follows ``edgeproof.records.outcome_of``.
    """
    judged = [_judge(clause, _observe(clause, contract, record)) for clause in _clauses_for(contract, record)]
    results, applied, expired = apply_waivers(judged, contract.waivers, record.target.id, today or date.today(), allow_unverified)
    outcome = outcome_of(results, allow_unverified)
    results, binding = _mark_binding(results, allow_unverified)
    return Verdict(
        target=record.target.id,
        outcome=outcome,
        passed=outcome == "pass",
        clauses=results,
        binding_clause=binding,
        undecided_because=undecided_because(results, allow_unverified),
        allow_unverified=allow_unverified,
        waivers_applied=applied,
        waivers_expired=expired,
        contract_sha256=contract.sha256,
    )


def budget_target(record: RunRecord) -> str:
    """The id whose ``[budgets.<key>]`` table judges ``record``: a device's board, else its target."""
    return record.target.board or record.target.id


def _clauses_for(contract: Contract, record: RunRecord) -> list[HardClause]:
    """The record's hard clauses; on a device, each budget clause's source states the board rule."""
    board = record.target.board
    clauses = contract.hard_clauses(budget_target(record))
    if not board:
        return clauses
    rule = f"a device is judged by its board's table: {record.target.id} is a {board}"
    out = []
    for clause in clauses:
        if clause.source.startswith("[budgets."):
            clause = clause.model_copy(update={"source": f"{clause.source} ({rule})"})
        elif clause.source == "[budgets]":
            clause = clause.model_copy(
                update={"source": f"[budgets] (no [budgets.<board>] value for {board}, the board of {record.target.id})"}
            )
        out.append(clause)
    return out


def apply_waivers(
    results: list[ClauseResult], waivers: list[Waiver], target_id: str, today: date, allow_unverified: bool
) -> tuple[list[ClauseResult], list[WaiverUse], list[WaiverUse]]:
    """The one waiver rule, for the contract's clauses and the gate's regression clauses alike.

    A waiver covers a clause on ``target_id`` (or on every target when unscoped). An active one
    turns a failing or unverified clause into ``waived``; on a passing clause it is noted as not
    needed. An expired one does not apply: the clause's note says so and it is listed. Returns the
    clauses, the waivers applied and the expired waivers of these clauses.
    """
    in_scope = [w for w in waivers if w.covers(target_id)]
    judged = {r.clause for r in results}
    expired = [_use(w) for w in in_scope if w.clause in judged and not w.active_on(today)]
    applied: list[WaiverUse] = []
    out = []
    for result in results:
        mine = [w for w in in_scope if w.clause == result.clause]
        notes = [result.note] if result.note else []
        notes += [f"waiver by {w.owner} expired on {w.expires}, not applied" for w in mine if not w.active_on(today)]
        active = next((w for w in mine if w.active_on(today)), None)
        update: dict[str, object] = {}
        if active is not None and result.status == "pass":
            notes.append(f"waiver by {active.owner} (until {active.expires}) not needed: the clause passes")
        elif active is not None:
            use = _use(active)
            applied.append(use)
            notes.append(f"waived by {active.owner} until {active.expires}: {active.reason}")
            update = {"status": "waived", "waiver": use}
        elif result.status == "unverified":
            allowed = "counted as passing only because unverified clauses are allowed"
            notes.append(allowed if allow_unverified else "without data this clause cannot pass: the verdict stays undecided")
        out.append(result.model_copy(update={**update, "note": "; ".join(notes)}))
    return out, applied, expired


def _use(waiver: Waiver) -> WaiverUse:
    assert waiver.expires is not None
    return WaiverUse(clause=waiver.clause, owner=waiver.owner, reason=waiver.reason, expires=waiver.expires, target=waiver.target)


# What would give each kind of clause the data it lacks; a waiver or --allow-unverified always would.
_SCENARIO = "measure under the contract's scenario"
_POWER_METER = "measure where a power meter reads it (a board, or a host with RAPL or NVML)"
_SESSIONS = "measure at least two sessions on each side, or both models with `gate --measure`"
_DECIDERS = {
    "budgets.p95_ms": _SCENARIO,
    "budgets.p99_ms": _SCENARIO,
    "budgets.jitter_ms": _SCENARIO,
    "budgets.deadline_miss_frac": "measure under the contract's periodic:HZ or server:HZ scenario",
    "budgets.energy_mj_per_inference": _POWER_METER,
    "budgets.sustained_w": _POWER_METER,
    "budgets.temperature_c": "measure where a temperature sensor reads it",
    "budgets.cpu_fallback_frac": "measure with per-node placement recorded",
    "model.inputs": "measure again, so the record carries the model's inputs",
    "regression.p50": _SESSIONS,
    "regression.p95": _SESSIONS,
    "regression.p99": _SESSIONS,
}


def _decider(clause: str) -> str:
    if clause.startswith("slices."):
        return "evaluate the slices: give the contract a [data] table"
    if clause.startswith("regression.accuracy."):
        return "evaluate baseline and candidate on the same labelled slices"
    return _DECIDERS.get(clause, "measure it on a target that records it")


def undecided_because(results: list[ClauseResult], allow_unverified: bool) -> list[str]:
    """When the clauses leave a verdict undecided: per clause without data, why and what would decide it."""
    if outcome_of(results, allow_unverified) != "undecided":
        return []
    lines = []
    for r in results:
        if r.status != "unverified":
            continue
        why = r.provenance.split(":", 1)[1] if r.provenance.startswith("unavailable:") else r.note.split("; ")[0]
        lines.append(
            f"{r.clause}: no data ({why}); to decide it, {_decider(r.clause)}, waive it in the contract, or pass --allow-unverified"
        )
    return lines


def _observe(clause: HardClause, contract: Contract, record: RunRecord) -> _Observed:
    section, _, name = clause.id.partition(".")
    if section == "model":
        return _observe_interface(contract, record)
    if section == "slices":
        return _observe_slice(name, record)
    scenario = contract.scenario_for(budget_target(record))
    if name in ("p95_ms", "p99_ms") and contract.budgets.scope == "pipeline":
        return _observe_pipeline_latency(name, scenario, record)
    if name in ("p95_ms", "p99_ms"):
        return _observe_latency(name, scenario, record)
    if name in _SCENARIO_FIGURES:
        return _observe_scenario_figure(name, scenario, record)
    figure = figures_of(record).get(name)
    if figure is not None:
        return _observe_figure(name, figure, record.run_id)
    raise AssertionError(f"no observation rule for clause {clause.id}")


def _observe_latency(name: str, scenario: str, record: RunRecord) -> _Observed:
    stats = record.latency
    value = getattr(stats, name)
    mismatch = _scenario_mismatch(scenario, record.scenario)
    if mismatch is not None:
        return _Observed(None, record.latency_provenance, (f"{mismatch} (its {name} is {value:.4g} ms)",))
    interval = stats.ci.get(name.removesuffix("_ms"))
    if interval is None:
        return _Observed(value, record.latency_provenance)
    return _Observed(value, record.latency_provenance, upper=interval.high, upper_label=f"{interval.level:.0%} CI upper bound")


_SCENARIO_FIGURES = {"jitter_ms": jitter_figure, "deadline_miss_frac": deadline_miss_figure}


def _observe_scenario_figure(name: str, scenario: str, record: RunRecord) -> _Observed:
    """``jitter_ms`` and ``deadline_miss_frac``: figures that mean something only under the scenario the budget names."""
    figure = _SCENARIO_FIGURES[name](record)
    mismatch = _scenario_mismatch(scenario, record.scenario)
    if mismatch is not None:
        shown = "" if figure.value is None else f" (its {name} is {figure.value:.4g})"
        return _Observed(None, figure.provenance, (f"{mismatch}{shown}",))
    observed = _observe_figure(name, figure, record.run_id)
    if figure.interval is None or observed.value is None:
        return observed
    return _Observed(observed.value, observed.provenance, observed.notes, upper=figure.interval[1], upper_label="95% CI upper bound")


def _scenario_mismatch(budget_scenario: str, ran: ScenarioResult) -> str | None:
    """Why the record's scenario cannot answer a budget written for another, or None when it can."""
    name, rate_hz = parse_scenario(budget_scenario)
    ran_label = ran.name if ran.rate_hz is None else f"{ran.name}:{ran.rate_hz:g}"
    same = ran.name == name and (rate_hz is None or (ran.rate_hz is not None and math.isclose(ran.rate_hz, rate_hz, rel_tol=1e-6)))
    return None if same else f"budget is for scenario {budget_scenario}, the record ran {ran_label}"


def refused_inputs(declared: dict[str, Any], io: dict[str, list]) -> list[str]:
    """What keeps the model from accepting each declared input: a missing name, another dtype or
    rank, a fixed size that differs, or a size the contract leaves free that the model fixes."""
    graph = {name: (dtype, dims) for name, dtype, dims in io["inputs"]}  # dtypes by the contract's names (model.dtype_name)
    problems = []
    for name, spec in declared.items():
        if name not in graph:
            problems.append(f"{name}: not an input of the model (it has {', '.join(graph) or 'none'})")
            continue
        dtype, dims = graph[name]
        if dtype != spec.dtype:
            problems.append(f"{name}: dtype {dtype}, the contract declares {spec.dtype}")
        elif len(dims) != len(spec.shape) or any(
            (isinstance(want, int) and isinstance(have, int) and want != have) or (isinstance(want, str) and isinstance(have, int))
            for want, have in zip(spec.shape, dims)
        ):
            problems.append(f"{name}: shape {dims}, the contract declares {spec.shape}")
    return problems


def _observe_interface(contract: Contract, record: RunRecord) -> _Observed:
    where = f"measured:onnx-graph({record.model.sha256[:12]})"
    if record.model.io is None:
        return _Observed(
            None, "unavailable:the record does not carry the model's inputs", ("no data: record made before inputs were recorded",)
        )
    problems = refused_inputs(contract.model.inputs, record.model.io)
    return _Observed(float(len(problems)), where, (inputs_summary(len(contract.model.inputs), problems),))


def inputs_summary(declared: int, problems: list[str]) -> str:
    """What ``model.inputs`` checked, in words: ``1 input declared, accepted`` or ``2 inputs declared, 1 refused: …``."""
    head = f"{declared} input{'s' if declared != 1 else ''} declared"
    if not problems:
        return f"{head}, {'accepted' if declared == 1 else 'all accepted'}"
    return f"{head}, {len(problems)} refused: {'; '.join(problems)}"


def _observe_figure(name: str, figure: Figure, run_id: str) -> _Observed:
    if figure.value is None:
        return _Observed(None, figure.provenance, (f"no data: {figure.provenance.split(':', 1)[1]}",))
    dim = dimension_for(name)
    assert dim is not None
    value = to_canonical(figure.value, figure.unit, dim)
    if value is None:
        raise RecordError(f"run {run_id}: {name} is in {figure.unit!r}, not a {dim.name} unit ({dim.units()})")
    upper = None if figure.interval is None else to_canonical(figure.interval[1], figure.unit, dim)
    return _Observed(value, figure.provenance, upper=upper)


def _observe_pipeline_latency(name: str, scenario: str, record: RunRecord) -> _Observed:
    """A pipeline-scoped latency budget: the end-to-end p95/p99 of pre + model + post (``record.stages``)."""
    stages = record.stages
    if stages is None or stages.total is None:
        why = stages.unavailable if stages is not None and stages.unavailable else "the record has no pipeline timing by stage"
        return _Observed(None, f"unavailable:{why}", (f"no data: {why}; the budget's scope is the pipeline",))
    mismatch = _scenario_mismatch(scenario, record.scenario)
    if mismatch is not None:
        return _Observed(None, stages.total.provenance, (mismatch,))
    note = f"pipeline scope: end to end over {stages.n} inferences ({stages.pipeline})"
    return _Observed(getattr(stages.total, name), stages.total.provenance, (note,))


def _observe_slice(clause: str, record: RunRecord) -> _Observed:
    """``<slice>.<unit>`` (the first judged output) or ``<slice>.outputs.<output>.<unit>``."""
    from edgeproof.evaluate import floor_value

    head, _, unit = clause.rpartition(".")
    name, _, output = head.partition(".outputs.")
    evaluation = record.evaluation
    if evaluation is None and record.kind == "field":
        why = "accuracy is not observable in the field (no labels leave the device)"
        return _Observed(None, f"unavailable:{why}", (f"no data: {why}; judge the slices in the lab",))
    if evaluation is None:
        return _Observed(None, "unavailable:no evaluation in the record", ("no data: the record was not evaluated on the slices",))
    metrics = evaluation.slices.get(name)
    if metrics is None:
        return _Observed(None, "unavailable:slice not evaluated", (f"no data: slice {name!r} is not in the evaluation",))
    key = output or next(iter(evaluation.outputs), None)
    om = metrics.outputs.get(key) if key is not None else None
    value = floor_value(evaluation, name, output or None, unit)
    if om is None:
        note = (
            f"{evaluation.metric} {metrics.accuracy:.2%} vs reference {metrics.reference_accuracy:.2%} "
            f"on {metrics.n} samples of {evaluation.dataset_id}"
        )
    else:
        note = (
            f"{key} by {om.metric} {om.value:.4g} vs reference {om.reference_value:.4g} on {metrics.n} samples of {evaluation.dataset_id}"
        )
    if value is None:
        return _Observed(None, "unavailable:metric has no such figure", (f"no data: {note} has no {unit}",))
    return _Observed(value, slice_provenance(metrics.slice_id), (note,))


def _judge(clause: HardClause, observed: _Observed) -> ClauseResult:
    notes = list(observed.notes)
    if observed.upper is not None:
        over = " (over budget)" if observed.upper > clause.budget else ""
        notes.append(f"{observed.upper_label} {observed.upper:.4g} {clause.unit}{over}")
    if observed.value is None:
        status, margin = "unverified", None
    elif observed.provenance.startswith("estimated:"):
        # A stand-in estimate is shown, never judged: the clause needs a counted or measured figure.
        status, margin = "unverified", None
        notes.insert(0, f"estimated figure {observed.value:.4g} {clause.unit}, not judged (the simulator could not count the model's cost)")
    else:
        margin = clause.budget - observed.value
        status = "pass" if margin >= 0 else "fail"
    return ClauseResult(
        clause=clause.id,
        status=status,
        value=observed.value,
        budget=clause.budget,
        unit=clause.unit,
        margin=margin,
        provenance=observed.provenance,
        note="; ".join(notes),
        budget_from=clause.source or None,
    )


def _relative_margin(result: ClauseResult) -> float:
    """Margin as a fraction of the budget; a zero budget ("none at all") is met exactly or missed outright."""
    assert result.margin is not None and result.budget is not None
    if result.budget > 0:
        return result.margin / result.budget
    return 0.0 if result.margin >= 0 else -math.inf


def _numeric(result: ClauseResult) -> bool:
    """A clause with a quantity and a budget above zero, whose margin means something relative to it.
    ``model.inputs`` (a check, not a quantity) and zero budgets ("none at all") are not."""
    return result.clause != "model.inputs" and result.budget is not None and result.budget > 0


def _mark_binding(results: list[ClauseResult], allow_unverified: bool) -> tuple[list[ClauseResult], str | None]:
    """Pick the binding clause and say in its note why it binds: the failing clause furthest over its
    budget (relative to it); else a clause without data that blocks the verdict; else the hard numeric
    clause with the smallest margin relative to its budget (a check such as ``model.inputs`` or a
    zero budget only when no numeric clause passes)."""
    failing = [r for r in results if r.status == "fail"]
    blocking_unverified = [r for r in results if r.status == "unverified" and not allow_unverified]
    passing = [r for r in results if r.status == "pass"]
    numeric = [r for r in passing if _numeric(r)]
    if failing:
        failing_numeric = [r for r in failing if _numeric(r)] or failing
        chosen = min(failing_numeric, key=_relative_margin)
        why = f"binding: worst relative margin of the failing clauses ({_percent(_relative_margin(chosen))} of budget)"
    elif blocking_unverified:
        chosen = blocking_unverified[0]
        why = "binding: no failing clause, but this one has no data and blocks the verdict"
    elif numeric:
        chosen = min(numeric, key=_relative_margin)
        why = f"binding: smallest relative headroom of the passing clauses ({_percent(_relative_margin(chosen))} of budget)"
    elif passing:
        chosen = passing[0]
        why = "binding: the only kind of clause set (no numeric budget above zero)"
    else:
        return results, None
    out = [r.model_copy(update={"note": "; ".join(filter(None, [r.note, why]))}) if r is chosen else r for r in results]
    return out, chosen.clause


def _percent(fraction: float) -> str:
    return "-inf" if math.isinf(fraction) else f"{fraction:+.1%}"
