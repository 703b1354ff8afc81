"""Change record a release board reviews: what changed between two BOMs, why, budgets, tests, rollback, telemetry, caveats."""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import Any, Final, Literal

from pydantic import model_validator

from edgeproof.bom import NO_RECIPE, BomFacts, Stated, StatedClause, TargetFacts, figure_for_clause, read_bom, signature_path
from edgeproof.records import _Record, load_record, save_record, write_atomic

CHANGE_RECORD_SCHEMA: Final = "edgeproof.change-record/2"
# /1 was written as a plain dict with a "schema" key; ChangeRecord reads it and converts it to /2
CHANGE_RECORD_SCHEMA_V1 = "edgeproof.change-record/1"
_V1_NO_RECIPE = "none (model as given)"
WHY_PLACEHOLDER = "TO BE FILLED BY AUTHOR"
NOT_GATED = "not gated"
# Per-target facts whose change a board must see: runtime, provider, compiler, driver, firmware, power mode.
TARGET_FIELDS = (
    "target.kind",
    "target.power_mode",
    "target.profile_version",
    "runtime.onnxruntime",
    "runtime.build",
    "runtime.execution_provider",
    "runtime.compiler",
    "runtime.driver",
    "firmware.version",
)
# Which fleet telemetry field shows a budgeted figure in the field; model size is fixed at release.
TELEMETRY_FIELDS = {
    "p50_ms": "latency_p50_ms",
    "p95_ms": "latency_p95_ms",
    "p99_ms": "latency_p99_ms",
    "load_time_ms": "load_time_ms",
    "peak_rss_mib": "rss_mib",
    "energy_mj_per_inference": "energy_mj",
    "sustained_w": "power_w",
    "temperature_c": "temperature_c",
    "cpu_fallback_frac": "cpu_fallback_frac",
}
ACCURACY_PROXY = "confidence_mean (accuracy proxy)"
BUDGETED_SECTIONS = ("budgets.", "slices.")


class Change(_Record):
    """One BOM field that differs between the two releases."""

    field: str
    before: str
    after: str


class BudgetDelta(_Record):
    """One budgeted figure on one target, before and after, with intervals and gate status where known."""

    target: str
    figure: str
    unit: str
    before: float | None
    after: float | None
    before_interval: tuple[float, float] | None
    after_interval: tuple[float, float] | None
    interval_level: float | None
    delta_pct: float | None
    # changed beyond the stated intervals (or at all, where a side has none)
    moved: bool
    budget: float | None
    budget_unit: str | None
    # a clause status, or "not gated" where that side's BOM holds no verdict judging the figure
    status_before: str
    status_after: str
    provenance_before: str
    provenance_after: str
    text: str

    @property
    def status_changed(self) -> bool:
        """Both sides were gated and the gate judged them differently; "not gated → pass" is no change."""
        return NOT_GATED not in (self.status_before, self.status_after) and self.status_before != self.status_after

    @property
    def changed(self) -> bool:
        """What the board must look at (bold in the record): moved beyond the intervals, or a different gate status."""
        return self.moved or self.status_changed


class ReleaseSide(_Record):
    """One BOM of the comparison: its file (relative to the record) and sha256, its model and recipe."""

    bom: str
    bom_sha256: str | None = None  # records converted from /1 did not state it
    model: str
    model_sha256: str
    recipe: str


class RegressionResult(_Record):
    """One test of the candidate against the baseline release, as the gate ran it on one target."""

    target: str
    clause: str
    status: str
    note: str = ""

    @property
    def text(self) -> str:
        return f"{self.target}: {self.clause} {self.status}" + (f": {self.note}" if self.note else "")


class GateSummary(_Record):
    """One target's gate results in the candidate BOM, next to its verdict in the previous one."""

    target: str
    kind: str
    verdict: str
    previous_verdict: str
    binding_clause: str | None
    clause_counts: dict[str, int]
    not_passing: list[str]  # a waived clause with its waiver: who, until when, why


class Rollback(_Record):
    """How to go back to the release in the field: its BOM, model file and signature."""

    bom: str  # relative to the record
    bom_sha256: str | None = None  # records converted from /1 did not state it
    model_file: str  # the file name (records converted from /1: the path the BOM recorded)
    model_sha256: str
    recipe: str
    signature: str | None  # relative to the record; None where the BOM has no signature next to it


