"""Host measurement: scenarios, raw samples kept, record integrity, cold start, placement, history."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import DIGITS_MODEL, make_matmul_model, run_cli
from edgeproof import history
from edgeproof.errors import DataError, RecordError
from edgeproof.measure.placement import parse_profile, placement_of
from edgeproof.measure.runner import ProfileOptions, profile_model
from edgeproof.measure.scenarios import parse_scenario
from edgeproof.records import NodeRecord, RunRecord, load_record, save_record

QUICK = dict(min_sessions=2, max_sessions=2, samples_per_session=60, warmup=5, time_budget_s=10, cold_start_repeats=1, check_fitness=False)


@pytest.fixture(scope="module")
def digits_record():
    return profile_model(DIGITS_MODEL, options=ProfileOptions(**QUICK))


def test_record_keeps_samples_and_all_figures(digits_record, tmp_path):
    r = digits_record
    assert r.latency.n_sessions == 2 and r.latency.n_samples == 120
    assert all(len(s.warmup_ms) == 5 for s in r.sessions)
    for key in ("p50", "p95", "p99"):
        iv = r.latency.ci[key]
        assert iv.low <= getattr(r.latency, f"{key}_ms") <= iv.high
    assert r.load_time_ms.provenance.startswith("measured:") and r.load_time_ms.value > 0
    assert r.peak_rss_mib.value > 20
    # no meter on a development host: unavailable with a reason, never zero
    if not r.energy_mj_per_inference.available:
        assert r.energy_mj_per_inference.provenance.startswith("unavailable:")
    assert r.placement is not None and r.placement.nodes
    assert {n.op_type for n in r.placement.nodes} >= {"Conv"} or any("Conv" in n.op_type for n in r.placement.nodes)
    assert r.env.onnxruntime and r.env.cpu_cores >= 1
    path = save_record(r, tmp_path / "r.json")
    assert load_record(path).latency == r.latency


def test_record_whose_summary_disagrees_with_samples_is_refused(digits_record, tmp_path):
    data = json.loads(digits_record.model_dump_json())
    data["latency"]["p95_ms"] *= 0.9
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match="p95_ms"):
        load_record(path)
    # a narrowed interval is caught too
    data = json.loads(digits_record.model_dump_json())
    data["latency"]["ci"]["p95"]["high"] = data["latency"]["p95_ms"]
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=r"latency.ci.p95.high"):
        load_record(path)


def test_other_schema_version_is_refused(digits_record, tmp_path):
    data = json.loads(digits_record.model_dump_json())
    data["schema_version"] = "edgeproof.run/0"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match="schema_version"):
        load_record(path)


@pytest.mark.slow
def test_periodic_scenario_reports_deadline_misses_and_queueing(tmp_path):
    model = make_matmul_model(tmp_path / "m.onnx")
    r = profile_model(model, options=ProfileOptions(scenario="periodic:200", **QUICK, profile_nodes=False))
    sc = r.scenario
    assert sc.rate_hz == 200 and sc.deadline_ms == pytest.approx(5.0)
    assert 0.0 <= sc.deadline_miss_rate <= 1.0
    assert sc.queueing_delay_p95_ms >= 0.0
    # end-to-end latency is the wait for the scheduled slot plus the service time, so each of its
    # quantiles is at least the same quantile of the wait
    assert r.latency.p95_ms >= sc.queueing_delay_p95_ms and r.latency.p50_ms >= sc.queueing_delay_p50_ms


@pytest.mark.slow
def test_overloaded_server_scenario_misses_deadlines(tmp_path):
    r = profile_model(DIGITS_MODEL, options=ProfileOptions(scenario="server:20000", deadline_ms=0.5, **{**QUICK, "profile_nodes": False}))
    assert r.scenario.deadline_miss_rate > 0.5
    assert r.scenario.queueing_delay_p95_ms > 1.0


def test_offline_reports_throughput(tmp_path):
    model = make_matmul_model(tmp_path / "m.onnx")
    r = profile_model(model, options=ProfileOptions(scenario="offline", offline_batch=4, **{**QUICK, "profile_nodes": False}))
    assert r.scenario.batch_size == 4 and r.scenario.throughput_ips > 0


def test_loadgen_engine_keeps_its_verdict(tmp_path):
    model = make_matmul_model(tmp_path / "m.onnx")
    r = profile_model(model, options=ProfileOptions(engine="loadgen", **{**QUICK, "profile_nodes": False}))
    assert r.scenario.engine == "loadgen"
    assert r.scenario.loadgen["result"] in ("VALID", "INVALID")
    assert all("percentiles_ns" in s for s in r.scenario.loadgen["sessions"])
    assert r.latency_provenance.endswith("via mlperf-loadgen")


def test_loadgen_has_no_fixed_rate_scenario(tmp_path):
    model = make_matmul_model(tmp_path / "m.onnx")
    with pytest.raises(DataError, match="LoadGen has no periodic"):
        profile_model(model, options=ProfileOptions(engine="loadgen", scenario="periodic:10", **QUICK))


def test_bad_scenario_text():
    for text in ("periodic", "periodic:-3", "burst", "offline:3"):
        with pytest.raises(DataError):
            parse_scenario(text)


def test_placement_fractions_count_fallback_nodes_and_time():
    trace = [
        {"cat": "Node", "name": "a_kernel_time", "dur": 30, "args": {"op_name": "Conv", "provider": "CUDAExecutionProvider"}},
        {"cat": "Node", "name": "b_kernel_time", "dur": 10, "args": {"op_name": "NonMaxSuppression", "provider": "CPUExecutionProvider"}},
        {"cat": "Session", "name": "model_run", "dur": 50},
    ]
    nodes = parse_profile(trace)
    p = placement_of(nodes, "CUDAExecutionProvider", flops={"a": 900.0, "b": 100.0})
    assert p.fallback_node_frac == 0.5
    assert p.fallback_time_frac == pytest.approx(0.25)
    assert p.fallback_flop_frac == pytest.approx(0.1)
    assert (
        placement_of([NodeRecord(name="x", op_type="Relu", provider="CPUExecutionProvider")], "CPUExecutionProvider").fallback_node_frac
        == 0.0
    )


def test_history_lists_changes_between_runs(digits_record, tmp_path):
    first = digits_record
    second = RunRecord.model_validate(
        {**json.loads(first.model_dump_json()), "run_id": "second", "created_at": "2099-01-01T00:00:00+00:00"}
    )
    history.append(first, tmp_path)
    history.append(second, tmp_path)
    rows = history.list_runs(tmp_path)
    assert [r["run_id"] for r in rows][0] == "second"
    assert rows[0]["changes"]["p50_ms"] == pytest.approx(0.0)
    assert rows[1]["changes"]["p50_ms"] is None


@pytest.mark.slow
def test_cli_profile_json_holds_the_acceptance_fields(tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("profile", str(DIGITS_MODEL), "--json", str(out), "--sessions", "2", "--samples", "50", "--time-budget", "5")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    for key in ("p50", "p95", "p99"):
        assert f"{key}_ms" in r["latency"] and key in r["latency"]["ci"]
    assert r["latency"]["n_samples"] >= 100
    assert r["load_time_ms"]["value"] > 0 and r["peak_rss_mib"]["value"] > 0
    assert "provenance" in r["energy_mj_per_inference"]
    assert r["placement"]["nodes"][0]["time_us"] is not None and r["placement"]["nodes"][0]["provider"]
    assert r["env"]["onnxruntime"] and r["env"]["cpu_model"]
    hist = run_cli("history")
    assert hist.returncode == 0 and r["run_id"] in hist.stdout


@pytest.mark.slow
def test_cli_missing_symbolic_dim_is_one_line(tmp_path):
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=("batch", "seq"))
    proc = run_cli("profile", str(model))
    assert proc.returncode == 2
    assert "seq" in proc.stderr and "--shape" in proc.stderr and "Traceback" not in proc.stderr
    ok = run_cli("profile", str(model), "--shape", "x=1,7,16", "--sessions", "1", "--samples", "20", "--time-budget", "2")
    assert ok.returncode == 0, ok.stderr


def test_npz_inputs_used_for_measurement(tmp_path):
    model = make_matmul_model(tmp_path / "m.onnx")
    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.random.default_rng(0).random((4, 1, 16)).astype(np.float32))
    r = profile_model(model, options=ProfileOptions(inputs_npz=str(npz), **{**QUICK, "profile_nodes": False}))
    assert r.latency.n_samples == 120
    # the arrays really are the feeds: one of the wrong shape is refused, naming the input
    np.savez(npz, x=np.zeros((4, 1, 15), np.float32))
    with pytest.raises(DataError, match="x"):
        profile_model(model, options=ProfileOptions(inputs_npz=str(npz), **{**QUICK, "profile_nodes": False}))


def test_doctor_exit_code_says_whether_the_host_is_fit():
    r = run_cli("doctor")
    assert "host fitness:" in r.stdout, r.stderr
    assert r.returncode == (1 if "host fitness: UNFIT" in r.stdout else 0)
