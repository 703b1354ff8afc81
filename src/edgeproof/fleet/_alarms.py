"""Alarms per stratum (chip revision × firmware × model × region): a cohort against the concurrent control cohort.

One SQL query aggregates windows and events to one row per device and stratum; every alarm is then
judged per stratum from those rows. Each verdict comes from a simultaneous interval of the cohort's
excess over control (Bonferroni over strata × alarms × looks, so the family-wise false-alarm rate stays
at the contract's ``false_alarm_frac``): **fail** when the whole interval lies beyond the threshold,
**pass** when the whole interval lies within it, **inconclusive** otherwise or with too few devices on
either side, **nodata** when the cohort has no data for the alarm in that stratum.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edgeproof.fleet._stats import binomial_bounds, poisson_bounds, rank_interval_exists, shift_interval
from edgeproof.fleet._store import FleetStore
from edgeproof.telemetry._schema import EVENT_TYPES

if TYPE_CHECKING:
    from edgeproof.contract import Rollback

Verdict = Literal["pass", "fail", "inconclusive", "nodata"]
STRATUM = ("chip_revision", "firmware_version", "model_sha256", "region")
# Labels a release may change; the others always match between a stratum and its control.
RELEASE_LABELS = ("firmware_version", "model_sha256")


@dataclass(frozen=True)
class AlarmSpec:
    """One alarm: what it compares, how, and which ``[rollback]`` field holds its threshold (with the fleet default)."""

    name: str
    kind: Literal["rate", "devices", "shift"]
    contract_field: str
    default: float
    description: str
    unit: str


ALARMS: tuple[AlarmSpec, ...] = (
    AlarmSpec("fallback_rate", "rate", "max_fallback_frac", 0.02, "inferences with nodes on the CPU fallback (silent fallback)", "share"),
    AlarmSpec(
        "occupancy_drop",
        "shift",
        "max_occupancy_drop_pct",
        20.0,
        "accelerator occupancy: inference time on the accelerator path per wall time",
        "%",
    ),
    AlarmSpec("energy_drift", "shift", "max_energy_drift_pct", 10.0, "energy per inference (hw.energy / inferences)", "%"),
    AlarmSpec(
        "p95_drift",
        "shift",
        "max_p95_regression_pct",
        15.0,
        "p95 latency (per device: its windows' sketch p95, weighted by inferences)",
        "%",
    ),
    AlarmSpec("confidence_drop", "shift", "max_confidence_drop_pp", 5.0, "mean top-1 confidence of sampled inferences", "pp"),
    AlarmSpec("throttle_rate", "rate", "max_throttle_per_device_hour", 0.5, "thermal throttle changes per device-hour", "per device-hour"),
    AlarmSpec(
        "crash_rate", "rate", "max_crash_frac", 0.001, "inference errors and session re-creations (driver resets) per inference", "share"
    ),
    AlarmSpec("telemetry_gap", "devices", "max_silent_frac", 0.05, "devices that stopped reporting", "share"),
)
ALARM_NAMES = tuple(a.name for a in ALARMS)
DEFAULT_MIN_DEVICES = 20
DEFAULT_FALSE_ALARM = 0.05
DEFAULT_GAP_H = 6.0
DEFAULT_WINDOW_H = 24.0


@dataclass
class Side:
    """One side of a comparison: devices, samples (and what a sample is), the count or value compared."""

    devices: int
    samples: float
    samples_unit: str
    count: float | None = None
    value: float | None = None


@dataclass
class AlarmVerdict:
    """One alarm in one stratum: the verdict and its evidence."""

    alarm: str
    stratum: dict[str, str]
    verdict: Verdict
    threshold: float
    threshold_source: str
    unit: str
    statistic: str
    estimate: float | None
    interval: tuple[float, float] | None
    confidence: float
    cohort: Side
    control: Side
    reason: str
    provenance: str

    @property
    def stratum_label(self) -> str:
        s = self.stratum
        return f"{s['chip_revision']} × {s['firmware_version']} × {s['model_sha256'][:12]} × {s['region']}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AlarmReport:
    """Every alarm × stratum verdict of one look, and how the family-wise false-alarm rate was controlled."""

    cohort: str
    control: str
    since_ns: int
    until_ns: int
    verdicts: list[AlarmVerdict]
    family_size: int
    false_alarm_rate: float
    per_test_alpha: float
    looks: int
    matched_on: list[str]
    correction: str = field(init=False)

    def __post_init__(self) -> None:
        self.correction = (
            f"Bonferroni: family-wise false-alarm rate {self.false_alarm_rate:g} over {self.family_size} tests "
            f"(strata × alarms) × {self.looks} look(s); each interval at {1 - self.per_test_alpha:.6g}"
        )

    @property
    def firing(self) -> list[AlarmVerdict]:
        return [v for v in self.verdicts if v.verdict == "fail"]

    def outcome(self) -> Literal["pass", "fail", "undecided"]:
        """fail if any alarm fires; undecided if any is inconclusive or nothing had data; else pass."""
        if self.firing:
            return "fail"
        if any(v.verdict == "inconclusive" for v in self.verdicts) or not any(v.verdict == "pass" for v in self.verdicts):
            return "undecided"
        return "pass"

    def to_dict(self) -> dict[str, Any]:
        return {
            "cohort": self.cohort,
            "control": self.control,
            "since_ns": self.since_ns,
            "until_ns": self.until_ns,
            "matched_on": self.matched_on,
            "correction": self.correction,
            "outcome": self.outcome(),
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


# Aggregated on integer keys (device, label set), then named: the heavy GROUP BYs never touch a string column.
_DEVICE_SQL = """
WITH sets AS (SELECT * FROM label_sets WHERE cohort IN ($cohort, $control)),
w AS (
  SELECT label_key, device_key,
    count(*) AS windows,
    sum(inferences) AS inferences,
    sum(CASE WHEN provider_fallback_inferences IS NOT NULL THEN inferences END) AS fb_exposure,
    sum(provider_fallback_inferences) AS fb,
    sum(errors) AS errors,
    sum(energy_j) AS energy_j,
    sum(CASE WHEN energy_j IS NOT NULL THEN inferences END) AS energy_inferences,
    sum(latency_p95_s * inferences) AS p95_weighted,
    sum(CASE WHEN latency_p95_s IS NOT NULL THEN inferences END) AS p95_inferences,
    sum(confidence_sum) AS conf_sum,
    sum(confidence_count) AS conf_count,
    sum(latency_sum_s * (1 - coalesce(provider_fallback_inferences / nullif(inferences, 0), 0))) AS accel_busy_s,
    sum(end_ns - start_ns) / 1e9 AS seconds,
    max(end_ns) AS last_end_ns
  FROM window_rows
  WHERE label_key IN (SELECT label_key FROM sets) AND end_ns > $since AND start_ns < $until
  GROUP BY ALL),
