"""The on-device recorder: windows on disk in the schema, consent, the fallback policy, events, sampling, malformed segments."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgeproof.telemetry import (
    METRICS,
    SCHEMA_VERSION,
    FallbackPolicy,
    Labels,
    RecordedSession,
    Recorder,
    TelemetryConfig,
    TelemetryConfigError,
    draws_raw_samples,
    load_fallback,
    load_json_schema,
    load_telemetry_config,
    merged_histogram,
    merged_sketch,
    quantile,
    read_segments,
    segment_files,
)
from edgeproof.telemetry._segments import ARROW_SCHEMA, FILE_MAGIC, encode_nested_frame

LABELS = Labels(device_id="cam-0042", model_sha256="ab" * 32, firmware_version="36.3", accelerator="cpu", cohort="canary", region="eu")


def config(tmp_path: Path, **kw) -> TelemetryConfig:
    kw.setdefault("min_free_bytes", 0)
    return TelemetryConfig(directory=tmp_path / "telemetry", labels=LABELS, **kw)


def softmax_model(path: Path, scale: float = 1.0) -> Path:
    """A 10-class "classifier": softmax(scale * x)."""
    k = helper.make_tensor("k", TensorProto.FLOAT, [], [scale])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["z"]), helper.make_node("Softmax", ["z"], ["y"], axis=1)],
        "clf",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [k],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_windows_on_disk_validate_against_the_schema_and_hold_what_ran(tmp_path):
    rec = Recorder(config(tmp_path, sample_every=4), read_power=False)
    rec.enable(start_thread=False)
    logits = np.array([[0.1, 3.0, 0.2, -1.0]], dtype=np.float32)
    infer = rec.wrap(lambda x: logits)
    image = np.random.default_rng(0).random((1, 1, 16, 16), dtype=np.float32)
    for _ in range(40):
        infer(image)
    for _ in range(3):
        rec.count("preprocess.resize")
    rec.flush()
    rec.close()

    read = read_segments(tmp_path / "telemetry")
    assert read.problems == []
    schema = load_json_schema()
    for record in read.records:
        jsonschema.validate(record.to_dict(), schema)
    w = read.windows[0]
    assert (w.labels, w.boot_id, w.seq) == (LABELS, rec.boot_id, w.seq)
    assert w.metric("edgeproof.inference.count").value == 40
    assert w.metric("edgeproof.path.count", path="preprocess.resize").value == 3
    assert w.metric("edgeproof.telemetry.confidence.samples").value == 10  # 1 in 4
    assert w.metric("edgeproof.telemetry.input_quality.samples").value == 10
    assert w.metric("edgeproof.telemetry.confidence.cost").value > 0
    duration = w.metric("edgeproof.inference.duration")
    assert duration.count == 40 and 0 < duration.min <= duration.max
    p50 = quantile(merged_sketch([duration]), 0.5)
    assert duration.min * 0.99 <= p50 <= duration.max * 1.01
    _, counts = merged_histogram([w.metric("edgeproof.inference.confidence")])
    assert sum(counts) == 10 and counts[8] == 10  # top-1 = 0.88: the (0.8, 0.9] bucket
    assert 0.4 < w.metric("edgeproof.input.brightness").sum / 10 < 0.6
    assert w.raw_latency_ns is None  # this device was not drawn for raw samples
    assert w.metric("process.memory.usage").value > 0
    # sequence numbers are unique within the boot and cover events and windows alike
    seqs = [r.seq for r in read.records]
    assert sorted(seqs) == list(range(len(seqs)))


def test_schema_file_names_every_metric_the_code_writes():
    schema = load_json_schema()
    assert schema["title"] == SCHEMA_VERSION
    assert schema["x-metrics"] == {name: {"unit": s.unit, "aggregation": s.aggregation} for name, s in METRICS.items()}


def test_nothing_is_collected_until_enabled(tmp_path):
    rec = Recorder(config(tmp_path), read_power=False)
    infer = rec.wrap(lambda x: x + 1)
    assert infer(1) == 2
    rec.count("x")
    rec.tick()
    rec.close()
    assert not (tmp_path / "telemetry").exists()


def test_raw_samples_only_on_drawn_devices_and_never_inputs(tmp_path):
    shares = [draws_raw_samples(f"dev-{i}", 0.1) for i in range(2000)]
    assert 0.07 < sum(shares) / len(shares) < 0.13
    assert draws_raw_samples("dev-1", 0.1) == draws_raw_samples("dev-1", 0.1)
    rec = Recorder(config(tmp_path, raw_sample_share=1.0, sample_every=1), read_power=False)
    rec.enable(start_thread=False)
    secret = np.full((1, 8, 8), 0.123456789, dtype=np.float32)
    infer = rec.wrap(lambda x: np.array([[0.2, 0.8]]))
    for _ in range(5):
        infer(secret)
    rec.close()
    w = read_segments(tmp_path / "telemetry").windows[0]
    assert len(w.raw_latency_ns) == 5 and w.raw_confidence == pytest.approx([0.8] * 5)
    on_disk = b"".join(p.read_bytes() for p in segment_files(tmp_path / "telemetry"))
    assert secret.tobytes()[:16] not in on_disk


def test_policy_fallback_runs_below_the_threshold_and_is_never_called_provider_fallback(tmp_path):
    rec = Recorder(config(tmp_path), read_power=False)
    rec.enable(start_thread=False)
    calls = []
    policy = FallbackPolicy(min_confidence=0.6, fallback=lambda x: calls.append(x) or np.array([[0.0, 1.0]]))
    infer = rec.wrap(lambda x: np.array([[x, 1 - x]]), policy=policy)
    answers = [infer(p) for p in (0.9, 0.55, 0.3, 0.5)]  # top-1: 0.9, 0.55, 0.7, 0.5
    assert calls == [0.55, 0.5]
    assert answers[1].tolist() == [[0.0, 1.0]] and answers[0][0, 0] == 0.9
    rec.close()
    read = read_segments(tmp_path / "telemetry")
    w = read.windows[0]
    assert w.metric("edgeproof.fallback.policy").value == 2
    assert w.metric("edgeproof.telemetry.confidence.samples").value == 4
    assert w.metric("edgeproof.fallback.provider.inferences") is None
    assert "policy_fallback_activated" in [e.type for e in read.events]


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_onnx_session_events_placement_swap_and_fallback_model(tmp_path):
    primary, sure = softmax_model(tmp_path / "model.onnx", 1.0), softmax_model(tmp_path / "model.fp32.onnx", 50.0)
    rec = Recorder(config(tmp_path), read_power=False)
    rec.enable(start_thread=False)
    policy = FallbackPolicy(0.6, load_fallback("model.fp32.onnx", tmp_path))
    session = RecordedSession(rec, primary, requested_providers=["CUDAExecutionProvider", "CPUExecutionProvider"], policy=policy)
    x = np.linspace(0, 1, 10, dtype=np.float32)[None]
    out = session.run(None, {"x": x})
    assert out[0].max() > 0.99  # the sharper fallback model answered
    session.swap(sure)
    session.run(None, {"x": x})
    rec.close()
    read = read_segments(tmp_path / "telemetry")
    events = {e.type: e for e in read.events}
    assert events["model_load"].attributes["model_sha256"] != events["model_swap"].attributes["new_model_sha256"]
    placement = events["provider_placement"].attributes
    assert placement["missing"] == ["CUDAExecutionProvider"] and placement["whole_model_on_cpu"]
    first, second = read.windows[0], read.windows[-1]
    assert first.metric("edgeproof.fallback.policy").value == 1
    assert second.metric("edgeproof.fallback.policy").value == 0
    assert second.labels.model_sha256 == events["model_swap"].attributes["new_model_sha256"]


def test_runtime_error_is_an_event_and_recreates_the_session(tmp_path):
    rec = Recorder(config(tmp_path), read_power=False)
    rec.enable(start_thread=False)
    session = RecordedSession(rec, softmax_model(tmp_path / "m.onnx"))
    with pytest.raises(Exception):  # noqa: B017 — ORT raises its own types for a wrong shape
        session.run(None, {"x": np.zeros((1, 3), dtype=np.float32)})
    session.run(None, {"x": np.zeros((1, 10), dtype=np.float32)})
    rec.close()
    read = read_segments(tmp_path / "telemetry")
    types = [e.type for e in read.events]
    assert "runtime_error" in types and "session_recreated" in types
    assert read.windows[0].metric("edgeproof.inference.errors").value == 1
    assert read.windows[0].metric("edgeproof.inference.count").value == 1


def test_sampler_reads_psi_and_reports_throttle_and_power_mode_changes(tmp_path):
    root = tmp_path / "root"
    (root / "proc/pressure").mkdir(parents=True)
    (root / "proc/pressure/memory").write_text(
        "some avg10=1.50 avg60=0.20 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )
    throttle = root / "sys/devices/system/cpu/cpu0/thermal_throttle/core_throttle_count"
    throttle.parent.mkdir(parents=True)
    throttle.write_text("3\n")
    mode = root / "var/lib/nvpmodel/status"
    mode.parent.mkdir(parents=True)
    mode.write_text("pmode:0001 fmode:quiet\n")
    rec = Recorder(config(tmp_path, root=root, system_period_s=0.001), read_power=False)
    rec.enable(start_thread=False)
    rec.tick()
    throttle.write_text("5\n")
    mode.write_text("pmode:0000\n")
    rec.tick(now_ns=2**62)
    rec.close()
    read = read_segments(tmp_path / "telemetry")
    events = {e.type: e.attributes for e in read.events}
    assert events["thermal_throttle_changed"]["new_events"] == 2
    assert events["power_mode_changed"] == {"old": "pmode:0001", "new": "pmode:0000"}
    w = read.windows[0]
    assert w.metric("edgeproof.memory.pressure.some.avg10").value == 1.5
    assert w.metric("edgeproof.cpu.pressure.some.avg10") is None  # absent, not zero
    assert w.metric("process.memory.usage") is None  # no /proc/self/statm under the fake root
    assert w.metric("hw.power") is None


def test_malformed_segments_are_reported_with_file_and_offset_and_skipped(tmp_path):
    d = tmp_path / "telemetry"
    rec = Recorder(config(tmp_path, window_s=1e-9), read_power=False)
    rec.enable(start_thread=False)
    infer = rec.wrap(lambda: None)
    for _ in range(3):
        infer()
        rec.tick()
    rec.close()
    good = segment_files(d)[0]
    data = good.read_bytes()
    total = len(read_segments(d).records)
    first_frame_len = struct.unpack_from("<I", data, len(FILE_MAGIC) + 4)[0]
    second = len(FILE_MAGIC) + 12 + first_frame_len
    flipped = bytearray(data)
    flipped[second + 40] ^= 0xFF
    (d / "00000000000000000001-flipped.eptseg").write_bytes(bytes(flipped))
    (d / "00000000000000000002-truncated.eptseg").write_bytes(data[:-7])
    (d / "00000000000000000003-garbage.eptseg").write_bytes(b"not a segment at all")
    wrong = ARROW_SCHEMA.with_metadata({"schema": "edgeproof.telemetry/0"})
    (d / "00000000000000000004-oldschema.eptseg").write_bytes(FILE_MAGIC + encode_nested_frame(read_segments(d).windows[:1], wrong))
    read = read_segments(d)
    problems = {p.path.name: p for p in read.problems}
    assert problems["00000000000000000001-flipped.eptseg"].offset == second
    assert "checksum" in problems["00000000000000000001-flipped.eptseg"].what
    assert "torn tail" in problems["00000000000000000002-truncated.eptseg"].what
    assert "magic" in problems["00000000000000000003-garbage.eptseg"].what
    assert "edgeproof.telemetry/0" in problems["00000000000000000004-oldschema.eptseg"].what
    assert str(problems["00000000000000000001-flipped.eptseg"]).startswith(str(d / "00000000000000000001-flipped.eptseg") + f":{second}:")
    # every frame that checks out still reads: 3 copies of the good file less one frame and one torn tail
    assert total < len(read.records) < 3 * total


def test_segments_rotate_within_the_disk_budget_and_respect_the_headroom(tmp_path):
    rec = Recorder(config(tmp_path, window_s=1e-9, segment_bytes=6000, max_disk_bytes=20000), read_power=False)
    rec.enable(start_thread=False)
    for _ in range(40):
        rec.tick()
    rec.close()
    files = segment_files(tmp_path / "telemetry")
    assert len(files) > 1
    assert sum(p.stat().st_size for p in files) <= 20000
    assert read_segments(tmp_path / "telemetry").problems == []
    full = Recorder(config(tmp_path / "full", min_free_bytes=1 << 62), read_power=False)
    full.enable(start_thread=False)
    full.flush()
    assert full.refused_records == 0 and full._pending  # kept for a later try, not written
    full.close()
    assert read_segments(tmp_path / "full" / "telemetry").records == []


def test_config_file_and_its_errors(tmp_path):
    good = tmp_path / "telemetry.toml"
    good.write_text(
        "[telemetry]\nenabled = false\nwindow_s = 60\nraw_sample_share = 0.05\nmax_disk_mib = 8\n"
        'policy = {min_confidence = 0.6, fallback = "model.fp32.onnx"}\n[telemetry.labels]\ndevice_id = "cam-1"\ncohort = "canary"\n'
    )
    cfg, policy = load_telemetry_config(good)
    assert (cfg.enabled, cfg.window_s, cfg.max_disk_bytes, cfg.labels.cohort) == (False, 60.0, 8 << 20, "canary")
    assert policy is not None and (policy.min_confidence, policy.fallback) == (0.6, "model.fp32.onnx")
    for body, words in [
        ('[telemetry]\n[telemetry.labels]\ncohort = "a"\n', "labels.device_id: missing"),
        ('[telemetry]\nwindow = 3\n[telemetry.labels]\ndevice_id = "a"\n', "telemetry.window: unknown key"),
        ('[telemetry]\npolicy = {min_confidence = 2, fallback = "m.onnx"}\n[telemetry.labels]\ndevice_id = "a"\n', "policy.min_confidence"),
        ('[telemetry]\nraw_sample_share = 3\n[telemetry.labels]\ndevice_id = "a"\n', "raw_sample_share must be within 0..1"),
    ]:
        good.write_text(body)
        with pytest.raises(TelemetryConfigError, match=words) as err:
            load_telemetry_config(good)
        assert str(err.value).startswith(str(good))


def test_fallback_function_by_file_and_name(tmp_path):
    (tmp_path / "rules.py").write_text("def safe(x):\n    return 'safe'\n")
    assert load_fallback("rules.py:safe", tmp_path)(1) == "safe"
    with pytest.raises(ValueError, match="no function 'nope'"):
        load_fallback("rules.py:nope", tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_fallback("missing.onnx", tmp_path)


def test_json_form_round_trips_through_json(tmp_path):
    rec = Recorder(config(tmp_path), read_power=False)
    rec.enable(start_thread=False)
    rec.wrap(lambda: None)()
    rec.close()
    for record in read_segments(tmp_path / "telemetry").records:
        assert json.loads(json.dumps(record.to_dict()))["schema"] == SCHEMA_VERSION


def test_cli_reads_a_folder_and_names_what_it_skipped(tmp_path):
    from typer.testing import CliRunner

    from edgeproof.cli import app

    rec = Recorder(config(tmp_path), read_power=False)
    rec.enable(start_thread=False)
    infer = rec.wrap(lambda: None)
    for _ in range(7):
        infer()
    rec.close()
    (tmp_path / "telemetry" / "0-bad.eptseg").write_bytes(b"junk")
    result = CliRunner().invoke(app, ["telemetry", "read", str(tmp_path / "telemetry")])
    assert result.exit_code == 0, result.output
    assert "cam-0042" in result.output and "canary" in result.output
    assert "0-bad.eptseg:0: not an edgeproof telemetry segment" in result.output
    missing = CliRunner().invoke(app, ["telemetry", "read", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2
