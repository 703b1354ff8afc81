"""Boards met through the agent: a device's board (boards.toml or the agent's --board) picks its
[budgets.<board>] table, the board profile is validated and calibrated against the device's
measurements, models with external weights go up with their data files, and doctor reads the device."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from conftest import DIGITS_MODEL, make_matmul_model
from edgeproof.agent import AgentError, connect, local_state_dir
from edgeproof.errors import DataError
from edgeproof.farm.boards_met import calibrate_device, validate_device
from edgeproof.farm.inventory import Device, get_device
from edgeproof.farm.matrix import CellPlan, run_board_cells
from edgeproof.records import RuntimeSettings
from edgeproof.runners.agent import AgentRunner, declared_board
from edgeproof.simulate import simulate_run
from edgeproof.targets import get_target
from test_agent import QUICK

CONTRACT = """
[contract]
name = "mlp-on-boards"
owner = "ml-team@example.com"
targets = ["host"]

[model]
path = "{model}"

[budgets]
scenario = "single-stream"
p95_ms = "500 ms"
model_size_mib = "2 MiB"

[budgets.raspberry-pi-5]
p95_ms = "0.0001 ms"
"""


def external_model(path: Path, sides: tuple[int, ...] = (64,), seed: int = 0) -> Path:
    """A chain of MatMul layers whose weights live in data files beside the model, one file per layer."""
    rng = np.random.default_rng(seed)
    nodes, inits, cur = [], [], "x"
    for i, side in enumerate(sides):
        inits.append(numpy_helper.from_array(rng.standard_normal((side, side)).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [f"h{i}"]))
        cur = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, sides[0]])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, sides[-1]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    return path


def blobs(device: Device) -> dict[str, int]:
    return {p.stem: p.stat().st_size for p in (local_state_dir(device) / "models").glob("*.blob")}


@pytest.mark.slow
def test_a_device_is_judged_by_its_boards_table_and_the_verdict_says_so(tmp_path, monkeypatch):
    model = make_matmul_model(tmp_path / "mlp.onnx", symbolic=())
    contract = tmp_path / "edgeproof.toml"
    contract.write_text(CONTRACT.format(model=model))
    boards = tmp_path / "boards.toml"
    boards.write_text('[devices.pi-stand-in]\nboard = "raspberry-pi-5"\ntransport = "local"\n\n[devices.bare]\ntransport = "local"\n')
    monkeypatch.setenv("EDGEPROOF_BOARDS", str(boards))
    cells = [CellPlan(model, get_device(f"device:{d}"), None) for d in ("pi-stand-in", "bare")]
    pi = run_board_cells(cells[:1], contract, RuntimeSettings(), QUICK, allow_unverified=True)[0]
    bare = run_board_cells(cells[1:], contract, RuntimeSettings(), QUICK, allow_unverified=True)[0]
    assert pi.record is not None and pi.record.target.board == "raspberry-pi-5" and pi.verdict is not None
    p95 = next(c for c in pi.verdict.clauses if c.clause == "budgets.p95_ms")
    assert pi.outcome == "fail" and p95.status == "fail" and p95.budget == pytest.approx(0.0001)
    assert p95.budget_from == "[budgets.raspberry-pi-5] (a device is judged by its board's table: device:pi-stand-in is a raspberry-pi-5)"
    size = next(c for c in pi.verdict.clauses if c.clause == "budgets.model_size_mib")
    assert size.budget_from == "[budgets] (no [budgets.<board>] value for raspberry-pi-5, the board of device:pi-stand-in)"
    assert bare.record is not None and bare.record.target.board is None and bare.verdict is not None
    assert bare.outcome == "pass"  # no board declared: [budgets] alone
    assert next(c for c in bare.verdict.clauses if c.clause == "budgets.p95_ms").budget_from == "[budgets]"


def test_the_agent_may_declare_its_board_and_must_agree_with_the_inventory():
    with AgentRunner(Device(id="declares", extra_args=("--board", "raspberry-pi-5"))) as runner:
        assert runner.board == "raspberry-pi-5" and runner.hello is not None
        said = runner.hello.fingerprint
    assert said["board"] == "raspberry-pi-5"
    with pytest.raises(DataError, match="says board 'jetson-orin-nano-8gb' but the agent declares 'raspberry-pi-5'"):
        declared_board(Device(id="disagrees", board="jetson-orin-nano-8gb"), said)
    with pytest.raises(DataError, match="the agent declares board 'no-such-board': unknown target"):
        declared_board(Device(id="unknown-board"), {**said, "board": "no-such-board"})
    assert declared_board(Device(id="listed", board="raspberry-pi-5"), {**said, "board": None}) == "raspberry-pi-5"


@pytest.mark.slow
def test_validate_compares_the_board_profile_with_the_agents_measurement(tmp_path):
    model = make_matmul_model(tmp_path / "mlp.onnx", symbolic=())
    device = Device(id="pi-stand-in", board="raspberry-pi-5", power_modes=("eco",))
    report = validate_device(device, [model], sessions=2, samples=40)
    (case,) = report.cases
    pi5 = get_target("raspberry-pi-5")
    assert report.profile == f"simulated:raspberry-pi-5@{pi5.version}" and report.measured_by == "measured:agent:pi-stand-in"
    assert report.power_mode == "eco"  # the inventory's mode, as the profile names it
    expected = simulate_run(model, "raspberry-pi-5", power_mode="eco", threads=1, sessions=1, samples_per_session=1)
    assert expected.simulation is not None and case.predicted_ms == pytest.approx(expected.simulation.latency_model_ms)
    assert len(case.measured_sessions_p50_ms) == 2 and case.measured_p50_ms == pytest.approx(np.median(case.measured_sessions_p50_ms))
    assert report.mape == pytest.approx(abs(case.predicted_ms / case.measured_p50_ms - 1))
    with pytest.raises(DataError, match="device:local declares no board"):
        validate_device(Device(id="local"), [model], sessions=1, samples=20)


@pytest.mark.slow
def test_calibrate_writes_a_new_profile_version_fitted_to_the_device(tmp_path):
    device = Device(id="pi-stand-in", board="raspberry-pi-5")
    cases = (("conv", (16, 16)), ("gemm", (256,)), ("elementwise", (16384,)))
    cal = calibrate_device(device, tmp_path / "calibrated", cases=cases, sessions=1, samples=40)
    pi5 = get_target("raspberry-pi-5")
    new = get_target("raspberry-pi-5-pi-stand-in", [tmp_path / "calibrated"])  # loads with the catalog, sources checked
    assert new.version.startswith(pi5.version + "+pi-stand-in.") and new.validation is not None
    assert new.validation.held_out_rows == 3 and len(cal.held_out_errors) == 3
    assert set(cal.efficiency) == {"conv", "gemm", "elementwise"}
    for cls, (old, fitted) in cal.efficiency.items():
        assert old == pytest.approx(pi5.cpu.efficiency_for(cls, "fp32")) and 0 < fitted <= 1
        assert new.cpu.efficiency_for(cls, "fp32") == pytest.approx(fitted)
    assert "measured:agent:pi-stand-in" in new.sources["cpu.class_efficiency"]

    def squared(cases) -> float:
        return sum(c.error**2 for c in cases)

    assert squared(cal.after) <= squared(cal.before.cases) + 1e-12  # the fit never does worse than where it started
    # the new version predicts what the fit says it predicts
    mlp = make_matmul_model(tmp_path / "mlp.onnx", symbolic=())
    again = validate_device(device, [mlp], profile=new.id, catalog_dirs=[tmp_path / "calibrated"], sessions=1, samples=20)
    assert again.profile == f"simulated:{new.id}@{new.version}"


def test_a_model_with_external_weights_goes_up_with_its_data_files(tmp_path):
    device = Device(id="ext")
    model = external_model(tmp_path / "ext.onnx", sides=(64, 64))
    data = sorted(p for p in tmp_path.iterdir() if p.suffix != ".onnx")
    assert len(data) == 2 and model.stat().st_size < 1000
    with AgentRunner(device) as runner:
        record = runner.run(runner.prepare(model, QUICK), RuntimeSettings(), QUICK)
    assert record.latency_provenance == "measured:agent:ext" and record.latency.n_samples == 20
    stored = blobs(device)
    for path in [model, *data]:
        assert hashlib.sha256(path.read_bytes()).hexdigest() in stored


@pytest.mark.slow
def test_the_disk_budget_holds_a_model_and_its_data_together_and_evicts_finished_jobs(tmp_path):
    first = external_model(tmp_path / "a.onnx", sides=(160, 160), seed=1)  # two 100 kB data files
    (tmp_path / "b").mkdir()
    second = external_model(tmp_path / "b" / "b.onnx", sides=(160, 160), seed=2)
    tight = Device(id="tight", extra_args=("--cache-mib", "0.15"))
    with AgentRunner(tight) as runner, pytest.raises(AgentError, match="too-large.*must fit together"):
        runner.prepare(first, QUICK)
    assert not list((local_state_dir(tight) / "models").glob("*.part"))
    roomy = Device(id="roomy", extra_args=("--cache-mib", "0.3"))
    with AgentRunner(roomy) as runner:
        runner.run(runner.prepare(first, QUICK), RuntimeSettings(), QUICK)
        first_blobs = set(blobs(roomy))
        runner.run(runner.prepare(second, QUICK), RuntimeSettings(), QUICK)
    after = blobs(roomy)
    assert sum(after.values()) <= 0.3 * 2**20
    assert first_blobs - set(after)  # the finished job made room for the next


def test_the_agent_refuses_a_data_file_outside_the_model_directory():
    client, _ = connect(Device(id="paths"))
    try:
        sha = client.put(DIGITS_MODEL.read_bytes())
        with pytest.raises(AgentError, match="bad-request.*must be a plain file name"):
            client.request("profile", model=sha, inputs=sha, external={"../../etc/passwd": sha}, settings={}, scenario={}, sessions=0)
    finally:
        client.link.close()


def test_doctor_reads_the_device(tmp_path, monkeypatch):
    from edgeproof.cli import app

    boards = tmp_path / "boards.toml"
    boards.write_text('[devices.pi-stand-in]\nboard = "raspberry-pi-5"\ntransport = "local"\n')
    monkeypatch.setenv("EDGEPROOF_BOARDS", str(boards))
    result = CliRunner().invoke(app, ["doctor", "--target", "device:pi-stand-in"])
    assert result.exit_code in (0, 1), result.output
    for text in ("raspberry-pi-5 (boards.toml)", "model cache", "of 2048 MiB used", "board lock", "free", "provider CPUExecutionProvider"):
        assert text in result.output
    verdict = result.output.rstrip().splitlines()[-1]
    assert verdict == ("device:pi-stand-in: fit" if result.exit_code == 0 else verdict) and verdict.startswith("device:pi-stand-in: ")
    bad = CliRunner().invoke(app, ["doctor", "--target", "device:nope"])
    assert bad.exit_code == 2 and "unknown device 'device:nope'" in bad.output


def test_validate_and_calibrate_refuse_bad_devices_in_one_line(tmp_path):
    from edgeproof.cli import app

    no_board = CliRunner().invoke(app, ["simulate", str(DIGITS_MODEL), "--validate", "device:local"])
    assert no_board.exit_code == 2 and "device:local declares no board" in no_board.output and "Traceback" not in no_board.output
    unknown = CliRunner().invoke(app, ["targets", "--calibrate", "device:nope"])
    assert unknown.exit_code == 2 and "unknown device 'device:nope'" in unknown.output
    assert not (tmp_path / ".edgeproof" / "calibrated").exists()  # nothing half-written
