"""Append-only segment files of Arrow IPC frames: length-prefixed, CRC-checked, fsync'd, rotated, on a disk budget.

A segment starts with ``EPTSEG1\\n``; each frame is ``b"EPFR" | u32 length | u32 crc32 | payload``, the
payload one Arrow IPC stream (one row per window or event) whose schema metadata names
``edgeproof.telemetry/1``. A frame is acknowledged only after its bytes are fsync'd, so a ``kill -9``
can lose at most a frame being written: its torn tail is cut off when the store next opens, and the
reader reports and skips any frame that does not check out instead of failing.

One logical schema, two physical layouts, told apart by the schema metadata ``layout``:

- ``flat-1`` (written by default): top-level columns only. The key, times and labels are columns (names
  dictionary-encoded); each metric without attributes is a few plain columns ``<metric>:<field>``
  (counters and gauges ``:value``; sketches ``:count``, ``:sum``, ``:min``, ``:max`` and the mergeable
  ``:sketch``; histograms the same with ``:bucket_counts`` on the fixed ``PROBABILITY_BOUNDS``), and the
  latency's p50/p95/p99 are computed once when the frame is written. A column is there only when some row
  of the frame has it. Metrics with attributes (or any the plain columns cannot hold) go in
  ``extra_metrics``, in the nested form; raw samples only when the recorder kept them.
- no ``layout`` (the first files): one ``labels`` struct and one ``metrics`` list of structs per row.
  Still read everywhere; nothing writes it by default any more.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from edgeproof.telemetry._schema import (
    LABEL_NAMES,
    METRICS,
    PROBABILITY_BOUNDS,
    SCHEMA_VERSION,
    Event,
    Labels,
    MetricValue,
    Record,
    Window,
)

FILE_MAGIC = b"EPTSEG1\n"
FRAME_MAGIC = b"EPFR"
_FRAME_HEAD = struct.Struct("<4sII")
SUFFIX = ".eptseg"
# A frame longer than this is a corrupt length field, not a window.
MAX_FRAME_BYTES = 64 << 20

_METRIC_TYPE = pa.struct(
    [
        ("name", pa.string()),
        ("value", pa.float64()),
        ("count", pa.int64()),
        ("sum", pa.float64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
        ("sketch", pa.binary()),
        ("bounds", pa.list_(pa.float64())),
        ("bucket_counts", pa.list_(pa.int64())),
        ("attributes", pa.map_(pa.string(), pa.string())),
    ]
)
ARROW_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("device_id", pa.string()),
        ("boot_id", pa.string()),
        ("seq", pa.int64()),
        ("start_unix_ns", pa.int64()),
        ("end_unix_ns", pa.int64()),
        ("labels", pa.struct([(name, pa.string()) for name in LABEL_NAMES])),
        ("event_type", pa.string()),
        ("event_attributes_json", pa.string()),
        ("metrics", pa.list_(_METRIC_TYPE)),
        ("raw_latency_ns", pa.list_(pa.int64())),
        ("raw_confidence", pa.list_(pa.float64())),
    ],
    metadata={"schema": SCHEMA_VERSION},
)


def _row(record: Record) -> dict[str, Any]:
    if isinstance(record, Window):
        return {
            "kind": "window",
            "device_id": record.labels.device_id,
            "boot_id": record.boot_id,
            "seq": record.seq,
            "start_unix_ns": record.start_unix_ns,
            "end_unix_ns": record.end_unix_ns,
            "labels": record.labels.to_dict(),
            "metrics": [_metric_dict(m) for m in record.metrics],
            "raw_latency_ns": record.raw_latency_ns,
            "raw_confidence": record.raw_confidence,
        }
    return {
        "kind": "event",
        "device_id": record.labels.device_id,
        "boot_id": record.boot_id,
        "seq": record.seq,
        "start_unix_ns": record.time_unix_ns,
        "end_unix_ns": record.time_unix_ns,
        "labels": record.labels.to_dict(),
        "event_type": record.type,
        "event_attributes_json": json.dumps(record.attributes, default=str, sort_keys=True),
    }


def encode_nested_frame(records: Sequence[Record], schema: pa.Schema = ARROW_SCHEMA) -> bytes:
    """One frame in the nested layout (the first files' ``labels`` struct and ``metrics`` list): kept to write old-layout files."""
    return _framed(pa.Table.from_pylist([_row(r) for r in records], schema=schema))


def _framed(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    payload = sink.getvalue().to_pybytes()
    return _FRAME_HEAD.pack(FRAME_MAGIC, len(payload), zlib.crc32(payload)) + payload


# -- the flat layout ---------------------------------------------------------------------------------

FLAT_LAYOUT = "flat-1"
FLAT_METADATA = {"schema": SCHEMA_VERSION, "layout": FLAT_LAYOUT}
# Names (device, boot, labels) as codes into a dictionary per frame; kind and event type in one byte.
NAME_CODES = pa.dictionary(pa.int32(), pa.string())
SMALL_CODES = pa.dictionary(pa.int8(), pa.string())
STORED_LABELS = tuple(name for name in LABEL_NAMES if name != "device_id")  # device_id is the key column
QUANTILE_METRIC = "edgeproof.inference.duration"
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
_NUMBER_FIELDS = {"count": pa.int64(), "sum": pa.float64(), "min": pa.float64(), "max": pa.float64()}


def metric_column(name: str, field: str) -> str:
    """The flat layout's column of one field of a metric without attributes (``edgeproof.inference.count:value``)."""
    return f"{name}:{field}"


def _metric_fields(name: str) -> dict[str, pa.DataType]:
    aggregation = METRICS[name].aggregation
    if aggregation in ("counter", "gauge"):
        return {"value": pa.float64()}
    out = dict(_NUMBER_FIELDS)
    if aggregation == "sketch":
        out["sketch"] = pa.binary()
        if name == QUANTILE_METRIC:
            out.update({q: pa.float64() for q in QUANTILES})
    else:
        out["bucket_counts"] = pa.list_(pa.int64())
    return out


# The column that says a row has the metric: the value of a counter or gauge, the count of the others.
_PRESENCE = {name: "value" if spec.aggregation in ("counter", "gauge") else "count" for name, spec in METRICS.items()}
FLAT_REQUIRED: dict[str, pa.DataType] = {
    "kind": SMALL_CODES,
    "device_id": NAME_CODES,
    "boot_id": NAME_CODES,
    "seq": pa.int64(),
    "start_unix_ns": pa.int64(),
    "end_unix_ns": pa.int64(),
    **{name: NAME_CODES for name in STORED_LABELS},
}
FLAT_OPTIONAL: dict[str, pa.DataType] = {
    "event_type": SMALL_CODES,
    "event_attributes_json": pa.string(),
    **{metric_column(name, f): t for name in METRICS for f, t in _metric_fields(name).items()},
    "extra_metrics": pa.list_(_METRIC_TYPE),
    "raw_latency_ns": pa.list_(pa.int64()),
    "raw_confidence": pa.list_(pa.float64()),
}
FLAT_TYPES = {**FLAT_REQUIRED, **FLAT_OPTIONAL}


def flat_schema(columns: Sequence[str]) -> pa.Schema:
    """The flat layout's schema of a frame with these columns (required ones first, then the others in schema order)."""
    present = set(columns)
    names = list(FLAT_REQUIRED) + [name for name in FLAT_OPTIONAL if name in present]
    return pa.schema([(name, FLAT_TYPES[name]) for name in names], metadata=FLAT_METADATA)


def layout_of(schema: pa.Schema) -> str:
    """The frame's physical layout: ``flat-1``, or ``nested`` when its metadata names none."""
    return (schema.metadata or {}).get(b"layout", b"nested").decode(errors="replace")


def frame_problem(schema: pa.Schema) -> str | None:
    """Why a frame's schema cannot be read (an unknown layout, a flat frame's missing or mistyped column), or None."""
    layout = layout_of(schema)
    if layout == "nested":
        return None
    if layout != FLAT_LAYOUT:
        return f"layout {layout!r} unknown, this reader knows {FLAT_LAYOUT!r} and nested"
    for name, expected in FLAT_TYPES.items():
        index = schema.get_field_index(name)
        if index < 0:
            if name in FLAT_REQUIRED:
                return f"{FLAT_LAYOUT} frame lacks column {name!r}"
            continue
        actual = schema.field(index).type
        if actual != expected:
            return f"{FLAT_LAYOUT} frame column {name!r} is {actual}, expected {expected}"
    return None


def _plain(metric: MetricValue, seen: set[str]) -> bool:
    """Whether the flat layout's plain columns hold ``metric`` exactly (else it goes in ``extra_metrics``)."""
    if metric.attributes or metric.name not in METRICS or metric.name in seen:
        return False
    aggregation = METRICS[metric.name].aggregation
    if aggregation in ("counter", "gauge"):
        return (
            metric.value is not None
            and (metric.count, metric.sum, metric.min, metric.max) == (0, 0.0, None, None)
            and (metric.sketch is None and metric.bounds is None and metric.bucket_counts is None)
        )
    if metric.value is not None:
        return False
    if aggregation == "sketch":
        return metric.bounds is None and metric.bucket_counts is None
    return metric.sketch is None and metric.bucket_counts is not None and tuple(metric.bounds or ()) == PROBABILITY_BOUNDS


def canonical_metrics(metrics: Sequence[MetricValue]) -> list[MetricValue]:
    """``metrics`` in the order the flat layout reads them back: plain ones in schema order, then the others as they came."""
    seen: set[str] = set()
    plain, extra = [], []
    for m in metrics:
        if _plain(m, seen):
            seen.add(m.name)
            plain.append(m)
        else:
            extra.append(m)
    return sorted(plain, key=lambda m: _METRIC_ORDER[m.name]) + extra


_METRIC_ORDER = {name: i for i, name in enumerate(METRICS)}


def _metric_dict(m: MetricValue) -> dict[str, Any]:
    return {
        "name": m.name,
        "value": m.value,
        "count": m.count,
        "sum": m.sum,
        "min": m.min,
        "max": m.max,
        "sketch": m.sketch,
        "bounds": m.bounds,
        "bucket_counts": m.bucket_counts,
        "attributes": list(m.attributes.items()),
    }


def flat_table(records: Sequence[Record]) -> pa.Table:
    """``records`` as one table in the flat layout (a column per metric field some window has)."""
    n = len(records)
    columns: dict[str, list[Any]] = {name: [None] * n for name in FLAT_REQUIRED}
    for i, record in enumerate(records):
        labels = record.labels.to_dict()
        columns["device_id"][i] = record.labels.device_id
        columns["boot_id"][i] = record.boot_id
        columns["seq"][i] = record.seq
        for name in STORED_LABELS:
            columns[name][i] = labels[name]
        if isinstance(record, Event):
            columns["kind"][i] = "event"
            columns["start_unix_ns"][i] = columns["end_unix_ns"][i] = record.time_unix_ns
            columns.setdefault("event_type", [None] * n)[i] = record.type
            attributes = json.dumps(record.attributes, default=str, sort_keys=True)
            columns.setdefault("event_attributes_json", [None] * n)[i] = attributes
            continue
        columns["kind"][i] = "window"
        columns["start_unix_ns"][i], columns["end_unix_ns"][i] = record.start_unix_ns, record.end_unix_ns
        seen: set[str] = set()
        for m in record.metrics:
            if not _plain(m, seen):
                columns.setdefault("extra_metrics", [None] * n)
                columns["extra_metrics"][i] = (columns["extra_metrics"][i] or []) + [_metric_dict(m)]
                continue
            seen.add(m.name)
            for part in _metric_fields(m.name):
                if part not in QUANTILES:
                    columns.setdefault(metric_column(m.name, part), [None] * n)[i] = getattr(m, part)
        if record.raw_latency_ns is not None or record.raw_confidence is not None:
            columns.setdefault("raw_latency_ns", [None] * n)[i] = record.raw_latency_ns
            columns.setdefault("raw_confidence", [None] * n)[i] = record.raw_confidence
    schema = flat_schema(list(columns))
    arrays = {f.name: _typed(columns[f.name], f.type) for f in schema}
    sketches = metric_column(QUANTILE_METRIC, "sketch")
    if sketches in arrays:  # the latency quantiles, once, while the window is fresh: no reader decodes a sketch for them
        arrays.update(latency_quantiles(arrays[sketches]))
        schema = flat_schema(list(arrays))
    return pa.table({f.name: arrays[f.name] for f in schema}, schema=schema)


def _typed(values: list[Any], type_: pa.DataType) -> pa.Array:
    if pa.types.is_dictionary(type_):
        return pa.array(values, pa.string()).dictionary_encode().cast(type_)
    return pa.array(values, type_)


def latency_quantiles(sketches: pa.Array) -> dict[str, pa.Array]:
    """The latency columns ``:p50``, ``:p95``, ``:p99`` of a column of serialized sketches (null where a sketch is null or empty)."""
    from edgeproof.fleet._sketch import quantiles_of  # the column-at-a-time reader; imported here: fleet imports telemetry

    values = quantiles_of(sketches, tuple(QUANTILES.values()))
    return {metric_column(QUANTILE_METRIC, name): pa.array(row, pa.float64(), from_pandas=True) for name, row in zip(QUANTILES, values)}


def encode_frame(records: Sequence[Record]) -> bytes:
    """One frame (head + Arrow IPC stream) holding ``records``, in the flat layout."""
    return _framed(flat_table(records))


def _flat_records(table: pa.Table) -> list[Record]:
    """Records of a flat-layout table (checked by ``frame_problem``); metrics come back in ``canonical_metrics`` order."""
    plain = [
        (name, [(f, metric_column(name, f)) for f in _metric_fields(name) if f not in QUANTILES])
        for name in METRICS
        if metric_column(name, _PRESENCE[name]) in table.column_names
    ]
    out: list[Record] = []
    for row in table.to_pylist():
        labels = Labels.from_dict(row)
        if row["kind"] == "event":
            attributes = json.loads(row.get("event_attributes_json") or "{}")
            out.append(Event(labels, row["boot_id"], row["seq"], row["start_unix_ns"], row.get("event_type"), attributes))
            continue
        if row["kind"] != "window":
            raise ValueError(f"unknown record kind {row['kind']!r}")
        metrics = []
        for name, fields in plain:
            if row[metric_column(name, _PRESENCE[name])] is None:
                continue
            values = {f: row[column] for f, column in fields}
            if "bucket_counts" in values:
                values["bounds"] = list(PROBABILITY_BOUNDS)
            metrics.append(MetricValue(name=name, **values))
        metrics += [_metric_of(m) for m in row.get("extra_metrics") or [] if m["name"] in METRICS]
        out.append(_window_of(row, labels, metrics))
    return out


def _window_of(row: dict[str, Any], labels: Labels, metrics: list[MetricValue]) -> Window:
    """A window from one frame row of either layout (raw samples only where the row has them)."""
    return Window(
        labels,
        row["boot_id"],
        row["seq"],
        row["start_unix_ns"],
        row["end_unix_ns"],
        metrics,
        row.get("raw_latency_ns"),
        row.get("raw_confidence"),
    )


def _metric_of(m: dict[str, Any]) -> MetricValue:
    return MetricValue(
        name=m["name"],
        value=m["value"],
        count=m["count"] or 0,
        sum=m["sum"] or 0.0,
        min=m["min"],
        max=m["max"],
        sketch=m["sketch"],
        bounds=m["bounds"],
        bucket_counts=m["bucket_counts"],
        attributes=dict(m["attributes"] or []),
    )


def _records_of(payload: bytes) -> list[Record]:
    """Records of one frame payload (either layout); raises ValueError when it is not a readable ``edgeproof.telemetry/1`` frame."""
    try:
        table = pa.ipc.open_stream(payload).read_all()
    except pa.ArrowInvalid as exc:
        raise ValueError(f"not an Arrow IPC stream: {exc}") from exc
    version = (table.schema.metadata or {}).get(b"schema", b"").decode(errors="replace")
    if version != SCHEMA_VERSION:
        raise ValueError(f"schema version {version or 'missing'!r}, this reader knows {SCHEMA_VERSION!r}")
    problem = frame_problem(table.schema)
    if problem is not None:
        raise ValueError(problem)
    if layout_of(table.schema) == FLAT_LAYOUT:
        return _flat_records(table)
    out: list[Record] = []
    for row in table.to_pylist():
        labels = Labels.from_dict(row["labels"] or {})
        if row["kind"] == "window":
            metrics = [_metric_of(m) for m in row["metrics"] or [] if m["name"] in METRICS]
            out.append(_window_of(row, labels, metrics))
        elif row["kind"] == "event":
            attributes = json.loads(row["event_attributes_json"] or "{}")
            out.append(Event(labels, row["boot_id"], row["seq"], row["start_unix_ns"], row["event_type"], attributes))
        else:
            raise ValueError(f"unknown record kind {row['kind']!r}")
    return out


@dataclass(frozen=True)
class SegmentProblem:
    """A part of a segment file that did not read back, and was skipped."""

    path: Path
    offset: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.offset}: {self.what}"


@dataclass
class SegmentRead:
    """Everything that read back from a folder of segments, and what had to be skipped."""

    records: list[Record] = field(default_factory=list)
    problems: list[SegmentProblem] = field(default_factory=list)

    @property
    def windows(self) -> list[Window]:
        return [r for r in self.records if isinstance(r, Window)]

    @property
    def events(self) -> list[Event]:
        return [r for r in self.records if isinstance(r, Event)]


def _scan(path: Path, data: bytes) -> Iterator[tuple[int, int, list[Record] | SegmentProblem]]:
    """(frame offset, end offset, records or the problem) for every frame of one segment's bytes."""
    if not data.startswith(FILE_MAGIC):
        yield 0, len(data), SegmentProblem(path, 0, "not an edgeproof telemetry segment (bad file magic)")
        return
    pos = len(FILE_MAGIC)
    while pos < len(data):
        if len(data) - pos < _FRAME_HEAD.size:
            yield pos, len(data), SegmentProblem(path, pos, f"torn tail: {len(data) - pos} bytes of a frame head")
            return
        magic, length, crc = _FRAME_HEAD.unpack_from(data, pos)
        start, end = pos + _FRAME_HEAD.size, pos + _FRAME_HEAD.size + length
        if magic != FRAME_MAGIC or length > MAX_FRAME_BYTES:
            following = data.find(FRAME_MAGIC, pos + 1)
            resume = following if following != -1 else len(data)
            yield pos, resume, SegmentProblem(path, pos, f"bad frame head; skipped {resume - pos} bytes to the next frame")
            pos = resume
            continue
        if end > len(data):
            yield pos, len(data), SegmentProblem(path, pos, f"torn tail: frame of {length} bytes has {len(data) - start}")
            return
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            yield pos, end, SegmentProblem(path, pos, "checksum mismatch; frame skipped")
        else:
            try:
                yield pos, end, _records_of(payload)
            except (ValueError, KeyError, TypeError) as exc:
                yield pos, end, SegmentProblem(path, pos, f"{exc}; frame skipped")
        pos = end


def segment_files(directory: str | Path) -> list[Path]:
    """Segment files in ``directory``, oldest first (their names start with the creation time)."""
    return sorted(Path(directory).glob(f"*{SUFFIX}"))


def read_segments(directory: str | Path) -> SegmentRead:
    """Every record in the segments of ``directory``; frames that do not check out are reported (file and offset) and skipped."""
    out = SegmentRead()
    for path in segment_files(directory):
        try:
            data = path.read_bytes()
        except OSError as exc:
            out.problems.append(SegmentProblem(path, 0, f"unreadable: {exc.strerror or exc}"))
            continue
        for _, _, item in _scan(path, data):
            if isinstance(item, SegmentProblem):
                out.problems.append(item)
            else:
                out.records.extend(item)
    return out


def segment_folders(root: str | Path) -> list[Path]:
    """Every folder at or below ``root`` that holds segment files (one per device, as a fleet collects them)."""
    return sorted({p.parent for p in Path(root).rglob(f"*{SUFFIX}") if p.is_file()})


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentStore:
    """Writes frames to rotated segment files under ``directory`` within a disk budget and a free-space headroom.

    ``max_disk_bytes`` caps the folder: the oldest segments are deleted to make room. ``min_free_bytes``
    is left free on the file system: a frame that would eat into it is refused (``append`` returns
    False) rather than filling the disk the device needs for itself.
    """

    def __init__(
        self,
        directory: str | Path,
        boot_id: str,
        segment_bytes: int = 4 << 20,
        max_disk_bytes: int = 64 << 20,
        min_free_bytes: int = 256 << 20,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.boot_id = boot_id
        self.segment_bytes = segment_bytes
        self.max_disk_bytes = max_disk_bytes
        self.min_free_bytes = min_free_bytes
        self.refused_frames = 0
        self._file: Any = None
        self._path: Path | None = None
        self.last_seq = self._recover()
        # what writing a flat frame imports (the sketch reader for the latency quantiles, pyarrow.compute,
        # ~0.2 s here), imported now: the first window is then written when it closes, not an import later
        from edgeproof.fleet import _sketch  # noqa: F401

    def _recover(self) -> int:
        """Cut torn tails left by a crash, and return the highest sequence number this boot already wrote (-1 if none)."""
        last = -1
        for staging in self.directory.glob(f"*{SUFFIX}.tmp"):
            staging.unlink()  # a segment that never got its head written
        for path in segment_files(self.directory):
            data = path.read_bytes()
            good_end = len(FILE_MAGIC) if data.startswith(FILE_MAGIC) else 0
            for _, end, item in _scan(path, data):
                if isinstance(item, list):
                    good_end = end
                    last = max([last] + [r.seq for r in item if r.boot_id == self.boot_id])
                elif item.what.startswith("torn tail") and good_end:
                    with path.open("r+b") as f:
                        f.truncate(good_end)
                        f.flush()
                        os.fsync(f.fileno())
        return last

    def append(self, records: Sequence[Record]) -> bool:
        """Write ``records`` as one frame and fsync it; True once durable, False when the disk headroom refused it."""
        frame = encode_frame(records)
        if shutil.disk_usage(self.directory).free - len(frame) < self.min_free_bytes:
            self.refused_frames += 1
            return False
        if self._file is None or self._file.tell() + len(frame) > self.segment_bytes:
            self._rotate(records[0].seq)
        self._enforce_budget(len(frame))
        self._file.write(frame)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.last_seq = max(self.last_seq, max(r.seq for r in records))
        return True

    def _rotate(self, first_seq: int) -> None:
        """Start a new segment: its magic is written and fsync'd under a temporary name, then renamed in,
        so a crash never leaves a segment without its head."""
        self.close()
        name = f"{time.time_ns():020d}-{self.boot_id[:8]}-{first_seq:012d}{SUFFIX}"
        staging = self.directory / (name + ".tmp")
        with staging.open("xb") as f:
            f.write(FILE_MAGIC)
            f.flush()
            os.fsync(f.fileno())
        self._path = staging.rename(self.directory / name)
        _fsync_dir(self.directory)
        self._file = self._path.open("ab")

    def _enforce_budget(self, incoming: int) -> None:
        files = segment_files(self.directory)
        used = sum(p.stat().st_size for p in files)
        for path in files:
            if used + incoming <= self.max_disk_bytes or path == self._path:
                break
            used -= path.stat().st_size
            path.unlink()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
