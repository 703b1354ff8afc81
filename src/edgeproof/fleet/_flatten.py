"""Segment rows (nested, one per window or event) into the fleet's flat columns, and the rows refused with why.

All column-at-a-time: the metrics list is flattened once, each metric the fleet reads is scattered back
to its window by parent index, the latency p95 comes from the sketch column in one pass.
A row is refused, with its device and the reason, when its frame names another schema version, it lacks
a label the fleet stratifies by, a count in it is negative, or its key (device, boot, seq) is incomplete.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgeproof.fleet._sketch import quantiles
from edgeproof.telemetry._schema import EVENT_TYPES, LABEL_NAMES, METRICS, SCHEMA_VERSION

# Labels every record must carry: the stratum (chip revision × firmware × model × region) and the cohort.
REQUIRED_LABELS = ("chip_revision", "firmware_version", "model_sha256", "region", "cohort")
STORED_LABELS = tuple(name for name in LABEL_NAMES if name != "device_id")

# Fleet column <- (metric name, field of the metric struct).
WINDOW_METRICS = {
    "inferences": ("edgeproof.inference.count", "value"),
    "errors": ("edgeproof.inference.errors", "value"),
    "provider_fallback_inferences": ("edgeproof.fallback.provider.inferences", "value"),
    "provider_fallback_nodes": ("edgeproof.fallback.provider.nodes", "value"),
    "policy_fallback": ("edgeproof.fallback.policy", "value"),
    "energy_j": ("hw.energy", "value"),
    "power_w": ("hw.power", "value"),
    "temperature_c": ("hw.temperature", "value"),
    "latency_count": ("edgeproof.inference.duration", "count"),
    "latency_sum_s": ("edgeproof.inference.duration", "sum"),
    "latency_max_s": ("edgeproof.inference.duration", "max"),
    "confidence_count": ("edgeproof.inference.confidence", "count"),
    "confidence_sum": ("edgeproof.inference.confidence", "sum"),
}
KEY = ("device_id", "boot_id", "seq")
WINDOW_SCHEMA = pa.schema(
    [("device_id", pa.string()), ("boot_id", pa.string()), ("seq", pa.int64()), ("start_ns", pa.int64()), ("end_ns", pa.int64())]
    + [(name, pa.string()) for name in STORED_LABELS]
    + [(name, pa.float64()) for name in WINDOW_METRICS]
    + [("latency_p95_s", pa.float64())]
)
EVENT_SCHEMA = pa.schema(
    [("device_id", pa.string()), ("boot_id", pa.string()), ("seq", pa.int64()), ("time_ns", pa.int64())]
    + [(name, pa.string()) for name in STORED_LABELS]
    + [("type", pa.string()), ("attributes_json", pa.string())]
)
REJECT_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("frame_offset", pa.int64()),
        ("device_id", pa.string()),
        ("boot_id", pa.string()),
        ("seq", pa.int64()),
        ("kind", pa.string()),
        ("reason", pa.string()),
    ]
)
_COUNTERS = tuple(name for name, spec in METRICS.items() if spec.aggregation == "counter")


@dataclass
class Flat:
    """One frame's rows, split: windows and events to store, rows refused."""

    windows: pa.Table
    events: pa.Table
    rejects: pa.Table


def _column(table: pa.Table, name: str, type_: pa.DataType) -> pa.ChunkedArray:
    if name in table.column_names:
        return table.column(name)
    return pa.chunked_array([pa.nulls(table.num_rows, type_)])


def _str(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(array, "").to_numpy(zero_copy_only=False), dtype=object)


def _is(array: pa.ChunkedArray | pa.Array, value: str) -> np.ndarray:
    """Where ``array`` equals ``value`` (null: no), as a numpy mask, without a Python object per row."""
    return np.asarray(pc.fill_null(pc.equal(array, value), False).to_numpy(zero_copy_only=False), dtype=bool)