class WatchField(_Record):
    """A fleet telemetry field to watch during the rollout, and the change that calls for it."""

    field: str
    why: str


class GateEvidence(_Record):
    """One alarm in one stratum as the rollout controller journalled it at a gate (the cohort's side only)."""

    alarm: str
    stratum: str
    verdict: str
    n_devices: int
    n_samples: float
    samples_unit: str
    statistic: str
    estimate: float | None
    interval: list[float] | None
    threshold: float
    threshold_source: str
    provenance: str


class GateDecision(_Record):
    """One decision at a wave's gate: pass, fail, hold or abort, who took it, why, and the evidence behind it."""

    wave: int
    at_s: float
    outcome: str
    actor: str
    reason: str
    strata: list[str] = []
    evidence: list[GateEvidence] = []


class RolloutWave(_Record):
    """A wave: the devices it selected at submit, when its release was sent and confirmed, and how its gate ended."""

    index: int
    name: str  # the cohort label the wave's devices carry; "wave <k>" for a wave the rollout never reached
    devices: int
    sent_at_s: float | None
    reconciled_at_s: float | None
    outcome: str  # not reached | soaking | holding | escalated | pass | fail | abort
    decided_at_s: float | None
    holds: int


class RolloutRollback(_Record):
    """A rollback (a halt on a failing gate, or an abort): which strata, which devices, and whether they re-reported the known-good pair."""

    wave: int
    at_s: float
    ends: str  # halted | aborted
    strata: list[str]  # ["all"] when every updated device went back
    devices: list[str]
    verified: bool  # every device re-reported the known-good model and firmware
    reported_model_sha256: str | None
    verified_at_s: float | None


class RolloutEvent(_Record):
    """An operator command or an escalation, as journalled."""

    at_s: float
    kind: str
    wave: int
    actor: str
    reason: str


class RolloutSummary(_Record):
    """A staged rollout as its journal tells it: the plan's digests, each wave, each gate decision, each rollback."""

    journal: str
    simulated: bool  # the fleet behind it is the fleet simulator: its times are simulated hours
    phase: str
    paused: bool
    plan_sha256: str
    release_bom_sha256: str
    release_model_sha256: str
    known_good_bom_sha256: str
    known_good_model_sha256: str
    waves: list[RolloutWave]
    decisions: list[GateDecision]  # every pass, fail and abort, and the last hold of each wave
    rollbacks: list[RolloutRollback]
    events: list[RolloutEvent]


def _fields(record: type[_Record], entry: dict[str, Any]) -> dict[str, Any]:
    """The keys of a journal entry that ``record`` holds (the controller may journal more than the change record keeps)."""
    return {k: entry[k] for k in record.model_fields if k in entry}


def _event_reason(e: dict[str, Any]) -> str:
    """Why an event was journalled; a device's own revert also says what the device re-reports since."""
    reason = str(e.get("reason") or "")
    if e["kind"] != "self-revert":
        return reason
    pair = "the known-good pair" if e.get("on_known_good") else "NOT the known-good pair"
    return f"{reason}; re-reports slot {e.get('slot')}, model {str(e.get('model_sha256'))[:12]}…, {e.get('firmware_version')} ({pair})"


