"""The figures of a run record, keyed as a contract names them, each with unit, provenance and interval.

Every stage that reads a figure off a record (search ranking, contract clauses, BOM, report) asks
here, so a figure means the same thing, with the same provenance, wherever it is shown.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

from edgeproof.records import Figure, Placement, RunRecord

LATENCY_FIGURES = ("p50_ms", "p95_ms", "p99_ms")
RECORD_FIGURES = ("load_time_ms", "peak_rss_mib", "model_size_mib", "energy_mj_per_inference", "sustained_w", "temperature_c")
SLICE_METRICS = {"accuracy": "fraction", "drop_pp": "pp", "agreement": "fraction"}


def fallback_share(placement: Placement | None) -> Figure:
    """Share of the work on the CPU fallback: by node time where per-node times exist, else by node
    count (said in the provenance); unavailable without a per-node placement."""
    if placement is None:
        return Figure.unavailable("fraction", "no per-node placement in the run record")
    if placement.fallback_time_frac is not None:
        return Figure(value=placement.fallback_time_frac, unit="fraction", provenance=placement.provenance)
    return Figure(value=placement.fallback_node_frac, unit="fraction", provenance=f"{placement.provenance} (by node count)")


def latency_figure(record: RunRecord, key: str) -> Figure:
    """``p50_ms``, ``p95_ms`` or ``p99_ms`` of the record, with its confidence interval where one was computed."""
    ci = record.latency.ci.get(key.removesuffix("_ms"))
    interval = (ci.low, ci.high) if ci is not None else None
    return Figure(value=getattr(record.latency, key), unit="ms", provenance=record.latency_provenance, interval=interval)


def slice_provenance(slice_id: str) -> str:
    """Where a slice's accuracy figures come from: the evaluation of that slice's content."""
    return f"measured:evaluate({slice_id})"


def worst_slice(record: RunRecord) -> tuple[str | None, Figure]:
    """The slice with the largest accuracy drop, and that drop as a figure (unavailable without an evaluation)."""
    ev = record.evaluation
    if ev is None or not ev.slices:
        return None, Figure.unavailable("pp", "no evaluation: the contract names no data or slices")
    name, metrics = max(ev.slices.items(), key=lambda kv: kv[1].drop_pp)
    return name, Figure(value=metrics.drop_pp, unit="pp", provenance=slice_provenance(metrics.slice_id))


def figures_of(record: RunRecord) -> dict[str, Figure]:
    """Every rankable figure of a record, keyed like ``edgeproof.contract.METRICS``: latency
    quantiles, resources, ``cpu_fallback_frac`` and ``accuracy_drop_pp`` (the worst slice)."""
    figures = {key: latency_figure(record, key) for key in LATENCY_FIGURES}
    figures |= {key: getattr(record, key) for key in RECORD_FIGURES}
    figures["cpu_fallback_frac"] = fallback_share(record.placement)
    figures["accuracy_drop_pp"] = worst_slice(record)[1]
    return figures


def slice_figures(record: RunRecord) -> dict[str, Figure]:
    """Each evaluated slice's accuracy, drop and agreement, keyed ``slices.<name>.<metric>``."""
    if record.evaluation is None:
        return {}
    return {
        f"slices.{name}.{metric}": Figure(value=getattr(metrics, metric), unit=unit, provenance=slice_provenance(metrics.slice_id))
        for name, metrics in record.evaluation.slices.items()
        for metric, unit in SLICE_METRICS.items()
    }


def jitter_figure(record: RunRecord) -> Figure:
    """``jitter_ms``: p99 − p50 of the pooled latency samples, with a 95% interval.

    With two or more sessions the interval is a Student-t interval over each session's own
    p99 − p50, floored by the interval the two quantiles' own intervals allow together
    (p99 low − p50 high to p99 high − p50 low); with one session only the latter exists.
    """
    lat = record.latency
    value = lat.p99_ms - lat.p50_ms
    p50, p99 = lat.ci.get("p50"), lat.ci.get("p99")
    low, high = (value, value) if p50 is None or p99 is None else (max(0.0, p99.low - p50.high), p99.high - p50.low)
    per_session = [float(np.quantile(s.samples_ms, 0.99) - np.quantile(s.samples_ms, 0.5)) for s in record.sessions if s.samples_ms]
    if len(per_session) >= 2:
        half = float(sps.t.ppf(0.975, len(per_session) - 1) * np.std(per_session, ddof=1) / math.sqrt(len(per_session)))
        low, high = min(low, max(0.0, value - half)), max(high, value + half)
    return Figure(value=value, unit="ms", provenance=record.latency_provenance, interval=(low, high))


def deadline_miss_figure(record: RunRecord) -> Figure:
    """``deadline_miss_frac``: the share of requests that finished after their deadline (periodic and
    server scenarios), with a Clopper-Pearson 95% interval over the timed requests."""
    sc = record.scenario
    if sc.deadline_miss_rate is None:
        why = f"scenario {sc.name} has no deadline; run periodic:HZ or server:HZ" if sc.name not in ("periodic", "server") else None
        return Figure.unavailable("fraction", why or "the record carries no deadline-miss count")
    n = max(1, record.latency.n_samples)
    misses = round(sc.deadline_miss_rate * n)
    low = 0.0 if misses == 0 else float(sps.beta.ppf(0.025, misses, n - misses + 1))
    high = 1.0 if misses == n else float(sps.beta.ppf(0.975, misses + 1, n - misses))
    deadline = f" (deadline {sc.deadline_ms:g} ms)" if sc.deadline_ms is not None else ""
    return Figure(value=sc.deadline_miss_rate, unit="fraction", provenance=record.latency_provenance + deadline, interval=(low, high))
