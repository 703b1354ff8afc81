"""Change record a release board reviews: what changed between two BOMs, why, budgets, tests, rollback, telemetry, caveats."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeproof.bom import BomFacts, Stated, TargetFacts, figure_for_clause, read_bom, signature_path
from edgeproof.records import write_atomic

SCHEMA = "edgeproof.change-record/1"
WHY_PLACEHOLDER = "TO BE FILLED BY AUTHOR"
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


@dataclass(frozen=True)
class Change:
    field: str
    before: str
    after: str


@dataclass(frozen=True)
class BudgetDelta:
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
    moved: bool
    budget: float | None
    budget_unit: str | None
    status_before: str
    status_after: str
    provenance_before: str
    provenance_after: str
    text: str


def _diff(field: str, before: str | None, after: str | None) -> Change | None:
    before, after = before or "absent", after or "absent"
    return None if before == after else Change(field, before, after)


def what_changed(a: BomFacts, b: BomFacts) -> tuple[list[Change], list[str]]:
    """Field-by-field BOM diff (model, recipe, contract, per-target runtime/driver/firmware); also the unchanged fields."""
    pairs: list[tuple[str, str | None, str | None]] = [
        ("model.name", a.model_name, b.model_name),
        ("model.sha256", a.model_sha256, b.model_sha256),
        ("contract.sha256", a.contract_sha256, b.contract_sha256),
    ]
    if a.recipe is None or b.recipe is None:
        pairs.append(("recipe", _recipe_label(a), _recipe_label(b)))
    else:
        keys = sorted((set(a.recipe_props) | set(b.recipe_props)) - {"recipe"})
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


def _recipe_label(facts: BomFacts) -> str:
    return facts.recipe_props.get("recipe.label", "none (model as given)")


def _clause_status(target: TargetFacts) -> dict[str, dict[str, Any]]:
    """Budget and slice clauses of a target's gate verdict, keyed by the figure each judges.

    Regression clauses compare with a baseline rather than judge one figure; ``regressions`` reports them.
    """
    return {figure_for_clause(c["clause"]): c for c in target.clauses if c["clause"].startswith(BUDGETED_SECTIONS)}


def _fmt(value: float | None) -> str:
    return "unavailable" if value is None else f"{value:.4g}"


def _interval_text(stated: Stated | None) -> str:
    if stated is None or stated.figure.interval is None:
        return "no interval"
    lo, hi = stated.figure.interval
    level = f"{stated.level:.0%} CI " if stated.level is not None else "interval "
    return f"{level}{lo:.4g}–{hi:.4g}"


def budget_delta(
    target: str, key: str, before: Stated | None, after: Stated | None, clause_a: dict | None, clause_b: dict | None
) -> BudgetDelta:
    """Compare one figure across two BOMs; ``moved`` means it changed beyond the stated intervals (or at all, without them)."""
    fa, fb = (before.figure if before else None), (after.figure if after else None)
    va, vb = (fa.value if fa else None), (fb.value if fb else None)
    clause = clause_b or clause_a or {}
    unit = (fb or fa).unit if (fb or fa) else clause.get("unit", "")
    delta_pct = None
    moved = va != vb
    note = ""
    if va is not None and vb is not None:
        if fa.unit != fb.unit:
            moved, note = True, f"units differ ({fa.unit} vs {fb.unit}): not compared"
        else:
            delta_pct = (vb - va) / abs(va) * 100 if va else None
            if fa.interval is not None and fb.interval is not None:
                overlap = fa.interval[0] <= fb.interval[1] and fb.interval[0] <= fa.interval[1]
                moved = moved and not overlap
                note = f"{_interval_text(before)} → {_interval_text(after)}" + ("; intervals overlap" if overlap else "; intervals apart")
    pct = "" if delta_pct is None else f"{delta_pct:+.1f}%".replace("-", "−") + "; "
    status_a = clause_a["status"] if clause_a else "not gated"
    status_b = clause_b["status"] if clause_b else "not gated"
    budget = f"; budget {clause['budget']:.4g} {clause['unit']}: {status_a} → {status_b}" if clause.get("budget") is not None else ""
    text = f"{key} on {target}: {_fmt(va)} → {_fmt(vb)} {unit} ({pct}{note or 'no interval'}){budget}"
    return BudgetDelta(
        target=target,
        figure=key,
        unit=unit,
        before=va,
        after=vb,
        before_interval=fa.interval if fa else None,
        after_interval=fb.interval if fb else None,
        interval_level=(after or before).level if (after or before) else None,
        delta_pct=delta_pct,
        moved=moved,
        budget=clause.get("budget"),
        budget_unit=clause.get("unit"),
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


def regressions(b: BomFacts) -> list[str]:
    """The gate's regression tests against the baseline, per target of the new BOM (ratios with their intervals)."""
    lines = []
    for tid, target in sorted(b.targets.items()):
        for r in target.regressions:
            lines.append(f"{tid}: {r['clause']} {r['status']}" + (f": {r['note']}" if r.get("note") else ""))
    return lines