def _blank(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return _is(pc.fill_null(array, ""), "")


def _reasons(table: pa.Table, version: str) -> np.ndarray | None:
    """Why each row is refused ('' where it is kept), the first reason found; None when every row is kept."""
    n = table.num_rows
    checks: list[tuple[np.ndarray, str | np.ndarray]] = []
    if version != SCHEMA_VERSION:
        checks.append((np.ones(n, bool), f"schema version {version or 'missing'!r}, the fleet reads {SCHEMA_VERSION!r}"))
    kind = _column(table, "kind", pa.string())
    is_window, is_event = _is(kind, "window"), _is(kind, "event")
    checks.append((~is_window & ~is_event, "unknown record kind"))
    checks.append((_blank(_column(table, "device_id", pa.string())), "missing device_id"))
    checks.append((_blank(_column(table, "boot_id", pa.string())), "missing boot_id"))
    seq = _column(table, "seq", pa.int64())
    checks.append((np.asarray(pc.fill_null(pc.less(seq, 0), True).to_numpy(zero_copy_only=False), dtype=bool), "missing or negative seq"))
    labels = table.column("labels") if "labels" in table.column_names else None
    empty = {
        name: _blank(pc.struct_field(labels, name)) if labels is not None and labels.type.get_field_index(name) >= 0 else np.ones(n, bool)
        for name in REQUIRED_LABELS
    }
    lacking = np.logical_or.reduce(list(empty.values()))
    if lacking.any():
        names_missing = [", ".join(name for name in REQUIRED_LABELS if empty[name][i]) for i in range(n)]
        checks.append((lacking, np.array(["missing labels: " + w for w in names_missing], dtype=object)))
    if is_event.any():
        types = _column(table, "event_type", pa.string())
        unknown = is_event & ~np.asarray(pc.fill_null(pc.is_in(types, pa.array(EVENT_TYPES)), False).to_numpy(zero_copy_only=False), bool)
        if unknown.any():
            checks.append((unknown, np.array([f"unknown event type {t!r}" for t in _str(types)], dtype=object)))
    if "metrics" in table.column_names:
        metrics = table.column("metrics")
        flat = pc.list_flatten(metrics)
        if len(flat):
            counter = pc.is_in(pc.struct_field(flat, "name"), pa.array(_COUNTERS))
            negative = pc.or_(pc.and_(counter, pc.less(pc.struct_field(flat, "value"), 0)), pc.less(pc.struct_field(flat, "count"), 0))
            negative_np = np.asarray(pc.fill_null(negative, False).to_numpy(zero_copy_only=False), bool)
            if negative_np.any():
                parent = pc.list_parent_indices(metrics).to_numpy()
                names = _str(pc.struct_field(flat, "name"))
                why = np.full(n, "", dtype=object)
                for i in np.flatnonzero(negative_np)[::-1]:
                    why[parent[i]] = f"negative count in {names[i]}"
                checks.append((why != "", why))
    if not any(mask.any() for mask, _ in checks):
        return None
    reason = np.full(n, "", dtype=object)
    for mask, because in checks:
        fresh = mask & (reason == "")
        reason[fresh] = because if isinstance(because, str) else because[fresh]
    return reason


def _metric_columns(windows: pa.Table) -> dict[str, np.ndarray]:
    n = windows.num_rows
    out = {name: np.full(n, np.nan) for name in WINDOW_METRICS}
    out["latency_p95_s"] = np.full(n, np.nan)
    metrics = windows.column("metrics")
    flat = pc.list_flatten(metrics)
    if not len(flat):
        return out
    parent = pc.list_parent_indices(metrics).to_numpy()
    names = pc.struct_field(flat, "name")
    attributes = pc.struct_field(flat, "attributes")
    as_list = attributes.cast(pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())])))
    plain = pc.fill_null(pc.list_value_length(as_list), 0).to_numpy() == 0
    fields = {f: pc.struct_field(flat, f).to_numpy(zero_copy_only=False).astype(float) for f in ("value", "count", "sum", "max")}
    masks: dict[str, np.ndarray] = {}
    for column, (metric, field) in WINDOW_METRICS.items():
        if metric not in masks:
            masks[metric] = _is(names, metric) & plain
        at = np.flatnonzero(masks[metric])
        out[column][parent[at]] = fields[field][at]
    at = np.flatnonzero(masks["edgeproof.inference.duration"])
    if at.size:
        out["latency_p95_s"][parent[at]] = quantiles(pc.struct_field(flat, "sketch").take(pa.array(at)), 0.95)
    return out


