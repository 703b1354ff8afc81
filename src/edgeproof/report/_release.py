"""The release paperwork: BOM summary (model, recipe, targets, signature, caveats) and the change record."""

from __future__ import annotations

import hashlib
from typing import Any

from edgeproof.bom import BomFacts, signature_path
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


def signature_of(bom: Found, inputs: Inputs) -> dict[str, Any] | None:
    want = signature_path(bom.rel).as_posix()
    return next((s.item for s in inputs.signatures if s.rel == want), None)


def signature_html(bom: Found, facts: BomFacts, sig: dict[str, Any] | None) -> str:
    """Who signed, when, and whether the signature's digest is this BOM's bytes (trust needs `bom verify`)."""
    if sig is None:
        return f"<p>Signature: {muted('none next to this BOM')} (sign it with <code>edgeproof bom sign</code>).</p>"
    digest = hashlib.sha256(facts.path.read_bytes()).hexdigest()
    matches = sig.get("bom_sha256") == digest
    state = chip("pass") + " the signature's digest is this BOM's bytes" if matches else chip("fail") + " the BOM changed after it was signed"
    return (
        f"<p>Signature: {esc(sig.get('algorithm', '?'))}, key id <code>{esc(sig.get('key_id', '?'))}</code>, "
        f"signed {esc(sig.get('signed_at', 'at an unstated time'))} ({source(signature_path(bom.rel).as_posix())}); {state}. "
        "Trust in the key is checked with <code>edgeproof bom verify --pub KEY</code>.</p>"
    )


def bom_card(bom: Found, inputs: Inputs) -> str:
    facts: BomFacts = bom.item
    recipe = facts.recipe_props.get("recipe.label") or ("model as given" if facts.recipe is None else "recipe without a label")
    title = f"{esc(facts.model_name)} <code>{esc(facts.model_sha256[:16])}…</code> {source(bom.rel)}"
    body = "<p>" + "<br>".join([
        f"Model: <code>{esc(facts.model_path)}</code> (sha256 <code>{esc(facts.model_sha256)}</code>)",
        f"Recipe: {esc(recipe)}",
        f"Contract: <code>{esc(facts.contract_path)}</code> (sha256 <code>{esc(facts.contract_sha256[:16])}…</code>)",
        f"Schema check: {esc(facts.meta.get('bom.schema_validation', 'not stated'))}",
    ]) + "</p>"
    rows = []
    for tid, target in sorted(facts.targets.items()):
        kind = target.props.get("run.kind")
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
    kinds = {t.props.get("run.kind") for b in inputs.boms for t in b.item.targets.values()}
    return Section("bom", "Bill of materials", body, frozenset(k for k in kinds if k))


def _side(side: dict[str, Any]) -> str:
    sha = str(side.get("model_sha256", ""))
    return f"{esc(side.get('model', '?'))} <code>{esc(sha[:12])}</code> ({esc(side.get('recipe', '?'))})"


def _budget_row(d: dict[str, Any]) -> list[str]:
    pct = d.get("delta_pct")
    delta = esc(f"{pct:+.1f}%".replace("-", "−")) if isinstance(pct, (int, float)) else muted("—")
    status = f"{esc(d.get('status_before', '?'))} → {esc(d.get('status_after', '?'))}"
    budget = esc(fmt(d.get("budget"), d.get("budget_unit") or "")) if d.get("budget") is not None else muted("none")
    return [
        esc(d.get("target", "")), f"<code>{esc(d.get('figure', ''))}</code>",
        esc(fmt(d.get("before"), d.get("unit", ""), missing="unavailable")), esc(fmt(d.get("after"), d.get("unit", ""), missing="unavailable")),
        delta, budget, status,
        f"{badge(str(d.get('provenance_before', 'unavailable:absent')))} → {badge(str(d.get('provenance_after', 'unavailable:absent')))}",
        '<span class="over">yes</span>' if d.get("moved") else "no",
    ]


def change_card(found: Found) -> str:
    rec: dict[str, Any] = found.item
    title = f"{_side(rec.get('from', {}))} → {_side(rec.get('to', {}))} {source(found.rel)}"
    changed = rec.get("what_changed", [])
    body = f"<p><b>Why:</b> {esc(rec.get('why', ''))}</p><h4>What changed</h4>"
    if changed:
        body += table(["field", "from", "to"], [[esc(c.get("field")), f"<code>{esc(c.get('before'))}</code>", f"<code>{esc(c.get('after'))}</code>"] for c in changed])
    else:
        body += "<p>Nothing in the two BOMs differs.</p>"
    budgets = rec.get("budgets_impacted", [])
    body += "<h4>Budgets impacted</h4>"
    body += table(["target", "figure", "before", "after", "change", "budget", "gate status", "evidence", "moved beyond intervals"], [_budget_row(d) for d in budgets]) if budgets else muted("No target is in both BOMs.")
    tests = rec.get("tests_run", [])
    if tests:
        body += "<h4>Tests run</h4>" + bullet_list(
            f"{esc(t.get('target'))} ({esc(t.get('kind'))}): gate {prop_cell(t.get('verdict'))} (previously {esc(t.get('previous_verdict'))})"
            + (f"; binding <code>{esc(t['binding_clause'])}</code>" if t.get("binding_clause") else "")
            for t in tests
        )
    rollback = rec.get("rollback", {})
    if rollback:
        body += (
            f"<h4>Rollback path</h4><p>Redeploy <code>{esc(rollback.get('model_path'))}</code> "
            f"(sha256 <code>{esc(str(rollback.get('model_sha256', ''))[:16])}…</code>, {esc(rollback.get('recipe'))}) from BOM <code>{esc(rollback.get('bom'))}</code>; "
            + (f"signature <code>{esc(rollback['signature'])}</code>.</p>" if rollback.get("signature") else "its BOM is not signed.</p>")
        )
    watch = rec.get("telemetry_to_watch", [])
    body += "<h4>Telemetry to watch</h4>" + (bullet_list(f"<code>{esc(w.get('field'))}</code>: {esc(w.get('why'))}" for w in watch) if watch else muted("None derived."))
    caveats = rec.get("hardware_caveats", [])
    if caveats:
        body += f"<h4>Hardware caveats</h4>{bullet_list(esc(c) for c in caveats)}"
    return card(title, body)


def change_section(inputs: Inputs) -> Section:
    if not inputs.change_records:
        return absent_section("change-record", "Change record", "No change record in this folder: `edgeproof change-record --from OLD.bom.json --to NEW.bom.json -o DIR/change-record` writes one.")
    body = note("What changed between the release in the field and the candidate, why, which budgets moved, and how to roll back.")
    body += "".join(change_card(c) for c in inputs.change_records)
    return Section("change-record", "Change record", body)