e AS (
  SELECT label_key, device_key,
    count(*) FILTER (WHERE type_code = $throttle) AS throttles,
    count(*) FILTER (WHERE type_code = $reset) AS resets
  FROM event_rows
  WHERE label_key IN (SELECT label_key FROM sets) AND time_ns > $since AND time_ns <= $until
    AND type_code IN ($throttle, $reset)
  GROUP BY ALL),
per_set AS (
  SELECT s.cohort, s.chip_revision, s.firmware_version, s.model_sha256, s.region, d.device_id,
    starts_with(s.bom_id, 'simulated:') AS simulated, w.* EXCLUDE (label_key, device_key),
    coalesce(e.throttles, 0) AS throttles, coalesce(e.resets, 0) AS resets
  FROM w JOIN sets s USING (label_key) JOIN devices d USING (device_key)
  LEFT JOIN e USING (label_key, device_key))
-- labels outside the stratum (power mode, accelerator, BOM) may change within a device: one row per device and stratum
SELECT cohort, chip_revision, firmware_version, model_sha256, region, device_id, bool_or(simulated) AS simulated,
  sum(windows) AS windows, sum(inferences) AS inferences, sum(fb_exposure) AS fb_exposure, sum(fb) AS fb, sum(errors) AS errors, sum(energy_j) AS energy_j, sum(energy_inferences) AS energy_inferences, sum(p95_weighted) AS p95_weighted, sum(p95_inferences) AS p95_inferences, sum(conf_sum) AS conf_sum, sum(conf_count) AS conf_count, sum(accel_busy_s) AS accel_busy_s, sum(seconds) AS seconds,
  max(last_end_ns) AS last_end_ns, sum(throttles) AS throttles, sum(resets) AS resets
