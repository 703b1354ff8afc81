"""Segment rows (one per window or event, either layout) into the fleet's flat columns, and the rows refused with why.

A frame in the flat layout (``layout=flat-1``) already holds what the fleet stores as columns: names
dictionary-encoded, each metric's fields, the latency p95 the device computed when it wrote the frame.
Flattening it selects and casts columns and takes rows; nothing is decoded per row.

A frame in the nested layout is read column-at-a-time too, and nothing nested is copied: the metrics list is flattened once, each metric's
name looked up once, each metric the fleet reads scattered back to its row by parent index, and the
latency p95 read from the sketch column in one pass; only then are the flat columns split into windows
and events. Device, boot and label columns come out dictionary-encoded (codes into one dictionary per
column for the whole table), so splitting them moves codes, not strings, and the store interns them
from the dictionary. A row is refused, with its device and the reason, when its frame names another
schema version, it lacks a label the fleet stratifies by, a count in it is negative, or its key
(device, boot, seq) is incomplete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgeproof.fleet._phases import Phases
from edgeproof.fleet._sketch import quantiles
from edgeproof.telemetry._schema import EVENT_TYPES, LABEL_NAMES, METRICS, SCHEMA_VERSION
from edgeproof.telemetry._segments import FLAT_LAYOUT, QUANTILE_METRIC, frame_problem, layout_of, metric_column

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
# Names the store interns arrive as codes into one dictionary per column.
CODED = pa.dictionary(pa.int32(), pa.string())
WINDOW_SCHEMA = pa.schema(
    [("device_id", CODED), ("boot_id", CODED), ("seq", pa.int64()), ("start_ns", pa.int64()), ("end_ns", pa.int64())]
    + [(name, CODED) for name in STORED_LABELS]
    + [(name, pa.float64()) for name in WINDOW_METRICS]
    + [("latency_p95_s", pa.float64())]
)
EVENT_SCHEMA = pa.schema(
    [("device_id", CODED), ("boot_id", CODED), ("seq", pa.int64()), ("time_ns", pa.int64())]
    + [(name, CODED) for name in STORED_LABELS]
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
# Every metric name flatten looks at, each once: the fleet's columns first, then the other counters
# (checked for negative counts). A name's code is its place here.
_NAMES = tuple(dict.fromkeys([metric for metric, _ in WINDOW_METRICS.values()] + list(_COUNTERS)))
_NAME_SET = pa.array(_NAMES, pa.string())
_COUNTER_CODES = np.array([_NAMES.index(name) for name in _COUNTERS], dtype=np.int64)
_DURATION = _NAMES.index("edgeproof.inference.duration")


@dataclass
class Flat:
    """Rows of one or more frames, split: windows and events to store, rows refused."""

    windows: pa.Table
    events: pa.Table
    rejects: pa.Table


def _column(table: pa.Table, name: str, type_: pa.DataType) -> pa.ChunkedArray:
    if name in table.column_names:
        return table.column(name)
    return pa.chunked_array([pa.nulls(table.num_rows, type_)], type_)


def _numpy(array: pa.ChunkedArray | pa.Array, fill: object) -> np.ndarray:
    return np.asarray(pc.fill_null(array, fill).to_numpy(zero_copy_only=False))


def _str(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(_numpy(array, ""), dtype=object)


def _by_code(array: pa.ChunkedArray | pa.Array, per_entry: Callable[[pa.Array], np.ndarray], null: bool) -> np.ndarray:
    """A dictionary-encoded column's mask: ``per_entry`` over each chunk's dictionary, read per row by its code."""
    parts = []
    for chunk in array.chunks if isinstance(array, pa.ChunkedArray) else [array]:
        entries = np.append(np.asarray(per_entry(chunk.dictionary), bool), null)  # code -1 (null): the last entry
        parts.append(entries[_numpy(chunk.indices, -1).astype(np.int64, copy=False)])
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def _is(array: pa.ChunkedArray | pa.Array, value: str) -> np.ndarray:
    """Where ``array`` equals ``value`` (null: no), as a numpy mask, without a Python object per row."""
    if pa.types.is_dictionary(array.type):
        return _by_code(array, lambda d: _is(d, value), False)
    return _numpy(pc.equal(array, value), False).astype(bool, copy=False)


def _blank(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Where a string is null or empty (its length is read from the offsets; no byte is compared)."""
    if pa.types.is_dictionary(array.type):
        return _by_code(array, _blank, True)
    return _numpy(pc.binary_length(array), 0) == 0