def summarize_rollout(folder: str | Path) -> RolloutSummary:
    """Read a rollout's journal (read-only, through ``rollout.Journal`` and ``rollout.fold``) into a ``RolloutSummary``.

    Raises DataError when ``folder`` holds no journal with a started rollout.
    """
    from edgeproof.errors import DataError
    from edgeproof.rollout import Journal, fold
    from edgeproof.rollout._transport import SNAPSHOT_NAME

    journal = Journal(folder)
    started = journal.of_kind("start")
    if not started:
        raise DataError(
            f"{journal.path}: no rollout journal with a start entry here (`edgeproof rollout start PLAN --journal DIR` writes one)"
        )
    state, start = fold(journal.entries), started[0]
    sends = journal.of_kind("send")
    when = {kind: {e["intent"]: e for e in journal.of_kind(kind)} for kind in ("sent", "reconciled")}
    decisions = [
        GateDecision.model_validate({**_fields(GateDecision, d), "evidence": [_fields(GateEvidence, x) for x in d.get("evidence", [])]})
        for d in state.decisions
    ]
    waves = []
    for k, devices in enumerate(state.wave_devices):
        send = next((e for e in sends if e["purpose"] == "wave" and e["wave"] == k), None)
        of_wave = [d for d in decisions if d.wave == k]
        final = next((d for d in reversed(of_wave) if d.outcome != "hold"), None)
        holds = sum(d.outcome == "hold" for d in of_wave)
        outcome = (
            final.outcome
            if final
            else ("not reached" if send is None else "escalated" if k in state.escalated else "holding" if holds else "soaking")
        )
        sent = when["sent"].get(send["id"]) if send else None
        reconciled = when["reconciled"].get(send["id"]) if send else None
        waves.append(
            RolloutWave(
                index=k,
                name=send["cohort"] if send else f"wave {k}",
                devices=len(devices),
                sent_at_s=sent["at_s"] if sent else None,
                reconciled_at_s=reconciled["at_s"] if reconciled else None,
                outcome=outcome,
                decided_at_s=final.at_s if final else None,
                holds=holds,
            )
        )
    rollbacks = []
    for e in sends:
        if e["purpose"] != "rollback":
            continue
        done = when["reconciled"].get(e["id"])
        reported = done.get("model_sha256") if done else None
        rollbacks.append(
            RolloutRollback(
                wave=e["wave"],
                at_s=e["at_s"],
                ends=e["ends"],
                strata=e["strata"] if isinstance(e["strata"], list) else [str(e["strata"])],
                devices=e["devices"],
                verified=done is not None and reported == start["known_good_model_sha256"],
                reported_model_sha256=reported,
                verified_at_s=done["at_s"] if done else None,
            )
        )
    last_holds = {d.wave: d for d in decisions if d.outcome == "hold"}
    kept = [d for d in decisions if d.outcome != "hold" or last_holds[d.wave] is d]
    events = [
        RolloutEvent(at_s=e["at_s"], kind=e["kind"], wave=e.get("wave", -1), actor=e.get("actor", "controller"), reason=_event_reason(e))
        for e in journal.entries
        if e["kind"] in ("escalate", "approve", "pause", "resume", "abort-request", "self-revert")
    ]
    evidence = [x.provenance for d in decisions for x in d.evidence]
    return RolloutSummary(
        journal=str(journal.path),
        simulated=(journal.folder / SNAPSHOT_NAME).exists() or any(p.startswith("simulated:") for p in evidence),
        phase=state.phase,
        paused=state.paused,
        plan_sha256=start["plan_sha256"],
        release_bom_sha256=start["release_bom_sha256"],
        release_model_sha256=start["release_model_sha256"],
        known_good_bom_sha256=start["known_good_bom_sha256"],
        known_good_model_sha256=start["known_good_model_sha256"],
        waves=waves,
        decisions=kept,
        rollbacks=rollbacks,
        events=events,
    )


def at_hours(at_s: float | None) -> str:
    """A journal time (seconds on the controller's clock) as the hours a reader compares."""
    return "—" if at_s is None else f"t={at_s / 3600:.1f} h"


def alarm_unit(alarm: str) -> str:
    """The unit a fleet alarm's estimate, interval and threshold are in."""
    from edgeproof.fleet._alarms import ALARMS

    return next((a.unit for a in ALARMS if a.name == alarm), "")


def evidence_text(x: GateEvidence) -> str:
    """One line of a gate's evidence: verdict, estimate and interval, threshold, the cohort's devices and samples, provenance."""
    from edgeproof.fleet._text import _fmt as value_text

    unit = alarm_unit(x.alarm)
    interval = f" (interval {value_text(x.interval[0], unit)} to {value_text(x.interval[1], unit)})" if x.interval else ""
    return (
        f"{x.alarm} in {x.stratum}: {x.verdict}, {value_text(x.estimate, unit)}{interval} vs threshold {value_text(x.threshold, unit)} "
        f"({x.threshold_source}); cohort {x.n_devices} devices / {x.n_samples:,.0f} {x.samples_unit}; {x.statistic}; {x.provenance}"
    )


