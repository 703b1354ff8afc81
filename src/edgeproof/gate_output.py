"""Gate verdicts as a pull-request comment (Markdown), JUnit XML, SARIF and JSON."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import edgeproof
from edgeproof.records import ClauseResult, Verdict

_ICON = {"pass": "✅", "fail": "❌", "unverified": "⚠️", "waived": "🟦"}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:.4g} {unit}".strip()


def to_markdown(verdicts: list[Verdict]) -> str:
    overall = all(v.passed for v in verdicts)
    lines = [f"## edgeproof gate: {'PASS' if overall else 'FAIL'}", ""]
    for v in verdicts:
        lines.append(f"### {v.target}: {'pass' if v.passed else 'FAIL'}" + (f" — binding clause `{v.binding_clause}`" if v.binding_clause else ""))
        lines.append("")
        lines.append("| clause | status | value | budget | provenance | note |")
        lines.append("|---|---|---|---|---|---|")
        for c in v.clauses:
            note = c.note.replace("|", "\\|")
            lines.append(f"| `{c.clause}` | {_ICON[c.status]} {c.status} | {_fmt(c.value, c.unit)} | {_fmt(c.budget, c.unit)} | {c.provenance} | {note} |")
        if v.allow_unverified:
            lines.append("\n_--allow-unverified: unverified clauses counted as passing._")
        for w in v.waivers_applied:
            lines.append(f"\n- waiver applied: `{w.get('clause')}` by {w.get('owner')} until {w.get('expires')}: {w.get('reason')}")
        for w in v.waivers_expired:
            lines.append(f"\n- waiver **expired**, not applied: `{w.get('clause')}` (expired {w.get('expires')})")
        lines.append("")
    return "\n".join(lines)


def to_junit(verdicts: list[Verdict]) -> str:
    """One test suite per target, one test case per clause; unverified is a failure unless allowed."""
    suites = ET.Element("testsuites", name="edgeproof gate")
    for v in verdicts:
        failures = sum(1 for c in v.clauses if _counts_as_failure(c, v))
        suite = ET.SubElement(suites, "testsuite", name=v.target, tests=str(len(v.clauses)), failures=str(failures))
        for c in v.clauses:
            case = ET.SubElement(suite, "testcase", classname=f"edgeproof.{v.target}", name=c.clause)
            text = f"value {_fmt(c.value, c.unit)}, budget {_fmt(c.budget, c.unit)} ({c.provenance}). {c.note}".strip()
            if _counts_as_failure(c, v):
                ET.SubElement(case, "failure", message=f"{c.status}: {c.clause}").text = text
            elif c.status in ("waived", "unverified"):
                ET.SubElement(case, "system-out").text = f"{c.status}: {text}"
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def _counts_as_failure(c: ClauseResult, v: Verdict) -> bool:
    return c.status == "fail" or (c.status == "unverified" and not v.allow_unverified)


def to_sarif(verdicts: list[Verdict], artifact: str) -> str:
    """SARIF 2.1.0: one result per failing or unverified clause, located at the model file."""
    rules: dict[str, dict] = {}
    results = []
    for v in verdicts:
        for c in v.clauses:
            if c.status not in ("fail", "unverified"):
                continue
            rules.setdefault(c.clause, {"id": c.clause, "shortDescription": {"text": f"budget clause {c.clause}"}})
            results.append(
                {
                    "ruleId": c.clause,
                    "level": "error" if _counts_as_failure(c, v) else "warning",
                    "message": {"text": f"[{v.target}] {c.status}: value {_fmt(c.value, c.unit)}, budget {_fmt(c.budget, c.unit)}. {c.note}".strip()},
                    "locations": [{"physicalLocation": {"artifactLocation": {"uri": artifact}}}],
                    "properties": {"target": v.target, "provenance": c.provenance},
                }
            )
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "edgeproof", "version": edgeproof.__version__, "rules": list(rules.values())}},
                "results": results,
            }
        ],
    }
    return json.dumps(doc, indent=2)


def to_json(verdicts: list[Verdict]) -> str:
    return json.dumps({"passed": all(v.passed for v in verdicts), "verdicts": [v.model_dump(mode="json") for v in verdicts]}, indent=2)
