"""The release paperwork: BOM summary (model, recipe, targets, signature, caveats) and the change record."""

from __future__ import annotations

from edgeproof.bom import BomFacts, BomSignature, signature_path
from edgeproof.change_record import BudgetDelta, ChangeRecord, ReleaseSide
from edgeproof.report._collect import Found, Inputs
from edgeproof.report._html import Section, absent_section, badge, bullet_list, card, chip, esc, fmt, muted, note, source, table

# Per-target BOM properties a release board reads, with their column names.
TARGET_COLUMNS = (
    ("target.kind", "kind"),
    ("target.power_mode", "power mode"),
    ("runtime.onnxruntime", "ONNX Runtime"),
    ("runtime.execution_provider", "provider"),
    ("firmware.version", "firmware"),
    ("gate.verdict", "verdict"),
    ("gate.binding_clause", "binding clause"),
)
STATUSES = ("pass", "fail", "unverified", "waived")


def prop_cell(value: str | None) -> str:
    """A BOM property; one it states as unavailable reads "unavailable" with the reason in the tooltip."""
    if value is None:
        return muted("not stated")
    if value.startswith("unavailable:"):
        return f'<span class="unavail" title="{esc(value.removeprefix("unavailable:"))}">unavailable</span>'
    if value in STATUSES:
        return chip(value)
    return esc(value)


def signature_of(bom: Found, inputs: Inputs) -> BomSignature | None:
    want = signature_path(bom.rel).as_posix()
    return next((s.item for s in inputs.signatures if s.rel == want), None)


def signature_html(bom: Found, facts: BomFacts, sig: BomSignature | None) -> str:
    """Who signed, when, and whether the signature's digest is this BOM's bytes (trust needs `bom verify`)."""
    if sig is None:
        return f"<p>Signature: {muted('none next to this BOM')} (sign it with <code>edgeproof bom sign</code>).</p>"
    matches = sig.bom_sha256 == facts.sha256
    state = (
        chip("pass") + " the signature's digest is this BOM's bytes" if matches else chip("fail") + " the BOM changed after it was signed"
    )
    return (
        f"<p>Signature: {esc(sig.algorithm)}, key id <code>{esc(sig.key_id or '?')}</code>, "
        f"signed {esc(sig.signed_at or 'at an unstated time')} ({source(signature_path(bom.rel).as_posix())}); {state}. "
        "Trust in the key is checked with <code>edgeproof bom verify --pub KEY</code>.</p>"
    )


def bom_card(bom: Found, inputs: Inputs) -> str:
    facts: BomFacts = bom.item
    title = f"{esc(facts.model_name)} <code>{esc(facts.model_sha256[:16])}…</code> {source(bom.rel)}"
    body = (
        "<p>"
        + "<br>".join(
            [
                f"Model: <code>{esc(facts.model_path)}</code> (sha256 <code>{esc(facts.model_sha256)}</code>)",
                f"Recipe: {esc(facts.recipe_label)}",
                f"Contract: <code>{esc(facts.contract_path)}</code> (sha256 <code>{esc(facts.contract_sha256[:16])}…</code>)",
                f"Schema check: {esc(facts.schema_validation)}",
            ]
        )
        + "</p>"
    )
    rows = []
    for tid, target in sorted(facts.targets.items()):
        kind = target.run_kind
        evidence = badge(f"{kind}:{tid}") if kind in ("measured", "simulated", "estimated") else muted("not stated")
        rows.append([esc(tid), evidence, *(prop_cell(target.props.get(key)) for key, _ in TARGET_COLUMNS)])
    body += table(["target", "evidence", *(name for _, name in TARGET_COLUMNS)], rows) if rows else muted("No target in this BOM.")
    body += signature_html(bom, facts, signature_of(bom, inputs))
    if facts.caveats:
        body += f"<details><summary>{len(facts.caveats)} caveat(s) stated in the BOM</summary>{bullet_list(esc(c) for c in facts.caveats)}</details>"
    return card(title, body)