def rollback_verification(rollback: RolloutRollback, known_good_model_sha256: str) -> str:
    """Whether the rolled-back devices re-reported the known-good pair, in words."""
    n = len(rollback.devices)
    if rollback.verified:
        return (
            f"verified {at_hours(rollback.verified_at_s)}: all {n} devices re-report the known-good model {known_good_model_sha256[:12]}…"
        )
    if rollback.reported_model_sha256 is None:
        return f"not verified yet: not every one of the {n} devices has re-reported the known-good pair"
    return f"NOT verified: the devices re-report model {rollback.reported_model_sha256[:12]}…, not the known-good {known_good_model_sha256[:12]}…"


def rollout_markdown(r: RolloutSummary, candidate_bom_sha256: str | None = None) -> list[str]:
    """The rollout section of the change record: waves, gate decisions with their evidence, rollbacks, operator events."""
    clock = "simulated hours of the fleet simulator" if r.simulated else "hours on the controller's clock"
    lines = [
        f"Journal `{r.journal}` ({'simulated fleet' if r.simulated else 'fleet'}; times are {clock}): **{r.phase}**"
        f"{' (paused)' if r.paused else ''}. Plan sha256 `{r.plan_sha256[:12]}…`; release BOM `{r.release_bom_sha256[:12]}…` "
        f"(model `{r.release_model_sha256[:12]}…`); known good BOM `{r.known_good_bom_sha256[:12]}…` (model `{r.known_good_model_sha256[:12]}…`).",
    ]
    if candidate_bom_sha256 and r.release_bom_sha256 != candidate_bom_sha256:
        lines.append(
            f"**Caution:** this rollout shipped BOM `{r.release_bom_sha256[:12]}…`, not this record's candidate `{candidate_bom_sha256[:12]}…`."
        )
    lines += ["", "| wave | devices | sent | outcome | decided | holds |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {w.index} {w.name} | {w.devices} | {at_hours(w.sent_at_s)} | {w.outcome} | {at_hours(w.decided_at_s)} | {w.holds} |"
        for w in r.waves
    ]
    lines += ["", "Gate decisions (every pass, fail and abort; the last hold of a wave):", ""]
    for d in r.decisions:
        lines.append(f"- {at_hours(d.at_s)} wave {d.wave}: **{d.outcome}** by {d.actor}: {d.reason}")
        lines += [f"  - {evidence_text(x)}" for x in d.evidence if x.verdict != "pass"]
        passing = sum(x.verdict == "pass" for x in d.evidence)
        if passing:
            lines.append(f"  - {passing} alarm × stratum verdict(s) pass")
    if not r.decisions:
        lines.append("- none yet")
    lines += ["", "Rollbacks:", ""]
    lines += [
        f"- {at_hours(b.at_s)} {b.ends} at wave {b.wave}; strata {', '.join(b.strata)}; {len(b.devices)} devices sent the known-good pair; "
        + rollback_verification(b, r.known_good_model_sha256)
        for b in r.rollbacks
    ] or ["- none"]
    if r.events:
        lines += ["", "Operator commands, escalations and devices that reverted by themselves:", ""]
        lines += [f"- {at_hours(e.at_s)} {e.kind} (wave {e.wave}) by {e.actor}{': ' + e.reason if e.reason else ''}" for e in r.events]
    return lines


