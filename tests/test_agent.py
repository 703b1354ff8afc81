"""The device agent end to end: a real agent subprocess standing in for a board, its verbs, its refusals,
its lock, a board lost mid-job, and `check --target device:local` giving a verdict measured on the agent."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import DIGITS_MODEL, run_cli
from edgeproof.agent import AgentClient, AgentError, BoardLost, connect, local_state_dir
from edgeproof.agent._link import LocalLink
from edgeproof.errors import DataError, TargetError
from edgeproof.farm.inventory import LOCAL_DEVICE, Device, get_device, load_inventory
from edgeproof.measure.runner import ProfileOptions
from edgeproof.records import RuntimeSettings
from edgeproof.runners import runner_for
from edgeproof.runners.agent import AgentRunner

QUICK = ProfileOptions(
    min_sessions=1, max_sessions=1, samples_per_session=20, warmup=3, time_budget_s=5, cold_start_repeats=0, profile_nodes=False
)
AGENT_SRC = str(Path(__file__).resolve().parents[1] / "agent" / "src")

# Budgets only (no slices): the verdict comes from the agent's measurement alone.
CONTRACT = """
[contract]
name = "digits-on-a-board"
owner = "ml-team@example.com"
targets = ["host"]

[model]
path = "{model}"

[budgets]
scenario = "single-stream"
p95_ms = "500 ms"
peak_rss_mib = "2000 MiB"
model_size_mib = "2 MiB"
"""


def write_contract(tmp_path: Path) -> Path:
    path = tmp_path / "edgeproof.toml"
    path.write_text(CONTRACT.format(model=DIGITS_MODEL))
    return path


@pytest.fixture
def client():
    client, hello = connect(LOCAL_DEVICE)
    yield client
    client.link.close()


def fake_agent(tmp_path: Path, body: str) -> Device:
    """A stand-in for a foreign agent (another protocol, a broken one): a script on the other side of the wire."""
    script = tmp_path / "other_agent.py"
    script.write_text("import json, sys\n" + textwrap.dedent(body))
    return Device(id="other", agent=f"{sys.executable} {script}")


def test_hello_reports_protocol_fingerprint_and_free_board(client):
    hello = client.hello()
    assert hello.protocol == 1 and hello.busy is None
    fp = hello.fingerprint
    assert fp["onnxruntime"] and "CPUExecutionProvider" in fp["providers"] and fp["cpu_cores"] >= 1
    assert fp["meters"]["latency"] == "perf_counter_ns"
    assert fp["meters"]["energy"].startswith(("unavailable:", "rapl"))


def test_put_model_is_chunked_hash_checked_and_cached(client, monkeypatch):
    import edgeproof.agent._client as client_module

    monkeypatch.setattr(client_module, "CHUNK_BYTES", 100_000)  # several chunks for a 490 kB model
    data = DIGITS_MODEL.read_bytes()
    sha = client.put(data)
    cache = local_state_dir(LOCAL_DEVICE) / "models"
    assert (cache / f"{sha}.blob").read_bytes() == data
    assert client.request("put-model", sha256=sha, size=len(data))["have"] is True
    bad = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(AgentError, match="hash-mismatch.*nothing was stored"):
        client.put(data, sha256=bad)
    assert not list(cache.glob(f"{bad}*"))


def test_a_model_over_the_size_cap_is_refused_and_nothing_is_written(tmp_path):
    device = Device(id="tiny", extra_args=("--max-model-mib", "0.1"))
    client, _ = connect(device)
    try:
        with pytest.raises(AgentError, match="too-large.*--max-model-mib"):
            client.put(DIGITS_MODEL.read_bytes())
    finally:
        client.link.close()
    assert not list((local_state_dir(device) / "models").iterdir())


def test_malformed_and_oversized_lines_from_the_lab_are_refused_and_the_agent_stays_up():
    device = Device(id="small-lines", extra_args=("--max-line-bytes", "4096"))
    client, _ = connect(device)
    try:
        client.link._write(b"this is not json\n")
        assert client.link.receive(30)["error"]["code"] == "bad-json"
        client.link._write(b'{"v": 1, "id": 99, "pad": "' + b"x" * 10_000 + b'"}\n')
        assert client.link.receive(30)["error"]["code"] == "line-too-long"
        client.link._write(b"[1, 2]\n")
        assert client.link.receive(30)["error"]["code"] == "bad-json"
        with pytest.raises(AgentError, match="unknown-verb"):
            client.request("run-shell", command="id")
        assert client.hello().protocol == 1  # still answering
    finally:
        client.link.close()


def test_a_protocol_mismatch_is_one_clear_error(tmp_path):
    device = fake_agent(
        tmp_path,
        """
        for line in sys.stdin:
            req = json.loads(line)
            print(json.dumps({"v": 2, "id": req["id"], "ok": True, "result": {"protocol": 2}}), flush=True)
        """,
    )
    with pytest.raises(AgentError, match="protocol mismatch: the agent speaks protocol 2, this edgeproof speaks 1"):
        connect(device)


def test_an_oversized_or_malformed_line_from_the_agent_closes_the_link_with_the_reason(tmp_path):
    huge = fake_agent(tmp_path, 'sys.stdin.readline()\nsys.stdout.write("x" * 5000 + "\\n")\nsys.stdout.flush()\nsys.stdin.read()\n')
    link = LocalLink([*huge.agent.split(), "--device-id", "other"], "device:other", max_line_bytes=1000).start()
    client = AgentClient(link, "other")
    with pytest.raises(BoardLost, match="line over 1000 bytes"):
        client.hello()
    link.close()
    garbled = fake_agent(tmp_path, 'sys.stdin.readline()\nprint("{not json", flush=True)\nsys.stdin.read()\n')
    with pytest.raises(AgentError, match="not JSON"):
        connect(garbled)


def test_the_board_lock_makes_a_second_job_wait_and_hello_says_busy():
    with AgentRunner("device:local") as first:
        first.run(first.prepare(DIGITS_MODEL, QUICK), RuntimeSettings(), QUICK)  # the job now holds the board
        with AgentRunner("device:local", wait_s=0.5) as second:
            assert second.hello is not None and second.hello.busy["pid"] is not None
            with pytest.raises(AgentError, match="busy.*measuring another job"):
                second.run(second.prepare(DIGITS_MODEL, QUICK), RuntimeSettings(), QUICK)
    with AgentRunner("device:local") as after:  # released at bye
        assert after.hello is not None and after.hello.busy is None


def _kill_when_started(runner: AgentRunner, times: int):
    """A progress callback that kills the agent the moment it reports a profile started, ``times`` times."""
    left = [times]

    def progress(message: str, fraction: float) -> None:
        if message.endswith(": started") and left[0] > 0:
            left[0] -= 1
            assert runner._client is not None
            os.kill(runner._client.link.proc.pid, signal.SIGKILL)

    return progress


def test_a_board_lost_mid_job_is_retried_once_after_a_fresh_hello():
    with AgentRunner("device:local") as runner:
        prep = runner.prepare(DIGITS_MODEL, QUICK)
        record = runner.run(prep, RuntimeSettings(), QUICK, progress=_kill_when_started(runner, 1))
        assert record.latency.n_samples == 20 and record.latency_provenance == "measured:agent:local"
        with pytest.raises(BoardLost, match=r"killed by signal 9.*retried once after a re-hello") as lost:
            runner.run(prep, RuntimeSettings(), QUICK, progress=_kill_when_started(runner, 2))
        assert lost.value.exit_code == 3  # never a pass


def test_check_on_device_local_gives_a_verdict_measured_on_the_agent(tmp_path):
    contract = write_contract(tmp_path)
    out = tmp_path / "run.json"
    done = run_cli(
        "check", str(DIGITS_MODEL), "--contract", str(contract), "--target", "device:local",
        "--sessions", "1", "--samples", "40", "--time-budget", "5", "--json", str(out),
        env={"EDGEPROOF_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    verdict = json.loads(out.with_suffix(".verdict.json").read_text())
    assert verdict["target"] == "device:local" and verdict["outcome"] == "pass"
    latency = next(c for c in verdict["clauses"] if c["clause"] == "budgets.p95_ms")
    assert latency["provenance"] == "measured:agent:local"
    record = json.loads(out.read_text())
    assert record["target"] == {
        "id": "device:local",
        "kind": "remote",
        "profile_version": None,
        "power_mode": None,
        "firmware": None,
        "board": None,
    }
    assert record["peak_rss_mib"]["provenance"].startswith("measured:agent:local:")
    assert record["env"]["extra"]["device"] == "local"


def test_bring_up_gives_the_checklist_with_what_passed_and_what_could_not_be_checked():
    with AgentRunner("device:local") as runner:
        checks = {c["name"]: c for c in runner.bring_up()}
    for name in ("uptime since boot", "provider CPUExecutionProvider", "kernel/driver errors since boot", "telemetry writable"):
        assert checks[name]["status"] in ("pass", "fail", "unchecked") and checks[name]["detail"]
    assert checks["provider CPUExecutionProvider"]["status"] == "pass"
    assert checks["telemetry writable"]["status"] == "pass"


@pytest.mark.slow
def test_bring_up_prints_the_checklist(tmp_path):
    done = run_cli("agent", "bring-up", "device:local", env={"EDGEPROOF_HOME": str(tmp_path)})
    assert done.returncode in (0, 1), done.stderr
    for check in ("uptime since boot", "provider CPUExecutionProvider", "kernel/driver errors since boot", "telemetry writable"):
        assert check in done.stdout


def test_an_unknown_device_or_an_unreachable_host_is_one_line(tmp_path):
    with pytest.raises(TargetError, match="unknown device 'device:no-such-board'; known: device:local"):
        runner_for("device:no-such-board")
    boards = tmp_path / "boards.toml"
    boards.write_text('[devices.far]\nboard = "raspberry-pi-5"\ntransport = "ssh://nobody@127.0.0.1:1"\n')
    with pytest.raises(AgentError, match="device:far: cannot reach the board over SSH") as unreachable:
        AgentRunner(get_device("device:far", boards)).open()
    assert "\n" not in str(unreachable.value) and unreachable.value.exit_code == 2


@pytest.mark.slow
def test_bad_device_inputs_are_one_line_and_exit_2(tmp_path):
    done = run_cli("profile", str(DIGITS_MODEL), "--target", "device:no-such-board")
    assert done.returncode == 2 and "unknown device 'device:no-such-board'" in done.stderr and "Traceback" not in done.stderr


def test_inventory_mistakes_name_file_line_and_field(tmp_path):
    boards = tmp_path / "boards.toml"
    boards.write_text('[devices.a]\ntransport = "local"\n\n[devices.b]\nboard = "raspberry-pi-5"\ntransprot = "local"\n')
    with pytest.raises(Exception, match=r"boards.toml:6: devices.b.transprot: unknown field \(did you mean 'transport'\?\)"):
        load_inventory(boards)
    boards.write_text('[devices.a]\ntransport = "telnet://x"\n')
    with pytest.raises(Exception, match=r"boards.toml:2: devices.a.transport: expected 'local', 'ssh://"):
        load_inventory(boards)
    boards.write_text(
        '[devices.pi-a]\nboard = "raspberry-pi-5"\nchip_revision = "c1"\npower_modes = ["default"]\ntransport = "ssh://pi@pi-a.lab:2222"\n'
    )
    device = get_device("device:pi-a", boards)
    assert device.ssh == ("pi-a.lab", 2222, "pi") and device.board == "raspberry-pi-5" and device.chip_revision == "c1"


def test_runner_for_gives_the_agent_runner_for_a_device():
    assert isinstance(runner_for("device:local"), AgentRunner)
    with pytest.raises(Exception, match="do not apply to device:local"):
        runner_for("device:local", firmware="fw.toml")


def test_the_agent_refuses_loadgen_and_a_power_mode_the_device_lacks():
    with pytest.raises(DataError, match="power modes 7W, 15W; --power-mode '25W'"):
        AgentRunner(Device(id="modes", power_modes=("7W", "15W")), power_mode="25W").open()
    with AgentRunner("device:local") as runner, pytest.raises(DataError, match="loadgen runs on the host only"):
        runner.prepare(DIGITS_MODEL, ProfileOptions(engine="loadgen"))