def tests_run(a: BomFacts, b: BomFacts) -> list[dict[str, Any]]:
    """Gate results per target of the new BOM, next to the old one's."""
    rows = []
    for tid, tb in sorted(b.targets.items()):
        ta = a.targets.get(tid)
        counts: dict[str, int] = {}
        for clause in tb.clauses:
            counts[clause["status"]] = counts.get(clause["status"], 0) + 1
        rows.append({
            "target": tid,
            "kind": tb.kind,
            "verdict": tb.props.get("gate.verdict", "not gated"),
            "previous_verdict": ta.props.get("gate.verdict", "not gated") if ta else "target absent",
            "binding_clause": tb.props.get("gate.binding_clause"),
            "clause_counts": counts,
            "not_passing": [f"{c['clause']}: {c['status']}" for c in tb.clauses if c["status"] != "pass"],
        })
    return rows


def telemetry_to_watch(changes: list[Change], deltas: list[BudgetDelta]) -> list[dict[str, str]]:
    """Fleet fields to watch in the rollout, each with the change that calls for it."""
    reasons: dict[str, list[str]] = {}

    def watch(field: str, why: str) -> None:
        reasons.setdefault(field, [])
        if why not in reasons[field]:
            reasons[field].append(why)

    for d in deltas:
        gated_both = "not gated" not in (d.status_before, d.status_after)
        if not (d.moved or (gated_both and d.status_before != d.status_after)):
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
    return [{"field": field, "why": "; ".join(why)} for field, why in reasons.items()]


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


def build_change_record(a: BomFacts, b: BomFacts, why: str | None = None) -> dict[str, Any]:
    """The change record from BOM ``a`` (the release in the field) to BOM ``b`` (the candidate), as JSON-ready data."""
    changes, same = what_changed(a, b)
    deltas = budgets_impacted(a, b)
    sig = signature_path(a.path)
    return {
        "schema": SCHEMA,
        "from": _side(a),
        "to": _side(b),
        "what_changed": [asdict(c) for c in changes],
        "unchanged": same,
        "why": why.strip() if why and why.strip() else WHY_PLACEHOLDER,
        "budgets_impacted": [asdict(d) for d in deltas],
        "regressions": regressions(b),
        "tests_run": tests_run(a, b),
        "rollback": {
            "bom": str(a.path.resolve()),
            "model_path": a.model_path,
            "model_sha256": a.model_sha256,
            "recipe": _recipe_label(a),
            "signature": str(sig.resolve()) if sig.is_file() else None,
        },
        "telemetry_to_watch": telemetry_to_watch(changes, deltas),
        "hardware_caveats": hardware_caveats(a, b, deltas),
    }


def _side(facts: BomFacts) -> dict[str, str]:
    return {"bom": str(facts.path), "model": facts.model_name, "model_sha256": facts.model_sha256, "recipe": _recipe_label(facts)}


