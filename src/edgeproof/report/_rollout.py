"""The rollout section: a staged rollout's waves, the verdicts per stratum at each gate with their evidence, and its
halts and rollbacks with whether the rolled-back devices re-reported the known-good pair, read from its journal."""

from __future__ import annotations

from pathlib import Path

from edgeproof.change_record import (
    GateDecision,
    GateEvidence,
    RolloutSummary,
    alarm_unit,
    at_hours,
    rollback_verification,
    summarize_rollout,
)
from edgeproof.errors import DataError, RecordError, first_line
from edgeproof.report._collect import Inputs
from edgeproof.report._fleet import verdict_chip
from edgeproof.report._html import Section, badge, bullet_list, esc, note, source, table

# The chip colour of a rollout's phase, a wave's gate and a decision; anything else (not reached) is muted.
OUTCOME_CLASSES = {
    **dict.fromkeys(("pass", "complete"), "pass"),
    **dict.fromkeys(("fail", "abort", "halted", "aborted"), "fail"),
    **dict.fromkeys(("hold", "holding", "escalated", "soaking", "running"), "undecided"),
}


def _chip(text: str, cls: str) -> str:
    return f'<span class="chip c-{cls}">{esc(text)}</span>'


def _outcome(outcome: str) -> str:
    return _chip(outcome, OUTCOME_CLASSES.get(outcome, "nodata"))


def _evidence_rows(evidence: list[GateEvidence]) -> list[list[str]]:
    from edgeproof.fleet._text import _fmt as value_text

    rows = []
    for x in evidence:
        unit = alarm_unit(x.alarm)
        interval = f"[{value_text(x.interval[0], unit)}, {value_text(x.interval[1], unit)}]" if x.interval else "—"
        rows.append(
            [
                esc(x.alarm),
                esc(x.stratum),
                verdict_chip(x.verdict) if x.verdict in ("pass", "fail", "inconclusive", "nodata") else esc(x.verdict),
                f'<span class="fig">{esc(value_text(x.estimate, unit))}</span><span class="ci">{esc(interval)}</span>',
                f'{esc(value_text(x.threshold, unit))}<br><span class="prov">{esc(x.threshold_source)}</span>',
                f"{x.n_devices} devices / {x.n_samples:,.0f} {esc(x.samples_unit)}",
                esc(x.statistic),
                badge(x.provenance, detail=True),
            ]
        )
    return rows


EVIDENCE_COLUMNS = ["alarm", "stratum", "verdict", "estimate, interval", "threshold", "cohort", "statistic", "evidence"]


def _decision_block(d: GateDecision, names: dict[int, str]) -> str:
    head = f"<h4>{esc(at_hours(d.at_s))} · wave {d.wave} {esc(names.get(d.wave, ''))}: {_outcome(d.outcome)} by {esc(d.actor)}</h4>"
    body = f"<p>{esc(d.reason)}</p>"
    if d.strata:
        body += note(f"Strata: {', '.join(d.strata)}")
    shown = [x for x in d.evidence if x.verdict != "pass"]
    passing = [x for x in d.evidence if x.verdict == "pass"]
    if shown:
        body += table(EVIDENCE_COLUMNS, _evidence_rows(shown))
    if passing:
        body += (
            f"<details><summary>{len(passing)} verdict(s) that pass</summary>{table(EVIDENCE_COLUMNS, _evidence_rows(passing))}</details>"
        )
    if not d.evidence:
        body += note("No alarm evidence journalled with this decision.")
    return head + body


def _waves_table(r: RolloutSummary) -> str:
    rows = [
        [
            f"{w.index} {esc(w.name)}",
            str(w.devices),
            esc(at_hours(w.sent_at_s)),
            esc(at_hours(w.reconciled_at_s)),
            _outcome(w.outcome),
            esc(at_hours(w.decided_at_s)),
            str(w.holds),
        ]
        for w in r.waves
    ]
    return table(["wave", "devices selected", "sent", "devices confirmed", "gate", "decided", "holds"], rows)


def _rollbacks(r: RolloutSummary) -> str:
    if not r.rollbacks:
        return note("No halt and no rollback.")
    rows = []
    for b in r.rollbacks:
        shown = ", ".join(b.devices[:12]) + (f" … ({len(b.devices) - 12} more)" if len(b.devices) > 12 else "")
        rows.append(
            [
                esc(at_hours(b.at_s)),
                f"{esc(b.ends)} at wave {b.wave}",
                esc(", ".join(b.strata)),
                f"{len(b.devices)}<details><summary>which</summary><code>{esc(shown)}</code></details>",
                (_chip("verified", "pass") if b.verified else _chip("not verified", "fail"))
                + f" {esc(rollback_verification(b, r.known_good_model_sha256))}",
            ]
        )
    return table(["when", "halt", "strata rolled back", "devices", "re-reported known-good pair"], rows)


def section(inputs: Inputs) -> Section | None:
    """The rollout section, when the report was given (or found) a rollout journal; None otherwise."""
    if inputs.rollout is None:
        return None
    try:
        r = summarize_rollout(inputs.rollout)
    except DataError as exc:
        raise RecordError(first_line(exc)) from None
    body = ""
    if r.simulated:
        body += (
            '<p class="sim-banner">SIMULATED ROLLOUT<small>The devices, their telemetry and the gates\' evidence come from the fleet '
            "simulator; every time is in simulated hours.</small></p>"
        )
    clock = "simulated hours" if r.simulated else "hours on the controller's clock"
    body += (
        f"<p>Journal {source(inputs.shown(Path(r.journal)))}: {_outcome(r.phase)}{' (paused)' if r.paused else ''}; "
        f"plan sha256 <code>{esc(r.plan_sha256[:12])}…</code>, release model <code>{esc(r.release_model_sha256[:12])}…</code>, "
        f"known-good model <code>{esc(r.known_good_model_sha256[:12])}…</code>; times t in {clock}.</p>"
    )
    body += "<h3>Waves</h3>" + _waves_table(r)
    names = {w.index: w.name for w in r.waves}
    body += "<h3>Gate decisions</h3>" + note(
        "Every pass, fail and abort, and the last hold of each wave, with the evidence the controller journalled "
        "(the cohort's side; the fleet page shows both sides)."
    )
    body += "".join(_decision_block(d, names) for d in r.decisions) or note("No gate has decided yet.")
    body += "<h3>Halts and rollbacks</h3>" + _rollbacks(r)
    if r.events:
        body += "<h3>Operator commands, escalations and devices that reverted by themselves</h3>" + bullet_list(
            f"{esc(at_hours(e.at_s))} {esc(e.kind)} (wave {e.wave}) by {esc(e.actor)}" + (f": {esc(e.reason)}" if e.reason else "")
            for e in r.events
        )
    return Section("rollout", "Rollout", body, kinds=frozenset({"simulated" if r.simulated else "measured"}))