FROM per_set GROUP BY cohort, chip_revision, firmware_version, model_sha256, region, device_id
"""


def _threshold(rollback: Rollback | None, spec: AlarmSpec) -> tuple[float, str]:
    value = getattr(rollback, spec.contract_field, None) if rollback is not None else None
    if value is None:
        return spec.default, f"fleet default (set [rollback].{spec.contract_field})"
    return float(value), f"[rollback].{spec.contract_field}"


def _setting(rollback: Rollback | None, name: str, default: float) -> float:
    value = getattr(rollback, name, None) if rollback is not None else None
    return default if value is None else float(value)


def device_rows(store: FleetStore, cohort: str, control: str, since_ns: int, until_ns: int) -> dict[str, np.ndarray]:
    """One row per (device, stratum, cohort) in the window, as numpy columns."""
    params = {
        "cohort": cohort,
        "control": control,
        "since": since_ns,
        "until": until_ns,
        "throttle": EVENT_TYPES.index("thermal_throttle_changed"),
        "reset": EVENT_TYPES.index("session_recreated"),
    }
    result = store.con.execute(_DEVICE_SQL, params).fetchnumpy()
    out: dict[str, np.ndarray] = {}
    for name, column in result.items():
        if np.ma.isMaskedArray(column):  # SQL NULL (a sum over windows that lacked the metric): NaN, or "" for text
            column = np.ma.filled(column.astype(float), np.nan) if column.dtype.kind in "iufb" else np.ma.filled(column, "")
        out[name] = np.asarray(column)
    return out


def window_bounds(store: FleetStore, cohort: str, control: str, window_h: float, until_ns: int | None) -> tuple[int, int]:
    """(since, until): the last ``window_h`` hours up to ``until_ns`` (default: the newest window of either cohort)."""
    if until_ns is None:
        row = store.con.execute(
            "SELECT max(end_ns) FROM window_rows WHERE label_key IN (SELECT label_key FROM label_sets WHERE cohort IN (?, ?))",
            [cohort, control],
        ).fetchone()
        until_ns = int(row[0]) if row and row[0] is not None else 0
    return until_ns - int(window_h * 3600e9), until_ns


def _matched_labels(rows: dict[str, np.ndarray], is_cohort: np.ndarray) -> list[str]:
    """Labels the control is matched on: chip revision and region always; firmware and model unless the release changes them
    (the cohort's values and the control's share none)."""
    matched = ["chip_revision", "region"]
    for name in RELEASE_LABELS:
        if set(rows[name][is_cohort].tolist()) & set(rows[name][~is_cohort].tolist()):
            matched.append(name)
    return matched


def evaluate_alarms(
    store: FleetStore,
    cohort: str,
    control: str,
    rollback: Rollback | None = None,
    *,
    until_ns: int | None = None,
    window_h: float | None = None,
    looks: int = 1,
    alarms: tuple[str, ...] = ALARM_NAMES,
) -> AlarmReport:
    """Judge every alarm in every stratum of ``cohort`` against ``control`` over the analysis window.

    ``looks``: how many times this rollout stage is judged in all (alpha is split over them too).
    """
    window_h = window_h if window_h is not None else _setting(rollback, "window_h", DEFAULT_WINDOW_H)
    since, until = window_bounds(store, cohort, control, window_h, until_ns)
    rows = device_rows(store, cohort, control, since, until)
    specs = [a for a in ALARMS if a.name in alarms]
    alpha = _setting(rollback, "false_alarm_frac", DEFAULT_FALSE_ALARM)
    min_devices = int(_setting(rollback, "min_devices", DEFAULT_MIN_DEVICES))
    gap_ns = int(_setting(rollback, "max_gap_h", DEFAULT_GAP_H) * 3600e9)
    n = len(rows.get("device_id", []))
    is_cohort = rows["cohort"] == cohort if n else np.zeros(0, bool)
    matched = _matched_labels(rows, is_cohort) if n else ["chip_revision", "region", *RELEASE_LABELS]
    strata = sorted({tuple(rows[k][i] for k in STRATUM) for i in np.flatnonzero(is_cohort)})
    family = max(1, len(strata) * len(specs))
    per_test = alpha / (family * max(1, looks))
    verdicts: list[AlarmVerdict] = []
    for key in strata:
        stratum = dict(zip(STRATUM, key))
        in_cohort = is_cohort.copy()
        in_control = ~is_cohort
        for name in STRATUM:
            in_cohort &= rows[name] == stratum[name]
            if name in matched:
                in_control &= rows[name] == stratum[name]
        for spec in specs:
            verdicts.append(_judge(spec, rows, in_cohort, in_control, stratum, rollback, per_test, min_devices, until, gap_ns))
    return AlarmReport(cohort, control, since, until, verdicts, family, alpha, per_test, looks, matched)


def _provenance(rows: dict[str, np.ndarray], mask: np.ndarray) -> str:
    devices = int(mask.sum())
    simulated = bool(np.any(rows["simulated"][mask].astype(bool))) if devices else False
    return f"simulated:fleet ({devices} devices)" if simulated else f"measured:field:{devices} devices"


def _judge(
    spec: AlarmSpec,
    rows: dict[str, np.ndarray],
    in_cohort: np.ndarray,
    in_control: np.ndarray,
    stratum: dict[str, str],
    rollback: Rollback | None,
    alpha: float,
    min_devices: int,
    until_ns: int,
    gap_ns: int,
) -> AlarmVerdict:
    threshold, source = _threshold(rollback, spec)
    provenance = _provenance(rows, in_cohort | in_control)

    def verdict(
        v: Verdict, statistic: str, estimate: float | None, interval: tuple[float, float] | None, c: Side, k: Side, why: str
    ) -> AlarmVerdict:
        return AlarmVerdict(
            spec.name, stratum, v, threshold, source, spec.unit, statistic, estimate, interval, 1 - alpha, c, k, why, provenance
        )

    def lacking(c: Side, k: Side, statistic: str) -> AlarmVerdict | None:
        """NoData without cohort data, Inconclusive with too few devices on either side; None when there is enough to judge."""
        if not c.devices:
            return verdict("nodata", statistic, None, None, c, k, "the cohort has no data for this alarm in this stratum")
        if c.devices < min_devices or k.devices < min_devices:
            why = f"too few devices (cohort {c.devices}, control {k.devices}; need {min_devices} each)"
            return verdict("inconclusive", statistic, None, None, c, k, why)
        return None

    if spec.kind in ("rate", "devices"):
        if spec.kind == "rate":
            count, exposure, unit = _rate_columns(spec, rows)
            has_c, has_k = in_cohort & (exposure > 0), in_control & (exposure > 0)
            bounds = poisson_bounds
            statistic = f"excess rate over control ({spec.unit}), exact Poisson bounds"
        else:
            count = (rows["last_end_ns"] < until_ns - gap_ns).astype(float)
            exposure, unit, has_c, has_k = np.ones(count.size), "devices", in_cohort, in_control
            bounds = _device_bounds
            statistic = f"excess share of devices silent for the last {gap_ns / 3600e9:g} h, exact binomial bounds"
        c = Side(int(has_c.sum()), float(exposure[has_c].sum()), unit, float(count[has_c].sum()))
        k = Side(int(has_k.sum()), float(exposure[has_k].sum()), unit, float(count[has_k].sum()))
        c.value = (c.count or 0.0) / c.samples if c.samples else None
        k.value = (k.count or 0.0) / k.samples if k.samples else None
        if (early := lacking(c, k, statistic)) is not None:
            return early
        lo_c, hi_c = bounds(c.count or 0.0, c.samples, alpha / 2)
        lo_k, hi_k = bounds(k.count or 0.0, k.samples, alpha / 2)
        return _decide(verdict, statistic, (c.value or 0.0) - (k.value or 0.0), (lo_c - hi_k, hi_c - lo_k), threshold, c, k)
    values, samples, what, relative, worse = _shift_columns(spec, rows)
    ok = np.isfinite(values) & (values > 0 if relative else np.isfinite(values))
    has_c, has_k = in_cohort & ok, in_control & ok
    c = Side(int(has_c.sum()), float(samples[has_c].sum()), what, value=float(np.median(values[has_c])) if has_c.any() else None)
    k = Side(int(has_k.sum()), float(samples[has_k].sum()), what, value=float(np.median(values[has_k])) if has_k.any() else None)
    statistic = (
        "Hodges–Lehmann shift of log device values (percent), Mann–Whitney interval"
        if relative
        else "Hodges–Lehmann shift of device values (points), Mann–Whitney interval"
    )
    if (early := lacking(c, k, statistic)) is not None:
        return early
    if not rank_interval_exists(c.devices, k.devices, alpha):
        why = (
            f"{c.devices} cohort and {k.devices} control devices cannot bound a shift at this alarm's level "
            f"(alpha {alpha:.2g} after corrections): every shift lies inside the rank interval"
        )
        return verdict("inconclusive", statistic, None, None, c, k, why)
    x_c, x_k = values[has_c], values[has_k]
    if relative:
        mid, lo, hi = shift_interval(np.log(x_c), np.log(x_k), alpha)
        mid, lo, hi = (100 * (np.exp(v) - 1) for v in (mid, lo, hi))
    else:
        mid, lo, hi = shift_interval(100 * x_c, 100 * x_k, alpha)
    if worse < 0:  # a drop is the harm: judge the drop
        mid, lo, hi = -mid, -hi, -lo
    return _decide(verdict, statistic, float(mid), (float(lo), float(hi)), threshold, c, k)


def _device_bounds(count: float, exposure: float, alpha: float) -> tuple[float, float]:
    """``binomial_bounds`` of ``count`` devices out of ``exposure`` devices."""
    return binomial_bounds(int(count), int(exposure), alpha)


def _decide(
    verdict: Any, statistic: str, estimate: float, interval: tuple[float, float], threshold: float, c: Side, k: Side
) -> AlarmVerdict:
    lo, hi = interval
    if lo > threshold:
        return verdict("fail", statistic, estimate, interval, c, k, f"the whole interval lies above the threshold {threshold:g}")
    if hi <= threshold:
        return verdict("pass", statistic, estimate, interval, c, k, f"the whole interval lies within the threshold {threshold:g}")
    return verdict(
        "inconclusive",
        statistic,
        estimate,
        interval,
        c,
        k,
        f"the interval straddles the threshold {threshold:g}: more devices or time needed",
    )


def _rate_columns(spec: AlarmSpec, rows: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, str]:
    zero = np.nan_to_num
    if spec.name == "fallback_rate":
        return zero(rows["fb"]), zero(rows["fb_exposure"]), "inferences"
    if spec.name == "crash_rate":
        return zero(rows["errors"]) + zero(rows["resets"]), zero(rows["inferences"]), "inferences"
    return zero(rows["throttles"]).astype(float), zero(rows["seconds"]) / 3600.0, "device-hours"


def _shift_columns(spec: AlarmSpec, rows: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, str, bool, int]:
    """(per-device value, samples behind it, what a sample is, relative?, +1 when a rise is the harm / -1 a drop)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if spec.name == "energy_drift":
            return rows["energy_j"] / rows["energy_inferences"], np.nan_to_num(rows["energy_inferences"]), "inferences", True, 1
        if spec.name == "p95_drift":
            return rows["p95_weighted"] / rows["p95_inferences"], np.nan_to_num(rows["p95_inferences"]), "inferences", True, 1
        if spec.name == "confidence_drop":
            return rows["conf_sum"] / rows["conf_count"], np.nan_to_num(rows["conf_count"]), "sampled inferences", False, -1
        return rows["accel_busy_s"] / rows["seconds"], np.nan_to_num(rows["windows"]).astype(float), "windows", True, -1
