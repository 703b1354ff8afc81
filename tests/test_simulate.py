"""Board simulator: energy = ∫power, clocks vs latency and power, INT8-only fallback, fragmentation,
thermal soak and throttling, firmware profiles, the host profile, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import DIGITS_MODEL, make_qdq_chain, run_cli
from edgeproof.errors import TargetError
from edgeproof.records import RunRecord, load_record
from edgeproof.simulate import calibrate, compat_matrix, save_profile, simulate_run
from edgeproof.simulate.hostprofile import is_stale, load_profile
from edgeproof.targets.catalog import CATALOG_DIR

FAST = {"sessions": 2, "samples_per_session": 50}


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("qdq")
    return {"supported": make_qdq_chain(tmp / "sigmoid.onnx", "Sigmoid"), "unsupported": make_qdq_chain(tmp / "erf.onnx", "Erf")}


def test_record_is_a_valid_simulated_run_labelled_everywhere():
    record = simulate_run(DIGITS_MODEL, "jetson-orin-nano-8gb", **FAST)
    RunRecord.model_validate(record.model_dump())  # the summary matches the simulated samples
    label = record.latency_provenance
    assert record.kind == "simulated" and record.target.kind == "simulated"
    assert label.startswith("simulated:jetson-orin-nano-8gb@")
    for fig in (record.load_time_ms, record.peak_rss_mib, record.energy_mj_per_inference, record.sustained_w, record.temperature_c):
        assert fig.provenance == label and fig.value > 0
    assert record.placement.provenance == label
    assert record.target.firmware["version"] == "jetpack-5.1.2"
    assert record.latency.n_samples == 100 and record.latency.n_sessions == 2


def test_energy_is_the_integral_of_power_over_time():
    record = simulate_run(DIGITS_MODEL, "coral-usb-rpi5", **FAST)
    rows = record.simulation.timeline
    assert {r.device for r in rows} >= {"cpu"}
    end_us = rows[-1].start_us + rows[-1].duration_us
    t = np.linspace(0.0, end_us, 200_001)
    power = np.zeros_like(t)
    for r in rows:
        inside = (t >= r.start_us) & (t < r.start_us + r.duration_us)
        power[inside] = r.power_w
    power[-1] = rows[-1].power_w
    integral_mj = float(np.sum((power[1:] + power[:-1]) / 2 * np.diff(t))) / 1e3  # W·µs → mJ
    assert record.energy_mj_per_inference.value == pytest.approx(integral_mj, rel=1e-3)
    assert end_us / 1e3 == pytest.approx(record.simulation.latency_model_ms)


def test_a_higher_clock_gives_lower_latency_and_higher_power():
    fast = simulate_run(DIGITS_MODEL, "raspberry-pi-5", power_mode="default", **FAST)
    slow = simulate_run(DIGITS_MODEL, "raspberry-pi-5", power_mode="eco", **FAST)
    assert fast.simulation.operating_point.cpu_clock_ghz > slow.simulation.operating_point.cpu_clock_ghz
    assert fast.simulation.latency_model_ms < slow.simulation.latency_model_ms
    mean_w = lambda r: r.energy_mj_per_inference.value / r.simulation.latency_model_ms  # noqa: E731
    assert mean_w(fast) > mean_w(slow)
    # the accelerator clock too: Jetson 15 W vs 7 W (fewer TPCs, lower GPU clock)
    j15 = simulate_run(DIGITS_MODEL, "jetson-orin-nano-8gb", power_mode="15W", **FAST)
    j7 = simulate_run(DIGITS_MODEL, "jetson-orin-nano-8gb", power_mode="7W", **FAST)
    assert j15.simulation.latency_model_ms < j7.simulation.latency_model_ms
    assert mean_w(j15) > mean_w(j7)


def test_int8_only_accelerator_puts_float_ops_on_the_cpu(int8_models):
    fp32 = simulate_run(DIGITS_MODEL, "coral-usb-rpi5", **FAST)
    assert {n.provider for n in fp32.placement.nodes} == {"CPU (fallback)"}
    assert fp32.placement.fallback_node_frac == 1.0 and fp32.placement.fallback_flop_frac == 1.0
    assert all("no fp32 support" in f.reason for f in fp32.simulation.partitions.fallback)
    int8 = simulate_run(int8_models["supported"], "coral-usb-rpi5", **FAST)
    convs = [n for n in int8.placement.nodes if n.op_type == "Conv"]
    assert convs and {n.provider for n in convs} == {"Edge TPU"}


def test_unsupported_op_fragments_the_graph_and_costs_latency(int8_models):
    ok, bad = (compat_matrix(int8_models[k], ["hailo-8-rpi5"], ["native"])[0] for k in ("supported", "unsupported"))
    assert ok.fallback_ops == {"QuantizeLinear": 1, "DequantizeLinear": 1}  # Hailo leaves (de)quantization to the host
    assert bad.fallback_ops == {"QuantizeLinear": 1, "Erf": 1, "DequantizeLinear": 1}
    assert bad.partitions == ok.partitions + 2  # accel | Erf on CPU | accel
    assert bad.bytes_copied > ok.bytes_copied and bad.copy_ms > ok.copy_ms
    assert bad.latency_ms > ok.latency_ms
    assert ok.fragmentation_ms == pytest.approx(0.0)
    assert bad.fragmentation_ms > bad.copy_ms - ok.copy_ms > 0
    # the single-segment Edge TPU compiler sends everything after the Erf to the CPU
    coral = compat_matrix(int8_models["unsupported"], ["coral-usb-rpi5"], ["native"])[0]
    assert coral.fallback_ops.get("Conv") == 1 and coral.fragmentation_ms > 0
    fp32_on_int8_npu = compat_matrix(DIGITS_MODEL, ["coral-usb-rpi5"], ["native"])[0]
    assert fp32_on_int8_npu.accelerator_kernels == 0 and fp32_on_int8_npu.fragmentation_ms is None


def test_soak_at_high_ambient_throttles_a_passive_board_and_latency_rises():
    record = simulate_run(DIGITS_MODEL, "raspberry-pi-5", soak_s=1200, ambient_c=35, **FAST)
    soak = record.simulation.soak
    assert soak.requested and 0 < soak.first_trip_s < 1200
    trip = next(e for e in soak.throttle_events if e.event == "trip")
    assert trip.temperature_c >= 80.0
    assert soak.mean_latency_after_trip_ms > soak.mean_latency_before_trip_ms
    assert max(soak.temperature_c) == pytest.approx(record.temperature_c.value)
    first, last = (np.median(s.samples_ms) for s in (record.sessions[0], record.sessions[-1]))
    assert last > first  # samples follow the soak over time
    assert soak.idle_w_at_end > soak.idle_w_at_ambient  # leakage rises with temperature
    assert soak.ramp_up.time_ms > record.load_time_ms.value
    cool = simulate_run(DIGITS_MODEL, "jetson-orin-nano-8gb", soak_s=1200, ambient_c=25, **FAST)
    assert cool.simulation.soak.first_trip_s is None  # actively cooled, room temperature


def test_firmware_profile_changes_behaviour_and_is_recorded(tmp_path):
    stock = (CATALOG_DIR.parent / "firmware" / "raspberry-pi-5.toml").read_text()
    early = tmp_path / "early.toml"
    early.write_text(
        stock.replace('version = "stock-2025.01"', 'version = "lab-60c"')
        .replace("trip_c = 80.0", "trip_c = 60.0")
        .replace("clear_c = 75.0", "clear_c = 55.0")
    )
    base = simulate_run(DIGITS_MODEL, "raspberry-pi-5", soak_s=600, ambient_c=25, **FAST)
    lab = simulate_run(DIGITS_MODEL, "raspberry-pi-5", firmware=early, soak_s=600, ambient_c=25, **FAST)
    assert lab.target.firmware["version"] == "lab-60c" and lab.target.firmware["governor"]["trip_c"] == 60.0
    assert "fw-lab-60c" in lab.latency_provenance and "fw-stock-2025.01" in base.latency_provenance
    assert lab.simulation.soak.first_trip_s < base.simulation.soak.first_trip_s
    assert lab.latency.p50_ms > base.latency.p50_ms
    capped = tmp_path / "capped.toml"
    capped.write_text(stock.replace('power_mode = "default"', 'power_mode = "default"\ncpu_clock_cap_ghz = 1.2'))
    assert (
        simulate_run(DIGITS_MODEL, "raspberry-pi-5", firmware=capped, **FAST).simulation.latency_model_ms > base.simulation.latency_model_ms
    )
    watchdog = tmp_path / "watchdog.toml"
    watchdog.write_text(stock.replace('power_mode = "default"', 'power_mode = "default"\nwatchdog_timeout_ms = 0.5'))
    warned = simulate_run(DIGITS_MODEL, "raspberry-pi-5", firmware=watchdog, **FAST)
    assert any("watchdog" in w for w in warned.warnings)


def test_a_power_cap_lowers_the_clocks(tmp_path):
    board = (CATALOG_DIR / "jetson-orin-nano-8gb.toml").read_text()
    capped = board.replace('id = "jetson-orin-nano-8gb"', 'id = "orin-capped"').replace("power_cap_w = 15.0", "power_cap_w = 6.0")
    (tmp_path / "capped.toml").write_text(capped)
    (tmp_path / "firmware").mkdir()
    fw = tmp_path / "firmware" / "orin-capped.toml"
    fw.write_text(
        (CATALOG_DIR.parent / "firmware" / "jetson-orin-nano-8gb.toml")
        .read_text()
        .replace('board = "jetson-orin-nano-8gb"', 'board = "orin-capped"')
    )
    free = simulate_run(DIGITS_MODEL, "jetson-orin-nano-8gb", **FAST)
    held = simulate_run(DIGITS_MODEL, "orin-capped", catalog_dirs=[tmp_path], **FAST)  # stock firmware found beside the board
    assert held.simulation.operating_point.cap_factor == pytest.approx(((6.0 - 3.5) / 7.0) ** 0.5)
    assert any("caps power" in w for w in held.warnings)
    assert held.simulation.latency_model_ms > free.simulation.latency_model_ms
    leakage_w = held.simulation.soak.idle_w_at_ambient - 3.5  # the cap holds at the 25 °C reference
    assert max(r.power_w for r in held.simulation.timeline) - leakage_w == pytest.approx(6.0)


def test_jitter_is_seeded_and_partitions_are_reported():
    a = simulate_run(DIGITS_MODEL, "hailo-8-rpi5", seed=1, **FAST)
    b = simulate_run(DIGITS_MODEL, "hailo-8-rpi5", seed=1, **FAST)
    c = simulate_run(DIGITS_MODEL, "hailo-8-rpi5", seed=2, **FAST)
    assert a.sessions[0].samples_ms == b.sessions[0].samples_ms != c.sessions[0].samples_ms
    parts = a.simulation.partitions
    assert parts.segment_count == 1 and parts.cpu_nodes > 0  # fp32 on an INT8 NPU: all on the CPU
    int8 = simulate_run(DIGITS_MODEL, "hailo-8-rpi5", precision="int8", **FAST)
    assert int8.simulation.partitions.accelerator_nodes > 0
    assert int8.simulation.latency_model_ms < a.simulation.latency_model_ms


def test_bad_arguments_are_target_errors():
    with pytest.raises(TargetError, match="no power mode 'turbo'"):
        simulate_run(DIGITS_MODEL, "raspberry-pi-5", power_mode="turbo")
    with pytest.raises(TargetError, match="threads=9"):
        simulate_run(DIGITS_MODEL, "raspberry-pi-5", threads=9)
    with pytest.raises(TargetError, match="precision 'int4'"):
        simulate_run(DIGITS_MODEL, "raspberry-pi-5", precision="int4")


@pytest.fixture(scope="module")
def quick_host_profile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("host") / "host-profile.json"
    save_profile(calibrate(precisions=("fp32",), threads=(1,), quick=True), path)
    return path


def test_host_profile_predicts_and_has_no_power_model(quick_host_profile):
    record = simulate_run(DIGITS_MODEL, "host", host_profile_path=quick_host_profile, **FAST)
    assert record.target.id == "host" and record.kind == "simulated"
    assert record.latency_provenance.startswith("simulated:host@")
    assert not record.energy_mj_per_inference.available and not record.sustained_w.available
    predicted = record.simulation.latency_model_ms
    assert 0.005 < predicted < 50.0
    assert record.placement.fallback_node_frac == 0.0


def test_host_profile_knows_when_it_is_stale(quick_host_profile, tmp_path):
    assert is_stale(load_profile(quick_host_profile)) is None
    raw = json.loads(quick_host_profile.read_text())
    raw["fingerprint"]["cpu_model"] = "Some Other CPU"
    moved = tmp_path / "other.json"
    moved.write_text(json.dumps(raw))
    assert "cpu_model changed" in is_stale(load_profile(moved))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(TargetError, match="broken.json: not a readable host profile"):
        load_profile(broken)


@pytest.mark.slow
def test_cli_simulate_and_compat(tmp_path):
    out = tmp_path / "run.json"
    result = run_cli(
        "simulate",
        str(DIGITS_MODEL),
        "--target",
        "jetson-orin-nano-8gb",
        "--power-mode",
        "7W",
        "--soak",
        "2m",
        "--ambient",
        "45",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "simulated:jetson-orin-nano-8gb@" in result.stdout
    record = load_record(out)
    assert record.target.power_mode == "7W" and record.simulation.soak.duration_s == pytest.approx(120)
    matrix = tmp_path / "compat.json"
    result = run_cli("compat", str(DIGITS_MODEL), "--targets", "all", "--json", str(matrix))
    assert result.returncode == 0, result.stderr
    rows = json.loads(matrix.read_text())
    assert {r["target"] for r in rows} >= {"coral-usb-rpi5", "cortex-m55-ethos-u55"}
    bad = run_cli("simulate", str(DIGITS_MODEL), "--target", "raspberry-pi-5", "--soak", "ten minutes")
    assert bad.returncode == 2 and "--soak 'ten minutes'" in bad.stderr and "Traceback" not in bad.stderr


def test_host_validation_compares_prediction_with_measurement(quick_host_profile):
    from edgeproof.simulate.validate import validate_host

    report = validate_host({"fp32": DIGITS_MODEL}, threads=(1,), profile_path=quick_host_profile, rounds=1)
    (case,) = report["cases"]
    assert case["variant"] == "fp32" and case["threads"] == 1
    assert case["measured_p50_ms"] > 0 and len(case["measured_sessions_p50_ms"]) == 1
    assert case["error"] == pytest.approx((case["predicted_ms"] - case["measured_p50_ms"]) / case["measured_p50_ms"])
    assert report["mape"] == pytest.approx(abs(case["error"]))
    assert report["meets_target"] == (report["mape"] <= 0.15)
    assert report["profile"]["conditions"] is not None and "load_avg_1m" in report["load_at_start"]
    # the check is kept in the profile, and host-simulated latencies carry its error as their interval
    checked = load_profile(quick_host_profile).validation
    assert checked is not None and checked.mape == pytest.approx(report["mape"]) and checked.cases == 1
    record = simulate_run(DIGITS_MODEL, "host", host_profile_path=quick_host_profile, **FAST)
    assert record.simulation.latency_interval_rel == pytest.approx(abs(case["error"]))
    assert "simulate --validate-host" in record.simulation.latency_interval_basis


@pytest.mark.slow
def test_check_on_a_board_runs_the_contract_scenario_power_mode_and_firmware(tmp_path):
    contract = tmp_path / "periodic.toml"
    contract.write_text('[budgets]\nscenario = "periodic:30"\np95_ms = "50 ms"\n')
    fw = tmp_path / "fw.toml"
    fw.write_text((CATALOG_DIR.parent / "firmware" / "jetson-orin-nano-8gb.toml").read_text())
    out = tmp_path / "run.json"
    r = run_cli(
        "check",
        str(DIGITS_MODEL),
        "--contract",
        str(contract),
        "--target",
        "jetson-orin-nano",
        "--power-mode",
        "7W",
        "--firmware",
        str(fw),
        "--json",
        str(out),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    record = load_record(out)
    assert (record.target.id, record.target.power_mode, record.scenario.name, record.scenario.rate_hz) == (
        "jetson-orin-nano-8gb",
        "7W",
        "periodic",
        30,
    )
    verdict = json.loads(out.with_suffix(".verdict.json").read_text())
    p95 = next(c for c in verdict["clauses"] if c["clause"] == "budgets.p95_ms")
    assert p95["status"] == "pass" and p95["provenance"].startswith("simulated:jetson-orin-nano-8gb@")
    r = run_cli("check", str(DIGITS_MODEL), "--contract", str(contract), "--power-mode", "7W")
    assert r.returncode == 2 and "apply to a simulated board" in r.stderr and "Traceback" not in r.stderr


def _dynamic_reshape_model(path: Path) -> Path:
    """A conv net whose input is reshaped by shape arithmetic on a runtime tensor (as a plain
    exporter writes it): Shape -> Gather -> Concat(with a runtime input) -> Reshape -> Conv. Shape
    inference cannot follow it, so the convolutions' MACs are unknown."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), "w2")
    zero = numpy_helper.from_array(np.array([0], dtype=np.int64), "zero")
    nodes = [
        helper.make_node("Shape", ["x"], ["x_shape"], name="shape"),
        helper.make_node("Gather", ["x_shape", "zero"], ["batch"], name="gather", axis=0),
        helper.make_node("Concat", ["batch", "chw"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["x4"], name="reshape"),
        helper.make_node("Conv", ["x4", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "dynamic_reshape",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3 * 32 * 32]),
            helper.make_tensor_value_info("chw", TensorProto.INT64, [3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])],
        [w1, w2, zero],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_failed_shape_inference_is_loud_estimated_and_leaves_a_clause_unverified(tmp_path):
    from edgeproof.contract import evaluate, load_contract

    model = _dynamic_reshape_model(tmp_path / "dynamic.onnx")
    record = simulate_run(model, "raspberry-pi-5", **FAST)
    warning = next(w for w in record.warnings if "unknown" in w)
    assert "conv1" in warning or "Conv" in warning
    assert "100% of the MACs" in warning  # both convolutions rest on stand-ins
    assert record.latency_provenance.startswith("estimated:raspberry-pi-5@")
    assert record.energy_mj_per_inference.provenance == record.latency_provenance
    assert record.simulation.model_cost.macs > 0  # a stand-in, not the 0 MACs that looked plausible
    assert record.simulation.latency_interval_rel > 1.0  # a wide interval, not a confident one
    contract = tmp_path / "contract.toml"
    contract.write_text("[budgets]\np95_ms = 1000\n")
    verdict = evaluate(load_contract(contract), record)
    assert verdict.outcome == "undecided"
    assert [c.status for c in verdict.clauses] == ["unverified"]

    done = run_cli("simulate", str(model), "--target", "raspberry-pi-5")
    assert done.returncode == 0, done.stderr
    assert "warning:" in done.stdout and "unknown" in done.stdout and "estimated:" in done.stdout


def test_shape_arithmetic_on_static_shapes_is_folded_before_costing(tmp_path):
    """The same graph with the reshape target made of constants folds away, as ONNX Runtime's
    basic optimisation does on a deployed board: every MAC is counted, nothing is estimated."""
    import onnx
    from onnx import numpy_helper

    path = _dynamic_reshape_model(tmp_path / "static.onnx")
    proto = onnx.load(path)
    proto.graph.initializer.append(numpy_helper.from_array(np.array([3, 32, 32], dtype=np.int64), "chw"))
    del proto.graph.input[1]
    onnx.save(proto, path)
    record = simulate_run(path, "raspberry-pi-5", **FAST)
    assert record.latency_provenance.startswith("simulated:")
    assert not [w for w in record.warnings if "unknown" in w]
    assert record.simulation.model_cost.macs == 32 * 32 * 16 * (3 * 9 + 16 * 9)
    assert any("simplified" in a for a in record.simulation.assumptions)
