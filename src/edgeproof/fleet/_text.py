"""Alarm verdicts and playbook steps in words, for the CLI and the demo."""

from __future__ import annotations

from edgeproof.fleet._alarms import AlarmReport, AlarmVerdict
from edgeproof.fleet._playbook import PlaybookStep


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "share":
        return f"{value:.3%}"
    if unit in ("%", "pp"):
        return f"{value:+.1f} {unit}"
    return f"{value:.3g} {unit}"


def evidence(v: AlarmVerdict) -> str:
    """One line: estimate, interval, threshold, devices and samples on each side, provenance."""
    interval = "—" if v.interval is None else f"[{_fmt(v.interval[0], v.unit)}, {_fmt(v.interval[1], v.unit)}]"
    return (
        f"{_fmt(v.estimate, v.unit)} (interval {interval} at {v.confidence:.4%}) vs threshold {_fmt(v.threshold, v.unit)} "
        f"({v.threshold_source}); cohort {v.cohort.devices} devices / {v.cohort.samples:.4g} {v.cohort.samples_unit}, "
        f"control {v.control.devices} devices / {v.control.samples:.4g} {v.control.samples_unit}; {v.provenance}"
    )


def firing_lines(report: AlarmReport, steps: dict[str, PlaybookStep]) -> list[str]:
    """Each firing alarm with its evidence and its playbook step (or a note that the playbook has none)."""
    lines = []
    for v in report.firing:
        lines.append(f"FIRING {v.alarm} in {v.stratum_label}: {evidence(v)}")
        step = steps.get(v.alarm)
        if step is None:
            lines.append("  playbook: no step for this alarm")
        else:
            lines.append(f"  playbook: {step.action} · owner {step.owner} · {step.corrective}")
            lines.append(f"  runbook: {step.runbook}")
    return lines


def summary_line(report: AlarmReport) -> str:
    counts: dict[str, int] = {}
    for v in report.verdicts:
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
    strata = len({tuple(v.stratum.values()) for v in report.verdicts})
    told = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("fail", "inconclusive", "pass", "nodata"))
    return f"{report.cohort} vs {report.control}: {strata} strata × {len({v.alarm for v in report.verdicts})} alarms: {told}. {report.correction}"