def _in(array: pa.ChunkedArray | pa.Array, values: pa.Array) -> np.ndarray:
    if pa.types.is_dictionary(array.type):
        return _by_code(array, lambda d: _in(d, values), False)
    return _numpy(pc.is_in(array, values), False).astype(bool, copy=False)


def _plain_str(array: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    return array.cast(pa.string()) if pa.types.is_dictionary(array.type) else array


def _nested_label(table: pa.Table) -> Callable[[str], pa.ChunkedArray | None]:
    labels = table.column("labels") if "labels" in table.column_names else None

    def label(name: str) -> pa.ChunkedArray | None:
        return pc.struct_field(labels, name) if labels is not None and labels.type.get_field_index(name) >= 0 else None

    return label


def _numbers(array: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """(values, where valid; None when none is null) of an int64 or float64 array, read where they lie (no copy)."""
    buffers = array.buffers()
    dtype = np.float64 if pa.types.is_floating(array.type) else np.int64
    end = array.offset + len(array)
    values = np.frombuffer(buffers[1], dtype=dtype, count=end)[array.offset :]
    if not array.null_count:
        return values, None
    bits = np.unpackbits(np.frombuffer(buffers[0], np.uint8), count=end, bitorder="little")[array.offset :]
    return values, bits.astype(bool)


def _pick(numbers: tuple[np.ndarray, np.ndarray | None], at: np.ndarray) -> np.ndarray:
    values, valid = numbers
    picked = values[at].astype(float)
    if valid is not None:
        picked[~valid[at]] = np.nan
    return picked


_IS_COUNTER = np.zeros(len(_NAMES) + 1, bool)  # by name code + 1 (code -1: a name flatten does not read)
_IS_COUNTER[_COUNTER_CODES + 1] = True


@dataclass
class _Metrics:
    """Each fleet metric column for every row, and why a row is refused for a negative count ('' if not).

    A value is a numpy column (NaN where the row lacks the metric) or, from a flat frame, the frame's
    own Arrow column (null where the row lacks it); a column no row has is absent.
    """

    values: dict[str, np.ndarray | pa.ChunkedArray]
    negative: np.ndarray | None


def _scan_metrics(table: pa.Table, phases: Phases, column: str = "metrics") -> _Metrics:
    """One pass over a metrics list, a chunk at a time: each entry's name looked up once, values read in place."""
    n = table.num_rows
    values: dict[str, np.ndarray | pa.ChunkedArray] = {name: np.full(n, np.nan) for name in (*WINDOW_METRICS, "latency_p95_s")}
    negative: np.ndarray | None = None
    if column not in table.column_names:
        return _Metrics(values, None)
    first_row = 0
    for chunk in table.column(column).chunks:
        flat = pc.list_flatten(chunk)
        if len(flat):
            row = pc.list_parent_indices(chunk).to_numpy() + first_row
            code = _numpy(pc.index_in(pc.struct_field(flat, "name"), _NAME_SET), -1).astype(np.int64, copy=False)
            # a metric with attributes (one provider of several, one policy) is not the window's total
            plain = np.diff(pc.struct_field(flat, "attributes").offsets.to_numpy()) == 0
            fields = {f: _numbers(pc.struct_field(flat, f)) for f in ("value", "count", "sum", "max")}
            (value, value_ok), (count, count_ok) = fields["value"], fields["count"]
            bad = _IS_COUNTER[code + 1] & (value < 0)
            if value_ok is not None:
                bad &= value_ok
            bad |= (count < 0) & (True if count_ok is None else count_ok)
            if bad.any():
                negative = np.full(n, "", dtype=object) if negative is None else negative
                names = _str(pc.struct_field(flat, "name"))
                for i in np.flatnonzero(bad)[::-1]:  # the first negative metric of a row has the last word
                    negative[row[i]] = f"negative count in {names[i]}"
            at_of: dict[str, np.ndarray] = {}
            for column, (metric, field) in WINDOW_METRICS.items():
                if metric not in at_of:
                    at_of[metric] = np.flatnonzero((code == _NAMES.index(metric)) & plain)
                at = at_of[metric]
                values[column][row[at]] = _pick(fields[field], at)
            at = at_of[_NAMES[_DURATION]]
            if at.size:
                with phases("sketch_p95"):
                    values["latency_p95_s"][row[at]] = quantiles(pc.struct_field(flat, "sketch"), 0.95, rows=at)
        first_row += len(chunk)
    return _Metrics(values, negative)


def _flat_metrics(table: pa.Table, phases: Phases) -> _Metrics:
    """A flat frame's fleet columns as they lie (no copy), and its negative counts (plain columns, then ``extra_metrics``)."""
    present = set(table.column_names)
    values: dict[str, np.ndarray | pa.ChunkedArray] = {}
    for column, (metric, field) in WINDOW_METRICS.items():
        if metric_column(metric, field) in present:
            values[column] = table.column(metric_column(metric, field))
    p95, sketches = metric_column(QUANTILE_METRIC, "p95"), metric_column(QUANTILE_METRIC, "sketch")
    if p95 in present:
        values["latency_p95_s"] = table.column(p95)
    elif sketches in present:  # a writer that left the quantiles out: read them from the sketches
        with phases("sketch_p95"):
            values["latency_p95_s"] = pa.chunked_array([pa.array(quantiles(table.column(sketches), 0.95), pa.float64(), from_pandas=True)])
    negative = _scan_metrics(table, phases, "extra_metrics").negative if "extra_metrics" in present else None
    # the first negative metric of a row (in the frame's metric order) has the last word
    for name in reversed(METRICS):
        aggregation = METRICS[name].aggregation
        column = metric_column(name, "value" if aggregation == "counter" else "count")
        if aggregation == "gauge" or column not in present:
            continue
        bad = _numpy(pc.less(table.column(column), 0), False).astype(bool, copy=False)
        if bad.any():
            negative = np.full(table.num_rows, "", dtype=object) if negative is None else negative
            negative[bad] = f"negative count in {name}"
    return _Metrics(values, negative)


def _reasons(table: pa.Table, version: str, metrics: _Metrics, label: Callable[[str], pa.ChunkedArray | None]) -> np.ndarray | None:
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
    checks.append((_numpy(pc.less(seq, 0), True).astype(bool, copy=False), "missing or negative seq"))
    columns = {name: label(name) for name in REQUIRED_LABELS}
    empty = {name: np.ones(n, bool) if column is None else _blank(column) for name, column in columns.items()}
    lacking = np.logical_or.reduce(list(empty.values()))
    if lacking.any():
        why = np.full(n, "", dtype=object)
        for i in np.flatnonzero(lacking):
            why[i] = "missing labels: " + ", ".join(name for name in REQUIRED_LABELS if empty[name][i])
        checks.append((lacking, why))
    if is_event.any():
        types = _column(table, "event_type", pa.string())
        unknown = is_event & ~_in(types, pa.array(EVENT_TYPES))
        if unknown.any():
            checks.append((unknown, np.array([f"unknown event type {t!r}" for t in _str(_plain_str(types))], dtype=object)))
    if metrics.negative is not None:
        checks.append((metrics.negative != "", metrics.negative))
    if not any(mask.any() for mask, _ in checks):
        return None
    reason = np.full(n, "", dtype=object)
    for mask, because in checks:
        fresh = mask & (reason == "")
        reason[fresh] = because if isinstance(because, str) else because[fresh]
    return reason


@dataclass
class _Coded:
    """A string column as a code per row into one dictionary of its distinct values."""

    codes: np.ndarray
    dictionary: pa.Array

    def at(self, rows: np.ndarray | None) -> pa.DictionaryArray:
        codes = self.codes if rows is None else self.codes[rows]
        return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), self.dictionary)


