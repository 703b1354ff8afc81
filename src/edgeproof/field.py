"""A field record: a cohort's telemetry windows turned into a run record the contract can judge.

``edgeproof gate --field DIR`` reads the segment files the on-device recorder wrote (see
``edgeproof.telemetry``), keeps the windows of one model (and one cohort, when asked), and builds a
``RunRecord`` of kind ``field`` from what the windows aggregate — never from raw samples:

- latency quantiles from the merged DDSketch of every window (1% relative accuracy), with 95%
  intervals from a bootstrap over devices (device-to-device spread is what a canary cohort has;
  with one device only the sketch's own error is left, and the record says so);
- energy per inference from ``hw.energy`` over ``edgeproof.inference.count``, sustained power from
  ``hw.power``, temperature from ``hw.temperature``, peak memory from ``process.memory.usage`` —
  each unavailable, with the reason, when no window carries it;
- CPU fallback from the ``provider_placement`` events.

Accuracy is not observable in the field (no labels leave the device), so slice clauses stay
unverified; the confidence the windows carry is reported beside the verdict instead.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeproof import __version__
from edgeproof.errors import DataError
from edgeproof.measure.stats import CONFIDENCE, QUANTILES, Interval, LatencyStats
from edgeproof.records import EnvFingerprint, Figure, ModelRef, Placement, RunRecord, RuntimeSettings, ScenarioResult, TargetRef
from edgeproof.telemetry._aggregate import counter_total

LATENCY_METRIC = "edgeproof.inference.duration"
BOOTSTRAP_RESAMPLES = 2000


@dataclass
class FieldSummary:
    """What the windows of the cohort held, for the terminal and the record's warnings."""

    devices: int
    boots: int
    windows: int
    inferences: int
    skipped_windows: int
    problems: list[str]
    span_s: float
    mean_confidence: float | None
    policy_fallback_rate: float | None


