"""The agent's A/B slots: health-gated updates on real local agents (one reverts by itself), the boot
counter and intended reboots of `edgeproof-agent boot-check`, repeated intents, a corrupt state file."""

from __future__ import annotations

import configparser
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import DIGITS_MODEL
from edgeproof.agent import AgentClient, AgentError, local_state_dir, open_link
from edgeproof.agent._client import parse_slots
from edgeproof.farm.inventory import Device

AGENT_SRC = str(Path(__file__).resolve().parents[1] / "agent" / "src")
UNIT = Path(__file__).resolve().parents[1] / "agent" / "systemd" / "edgeproof-agent-boot-check.service"
GENEROUS_P50_MS = 1000.0  # the digits CNN runs in well under a millisecond here; the limit is not what these tests judge


def release(tmp_path: Path, tag: str) -> bytes:
    """The digits model with its doc string set to ``tag``: same behaviour, different bytes and sha256."""
    model = onnx.load(str(DIGITS_MODEL))
    model.doc_string = f"release {tag}"
    path = tmp_path / f"model-{tag}.onnx"
    onnx.save(model, str(path))
    return path.read_bytes()


def golden(model: bytes, shift: float = 0.0) -> bytes:
    """Golden inputs and the outputs ``model`` gives for them (``shift`` added: a recorded output it will not match)."""
    x = np.random.default_rng(0).random((2, 1, 32, 32), dtype=np.float32)
    (logits,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(["logits"], {"input": x})
    buffer = io.BytesIO()
    np.savez(buffer, input__input=x, output__logits=logits + shift)
    return buffer.getvalue()


def update(client: AgentClient, model: bytes, checks: bytes, intent: str, **extra: Any) -> dict:
    limits: dict[str, Any] = {"p50_limit_ms": GENEROUS_P50_MS, **extra}
    return client.request("update", model=client.put(model), golden=client.put(checks), intent=intent, **limits)


def slots_of(client: AgentClient) -> dict:
    return client.request("hello", protocol=1)["slots"]


def started(*names: str, extra_args: tuple[str, ...] = ()) -> list[AgentClient]:
    """Local agents (real processes, each with its own state dir), started together, each having said hello."""
    clients = [AgentClient(open_link(Device(id=name, extra_args=extra_args)), name) for name in names]
    for client in clients:
        client.hello()
    return clients


@pytest.fixture
def two_agents():
    clients = started("cam-a", "cam-b")
    yield clients
    for client in clients:
        client.link.close()


@pytest.fixture
def agent():
    (client,) = started("cam-a")
    yield client
    client.link.close()


@pytest.fixture
def agent_main(monkeypatch):
    monkeypatch.syspath_prepend(AGENT_SRC)
    from edgeproof_agent.__main__ import main

    return main


def test_a_failed_health_check_reverts_by_itself_and_the_other_agent_commits(tmp_path, two_agents):
    good, bad = two_agents
    old, new = release(tmp_path, "1"), release(tmp_path, "2")
    old_sha, new_sha = hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()
    for client in two_agents:
        first = update(client, old, golden(old), "release-1", firmware="fw-1.0")
        assert first["outcome"] == "committed" and first["installed"] is True

    committed = update(good, new, golden(new), "release-2", firmware="fw-1.1")
    reverted = update(bad, new, golden(new, shift=0.5), "release-2", firmware="fw-1.1")

    assert committed["outcome"] == "committed" and committed["reason"] is None
    assert committed["health"]["p50_ms"] > 0 and "perf_counter_ns" in committed["health"]["p50_provenance"]
    now = slots_of(good)
    assert (now["active"], now["model_sha256"], now["firmware_version"], now["committed"]) == ("b", new_sha, "fw-1.1", True)
    assert now["last_revert"] is None

    assert reverted["outcome"] == "reverted" and reverted["installed"] is True
    assert reverted["reason"].startswith("health check failed: golden output logits differs from the recorded one")
    back = slots_of(bad)
    assert (back["active"], back["model_sha256"], back["firmware_version"], back["committed"]) == ("a", old_sha, "fw-1.0", True)
    assert back["pending"] is None and back["intent"] == "release-1"
    assert back["last_revert"]["intent"] == "release-2" and back["last_revert"]["slot"] == "b"
    assert back["last_revert"]["reason"] == reverted["reason"]
    # the slot files themselves: the reverted slot still holds what was tried, the active one the old model
    state_dir = local_state_dir(Device(id="cam-b")) / "slots"
    assert hashlib.sha256((state_dir / "a" / "model.onnx").read_bytes()).hexdigest() == old_sha
    assert json.loads((state_dir / "state.json").read_text())["intents"]["release-2"]["outcome"] == "reverted"


def test_a_latency_over_the_limit_is_not_committed(tmp_path, agent):
    client = agent
    model = release(tmp_path, "1")
    result = update(client, model, golden(model), "too-slow", p50_limit_ms=1e-6, latency_runs=5)
    assert result["outcome"] == "reverted" and "over the limit of 1e-06 ms" in result["reason"]
    with pytest.raises(AgentError, match=r"update refused \(bad-request\): update needs p50_limit_ms > 0"):
        update(client, model, golden(model), "no-limit", p50_limit_ms=-1)
    # a first install that fails leaves no slot active: nothing to report as running
    assert slots_of(client)["active"] is None and slots_of(client)["model_sha256"] is None


def test_the_same_intent_twice_installs_once(tmp_path, agent):
    client = agent
    model = release(tmp_path, "1")
    checks = golden(model)
    first = update(client, model, checks, "release-1")
    again = update(client, model, checks, "release-1")
    assert first["installed"] is True and again["installed"] is False
    assert again["outcome"] == "committed" and again["health"] is None
    slots = local_state_dir(Device(id="cam-a")) / "slots"
    assert slots_of(client)["active"] == "a" and not (slots / "b").exists()
    # a reverted intent is not retried either: a rollback or a retry is a new intent
    failed = update(client, release(tmp_path, "2"), golden(model, shift=1.0), "release-2")
    assert failed["outcome"] == "reverted"
    repeat = update(client, release(tmp_path, "2"), golden(model, shift=1.0), "release-2")
    assert repeat["installed"] is False and repeat["outcome"] == "reverted" and repeat["reason"] == failed["reason"]


def test_an_update_cut_off_before_its_health_check_is_resumed_by_its_intent_or_superseded(tmp_path, agent_main, agent):
    from edgeproof_agent._slots import Slots

    model = release(tmp_path, "1")
    path = tmp_path / "model.onnx"
    path.write_bytes(model)
    sha = hashlib.sha256(model).hexdigest()
    slots = Slots(local_state_dir(Device(id="cam-a")))
    slots.install(slots.load(), path, sha, "fw-1.0", "release-1")  # the agent died here: slot a pending, unchecked
    assert slots_of(agent)["pending"] == "a" and slots_of(agent)["committed"] is False

    resumed = update(agent, model, golden(model), "release-1")
    assert resumed["installed"] is False and resumed["outcome"] == "committed" and slots_of(agent)["active"] == "a"
    with pytest.raises(AgentError, match="intent release-1 was used for model"):
        update(agent, release(tmp_path, "2"), golden(model), "release-1")

    slots.install(slots.load(), path, sha, "fw-1.1", "release-2")  # slot b pending, then a new intent arrives
    superseded = update(agent, release(tmp_path, "3"), golden(model), "release-3")
    assert superseded["installed"] is True and superseded["outcome"] == "committed"
    report = slots_of(agent)
    assert report["active"] == "b" and report["intent"] == "release-3" and report["firmware_version"] == "fw-1.0"
    assert report["last_revert"]["intent"] == "release-2" and "superseded by intent release-3" in report["last_revert"]["reason"]


def test_boot_check_reverts_a_pending_slot_after_the_limit_and_leaves_intended_reboots_alone(tmp_path, agent_main, capsys):
    from edgeproof_agent._slots import Slots

    model = tmp_path / "model.onnx"
    model.write_bytes(release(tmp_path, "1"))
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    slots = Slots(tmp_path / "state")
    slots.commit(slots.install(slots.load(), model, sha, "fw-1.0", "release-1"))
    slots.install(slots.load(), model, sha, "fw-1.1", "release-2")  # switched to b, never health-checked: a crash
    state = ["--state", str(tmp_path / "state"), "--limit", "2"]

    assert agent_main(["mark-reboot", "--state", str(tmp_path / "state")]) == 0
    assert agent_main(["boot-check", *state]) == 0
    assert "intended reboot" in capsys.readouterr().out
    assert slots.report()["boot_count"] == 0 and slots.report()["pending"] == "b"

    for boot in (1, 2):
        assert agent_main(["boot-check", *state]) == 0
        assert slots.report()["boot_count"] == boot and slots.report()["pending"] == "b"
    assert agent_main(["boot-check", *state]) == 0
    assert "reverted slot b to a" in capsys.readouterr().out
    report = slots.report()
    assert (report["active"], report["committed"], report["pending"], report["firmware_version"]) == ("a", True, None, "fw-1.0")
    assert report["last_revert"]["intent"] == "release-2" and "did not come up in 2 boots" in report["last_revert"]["reason"]


def test_a_corrupt_state_file_is_one_clear_error(tmp_path, agent_main, capsys, agent):
    state = tmp_path / "state" / "slots" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"schema": "edgeproof-agent.slots/1", "active": "a", "pend')
    assert agent_main(["boot-check", "--state", str(tmp_path / "state")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{state}: not readable slot state" in err and "Traceback" not in err
    assert state.read_text().endswith('"pend')  # nothing rewritten
    assert agent_main(["mark-reboot", "--state", str(tmp_path / "state")]) == 2
    assert not (state.parent / "reboot-intended").exists()
    assert agent_main(["boot-check", "--state", str(tmp_path / "no-such-dir")]) == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("no-such-dir: no such state dir (the agent's --state-dir)")

    # the agent refuses an update on a malformed state file with one line, and hello still answers, naming it
    client = agent
    agent_state = local_state_dir(Device(id="cam-a")) / "slots" / "state.json"
    agent_state.parent.mkdir(parents=True, exist_ok=True)
    agent_state.write_text(
        '{"schema": "edgeproof-agent.slots/1", "active": "c", "pending": null, "known_good": null, '
        '"committed": false, "boot_count": 0, "intents": {}}'
    )
    assert "active must be one of a, b or null" in slots_of(client)["error"]
    model = release(tmp_path, "1")
    with pytest.raises(AgentError, match=r"update refused \(slot-state\):.*active must be one of a, b"):
        update(client, model, golden(model), "release-1")


def test_boot_check_runs_as_the_installed_command_does(tmp_path):
    """The command a unit runs: a fresh interpreter, `python -m edgeproof_agent boot-check`, nothing pending."""
    env = {**os.environ, "PYTHONPATH": AGENT_SRC}
    done = subprocess.run(
        [sys.executable, "-m", "edgeproof_agent", "boot-check", "--state", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "slot - empty; nothing pending"


def test_the_systemd_unit_runs_boot_check_once_before_the_application():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(UNIT.read_text())
    assert unit["Service"]["Type"] == "oneshot"
    assert " boot-check --state " in unit["Service"]["ExecStart"]
    assert "multi-user.target" in unit["Unit"]["Before"]


def test_old_intents_are_forgotten_oldest_first_across_a_save(tmp_path, agent_main):
    from edgeproof_agent._slots import _KEPT_INTENTS, Slots

    slots = Slots(tmp_path / "state")
    state = slots.load()
    # names that sort in the opposite order to the one they ended in
    names = [f"intent-{999 - i:03d}" for i in range(_KEPT_INTENTS + 3)]
    for name in names:
        state["intent"] = name
        slots._ended(state, "committed", None, None)
        slots.save(state)
        state = slots.load()  # the file is written with sorted keys
    slots.forget_old_intents(state)
    assert sorted(state["intents"]) == sorted(names[3:])


HOOK = """\
import hashlib, pathlib, sys
slot, image = map(pathlib.Path, sys.argv[1:3])
if {fail}:
    print("flash verify: CRC mismatch at block 7", file=sys.stderr)
    sys.exit(3)
(slot / "applied.txt").write_text(hashlib.sha256(image.read_bytes()).hexdigest())
"""


def hooked_agent(tmp_path: Path, fail: bool) -> AgentClient:
    """A local agent whose firmware hook (a script, as a board's RAUC/U-Boot step would be) passes or fails."""
    hook = tmp_path / ("failing-hook.py" if fail else "hook.py")
    hook.write_text(HOOK.format(fail=fail))
    (client,) = started("cam-fw", extra_args=("--firmware-hook", f"{sys.executable} {hook}"))
    return client


def test_a_firmware_image_that_does_not_hash_to_its_sha256_is_refused(tmp_path, agent):
    model = release(tmp_path, "1")
    first = update(agent, model, golden(model), "release-1", firmware="fw-1.0")
    image = b"firmware fw-1.1 image " * 64
    sha = hashlib.sha256(image).hexdigest()
    with pytest.raises(AgentError, match="hash-mismatch"):
        agent.put(image, hashlib.sha256(b"another image").hexdigest())  # sent under a sha256 it does not have: not stored
    agent.put(image, sha)
    blob = local_state_dir(Device(id="cam-a")) / "models" / f"{sha}.blob"
    blob.write_bytes(image[:-1] + b"!")  # the stored image rots before the update writes it into the slot
    with pytest.raises(AgentError, match=r"hash-mismatch.*firmware image written hashes to"):
        update(agent, release(tmp_path, "2"), golden(model), "release-2", firmware="fw-1.1", firmware_image=sha)
    now = slots_of(agent)  # nothing switched: the committed slot runs on
    assert first["outcome"] == "committed"
    assert (now["active"], now["committed"], now["pending"], now["firmware_version"], now["firmware_sha256"]) == (
        "a",
        True,
        None,
        "fw-1.0",
        None,
    )


def test_a_failing_firmware_hook_reverts_the_update(tmp_path):
    client = hooked_agent(tmp_path, fail=True)
    try:
        model = release(tmp_path, "1")
        update(client, model, golden(model), "release-1", firmware="fw-1.0")
        image = b"firmware fw-1.1 image"
        result = update(client, model, golden(model), "release-2", firmware="fw-1.1", firmware_image=client.put(image))
        assert result["outcome"] == "reverted" and result["installed"] is True
        assert result["reason"] == "health check failed: firmware hook exited 3: flash verify: CRC mismatch at block 7"
        back = slots_of(client)
        assert (back["active"], back["committed"], back["firmware_version"], back["firmware_sha256"]) == ("a", True, "fw-1.0", None)
        assert (
            back["last_update"]["outcome"] == "reverted" and back["contents"]["b"]["firmware_sha256"] == hashlib.sha256(image).hexdigest()
        )
    finally:
        client.link.close()


def test_a_passing_firmware_hook_commits_and_the_slot_re_reports_the_image(tmp_path):
    client = hooked_agent(tmp_path, fail=False)
    try:
        model = release(tmp_path, "1")
        image = b"firmware fw-2.0 image " * 1000
        sha = hashlib.sha256(image).hexdigest()
        result = update(client, model, golden(model), "release-1", firmware="fw-2.0", firmware_image=client.put(image))
        assert result["outcome"] == "committed", result["reason"]
        now = slots_of(client)
        assert (now["active"], now["committed"], now["firmware_version"], now["firmware_sha256"]) == ("a", True, "fw-2.0", sha)
        slot = local_state_dir(Device(id="cam-fw")) / "slots" / "a"
        assert (slot / "firmware.bin").read_bytes() == image and (slot / "applied.txt").read_text() == sha  # the hook saw the image
        hello = parse_slots(now)
        assert hello is not None and hello.firmware_sha256 == sha and hello.firmware_version == "fw-2.0"
        # a later model-only release keeps the running firmware, image and all, in its new slot
        kept = update(client, release(tmp_path, "2"), golden(model), "release-2")
        assert kept["outcome"] == "committed" and slots_of(client)["firmware_sha256"] == sha
        assert (slot.parent / "b" / "firmware.bin").read_bytes() == image
    finally:
        client.link.close()