class ChangeRecord(_Record):
    """The change from the release in the field (``previous``, the rollback target) to the ``candidate``."""

    schema_version: Literal["edgeproof.change-record/2"] = CHANGE_RECORD_SCHEMA
    previous: ReleaseSide
    candidate: ReleaseSide
    what_changed: list[Change]
    unchanged: list[str]
    why: str
    budgets_impacted: list[BudgetDelta]
    regressions: list[RegressionResult]
    tests_run: list[GateSummary]
    rollback: Rollback
    telemetry_to_watch: list[WatchField]
    hardware_caveats: list[str]
    rollout: RolloutSummary | None = None  # the staged rollout of the candidate, when its journal was given

    @model_validator(mode="before")
    @classmethod
    def _from_v1(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("schema") == CHANGE_RECORD_SCHEMA_V1:
            try:
                return _upgrade_v1(data)
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise ValueError(f"not a readable {CHANGE_RECORD_SCHEMA_V1} record ({type(exc).__name__}: {exc})") from None
        return data

    @property
    def bold(self) -> list[BudgetDelta]:
        """The budget rows a board must look at: see ``BudgetDelta.changed``."""
        return [d for d in self.budgets_impacted if d.changed]


def _v1_label(text: str) -> str:
    return NO_RECIPE if text == _V1_NO_RECIPE else text


def _v1_regression(line: str) -> dict[str, str]:
    """``host: regression.p50 pass: 3.1% slower …`` (how /1 wrote a regression) as its fields."""
    target, rest = line.split(": ", 1)
    clause, status_note = rest.split(" ", 1)
    status, _, note = status_note.partition(": ")
    return {"target": target, "clause": clause, "status": status, "note": note}


def _upgrade_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """A /1 record in the /2 shape: same facts, typed; the paths stay as /1 stated them."""

    def side(s: dict[str, Any]) -> dict[str, Any]:
        return {"bom": s["bom"], "model": s["model"], "model_sha256": s["model_sha256"], "recipe": _v1_label(s["recipe"])}

    rb = doc["rollback"]
    changes = [
        {**c, "before": _v1_label(c["before"]), "after": _v1_label(c["after"])} if c["field"] == "recipe" else c
        for c in doc["what_changed"]
    ]
    return {
        "previous": side(doc["from"]),
        "candidate": side(doc["to"]),
        "what_changed": changes,
        "unchanged": doc["unchanged"],
        "why": doc["why"],
        "budgets_impacted": doc["budgets_impacted"],
        "regressions": [_v1_regression(line) for line in doc["regressions"]],
        "tests_run": doc["tests_run"],
        "rollback": {
            "bom": rb["bom"],
            "model_file": rb["model_path"],
            "model_sha256": rb["model_sha256"],
            "recipe": _v1_label(rb["recipe"]),
            "signature": rb["signature"],
        },
        "telemetry_to_watch": doc["telemetry_to_watch"],
        "hardware_caveats": doc["hardware_caveats"],
    }


def load_change_record(path: str | Path) -> ChangeRecord:
    """Read a change record JSON file (/2, or /1 converted); a bad file is one RecordError line."""
    record: ChangeRecord = load_record(path, ChangeRecord)
    return record


def _diff(field: str, before: str | None, after: str | None) -> Change | None:
    before, after = before or "absent", after or "absent"
    return None if before == after else Change(field=field, before=before, after=after)


def what_changed(a: BomFacts, b: BomFacts) -> tuple[list[Change], list[str]]:
    """Field-by-field BOM diff (model, recipe, contract, per-target runtime/driver/firmware); also the unchanged fields."""
    pairs: list[tuple[str, str | None, str | None]] = [
        ("model.name", a.model_name, b.model_name),
        ("model.sha256", a.model_sha256, b.model_sha256),
        ("contract.sha256", a.contract_sha256, b.contract_sha256),
    ]
    if a.recipe is None or b.recipe is None:
        pairs.append(("recipe", a.recipe_label, b.recipe_label))
    else:
        # where the source model happened to be is no fact of the release; recipe.source_sha256 says which it was
        keys = sorted((set(a.recipe_props) | set(b.recipe_props)) - {"recipe", "recipe.source_path"})
        pairs += [(key, a.recipe_props.get(key), b.recipe_props.get(key)) for key in keys]
    for tid in sorted(set(a.targets) | set(b.targets)):
        ta, tb = a.targets.get(tid), b.targets.get(tid)
        if ta is None or tb is None:
            pairs.append((f"{tid}: target", "present" if ta else None, "present" if tb else None))
            continue
        pairs += [(f"{tid}: {key}", ta.props.get(key), tb.props.get(key)) for key in TARGET_FIELDS]
    changes, same = [], []
    for field, before, after in pairs:
        change = _diff(field, before, after)
        if change is None:
            same.append(field)
        else:
            changes.append(change)
    return changes, same


def _clause_status(target: TargetFacts) -> dict[str, StatedClause]:
    """Budget and slice clauses of a target's gate verdict, keyed by the figure each judges.

    Regression clauses compare with a baseline rather than judge one figure; ``regressions`` reports them.
    """
    return {figure_for_clause(c.clause): c for c in target.clauses if c.clause.startswith(BUDGETED_SECTIONS)}


def _fmt(value: float | None) -> str:
    return "unavailable" if value is None else f"{value:.4g}"


def _interval_text(stated: Stated | None) -> str:
    if stated is None or stated.figure.interval is None:
        return "no interval"
    lo, hi = stated.figure.interval
    level = f"{stated.level:.0%} CI " if stated.level is not None else "interval "
    return f"{level}{lo:.4g}–{hi:.4g}"


def budget_delta(
    target: str,
    key: str,
    before: Stated | None,
    after: Stated | None,
    clause_a: StatedClause | None,
    clause_b: StatedClause | None,
) -> BudgetDelta:
    """Compare one figure across two BOMs; ``moved`` means it changed beyond the stated intervals (or at all, without them)."""
    fa, fb = (before.figure if before else None), (after.figure if after else None)
    va, vb = (fa.value if fa else None), (fb.value if fb else None)
    clause = clause_b or clause_a
    stated = fb or fa
    unit = stated.unit if stated else (clause.unit if clause else "")
    delta_pct = None
    moved = va != vb
    note = ""
    if fa is not None and fb is not None and va is not None and vb is not None:
        if fa.unit != fb.unit:
            moved, note = True, f"units differ ({fa.unit} vs {fb.unit}): not compared"
        else:
            delta_pct = (vb - va) / abs(va) * 100 if va else None
            if fa.interval is not None and fb.interval is not None:
                overlap = fa.interval[0] <= fb.interval[1] and fb.interval[0] <= fa.interval[1]
                moved = moved and not overlap
                note = f"{_interval_text(before)} → {_interval_text(after)}" + ("; intervals overlap" if overlap else "; intervals apart")
    pct = "" if delta_pct is None else f"{delta_pct:+.1f}%".replace("-", "−") + "; "
    status_a = clause_a.status if clause_a else NOT_GATED
    status_b = clause_b.status if clause_b else NOT_GATED
    budget = clause.budget if clause else None
    budget_text = f"; budget {budget:.4g} {clause.unit}: {status_a} → {status_b}" if clause and budget is not None else ""
    text = f"{key} on {target}: {_fmt(va)} → {_fmt(vb)} {unit} ({pct}{note or 'no interval'}){budget_text}"
    level_from = after or before
    return BudgetDelta(
        target=target,
        figure=key,
        unit=unit,
        before=va,
        after=vb,
        before_interval=fa.interval if fa else None,
        after_interval=fb.interval if fb else None,
        interval_level=level_from.level if level_from else None,
        delta_pct=delta_pct,
        moved=moved,
        budget=budget,
        budget_unit=clause.unit if clause else None,
        status_before=status_a,
        status_after=status_b,
        provenance_before=fa.provenance if fa else "absent",
        provenance_after=fb.provenance if fb else "absent",
        text=text,
    )


def budgets_impacted(a: BomFacts, b: BomFacts) -> list[BudgetDelta]:
    """Every budgeted figure on every target both BOMs hold; without any verdict, every recorded figure."""
    deltas = []
    for tid in sorted(set(a.targets) & set(b.targets)):
        ta, tb = a.targets[tid], b.targets[tid]
        clauses_a, clauses_b = _clause_status(ta), _clause_status(tb)
        keys = list(dict.fromkeys([*clauses_b, *clauses_a])) if (ta.gated or tb.gated) else list(dict.fromkeys([*tb.figures, *ta.figures]))
        for key in keys:
            deltas.append(budget_delta(tid, key, ta.figures.get(key), tb.figures.get(key), clauses_a.get(key), clauses_b.get(key)))
    return deltas


def regressions(b: BomFacts) -> list[RegressionResult]:
    """The gate's regression tests against the baseline, per target of the new BOM."""
    return [
        RegressionResult(target=tid, clause=c.clause, status=c.status, note=c.note)
        for tid, target in sorted(b.targets.items())
        for c in target.regressions
    ]


def tests_run(a: BomFacts, b: BomFacts) -> list[GateSummary]:
    """Gate results per target of the new BOM, next to the old one's."""
    rows = []
    for tid, tb in sorted(b.targets.items()):
        ta = a.targets.get(tid)
        counts: dict[str, int] = {}
        for clause in tb.clauses:
            counts[clause.status] = counts.get(clause.status, 0) + 1
        rows.append(
            GateSummary(
                target=tid,
                kind=tb.kind,
                verdict=tb.verdict,
                previous_verdict=ta.verdict if ta else "target absent",
                binding_clause=tb.binding_clause,
                clause_counts=counts,
                not_passing=[_not_passing(tb, c) for c in tb.clauses if c.status != "pass"],
            )
        )
    return rows


def _not_passing(target: TargetFacts, clause: StatedClause) -> str:
    """A clause that did not pass; a waived one names who waived it, until when and why."""
    waiver = target.waiver_of(clause.clause) if clause.status == "waived" else None
    return f"waived: {waiver.sentence()}" if waiver else f"{clause.clause}: {clause.status}"


def telemetry_to_watch(changes: list[Change], deltas: list[BudgetDelta]) -> list[WatchField]:
    """Fleet fields to watch in the rollout, each with the change that calls for it."""
    reasons: dict[str, list[str]] = {}

    def watch(field: str, why: str) -> None:
        reasons.setdefault(field, [])
        if why not in reasons[field]:
            reasons[field].append(why)

    for d in deltas:
        if not d.changed:
            continue
        field = ACCURACY_PROXY if d.figure.startswith("slices.") else TELEMETRY_FIELDS.get(d.figure)
        if field is not None:
            watch(field, f"{d.figure} on {d.target} changed")
    fields = {c.field for c in changes}
    if any(f.startswith("recipe") for f in fields):
        watch(ACCURACY_PROXY, "quantization recipe changed")
        watch("cpu_fallback_frac", "quantization recipe changed: quantized ops may fall back to the CPU")
    elif "model.sha256" in fields:
        watch(ACCURACY_PROXY, "model weights changed")
    for f in sorted(fields):
        tid, _, key = f.partition(": ")
        if key.startswith(("runtime.", "firmware.", "target.power_mode")):
            for field in ("latency_p95_ms", "cpu_fallback_frac", "crash_frac"):
                watch(field, f"{key} changed on {tid}")
    return [WatchField(field=field, why="; ".join(why)) for field, why in reasons.items()]


def hardware_caveats(a: BomFacts, b: BomFacts, deltas: list[BudgetDelta]) -> list[str]:
    """The new BOM's caveats, plus comparisons across kinds of evidence and targets dropped."""
    caveats = list(b.caveats)
    for d in deltas:
        kind_a, kind_b = d.provenance_before.split(":", 1)[0], d.provenance_after.split(":", 1)[0]
        if kind_a != kind_b:
            evidence = f"{d.provenance_before} → {d.provenance_after}"
            caveats.append(f"{d.figure} on {d.target}: compares {kind_a} with {kind_b} evidence ({evidence})")
    for tid in sorted(set(a.targets) - set(b.targets)):
        caveats.append(f"{tid}: in the previous BOM but not in this one: not tested for this release")
    return caveats


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to the record's folder, so the record names no folder of the machine that wrote it."""
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _side(facts: BomFacts, base: Path) -> ReleaseSide:
    return ReleaseSide(
        bom=_relative(facts.path, base),
        bom_sha256=facts.sha256,
        model=facts.model_name,
        model_sha256=facts.model_sha256,
        recipe=facts.recipe_label,
    )


def build_change_record(
    a: BomFacts, b: BomFacts, why: str | None = None, base: str | Path | None = None, rollout: RolloutSummary | None = None
) -> ChangeRecord:
    """The change record from BOM ``a`` (the release in the field) to BOM ``b`` (the candidate).

    ``base`` is the folder the record is written to (default: the working directory); the files
    it names are relative to it, and the model by file name and sha256. ``rollout``: the candidate's
    staged rollout (``summarize_rollout``), shown in its own section.
    """
    folder = Path.cwd() if base is None else Path(base)
    changes, same = what_changed(a, b)
    deltas = budgets_impacted(a, b)
    sig = signature_path(a.path)
    return ChangeRecord(
        previous=_side(a, folder),
        candidate=_side(b, folder),
        what_changed=changes,
        unchanged=same,
        why=why.strip() if why and why.strip() else WHY_PLACEHOLDER,
        budgets_impacted=deltas,
        regressions=regressions(b),
        tests_run=tests_run(a, b),
        rollback=Rollback(
            bom=_relative(a.path, folder),
            bom_sha256=a.sha256,
            model_file=PurePath(a.model_path).name,
            model_sha256=a.model_sha256,
            recipe=a.recipe_label,
            signature=_relative(sig, folder) if sig.is_file() else None,
        ),
        telemetry_to_watch=telemetry_to_watch(changes, deltas),
        hardware_caveats=hardware_caveats(a, b, deltas),
        rollout=rollout.model_copy(update={"journal": _relative(Path(rollout.journal), folder)}) if rollout else None,
    )


def _short(value: str) -> str:
    # hashes and JSON blobs stay readable in a table; the JSON record keeps them whole
    return value if len(value) <= 80 else value[:77] + "…"


def _file(name: str, sha256: str | None) -> str:
    return f"`{name}`" + (f" (sha256 `{sha256[:12]}…`)" if sha256 else "")


def render_markdown(record: ChangeRecord) -> str:
    """The change record as the Markdown a release board reads."""
    src, dst = record.previous, record.candidate
    lines = [
        f"# Change record: {src.model} {src.model_sha256[:12]} → {dst.model} {dst.model_sha256[:12]}",
        "",
        f"From {_file(src.bom, src.bom_sha256)}: {src.recipe}.",
        f"To {_file(dst.bom, dst.bom_sha256)}: {dst.recipe}.",
        "",
        "## What changed",
        "",
    ]
    if record.what_changed:
        lines += ["| field | from | to |", "|---|---|---|"]
        lines += [f"| {c.field} | `{_short(c.before)}` | `{_short(c.after)}` |" for c in record.what_changed]
    else:
        lines.append("Nothing in the BOMs differs.")
    lines += ["", f"Unchanged: {', '.join(record.unchanged) or 'nothing'}.", "", "## Why", "", record.why]
    lines += ["", "## Budgets impacted", ""]
    lines += [f"- **{d.text}**" if d.changed else f"- {d.text}" for d in record.budgets_impacted] or ["- no target is in both BOMs"]
    lines += ["", f"{len(record.bold)} of {len(record.budgets_impacted)} moved beyond their intervals or changed gate status (bold)."]
    if record.regressions:
        lines += ["", "Regression vs the baseline, as the gate measured it:", ""] + [f"- {r.text}" for r in record.regressions]
    lines += ["", "## Tests run", ""]
    for t in record.tests_run:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(t.clause_counts.items())) or "no clauses"
        binding = f"; binding {t.binding_clause}" if t.binding_clause else ""
        lines.append(f"- {t.target} ({t.kind}): gate {t.verdict} (previously {t.previous_verdict}); {counts}{binding}")
        lines += [f"  - {item}" for item in t.not_passing]
    rb = record.rollback
    lines += [
        "",
        "## Rollback path",
        "",
        f"Redeploy the previous release as its BOM {_file(rb.bom, rb.bom_sha256)} states it:",
        "",
        f"- model file `{rb.model_file}`, sha256 `{rb.model_sha256}`",
        f"- recipe: {rb.recipe}",
        f"- signature: `{rb.signature}`" if rb.signature else "- signature: none next to the BOM; sign it before relying on it",
        "",
        "## Telemetry fields to watch",
        "",
    ]
    lines += [f"- `{t.field}`: {t.why}" for t in record.telemetry_to_watch] or [
        "- none derived: no budget moved and no recipe or runtime changed"
    ]
    lines += ["", "## Hardware caveats", ""]
    lines += [f"- {c}" for c in record.hardware_caveats] or ["- none"]
    if record.rollout is not None:
        lines += ["", "## Rollout", "", *rollout_markdown(record.rollout, dst.bom_sha256)]
    return "\n".join(lines) + "\n"


def write_change_record(
    from_bom: str | Path, to_bom: str | Path, why: str | None = None, out: str | Path | None = None, rollout: str | Path | None = None
) -> tuple[str, ChangeRecord, list[Path]]:
    """Build the change record of two BOM files; with ``out``, write ``OUT.md`` and ``OUT.json``.

    Returns the Markdown, the record and the files written. The files the record names are
    relative to ``out``'s folder (else to the working directory). ``rollout``: the folder of the
    candidate's rollout journal, read into the record's rollout section.
    """
    stem = None
    if out is not None:
        out = Path(out)
        stem = out.with_suffix("") if out.suffix in (".md", ".json") else out
    summary = summarize_rollout(rollout) if rollout is not None else None
    record = build_change_record(read_bom(from_bom), read_bom(to_bom), why, stem.parent if stem is not None else None, summary)
    markdown = render_markdown(record)
    written: list[Path] = []
    if stem is not None:
        written.append(write_atomic(stem.with_name(stem.name + ".md"), markdown))
        written.append(save_record(record, stem.with_name(stem.name + ".json")))
    return markdown, record, written
