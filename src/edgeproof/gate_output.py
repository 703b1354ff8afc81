"""Gate verdicts as a pull-request comment (Markdown), JUnit XML, SARIF and JSON."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import edgeproof
from edgeproof.outcome import OUTCOME_WORDS, overall
from edgeproof.records import ClauseResult, Verdict

_ICON = {"pass": "✅", "fail": "❌", "unverified": "⚠️", "waived": "🟦"}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:.4g} {unit}".strip()


def to_markdown(verdicts: list[Verdict]) -> str:
    overall_outcome = overall(v.outcome for v in verdicts)
    lines = [f"## edgeproof gate: {OUTCOME_WORDS[overall_outcome]}", ""]
    for v in verdicts:
        lines.append(
            f"### {v.target}: {OUTCOME_WORDS[v.outcome]}" + (f" — binding clause `{v.binding_clause}`" if v.binding_clause else "")
        )
        lines.append("")
        lines.append("| clause | status | value | budget | provenance | note |")
        lines.append("|---|---|---|---|---|---|")
        for c in v.clauses:
            note = c.note.replace("|", "\\|")
            lines.append(
                f"| `{c.clause}` | {_ICON[c.status]} {c.status} | {_fmt(c.value, c.unit)} | {_fmt(c.budget, c.unit)} | {c.provenance} | {note} |"
            )
        if v.allow_unverified:
            lines.append("\n_--allow-unverified: unverified clauses counted as passing._")
        if v.undecided_because:
            lines.append("\n**Could not decide**: nothing fails on evidence, but these clauses have no data:\n")
            lines += [f"- {why}" for why in v.undecided_because]
        for w in v.waivers_applied:
            lines.append(f"\n- waiver applied: {w.sentence()}")
        for w in v.waivers_expired:
            lines.append(f"\n- waiver **expired**, not applied: {w.sentence(expired=True)}")
        if v.record_mode:
            lines.append("\n**Record mode** (two runs measured apart, compared from their stored records):\n")
            lines += [f"- {line}" for line in v.record_mode]
        for advice in v.advice:
            lines.append(f"\n- advice: {advice}")
        lines.append("")
    return "\n".join(lines)


def to_junit(verdicts: list[Verdict]) -> str:
    """One test suite per target, one test case per clause: a failing clause is a <failure>, an
    unverified one that leaves the verdict undecided an <error> (the test could not be judged)."""
    suites = ET.Element("testsuites", name="edgeproof gate")
    for v in verdicts:
        failures = sum(1 for c in v.clauses if c.status == "fail")
        errors = sum(1 for c in v.clauses if _undecided(c, v))
        suite = ET.SubElement(suites, "testsuite", name=v.target, tests=str(len(v.clauses)), failures=str(failures), errors=str(errors))
        for c in v.clauses:
            case = ET.SubElement(suite, "testcase", classname=f"edgeproof.{v.target}", name=c.clause)
            text = f"value {_fmt(c.value, c.unit)}, budget {_fmt(c.budget, c.unit)} ({c.provenance}). {c.note}".strip()
            if c.status == "fail":
                ET.SubElement(case, "failure", message=f"fail: {c.clause}").text = text
            elif _undecided(c, v):
                ET.SubElement(case, "error", message=f"could not decide: {c.clause}").text = text
            elif c.status in ("waived", "unverified"):
                ET.SubElement(case, "system-out").text = f"{c.status}: {text}"
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def _undecided(c: ClauseResult, v: Verdict) -> bool:
    """An unverified clause that keeps the verdict from passing (unverified clauses not allowed)."""
    return c.status == "unverified" and not v.allow_unverified


def to_sarif(verdicts: list[Verdict], artifact: str) -> str:
    """SARIF 2.1.0: one result per failing or unverified clause, located at the model file; a clause
    that leaves the verdict undecided says "could not decide" and carries ``outcome: undecided``."""
    rules: dict[str, dict] = {}
    results = []
    for v in verdicts:
        for c in v.clauses:
            if c.status not in ("fail", "unverified"):
                continue
            rules.setdefault(c.clause, {"id": c.clause, "shortDescription": {"text": f"budget clause {c.clause}"}})
            undecided = _undecided(c, v)
            said = "could not decide" if undecided else c.status
            results.append(
                {
                    "ruleId": c.clause,
                    "level": "error" if c.status == "fail" or undecided else "warning",
                    "message": {
                        "text": f"[{v.target}] {said}: value {_fmt(c.value, c.unit)}, budget {_fmt(c.budget, c.unit)}. {c.note}".strip()
                    },
                    "locations": [{"physicalLocation": {"artifactLocation": {"uri": artifact}}}],
                    "properties": {
                        "target": v.target,
                        "provenance": c.provenance,
                        "outcome": "fail" if c.status == "fail" else ("undecided" if undecided else "allowed-unverified"),
                    },
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
    """The verdicts and the gate's overall outcome (``passed`` kept for readers of older gate files)."""
    outcome = overall(v.outcome for v in verdicts)
    doc = {"outcome": outcome, "passed": outcome == "pass", "verdicts": [v.model_dump(mode="json") for v in verdicts]}
    return json.dumps(doc, indent=2)