def field_record(
    directory: str | Path,
    *,
    target: str = "field",
    scenario: str = "single-stream",
    cohort: str | None = None,
    model_sha256: str | None = None,
    model_path: str | Path | None = None,
    seed: int = 0,
) -> tuple[RunRecord, FieldSummary]:
    """The field record of the windows under ``directory`` (one model; one cohort when given).

    ``scenario`` is the contract's scenario for ``target``: field latency is the product's real
    load, judged against the budget written for it. ``model_path`` fills the model's interface
    (checked against the windows' ``model_sha256``). Raises ``DataError`` (exit 2) when there is
    nothing to judge: no segment files, no windows of the model/cohort, several models with none chosen.
    """
    from edgeproof.telemetry import SegmentRead, read_segments, segment_folders

    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"--field {root}: not a directory of telemetry segment files")
    # one folder per device, as collected from the fleet, or every segment in one folder
    read = SegmentRead()
    for folder in segment_folders(root):
        part = read_segments(folder)
        read.records.extend(part.records)
        read.problems.extend(part.problems)
    problems = [str(p) for p in read.problems]
    windows = [w for w in read.windows if cohort is None or w.labels.cohort == cohort]
    if not windows:
        cohorts = sorted({w.labels.cohort or "(none)" for w in read.windows})
        where = f" of cohort {cohort!r} (cohorts there: {', '.join(cohorts)})" if cohort is not None and read.windows else ""
        raise DataError(
            f"--field {root}: no telemetry windows{where}" + (f"; {len(problems)} malformed frame(s) skipped" if problems else "")
        )
    model_sha256 = _one_model(root, windows, model_sha256, model_path)
    windows = [w for w in windows if w.labels.model_sha256 == model_sha256]
    skipped = len(read.windows) - len(windows)

    by_device: dict[str, list] = defaultdict(list)
    for w in windows:
        by_device[w.labels.device_id].append(w)
    latency = _latency(by_device, seed)
    if latency is None:
        raise DataError(f"--field {root}: the windows of model {model_sha256[:12]} hold no latency ({LATENCY_METRIC})")
    n_devices = len(by_device)
    provenance = f"measured:field:{n_devices} device{'s' if n_devices != 1 else ''}"
    inferences = int(counter_total(windows, "edgeproof.inference.count") or 0)
    events = [e for e in read.events if e.labels.model_sha256 == model_sha256 and (cohort is None or e.labels.cohort == cohort)]
    span_ns = max(w.end_unix_ns for w in windows) - min(w.start_unix_ns for w in windows)
    summary = FieldSummary(
        devices=n_devices,
        boots=len({(w.labels.device_id, w.boot_id) for w in windows}),
        windows=len(windows),
        inferences=inferences,
        skipped_windows=skipped,
        problems=problems,
        span_s=span_ns / 1e9,
        mean_confidence=_mean_confidence(windows),
        policy_fallback_rate=_rate(windows, "edgeproof.fallback.policy", inferences),
    )
    warnings = [
        f"field record: {summary.windows} windows from {n_devices} device(s), {summary.boots} boot(s), "
        f"{inferences} inferences over {summary.span_s / 3600:.2f} h; accuracy is not observable in the field"
    ]
    if n_devices < 2:
        warnings.append("one device: latency intervals cover the sketch's 1% error only, not device-to-device spread")
    if problems:
        warnings.append(f"{len(problems)} malformed frame(s) skipped: {problems[0]}" + (" …" if len(problems) > 1 else ""))
    warnings.append(f"latency judged against the budget for scenario {scenario}: the field runs the product's real load")
    record = RunRecord(
        kind="field",
        model=_model_ref(model_sha256, model_path),
        target=TargetRef(id=target, kind="field", power_mode=_common_label(windows, "power_mode"), firmware=_firmware(windows)),
        settings=RuntimeSettings(provider=_common_label(windows, "accelerator") or "unknown"),
        scenario=_scenario(scenario),
        sessions=[],
        latency=latency,
        latency_provenance=provenance,
        load_time_ms=Figure(value=None, unit="ms", provenance="unavailable:the recorder does not time model loads"),
        peak_rss_mib=_peak_rss(windows, provenance),
        model_size_mib=_model_size(model_path),
        energy_mj_per_inference=_energy(windows, provenance),
        sustained_w=_gauge_mean(windows, "hw.power", "W", provenance),
        temperature_c=_gauge_max(windows, "hw.temperature", "C", provenance),
        placement=_placement(events, provenance),
        env=_cohort_env(windows),
        warnings=warnings,
    )
    return record, summary


def _one_model(root: Path, windows: list, chosen: str | None, model_path: str | Path | None) -> str:
    models = sorted({w.labels.model_sha256 for w in windows})
    if model_path is not None:
        from edgeproof.model import sha256_file

        digest = sha256_file(Path(model_path))
        if chosen is not None and chosen != digest:
            raise DataError(f"--field-model {model_path}: sha256 {digest[:12]} is not the --field-sha256 {chosen[:12]}")
        chosen = digest
    if chosen is not None:
        match = [m for m in models if m.startswith(chosen)]
        if len(match) != 1:
            raise DataError(f"--field {root}: no windows of model {chosen[:12]} (models there: {', '.join(m[:12] for m in models)})")
        return match[0]
    if len(models) > 1:
        raise DataError(
            f"--field {root}: windows of {len(models)} models ({', '.join(m[:12] or '(none)' for m in models)}); "
            "choose one with --field-model or --field-sha256"
        )
    return models[0]