def bom_section(inputs: Inputs) -> Section:
    if not inputs.boms:
        return absent_section("bom", "Bill of materials", "No BOM in this folder: `edgeproof bom build` writes one.")
    body = note("The CycloneDX ML-BOM of each release in the folder: what was measured, on what, and under which contract.")
    body += "".join(bom_card(b, inputs) for b in inputs.boms)
    kinds = {t.run_kind for b in inputs.boms for t in b.item.targets.values()}
    return Section("bom", "Bill of materials", body, frozenset(k for k in kinds if k))


def _side(side: ReleaseSide) -> str:
    return f"{esc(side.model)} <code>{esc(side.model_sha256[:12])}</code>: {esc(side.recipe)}"


def _budget_row(d: BudgetDelta) -> list[str]:
    delta = esc(f"{d.delta_pct:+.1f}%".replace("-", "−")) if d.delta_pct is not None else muted("—")
    budget = esc(fmt(d.budget, d.budget_unit or "")) if d.budget is not None else muted("none")
    return [
        esc(d.target),
        f"<code>{esc(d.figure)}</code>",
        esc(fmt(d.before, d.unit, missing="unavailable")),
        esc(fmt(d.after, d.unit, missing="unavailable")),
        delta,
        budget,
        f"{esc(d.status_before)} → {esc(d.status_after)}",
        f"{badge(d.provenance_before)} → {badge(d.provenance_after)}",
        '<span class="over">yes</span>' if d.changed else "no",
    ]


def change_card(found: Found) -> str:
    rec: ChangeRecord = found.item
    title = f"{_side(rec.previous)} → {_side(rec.candidate)} {source(found.rel)}"
    body = f"<p><b>Why:</b> {esc(rec.why)}</p><h4>What changed</h4>"
    if rec.what_changed:
        body += table(
            ["field", "from", "to"],
            [[esc(c.field), f"<code>{esc(c.before)}</code>", f"<code>{esc(c.after)}</code>"] for c in rec.what_changed],
        )
    else:
        body += "<p>Nothing in the two BOMs differs.</p>"
    body += "<h4>Budgets impacted</h4>"
    columns = ["target", "figure", "before", "after", "change", "budget", "gate status", "evidence", "moved or changed status"]
    body += table(columns, [_budget_row(d) for d in rec.budgets_impacted]) if rec.budgets_impacted else muted("No target is in both BOMs.")
    if rec.tests_run:
        body += "<h4>Tests run</h4>" + bullet_list(
            f"{esc(t.target)} ({esc(t.kind)}): gate {prop_cell(t.verdict)} (previously {esc(t.previous_verdict)})"
            + (f"; binding <code>{esc(t.binding_clause)}</code>" if t.binding_clause else "")
            for t in rec.tests_run
        )
    rb = rec.rollback
    signed = f"signature <code>{esc(rb.signature)}</code>.</p>" if rb.signature else "its BOM is not signed.</p>"
    body += (
        f"<h4>Rollback path</h4><p>Redeploy <code>{esc(rb.model_file)}</code> "
        f"(sha256 <code>{esc(rb.model_sha256[:16])}…</code>, {esc(rb.recipe)}) from BOM <code>{esc(rb.bom)}</code>; " + signed
    )
    watch = rec.telemetry_to_watch
    body += "<h4>Telemetry to watch</h4>" + (
        bullet_list(f"<code>{esc(w.field)}</code>: {esc(w.why)}" for w in watch) if watch else muted("None derived.")
    )
    if rec.hardware_caveats:
        body += f"<h4>Hardware caveats</h4>{bullet_list(esc(c) for c in rec.hardware_caveats)}"
    return card(title, body)


def change_section(inputs: Inputs) -> Section:
    if not inputs.change_records:
        return absent_section(
            "change-record",
            "Change record",
            "No change record in this folder: `edgeproof change-record --from OLD.bom.json --to NEW.bom.json -o DIR/change-record` writes one.",
        )
    body = note("What changed between the release in the field and the candidate, why, which budgets moved, and how to roll back.")
    body += "".join(change_card(c) for c in inputs.change_records)
    return Section("change-record", "Change record", body)
