"""The contract verdict per target (clause table with provenance badges) and the overall verdict banner."""

from __future__ import annotations

from collections import Counter

from edgeproof.outcome import OUTCOME_WORDS, overall
from edgeproof.records import ClauseResult, RunRecord, Verdict
from edgeproof.report._collect import Inputs
from edgeproof.report._html import (
    Section,
    absent_section,
    badge,
    bullet_list,
    card,
    chip,
    esc,
    fmt,
    kind_badges,
    note,
    provenance_kind,
    source,
    table,
    unavailable,
)

REGRESSION_PREFIX = "regression."


def verdict_sources(inputs: Inputs) -> list[tuple[str, Verdict]]:
    """Every verdict in the folder with the file it came from: check's verdict files, then gate results."""
    pairs = [(f.rel, f.item) for f in inputs.verdicts]
    pairs += [(f.rel, v) for f in inputs.gates for v in f.item.verdicts]
    return pairs


def judged_run(inputs: Inputs, rel: str) -> RunRecord | None:
    """The run a verdict file judged: ``X.verdict.json`` judged ``X.json``; a gate's ``gate.json`` its ``candidate.run.json``."""
    folder = rel.rpartition("/")[0]
    if rel.endswith(".verdict.json"):
        want = rel.removesuffix(".verdict.json") + ".json"
    elif rel.endswith("gate.json"):
        want = f"{folder}/candidate.run.json" if folder else "candidate.run.json"
    else:
        return None
    return next((f.item for f in inputs.runs if f.rel == want), None)


def p95_budget_ms(inputs: Inputs) -> float | None:
    """The contract's p95 budget, when every verdict in the folder states the same one."""
    budgets = {c.budget for _, v in verdict_sources(inputs) for c in v.clauses if c.clause == "budgets.p95_ms" and c.budget is not None}
    return budgets.pop() if len(budgets) == 1 else None


def value_cell(value: float | None, unit: str, provenance: str) -> str:
    """A clause's value; a figure without data reads "unavailable" with the reason in its tooltip."""
    if value is None:
        why = provenance.split(":", 1)[1] if provenance_kind(provenance) == "unavailable" and ":" in provenance else "no value"
        return unavailable(why)
    return esc(fmt(value, unit))


def clause_rows(clauses: list[ClauseResult]) -> list[list[str]]:
    rows = []
    for c in clauses:
        status = chip(c.status) + ("" if c.hard else ' <span class="muted">soft</span>')
        margin = esc(fmt(c.margin, c.unit)) if c.margin is not None else '<span class="muted">—</span>'
        budget = esc(fmt(c.budget, c.unit))
        rows.append(
            [
                f"<code>{esc(c.clause)}</code>",
                status,
                value_cell(c.value, c.unit, c.provenance),
                budget,
                margin,
                badge(c.provenance, detail=True),
                esc(c.note),
            ]
        )
    return rows


def _kind_counts(clauses: list[ClauseResult]) -> str:
    counts = Counter(provenance_kind(c.provenance) for c in clauses)
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


def status_words(clauses: list[ClauseResult]) -> str:
    """``14 pass, 1 waived``: how many clauses ended in each status, in words."""
    counts = Counter(c.status for c in clauses)
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def verdict_card(rel: str, verdict: Verdict) -> str:
    """One target's verdict: outcome, binding clause, evidence kinds, every contract clause, waivers."""
    contract = [c for c in verdict.clauses if not c.clause.startswith(REGRESSION_PREFIX)]
    regressions = len(verdict.clauses) - len(contract)
    kinds = {provenance_kind(c.provenance) for c in contract}
    title = (
        f"{esc(verdict.target)} {chip(verdict.outcome)} {kind_badges(kinds - {'unavailable'})} "
        f'<span class="muted">from</span> {source(rel)}'
    )
    lines = []
    if verdict.binding_clause:
        lines.append(f"Binding clause: <code>{esc(verdict.binding_clause)}</code>.")
    lines.append(f"Evidence: {esc(_kind_counts(contract)) or 'no clauses'}.")
    if regressions:
        lines.append(f'{regressions} regression clause(s) against the baseline: see <a href="#gate">the gate</a>.')
    if verdict.contract_sha256:
        lines.append(f"Contract sha256 <code>{esc(verdict.contract_sha256[:16])}…</code>.")
    body = "<p>" + " ".join(lines) + "</p>"
    body += table(["clause", "status", "value", "budget", "margin", "evidence", "note"], clause_rows(contract))
    extra = []
    if verdict.allow_unverified and any(c.status == "unverified" for c in verdict.clauses):
        extra.append("--allow-unverified: unverified clauses were counted as passing.")
    extra += [f"Could not decide: {why}" for why in verdict.undecided_because]
    extra += [f"Waiver applied: {w.sentence()}" for w in verdict.waivers_applied]
    extra += [f"Waiver EXPIRED, not applied: {w.sentence(expired=True)}" for w in verdict.waivers_expired]
    if extra:
        body += bullet_list(esc(e) for e in extra)
    return card(title, body)


def section(inputs: Inputs) -> Section:
    pairs = verdict_sources(inputs)
    if not pairs:
        return absent_section(
            "verdicts",
            "Every contract clause per target",
            "No contract verdict in this folder: `edgeproof check --json` and `edgeproof gate --out` write them.",
        )
    body = note(
        "Each clause of the budget contract judged on one target. The badge says what the figure rests on: "
        "measured on hardware, simulated from a board model, or estimated; a figure without a meter reads unavailable."
    )
    # the decision at the top names each verdict and its binding clause; every clause waits one click away
    body += "".join(
        f"<details><summary>Every clause on {esc(v.target)} ({esc(rel)}): {chip(v.outcome)} {esc(status_words(v.clauses))}</summary>"
        f"{verdict_card(rel, v)}</details>"
        for rel, v in pairs
    )
    kinds = frozenset(provenance_kind(c.provenance) for _, v in pairs for c in v.clauses)
    return Section("verdicts", "Every contract clause per target", body, kinds)


def _target_summary(verdicts: list[Verdict]) -> str:
    parts = []
    for v in verdicts:
        sim = any(provenance_kind(c.provenance) == "simulated" for c in v.clauses)
        why = f" on {v.binding_clause}" if v.binding_clause and not v.passed else ""
        parts.append(f"{v.target}{' (simulated)' if sim else ''}: {OUTCOME_WORDS[v.outcome]}{why}")
    return "; ".join(parts)


def banner(inputs: Inputs) -> str:
    """The overall outcome: the gate's where a gate ran, else the contract verdicts', else none."""
    if inputs.gates:
        outcome = overall(v.outcome for f in inputs.gates for v in f.item.verdicts)
        detail = " | ".join(f"{f.rel}: {_target_summary(f.item.verdicts)}" for f in inputs.gates)
        head = f"Release gate: {OUTCOME_WORDS[outcome]}"
    elif inputs.verdicts:
        verdicts = [f.item for f in inputs.verdicts]
        outcome = overall(v.outcome for v in verdicts)
        detail = _target_summary(verdicts) + " — no gate ran in this folder"
        head = f"Contract: {OUTCOME_WORDS[outcome]} ({len(verdicts)} verdict{'s' if len(verdicts) != 1 else ''})"
    else:
        return '<div id="verdict-banner" class="banner none">No verdict in this folder<small>run `edgeproof check` or `edgeproof gate` to judge the contract</small></div>'
    return f'<div id="verdict-banner" class="banner {outcome}">{esc(head)}<small>{esc(detail)}</small></div>'