def _device_counts(by_device: dict[str, list]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per device, the merged latency sketch as counts over one shared range of bucket keys."""
    from edgeproof.telemetry import merged_sketch

    sketches = []
    for ws in by_device.values():
        metrics = [m for w in ws for m in w.metrics if m.name == LATENCY_METRIC]
        sketch = merged_sketch(metrics)
        if sketch.count > 0:
            sketches.append(sketch)
    if not sketches:
        return None
    lo = min(s._store.offset for s in sketches)
    hi = max(s._store.offset + len(s._store.bins) for s in sketches)
    counts = np.zeros((len(sketches), hi - lo))
    zeros = np.array([s._zero_count for s in sketches])
    for i, s in enumerate(sketches):
        start = s._store.offset - lo
        counts[i, start : start + len(s._store.bins)] = s._store.bins
    mapping = sketches[0]._mapping
    values_ms = np.array([mapping.value(k) for k in range(lo, hi)]) * 1000.0
    return counts, zeros, values_ms


def _quantiles_of(counts: np.ndarray, zeros: np.ndarray, values_ms: np.ndarray, q: float) -> np.ndarray:
    """DDSketch's quantile rule on rows of bucket counts: the first bucket whose cumulative count passes rank q·(n−1)."""
    cum = np.cumsum(counts, axis=-1) + zeros[..., None]
    total = cum[..., -1]
    rank = q * (total - 1)
    idx = np.argmax(cum > rank[..., None], axis=-1)
    out = values_ms[idx]
    return np.where(zeros >= rank + 1, 0.0, out)


def _latency(by_device: dict[str, list], seed: int) -> LatencyStats | None:
    dense = _device_counts(by_device)
    if dense is None:
        return None
    counts, zeros, values_ms = dense
    pooled, pooled_zero = counts.sum(axis=0), zeros.sum()
    k = len(counts)
    rng = np.random.default_rng(seed)
    # Each resample draws k devices with replacement: its pooled counts are the weighted sum of device counts.
    weights = rng.multinomial(k, np.full(k, 1.0 / k), size=BOOTSTRAP_RESAMPLES).astype(np.float64) if k >= 2 else None
    boot_counts = weights @ counts if weights is not None else None
    boot_zeros = weights @ zeros if weights is not None else None
    alpha = 1.0 - CONFIDENCE
    rel = 0.01  # the sketch's relative accuracy (telemetry._aggregate.RELATIVE_ACCURACY)
    points: dict[str, float] = {}
    ci: dict[str, Interval] = {}
    for name, q in QUANTILES.items():
        point = float(_quantiles_of(pooled, np.asarray(pooled_zero), values_ms, q))
        points[name] = point
        lo, hi = point, point
        if boot_counts is not None and boot_zeros is not None:
            draws = _quantiles_of(boot_counts, boot_zeros, values_ms, q)
            lo, hi = float(np.quantile(draws, alpha / 2)), float(np.quantile(draws, 1 - alpha / 2))
        ci[name] = Interval(low=min(lo, point) * (1 - rel), high=max(hi, point) * (1 + rel), level=CONFIDENCE)
    n = int(round(pooled.sum() + pooled_zero))
    mean_ms = float((pooled * values_ms).sum() / max(n, 1))
    nonzero = np.nonzero(pooled)[0]
    method = (
        f"bootstrap over {k} devices of merged DDSketches (±1% sketch error added)"
        if k >= 2
        else "one device: the DDSketch's ±1% relative error only"
    )
    return LatencyStats(
        n_samples=n,
        n_sessions=k,
        p50_ms=points["p50"],
        p90_ms=points["p90"],
        p95_ms=points["p95"],
        p99_ms=points["p99"],
        mean_ms=mean_ms,
        min_ms=float(values_ms[nonzero[0]]) if len(nonzero) else 0.0,
        max_ms=float(values_ms[nonzero[-1]]) if len(nonzero) else 0.0,
        ci=ci,
        ci_method=method,
    )


def _metric_values(windows: list, name: str) -> list[float]:
    return [m.value for w in windows for m in w.metrics if m.name == name and m.value is not None and not m.attributes]


def _rate(windows: list, name: str, inferences: int) -> float | None:
    """Counter ``name`` per inference, None when no window carries it (a policy that is not configured)."""
    total = counter_total(windows, name)
    return total / inferences if total is not None and inferences else None


def _energy(windows: list, provenance: str) -> Figure:
    """Energy per inference over the windows that carry ``hw.energy`` (their inferences only)."""
    joules, inferences = 0.0, 0.0
    for w in windows:
        energy = counter_total([w], "hw.energy")
        count = counter_total([w], "edgeproof.inference.count")
        if energy is not None and count:
            joules += energy
            inferences += count
    if not inferences:
        return Figure(value=None, unit="mJ", provenance="unavailable:no window carries hw.energy (no power meter on the devices)")
    return Figure(value=joules / inferences * 1000.0, unit="mJ", provenance=provenance + " (hw.energy / inferences)")


def _gauge_mean(windows: list, name: str, unit: str, provenance: str) -> Figure:
    values = _metric_values(windows, name)
    if not values:
        return Figure(value=None, unit=unit, provenance=f"unavailable:no window carries {name}")
    return Figure(value=float(np.mean(values)), unit=unit, provenance=f"{provenance} (mean of {name} over {len(values)} windows)")


def _gauge_max(windows: list, name: str, unit: str, provenance: str) -> Figure:
    values = _metric_values(windows, name)
    if not values:
        return Figure(value=None, unit=unit, provenance=f"unavailable:no window carries {name}")
    return Figure(value=float(np.max(values)), unit=unit, provenance=f"{provenance} (max of {name} over {len(values)} windows)")


def _peak_rss(windows: list, provenance: str) -> Figure:
    figure = _gauge_max(windows, "process.memory.usage", "MiB", provenance)
    if figure.value is not None:
        figure.value = figure.value / 2**20
    return figure


def _model_size(model_path: str | Path | None) -> Figure:
    if model_path is None:
        return Figure(value=None, unit="MiB", provenance="unavailable:give --field-model to state the model's size")
    return Figure(value=Path(model_path).stat().st_size / 2**20, unit="MiB", provenance="measured:file size")


def _mean_confidence(windows: list) -> float | None:
    count = sum(m.count for w in windows for m in w.metrics if m.name == "edgeproof.inference.confidence")
    total = sum(m.sum for w in windows for m in w.metrics if m.name == "edgeproof.inference.confidence")
    return total / count if count else None


def _placement(events: list, provenance: str) -> Placement | None:
    """CPU fallback as the devices reported it at model load: the share of loads with any node on the CPU."""
    loads = [e for e in events if e.type == "provider_placement"]
    if not loads:
        return None
    fell_back = [e for e in loads if (e.attributes.get("cpu_fallback_nodes") or 0) > 0 or e.attributes.get("missing")]
    active = [a for e in loads for a in (e.attributes.get("active") or [])]
    primary = max(set(active), key=active.count) if active else "unknown"
    return Placement(
        nodes=[],
        primary_provider=primary,
        fallback_node_frac=len(fell_back) / len(loads),
        fallback_flop_frac=None,
        fallback_time_frac=None,
        provenance=f"{provenance} (provider_placement events: {len(fell_back)} of {len(loads)} loads fell back to the CPU)",
    )


def _common_label(windows: list, name: str) -> str | None:
    values = {getattr(w.labels, name) for w in windows if getattr(w.labels, name)}
    if not values:
        return None
    return values.pop() if len(values) == 1 else "mixed:" + ",".join(sorted(values))


def _firmware(windows: list) -> dict | None:
    version = _common_label(windows, "firmware_version")
    return {"version": version} if version else None


def _model_ref(model_sha256: str, model_path: str | Path | None) -> ModelRef:
    if model_path is None:
        return ModelRef(path="", name=model_sha256[:12] or "unknown", sha256=model_sha256, size_bytes=0, io=None)
    from edgeproof.model import Model

    return Model.load(Path(model_path)).ref


def _cohort_env(windows: list) -> EnvFingerprint:
    """The cohort's environment as the labels give it (a fleet has no single host)."""
    labels = {name: _common_label(windows, name) or "" for name in ("chip_revision", "region", "cohort", "accelerator", "firmware_version")}
    return EnvFingerprint(
        hostname=f"field:{labels['cohort'] or 'all'}",
        os="unknown (field devices)",
        cpu_model=labels["chip_revision"] or "unknown",
        cpu_cores=0,
        ram_gib=0.0,
        python="",
        onnxruntime="",
        onnx="",
        providers=[labels["accelerator"]] if labels["accelerator"] else [],
        edgeproof=__version__,
        extra={k: v for k, v in labels.items() if v},
    )


def _scenario(text: str) -> ScenarioResult:
    from edgeproof.scenario_grammar import split_scenario

    name, rate_hz = split_scenario(text)
    return ScenarioResult(name=name, engine="field", rate_hz=rate_hz)