def _coded(array: pa.ChunkedArray) -> _Coded:
    """A string column's codes (null: ''), read from one dictionary encoding of every chunk at once."""
    encoded = pc.dictionary_encode(pc.fill_null(array, ""))
    chunks = encoded.chunks if isinstance(encoded, pa.ChunkedArray) else [encoded]
    if not chunks:
        return _Coded(np.zeros(0, np.int32), pa.array([], pa.string()))
    dictionary = chunks[-1].dictionary
    if not all(c.dictionary.equals(dictionary) for c in chunks[:-1]):
        combined = pa.chunked_array(chunks).combine_chunks()
        return _Coded(combined.indices.to_numpy(), combined.dictionary)
    return _Coded(np.concatenate([c.indices.to_numpy() for c in chunks]), dictionary)


def _ints(table: pa.Table, name: str, rows: np.ndarray | None) -> pa.Array:
    """An integer column (of ``rows``), by numpy: the chunks' buffers are read where they lie, then picked."""
    column = table.column(name)
    if column.null_count:
        return column.combine_chunks() if rows is None else _take(column, rows)
    values = np.concatenate([c.to_numpy() for c in column.chunks]) if column.num_chunks else np.zeros(0, np.int64)
    return pa.array(values if rows is None else values[rows])


def _take(array: pa.Array | pa.ChunkedArray, rows: np.ndarray) -> pa.Array | pa.ChunkedArray:
    return array.take(pa.array(rows, pa.int64()))