def _labels(table: pa.Table) -> dict[str, pa.Array]:
    labels = table.column("labels")
    return {name: pc.fill_null(pc.struct_field(labels, name), "") for name in STORED_LABELS}


def flatten(table: pa.Table, file: str, frame_offset: int) -> Flat:
    """Split one frame's rows into stored windows, stored events and refused rows."""
    version = (table.schema.metadata or {}).get(b"schema", b"").decode(errors="replace")
    reason = _reasons(table, version)
    kind = _column(table, "kind", pa.string())
    if reason is None:
        kept = np.ones(table.num_rows, bool)
        rejects = REJECT_SCHEMA.empty_table()
    else:
        kept = reason == ""
        rejected = pa.array(np.flatnonzero(~kept), pa.int64())
        rejects = pa.table(
            {
                "file": pa.array([file] * len(rejected), pa.string()),
                "frame_offset": pa.array(np.full(len(rejected), frame_offset, dtype=np.int64)),
                "device_id": _column(table, "device_id", pa.string()).take(rejected),
                "boot_id": _column(table, "boot_id", pa.string()).take(rejected),
                "seq": _column(table, "seq", pa.int64()).take(rejected),
                "kind": kind.take(rejected),
                "reason": pa.array(reason[~kept].tolist(), pa.string()),
            },
            schema=REJECT_SCHEMA,
        )
    is_window = _is(kind, "window")
    if kept.all() and is_window.all():
        return Flat(_windows(table), EVENT_SCHEMA.empty_table(), rejects)
    windows = table.take(pa.array(np.flatnonzero(kept & is_window), pa.int64()))
    events = table.take(pa.array(np.flatnonzero(kept & ~is_window), pa.int64()))
    return Flat(_windows(windows), _events(events), rejects)


def _windows(rows: pa.Table) -> pa.Table:
    if rows.num_rows == 0:
        return WINDOW_SCHEMA.empty_table()
    columns: dict[str, pa.Array | pa.ChunkedArray | np.ndarray] = {
        "device_id": rows.column("device_id"),
        "boot_id": rows.column("boot_id"),
        "seq": rows.column("seq"),
        "start_ns": rows.column("start_unix_ns"),
        "end_ns": rows.column("end_unix_ns"),
        **_labels(rows),
        **_metric_columns(rows),
    }
    # NaN (the window lacks the metric) becomes NULL, so SQL sums skip it instead of turning NaN
    return pa.table(
        {f.name: pa.array(c, f.type, from_pandas=True) if isinstance(c := columns[f.name], np.ndarray) else c for f in WINDOW_SCHEMA},
        schema=WINDOW_SCHEMA,
    )


def _events(rows: pa.Table) -> pa.Table:
    if rows.num_rows == 0:
        return EVENT_SCHEMA.empty_table()
    columns = {
        "device_id": rows.column("device_id"),
        "boot_id": rows.column("boot_id"),
        "seq": rows.column("seq"),
        "time_ns": rows.column("start_unix_ns"),
        **_labels(rows),
        "type": rows.column("event_type"),
        "attributes_json": rows.column("event_attributes_json"),
    }
    return pa.table({f.name: columns[f.name] for f in EVENT_SCHEMA}, schema=EVENT_SCHEMA)