def _short(value: str) -> str:
    # hashes and JSON blobs stay readable in a table; the JSON record keeps them whole
    return value if len(value) <= 80 else value[:77] + "…"


def render_markdown(record: dict[str, Any]) -> str:
    """The change record as the Markdown a release board reads."""
    src, dst = record["from"], record["to"]
    lines = [
        f"# Change record: {src['model']} {src['model_sha256'][:12]} → {dst['model']} {dst['model_sha256'][:12]}",
        "",
        f"From `{src['bom']}` ({src['recipe']}) to `{dst['bom']}` ({dst['recipe']}).",
        "",
        "## What changed",
        "",
    ]
    if record["what_changed"]:
        lines += ["| field | from | to |", "|---|---|---|"]
        lines += [f"| {c['field']} | `{_short(c['before'])}` | `{_short(c['after'])}` |" for c in record["what_changed"]]
    else:
        lines.append("Nothing in the BOMs differs.")
    lines += ["", f"Unchanged: {', '.join(record['unchanged']) or 'nothing'}.", "", "## Why", "", record["why"]]
    lines += ["", "## Budgets impacted", ""]
    moved = [d for d in record["budgets_impacted"] if d["moved"] or d["status_before"] != d["status_after"]]
    bullets = [f"- **{d['text']}**" if d in moved else f"- {d['text']}" for d in record["budgets_impacted"]]
    lines += bullets or ["- no target is in both BOMs"]
    lines += ["", f"{len(moved)} of {len(record['budgets_impacted'])} moved beyond their intervals or changed gate status (bold)."]
    if record["regressions"]:
        lines += ["", "Regression vs the baseline, as the gate measured it:", ""] + [f"- {r}" for r in record["regressions"]]
    lines += ["", "## Tests run", ""]
    for t in record["tests_run"]:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(t["clause_counts"].items())) or "no clauses"
        binding = f"; binding {t['binding_clause']}" if t["binding_clause"] else ""
        lines.append(f"- {t['target']} ({t['kind']}): gate {t['verdict']} (previously {t['previous_verdict']}); {counts}{binding}")
        lines += [f"  - {item}" for item in t["not_passing"]]
    rb = record["rollback"]
    lines += [
        "",
        "## Rollback path",
        "",
        f"Redeploy the previous release: BOM `{rb['bom']}`, model `{rb['model_path']}` (sha256 `{rb['model_sha256']}`, {rb['recipe']}).",
        f"Its signature: `{rb['signature']}`."
        if rb["signature"]
        else "The previous BOM has no signature next to it: sign it before relying on it.",
        "",
        "## Telemetry fields to watch",
        "",
    ]
    watch = [f"- `{t['field']}`: {t['why']}" for t in record["telemetry_to_watch"]]
    lines += watch or ["- none derived: no budget moved and no recipe or runtime changed"]
    lines += ["", "## Hardware caveats", ""]
    lines += [f"- {c}" for c in record["hardware_caveats"]] or ["- none"]
    return "\n".join(lines) + "\n"


def write_change_record(
    from_bom: str | Path, to_bom: str | Path, why: str | None = None, out: str | Path | None = None
) -> tuple[str, dict[str, Any], list[Path]]:
    """Build the change record of two BOM files; with ``out``, write ``OUT.md`` and ``OUT.json``.

    Returns the Markdown, the JSON data and the files written.
    """
    record = build_change_record(read_bom(from_bom), read_bom(to_bom), why)
    markdown = render_markdown(record)
    written: list[Path] = []
    if out is not None:
        out = Path(out)
        stem = out.with_suffix("") if out.suffix in (".md", ".json") else out
        written.append(write_atomic(stem.with_name(stem.name + ".md"), markdown))
        written.append(write_atomic(stem.with_name(stem.name + ".json"), json.dumps(record, indent=2) + "\n"))
    return markdown, record, written