def flatten(table: pa.Table, file: str, frame_offset: int | np.ndarray, phases: Phases | None = None) -> Flat:
    """Split rows (one frame, or frames of one schema concatenated) into stored windows, stored events and refused rows.

    ``frame_offset`` is where the rows' frame starts in ``file``: one offset, or one per row. ``phases``,
    when given, gains the time spent reading latency p95s from sketches (``sketch_p95``).
    """
    n = table.num_rows
    offsets = np.broadcast_to(np.asarray(frame_offset, dtype=np.int64), (n,))
    problem = frame_problem(table.schema)
    if problem is not None:  # read_frames skips such frames; rows handed in directly are refused whole
        return Flat(WINDOW_SCHEMA.empty_table(), EVENT_SCHEMA.empty_table(), _unreadable(file, offsets, problem))
    version = (table.schema.metadata or {}).get(b"schema", b"").decode(errors="replace")
    flat = layout_of(table.schema) == FLAT_LAYOUT
    if flat:
        metrics = _flat_metrics(table, phases or Phases())
        reason = _reasons(table, version, metrics, lambda name: table.column(name) if name in table.column_names else None)
    else:
        metrics = _scan_metrics(table, phases or Phases())
        reason = _reasons(table, version, metrics, _nested_label(table))
    kind = _column(table, "kind", pa.string())
    is_window = _is(kind, "window")
    if reason is None:
        kept = np.ones(n, bool)
        rejects = REJECT_SCHEMA.empty_table()
    else:
        kept = reason == ""
        refused = np.flatnonzero(~kept)
        rejects = pa.table(
            {
                "file": pa.array([file] * len(refused), pa.string()),
                "frame_offset": pa.array(offsets[refused]),
                "device_id": _plain_str(_take(_column(table, "device_id", pa.string()), refused)),
                "boot_id": _plain_str(_take(_column(table, "boot_id", pa.string()), refused)),
                "seq": _take(_column(table, "seq", pa.int64()), refused),
                "kind": _plain_str(_take(kind, refused)),
                "reason": pa.array(reason[~kept].tolist(), pa.string()),
            },
            schema=REJECT_SCHEMA,
        )
    window_rows = np.flatnonzero(kept & is_window)
    event_rows = np.flatnonzero(kept & ~is_window)
    if not window_rows.size and not event_rows.size:
        return Flat(WINDOW_SCHEMA.empty_table(), EVENT_SCHEMA.empty_table(), rejects)
    names: dict[str, _Coded | pa.ChunkedArray]
    if flat:  # already codes into each frame's dictionary: the store unifies them
        names = {name: table.column(name) for name in ("device_id", "boot_id", *STORED_LABELS)}
    else:
        labels = table.column("labels")
        names = {"device_id": _coded(table.column("device_id")), "boot_id": _coded(table.column("boot_id"))}
        names.update({name: _coded(pc.struct_field(labels, name)) for name in STORED_LABELS})
    windows = _windows(table, window_rows, names, metrics.values)
    events = _events(table, event_rows, names)
    return Flat(windows, events, rejects)


