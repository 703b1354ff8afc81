"""The fleet page: every alarm per stratum of each cohort against the control cohort, with its evidence, and the
fallback rate and energy-per-inference drift over time by chip revision, read from a fleet store (DuckDB).

The store is opened read-only (the report neither changes nor creates it) and judged with the fleet's own
``evaluate_alarms``; a fleet whose windows come from the fleet simulator is labelled simulated on every block."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import plotly.graph_objects as go

from edgeproof.errors import DataError, RecordError, first_line
from edgeproof.report._collect import Inputs
from edgeproof.report._html import Section, badge, bullet_list, esc, note, source, table
from edgeproof.report._plots import FAIL, colour, plot_html, ptext, simulated_name

if TYPE_CHECKING:
    from edgeproof.contract import Rollback
    from edgeproof.fleet import AlarmReport, AlarmVerdict, FleetStore, PlaybookStep

CONTROL = "control"
# Points per time series at most: a long store is bucketed into whole hours so that no plot has more.
MAX_POINTS = 72
VERDICT_WORDS = {"fail": "Fail", "inconclusive": "Inconclusive", "pass": "Pass", "nodata": "NoData"}
VERDICT_CLASSES = {"fail": "c-fail", "inconclusive": "c-undecided", "pass": "c-pass", "nodata": "c-nodata"}
CSS = """
.c-nodata { background:#eef0f4; color:var(--muted); }
.sim-banner { background:#f3e8fb; color:var(--sim); border:2px solid #dcc4ef; border-radius:8px; padding:8px 14px;
  font-size:16px; font-weight:700; margin:4px 0 12px; }
.sim-banner small { display:block; font-size:13px; font-weight:400; color:var(--fg); }
table.strata td { white-space:nowrap; padding:3px 6px; }
table.strata th { white-space:normal; }
table.strata .chip { font-size:11px; padding:0 5px; }
"""

# One row per (cohort, chip revision, region, time bucket): the sums the two time series are computed from.
_SERIES_SQL = """
SELECT cohort, chip_revision, region, (end_ns - 1 - $t0) // $bucket AS bucket,
  sum(provider_fallback_inferences) AS fallback,
  sum(CASE WHEN provider_fallback_inferences IS NOT NULL THEN inferences END) AS fallback_exposure,
  sum(energy_j) AS energy_j,
  sum(CASE WHEN energy_j IS NOT NULL THEN inferences END) AS energy_inferences
FROM windows GROUP BY ALL
"""


@dataclass(frozen=True)
class Sums:
    fallback: float
    fallback_exposure: float
    energy_j: float
    energy_inferences: float


@dataclass(frozen=True)
class Fleet:
    """What the fleet page shows, read once from the store."""

    path: Path
    simulated: bool
    devices: int
    windows: int
    events: int
    rejected: int
    start_ns: int
    end_ns: int
    bucket_h: float
    cohorts: dict[str, int]  # cohort -> devices
    reports: list[AlarmReport]  # each cohort but the control against the control
    sums: dict[tuple[str, str, str, int], Sums]  # (cohort, chip revision, region, bucket)


def _one(store: FleetStore, sql: str) -> tuple:
    row = store.con.execute(sql).fetchone()
    assert row is not None
    return row


def gate_rollback(rollout: Path | None) -> tuple[Rollback | None, str]:
    """The thresholds to judge with, and where they come from: the rollout's gates when the report has its journal and
    the plan it names can be read (so the page judges as the controller did), else the fleet's defaults."""
    if rollout is None:
        return None, "the fleet defaults (no rollout given; the contract's [rollback] table sets them for a rollout)"
    from edgeproof.errors import EdgeproofError
    from edgeproof.rollout import Journal, gate_thresholds, load_plan

    started = Journal(rollout).of_kind("start")
    plan_path = Path(started[0]["plan"]) if started else None
    if plan_path is None or not plan_path.is_file():
        return None, f"the fleet defaults (the rollout's plan {plan_path} is not here to read its gates from)"
    try:
        plan = load_plan(plan_path)
        rollback = gate_thresholds(plan)
    except EdgeproofError as exc:
        return None, f"the fleet defaults (the rollout's plan could not be read: {first_line(exc)})"
    contract = f"[rollback] of {plan.gates.contract}" if plan.gates.contract else "no contract: fleet defaults"
    return rollback, f"the rollout's gates (plan {plan_path.name}: {contract}; minimum devices {rollback.min_devices or 'default'})"


def read_fleet(path: Path, rollback: Rollback | None = None) -> Fleet:
    """Judge every cohort of the store against the control cohort with ``rollback``'s thresholds (None: the fleet's
    defaults) and sum the time series; RecordError if it is no fleet store."""
    import duckdb

    from edgeproof.fleet import FleetStore, evaluate_alarms

    try:
        store = FleetStore(path, read_only=True)
    except DataError as exc:
        raise RecordError(str(exc)) from None
    try:
        try:
            devices, windows, start_ns, end_ns = _one(
                store, "SELECT count(DISTINCT device_key), count(*), min(start_ns), max(end_ns) FROM window_rows"
            )
            events, rejected = _one(store, "SELECT (SELECT count(*) FROM event_rows), (SELECT count(*) FROM rejects)")
            (simulated,) = _one(
                store,
                "SELECT coalesce(bool_or(starts_with(bom_id, 'simulated:')), false) FROM label_sets "
                "WHERE label_key IN (SELECT DISTINCT label_key FROM window_rows)",
            )
            cohorts = dict(
                store.con.execute("SELECT cohort, count(DISTINCT device_id) FROM windows GROUP BY cohort ORDER BY cohort").fetchall()
            )
        except duckdb.CatalogException as exc:
            raise RecordError(f"{path}: not a fleet store ({str(exc).splitlines()[0]})") from None
        if not windows:
            return Fleet(path, bool(simulated), 0, 0, int(events), int(rejected), 0, 0, 1.0, {}, [], {})
        span_h = (end_ns - start_ns) / 3600e9
        bucket_h = float(max(1, -(-int(span_h) // MAX_POINTS)))
        reports = [evaluate_alarms(store, c, CONTROL, rollback) for c in cohorts if c != CONTROL] if CONTROL in cohorts else []
        rows = store.con.execute(_SERIES_SQL, {"t0": start_ns, "bucket": int(bucket_h * 3600e9)}).fetchall()
    finally:
        store.con.close()
    sums = {(c, chip, region, int(b)): Sums(*(float(x or 0.0) for x in rest)) for c, chip, region, b, *rest in rows}
    return Fleet(
        path,
        bool(simulated),
        int(devices),
        int(windows),
        int(events),
        int(rejected),
        int(start_ns),
        int(end_ns),
        bucket_h,
        cohorts,
        reports,
        sums,
    )


# --- the time series ---------------------------------------------------------------------------------------------


def fallback_series(fleet: Fleet, cohort: str, chip: str) -> tuple[list[float], list[float]]:
    """(hours, fallback %) of ``cohort`` on ``chip``: the share of inferences that fell back to the CPU, per time bucket."""
    count: dict[int, float] = defaultdict(float)
    exposure: dict[int, float] = defaultdict(float)
    for (c, h, _, b), s in fleet.sums.items():
        if c == cohort and h == chip:
            count[b] += s.fallback
            exposure[b] += s.fallback_exposure
    points = sorted((b, 100 * count[b] / n) for b, n in exposure.items() if n > 0)
    return [(b + 1) * fleet.bucket_h for b, _ in points], [y for _, y in points]


def energy_drift_series(fleet: Fleet, cohort: str, chip: str) -> tuple[list[float], list[float]]:
    """(hours, drift %) of the cohort's energy per inference over the control's on ``chip``, per time bucket.

    Regions are matched as the alarm matches them: each region's ratio of the two, weighted by the cohort's
    inferences there, so a cohort that happens to sit in hotter regions does not read as a drift.
    """
    ratios: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for (c, h, region, b), s in fleet.sums.items():
        k = fleet.sums.get((CONTROL, chip, region, b))
        if c == cohort and h == chip and k is not None and s.energy_inferences > 0 and k.energy_inferences > 0 and k.energy_j > 0:
            per_inference = s.energy_j / s.energy_inferences
            ratios[b].append((s.energy_inferences, per_inference / (k.energy_j / k.energy_inferences)))
    points = sorted((b, 100 * (sum(w * r for w, r in rs) / sum(w for w, _ in rs) - 1)) for b, rs in ratios.items())
    return [(b + 1) * fleet.bucket_h for b, _ in points], [y for _, y in points]


def _chips(fleet: Fleet, cohort: str) -> list[str]:
    return sorted({h for (c, h, _, _) in fleet.sums if c == cohort})


def _threshold(report: AlarmReport, alarm: str) -> tuple[float, str] | None:
    v = next((v for v in report.verdicts if v.alarm == alarm), None)
    return (v.threshold, v.threshold_source) if v else None


# The legend goes below the x axis's title, not over it.
_BELOW_AXIS_TITLE = {"margin": {"b": 100}, "legend": {"y": -0.32}}


def _plots(fleet: Fleet, report: AlarmReport, i: int) -> str:
    cohort, chips = report.cohort, _chips(fleet, report.cohort)
    hours = f"hours since the first window ({'simulated' if fleet.simulated else 'device'} clock)"
    fig = go.Figure()
    for j, chip in enumerate(chips):
        for who, dash in ((cohort, "solid"), (CONTROL, "dot")):
            x, y = fallback_series(fleet, who, chip)
            name = simulated_name(ptext(f"{chip} · {who}"), fleet.simulated)
            fig.add_trace(
                go.Scatter(x=x, y=y, mode="lines+markers", name=name, line={"color": colour(j), "dash": dash}, marker={"size": 4})
            )
    fig.update_xaxes(title=hours)
    fig.update_yaxes(title="fallback, % of inferences", rangemode="tozero")
    title = f"Fallback rate by chip revision: {ptext(cohort)} (solid) vs {CONTROL} (dotted)"
    out = plot_html(fig, f"plot-fleet-fallback-{i}", height=380, title=title, layout=_BELOW_AXIS_TITLE)
    fig = go.Figure()
    for j, chip in enumerate(chips):
        x, y = energy_drift_series(fleet, cohort, chip)
        name = simulated_name(ptext(chip), fleet.simulated)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, line={"color": colour(j)}, marker={"size": 4}))
    threshold = _threshold(report, "energy_drift")
    if threshold is not None:
        fig.add_hline(
            y=threshold[0],
            line={"color": FAIL, "dash": "dash", "width": 1},
            annotation_text=ptext(f"alarm threshold +{threshold[0]:g} % ({threshold[1]})"),
            annotation_position="top left",
        )
    fig.update_xaxes(title=hours)
    fig.update_yaxes(title="drift vs control (%)", zeroline=True)
    title = f"Energy-per-inference drift by chip revision: {ptext(cohort)} over {CONTROL}, regions matched"
    return out + plot_html(fig, f"plot-fleet-energy-{i}", height=360, title=title, layout=_BELOW_AXIS_TITLE)


# --- the alarms --------------------------------------------------------------------------------------------------


def verdict_chip(verdict: str, title: str = "") -> str:
    """Pass / Fail / Inconclusive / NoData as a chip; ``title`` (the evidence) shows on hover."""
    return f'<span class="chip {VERDICT_CLASSES[verdict]}" title="{esc(title)}">{VERDICT_WORDS[verdict]}</span>'


def _evidence_title(v: AlarmVerdict) -> str:
    from edgeproof.fleet._text import evidence

    return v.reason if v.verdict == "nodata" else f"{v.reason}. {evidence(v)}"


@dataclass(frozen=True)
class Strata:
    """How a cohort's strata are named on the page: by the labels that differ between them; the rest is said once."""

    varying: tuple[str, ...]
    shared: dict[str, str]

    @classmethod
    def of(cls, report: AlarmReport) -> Strata:
        from edgeproof.fleet._alarms import STRATUM

        values = {k: {v.stratum[k] for v in report.verdicts} for k in STRATUM}
        varying = tuple(k for k in STRATUM if len(values[k]) > 1) or STRATUM[:1]
        return cls(varying, {k: _short(k, next(iter(values[k]))) for k in STRATUM if k not in varying and values[k]})

    def name(self, v: AlarmVerdict) -> str:
        return " × ".join(_short(k, v.stratum[k]) for k in self.varying)

    @property
    def header(self) -> str:
        return "stratum (" + " × ".join(k.replace("_", " ") for k in self.varying) + ")"

    @property
    def said_once(self) -> str:
        return "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.shared.items())


def _short(label: str, value: str) -> str:
    return value[:12] + "…" if label == "model_sha256" and len(value) > 12 else value


def _matrix(report: AlarmReport, strata: Strata) -> str:
    """Strata (failing first) × alarms, one verdict chip each."""
    alarms = list(dict.fromkeys(v.alarm for v in report.verdicts))
    by: dict[str, dict[str, AlarmVerdict]] = defaultdict(dict)
    for v in report.verdicts:
        by[strata.name(v)][v.alarm] = v
    rank = {"fail": 0, "inconclusive": 1, "nodata": 2, "pass": 3}
    order = sorted(by, key=lambda s: (min(rank[v.verdict] for v in by[s].values()), s))
    rows = [[esc(s)] + [verdict_chip(by[s][a].verdict, _evidence_title(by[s][a])) if a in by[s] else "" for a in alarms] for s in order]
    # a zero-width space after each underscore lets a long alarm name wrap there, not mid-word
    return table([strata.header, *(a.replace("_", "_\u200b") for a in alarms)], rows, cls="strata")


EVIDENCE_COLUMNS = ["stratum", "alarm", "verdict", "estimate, interval", "threshold", "devices, samples", "why", "evidence"]


def _side(who: str, devices: int, samples: float, unit: str) -> str:
    return f'<span class="fig">{who}: {devices} devices</span><span class="ci">{samples:,.0f} {esc(unit)}</span>'


def _evidence_rows(verdicts: list[AlarmVerdict], strata: Strata) -> list[list[str]]:
    from edgeproof.fleet._text import _fmt as value_text

    rows = []
    for v in verdicts:
        interval = (
            f"[{value_text(v.interval[0], v.unit)}, {value_text(v.interval[1], v.unit)}] at {v.confidence:.4%}" if v.interval else "—"
        )
        rows.append(
            [
                esc(strata.name(v)),
                esc(v.alarm),
                verdict_chip(v.verdict),
                f'<span class="fig">{esc(value_text(v.estimate, v.unit))}</span><span class="ci">{esc(interval)}</span>',
                esc(value_text(v.threshold, v.unit)),
                _side("cohort", v.cohort.devices, v.cohort.samples, v.cohort.samples_unit)
                + _side("control", v.control.devices, v.control.samples, v.control.samples_unit),
                esc(v.reason),
                badge(v.provenance, detail=True),
            ]
        )
    return rows


def _how_judged(report: AlarmReport) -> str:
    """Per alarm, once: what it measures, the statistic, and the threshold with where it comes from."""
    from edgeproof.fleet import ALARMS
    from edgeproof.fleet._text import _fmt as value_text

    first = {v.alarm: v for v in reversed(report.verdicts)}
    rows = [
        [
            esc(a.name),
            esc(a.description),
            esc(first[a.name].statistic),
            f"{esc(value_text(first[a.name].threshold, a.unit))} ({esc(first[a.name].threshold_source)})",
        ]
        for a in ALARMS
        if a.name in first
    ]
    return f"<details><summary>How each alarm is judged</summary>{table(['alarm', 'measures', 'statistic', 'threshold'], rows)}</details>"


def _playbook(firing: list[AlarmVerdict], steps: dict[str, PlaybookStep]) -> str:
    """The playbook step of each alarm that fires: owner, automatic action, corrective action, runbook."""
    items = []
    for alarm in dict.fromkeys(v.alarm for v in firing):
        step = steps.get(alarm)
        items.append(
            f"<b>{esc(alarm)}</b>: {esc(step.action)} · owner {esc(step.owner)} · {esc(step.corrective)}"
            f'<br><span class="prov">runbook: {esc(step.runbook)}</span>'
            if step
            else f"<b>{esc(alarm)}</b>: the playbook has no step for this alarm"
        )
    return "<h4>Playbook</h4>" + bullet_list(items)


def _cohort_block(fleet: Fleet, report: AlarmReport, steps: dict[str, PlaybookStep], i: int) -> str:
    from edgeproof.fleet._text import summary_line

    hours = (report.until_ns - report.since_ns) / 3600e9
    body = f'<h3 id="fleet-{esc(report.cohort)}">Cohort {esc(report.cohort)} vs {CONTROL}</h3>'
    body += note(
        f"{summary_line(report)}. Judged over the last {hours:g} h up to the newest window; control matched on "
        f"{', '.join(report.matched_on)}."
    )
    strata = Strata.of(report)
    if strata.shared:
        body += note(f"The same in every stratum: {strata.said_once}.")
    body += _matrix(report, strata)
    failing = [v for v in report.verdicts if v.verdict == "fail"]
    if failing:
        body += "<h4>Evidence of every alarm that fires</h4>" + table(EVIDENCE_COLUMNS, _evidence_rows(failing, strata))
        body += _playbook(failing, steps)
    body += _how_judged(report)
    for verdict, what in (("inconclusive", "that cannot decide"), ("pass", "that pass"), ("nodata", "without data")):
        these = [v for v in report.verdicts if v.verdict == verdict]
        if these:
            body += (
                f"<details><summary>Evidence of the {len(these)} verdict(s) {what}</summary>"
                f"{table(EVIDENCE_COLUMNS, _evidence_rows(these, strata))}</details>"
            )
    return body + _plots(fleet, report, i)


def section(inputs: Inputs) -> Section | None:
    """The fleet page, when the report was given (or found) a fleet store; None otherwise."""
    if inputs.fleet_store is None:
        return None
    from edgeproof.fleet import load_playbook

    rollback, thresholds = gate_rollback(inputs.rollout)
    fleet = read_fleet(inputs.fleet_store, rollback)
    body = ""
    if fleet.simulated:
        body += (
            '<p class="sim-banner">SIMULATED FLEET<small>Every device, window, alarm and plot in this section comes from the '
            "fleet simulator (windows labelled <code>bom_id = simulated:…</code>), not from devices in the field.</small></p>"
        )
    span_h = (fleet.end_ns - fleet.start_ns) / 3600e9
    cohorts = ", ".join(f"{c} ({n} devices)" for c, n in fleet.cohorts.items())
    body += f"<p>Store {source(inputs.shown(inputs.fleet_store))}, opened read-only: {fleet.devices} devices, {fleet.windows} windows, "
    body += f"{fleet.events} events, {fleet.rejected} refused rows over {span_h:.1f} h; devices reporting under each cohort label: {esc(cohorts) or 'none'}.</p>"
    if not fleet.windows:
        return Section("fleet", "Fleet", body + note("The store holds no windows yet: nothing to judge."), empty=True)
    if not fleet.reports:
        body += note(f"No cohort named {CONTROL!r} in the store: the alarms judge each cohort against it, so none is judged here.")
    else:
        body += note(
            "Each alarm is judged per stratum (chip revision × firmware × model × region) of a cohort against the concurrent "
            f"{CONTROL} cohort of the same stratum and window: Fail when the whole interval of the excess lies beyond the threshold, "
            "Pass when it lies within, Inconclusive when it straddles it or either side has too few devices, NoData when the cohort "
            f"has no data. Hover a verdict for its evidence. Thresholds and minimums: {thresholds}."
        )
    steps = load_playbook()
    ordered = sorted(fleet.reports, key=lambda r: (not r.firing, r.cohort))
    body += "".join(_cohort_block(fleet, r, steps, i) for i, r in enumerate(ordered))
    return Section("fleet", "Fleet", body, kinds=frozenset({"simulated" if fleet.simulated else "measured"}))
