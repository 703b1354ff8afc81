"""Segment layouts: the flat layout round-trips records, old nested files still read and ingest the same, bad flat frames are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import run_cli
from edgeproof.field import field_record
from edgeproof.fleet import FleetStore, flatten, read_frames
from edgeproof.fleet._frames import encode_table_frame
from edgeproof.fleet._phases import Phases
from edgeproof.model import sha256_file
from edgeproof.telemetry import Event, Labels, MetricValue, Recorder, TelemetryConfig, Window, read_segments
from edgeproof.telemetry._aggregate import add_many, histogram_metric, new_sketch, sketch_metric
from edgeproof.telemetry._schema import PROBABILITY_BOUNDS
from edgeproof.telemetry._segments import (
    FILE_MAGIC,
    FLAT_LAYOUT,
    _records_of,
    canonical_metrics,
    encode_frame,
    encode_nested_frame,
    flat_table,
    layout_of,
    metric_column,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits"
LABELS = Labels(
    device_id="dev-1",
    model_sha256=sha256_file(EXAMPLE / "model.onnx"),
    bom_id="bom-7",
    firmware_version="fw-1",
    accelerator="cpu",
    power_mode="max",
    chip_revision="A1",
    region="eu",
    cohort="canary",
)


def _windows_and_events(labels: Labels = LABELS, boot: str = "boot-1") -> list[Window | Event]:
    """Every shape of metric a window carries: sketches, histograms, counters, gauges, attributed series, raw samples."""
    rng = np.random.default_rng(3)
    records: list[Window | Event] = []
    for i in range(4):
        latency_s = rng.lognormal(np.log(2e-3), 0.3, 400)
        sketch = new_sketch()
        add_many(sketch, latency_s)
        brightness = new_sketch()
        add_many(brightness, rng.uniform(0.2, 0.8, 50))
        metrics = [
            sketch_metric("edgeproof.inference.duration", sketch, (float(latency_s.sum()), float(latency_s.min()), float(latency_s.max()))),
            MetricValue("edgeproof.inference.count", value=400.0),
            MetricValue("edgeproof.inference.errors", value=float(i)),
            histogram_metric("edgeproof.inference.confidence", PROBABILITY_BOUNDS, list(rng.uniform(0.5, 1.0, 20))),
            sketch_metric("edgeproof.input.brightness", brightness),
            sketch_metric("edgeproof.input.statistic", brightness, statistic="mean"),
            MetricValue("edgeproof.path.count", value=7.0, attributes={"path": "cache_hit"}),
            MetricValue("hw.temperature", value=51.5),
            MetricValue("hw.energy", value=0.8),
            MetricValue("edgeproof.fallback.provider.inferences", value=2.0, attributes={"provider": "CPU"}),
        ]
        raw = (list(range(1000, 1010)), [0.9] * 10) if i == 2 else (None, None)
        start = 1_700_000_000_000_000_000 + i * 60_000_000_000
        records.append(Window(labels, boot, 2 * i, start, start + 60_000_000_000, canonical_metrics(metrics), *raw))
        records.append(Event(labels, boot, 2 * i + 1, start + 5, "thermal_throttle_changed", {"throttled": i % 2 == 0, "zone": "soc"}))
    return records


def _write(path: Path, frames: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(FILE_MAGIC + b"".join(frames))
    return path


def test_flat_frame_round_trips_every_record_and_keeps_the_mergeable_sketch():
    records = _windows_and_events()
    frame = encode_frame(records)
    assert _records_of(frame[12:]) == records
    table = flat_table(records)
    assert layout_of(table.schema) == FLAT_LAYOUT
    # the latency quantiles sit beside the sketch, computed once when the frame was written
    sketch = records[0].metric("edgeproof.inference.duration").sketch  # type: ignore[union-attr]
    assert table.column(metric_column("edgeproof.inference.duration", "sketch"))[0].as_py() == sketch
    from edgeproof.telemetry._aggregate import sketch_from_bytes

    p95 = table.column(metric_column("edgeproof.inference.duration", "p95"))[0].as_py()
    assert p95 == pytest.approx(sketch_from_bytes(sketch).get_quantile_value(0.95), rel=1e-9)
    # raw samples only for the window that kept them; a frame without any has no such column
    assert table.column("raw_latency_ns").null_count == len(records) - 1
    assert "raw_latency_ns" not in flat_table([records[0]]).column_names


def test_a_recorders_own_windows_round_trip_through_the_flat_layout(tmp_path):
    config = TelemetryConfig(directory=tmp_path / "tel", labels=LABELS, min_free_bytes=0, sample_every=1)
    rec = Recorder(config, boot_id="boot-r", read_power=False)
    rec.enable(start_thread=False)
    infer = rec.wrap(lambda x: np.array([[0.1, 0.7, 0.2]]))
    for i in range(300):
        infer(i)
    rec.flush()
    rec.close()
    read = read_segments(tmp_path / "tel")
    assert not read.problems and read.windows
    with pa.ipc.open_stream(next((tmp_path / "tel").glob("*.eptseg")).read_bytes()[20:]) as reader:
        assert layout_of(reader.schema) == FLAT_LAYOUT  # the recorder writes the flat layout by default
    assert _records_of(encode_frame(read.records)[12:]) == read.records


def test_an_old_nested_file_reads_and_ingests_the_same_as_its_flat_rewrite(tmp_path):
    good = _windows_and_events()
    unlabelled = _windows_and_events(Labels(device_id="dev-2", cohort="canary"), boot="boot-2")[:2]
    negative = Window(LABELS, "boot-3", 0, 10, 20, [MetricValue("edgeproof.inference.errors", value=-1.0)])
    records = good + unlabelled + [negative]
    old = _write(tmp_path / "old" / "dev" / "0001-old.eptseg", [encode_nested_frame(records[:5]), encode_nested_frame(records[5:])])
    new = _write(tmp_path / "new" / "dev" / "0001-new.eptseg", [encode_frame(records[:5]), encode_frame(records[5:])])
    assert len(old.read_bytes()) > 0 and len(new.read_bytes()) > 0
    # the device-side reader (telemetry CLI, field gate, report panel): the same records from either layout
    assert read_segments(old.parent).records == read_segments(new.parent).records == records
    # the fleet: the same stored rows and the same refusals
    seen = []
    for folder in (old.parent, new.parent):
        with FleetStore(tmp_path / f"{folder.parent.name}.duckdb") as store:
            report = store.ingest([folder])
            assert not report.problems
            windows = store.con.execute("SELECT * FROM windows ORDER BY ALL").fetchall()
            events = store.con.execute("SELECT * FROM events ORDER BY ALL").fetchall()
            rejects = store.con.execute("SELECT device_id, boot_id, seq, kind, reason FROM rejects ORDER BY ALL").fetchall()
        seen.append((windows, events, rejects))
    assert seen[0] == seen[1]
    windows, events, rejects = seen[0]
    assert len(windows) == 4 and len(events) == 4
    assert ("dev-1", "boot-3", 0, "window", "negative count in edgeproof.inference.errors") in rejects
    assert sum(1 for r in rejects if r[3] and r[4].startswith("missing labels")) == 2
    p95 = windows[0][-1]
    assert p95 is not None and 1e-3 < p95 < 1e-2
    # every reader above the segment reader: the field gate and `telemetry read`
    record, summary = field_record(old.parent.parent, model_sha256=LABELS.model_sha256)
    flat_record, _ = field_record(new.parent.parent, model_sha256=LABELS.model_sha256)
    assert summary.windows == 5 and record.latency.p95_ms == flat_record.latency.p95_ms
    out = run_cli("telemetry", "read", str(old.parent))
    assert out.returncode == 0 and "dev-1" in out.stdout


@pytest.mark.parametrize(
    ("damage", "what"),
    [
        (lambda t: t.drop_columns(["boot_id"]), "flat-1 frame lacks column 'boot_id'"),
        (lambda t: t.set_column(t.schema.get_field_index("seq"), "seq", t.column("seq").cast(pa.string())), "column 'seq' is string"),
        (lambda t: t.replace_schema_metadata({"schema": "edgeproof.telemetry/1", "layout": "flat-9"}), "layout 'flat-9' unknown"),
    ],
)
def test_a_malformed_flat_frame_is_refused_with_its_file_and_offset(tmp_path, damage, what):
    records = _windows_and_events()
    good = encode_frame(records[:2])
    bad = encode_table_frame(damage(flat_table(records[2:])))
    path = _write(tmp_path / "tel" / "0001.eptseg", [good, bad])
    offset = len(FILE_MAGIC) + len(good)
    problems = [str(item) for item in read_frames(path) if not hasattr(item, "table")]
    assert problems == [f"{path}:{offset}: {problems[0].split(': ', 1)[1]}"] and what in problems[0]
    assert "\n" not in problems[0]
    read = read_segments(path.parent)
    assert read.records == records[:2] and [str(p) for p in read.problems] == problems
    with FleetStore(tmp_path / "fleet.duckdb") as store:
        report = store.ingest([path])
        assert report.windows == 1 and report.events == 1
        assert store.con.execute("SELECT file, frame_offset FROM frame_problems").fetchall() == [(str(path.resolve()), offset)]


def test_flattening_a_flat_frame_reads_the_devices_p95_and_decodes_no_sketch():
    records = _windows_and_events()
    nested = pa.ipc.open_stream(encode_nested_frame(records)[12:]).read_all()
    phases_nested, phases_flat = Phases(), Phases()
    from_nested = flatten(nested, "nested", 0, phases_nested)
    from_flat = flatten(flat_table(records), "flat", 0, phases_flat)
    assert "sketch_p95" in phases_nested.wall_s and "sketch_p95" not in phases_flat.wall_s
    assert from_flat.windows.to_pylist() == from_nested.windows.to_pylist()
    assert from_flat.events.to_pylist() == from_nested.events.to_pylist()
    # names stay codes into the frame's dictionaries: the store interns them from there
    assert from_flat.windows.schema.field("device_id").type == pa.dictionary(pa.int32(), pa.string())