def _unreadable(file: str, offsets: np.ndarray, problem: str) -> pa.Table:
    n = offsets.size
    return pa.table(
        {
            "file": pa.array([file] * n, pa.string()),
            "frame_offset": pa.array(offsets),
            "device_id": pa.nulls(n, pa.string()),
            "boot_id": pa.nulls(n, pa.string()),
            "seq": pa.nulls(n, pa.int64()),
            "kind": pa.nulls(n, pa.string()),
            "reason": pa.array([problem] * n, pa.string()),
        },
        schema=REJECT_SCHEMA,
    )


def _named(names: _Coded | pa.ChunkedArray, rows: np.ndarray | None) -> pa.Array | pa.ChunkedArray:
    if isinstance(names, _Coded):
        return names.at(rows)
    return names if rows is None else _take(names, rows)


def _floats(values: np.ndarray | pa.ChunkedArray | None, rows: np.ndarray | None, n: int) -> pa.Array | pa.ChunkedArray:
    """A fleet value column of ``rows``: NULL where the row lacks the metric (NaN too, so SQL sums skip it instead of turning NaN)."""
    if values is None:
        return pa.nulls(n if rows is None else rows.size, pa.float64())
    if isinstance(values, np.ndarray):
        return pa.array(values if rows is None else values[rows], pa.float64(), from_pandas=True)
    column = (values if rows is None else _take(values, rows)).cast(pa.float64())
    nan = pc.is_nan(column)
    return pc.if_else(nan, pa.scalar(None, pa.float64()), column) if pc.any(nan).as_py() else column


def _windows(
    table: pa.Table, rows: np.ndarray, names: dict[str, _Coded | pa.ChunkedArray], values: dict[str, np.ndarray | pa.ChunkedArray]
) -> pa.Table:
    if rows.size == 0:
        return WINDOW_SCHEMA.empty_table()
    pick = None if rows.size == table.num_rows else rows
    columns: dict[str, pa.Array | pa.ChunkedArray] = {name: _named(coded, pick) for name, coded in names.items()}
    for name, source in (("seq", "seq"), ("start_ns", "start_unix_ns"), ("end_ns", "end_unix_ns")):
        columns[name] = _ints(table, source, pick)
    for name in (*WINDOW_METRICS, "latency_p95_s"):
        columns[name] = _floats(values.get(name), pick, table.num_rows)
    return pa.table({f.name: columns[f.name] for f in WINDOW_SCHEMA}, schema=WINDOW_SCHEMA)


def _events(table: pa.Table, rows: np.ndarray, names: dict[str, _Coded | pa.ChunkedArray]) -> pa.Table:
    if rows.size == 0:
        return EVENT_SCHEMA.empty_table()
    pick = None if rows.size == table.num_rows else rows
    columns: dict[str, pa.Array | pa.ChunkedArray] = {name: _named(coded, pick) for name, coded in names.items()}
    columns["seq"], columns["time_ns"] = _ints(table, "seq", pick), _ints(table, "start_unix_ns", pick)
    for name, source in (("type", "event_type"), ("attributes_json", "event_attributes_json")):
        columns[name] = _plain_str(table.column(source) if pick is None else _take(table.column(source), pick))
    return pa.table({f.name: columns[f.name] for f in EVENT_SCHEMA}, schema=EVENT_SCHEMA)
