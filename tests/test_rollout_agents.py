"""The rollout controller over real local agents (separate processes, real files in their A/B slots): one device's
health check fails on a golden-output mismatch, it reverts by itself, and the controller records and acts on it."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from conftest import DIGITS_MODEL
from edgeproof.agent import local_state_dir
from edgeproof.agent._client import parse_slots
from edgeproof.bom import canonical_bytes, generate_keypair, sign_bom
from edgeproof.farm.inventory import Device as Board
from edgeproof.fleet import FleetStore
from edgeproof.rollout import AgentFleet, Controller, Journal, load_plan, validate_plan
from edgeproof.rollout._plan import stratum_of
from edgeproof.rollout._run import agent_fleet

V1_BOM = Path(__file__).resolve().parent / "data" / "release_v1" / "a.bom.json"
NO_FIRMWARE = "unavailable:no firmware profile in the run record"

PLAN = """\
[release]
name = "candidate"
bom = "candidate.bom.json"
model = "candidate.onnx"
firmware_version = "fw-2"
public_key = "keys/edgeproof-ed25519.pub.pem"

[known_good]
name = "baseline"
bom = "baseline.bom.json"
model = "baseline.onnx"
firmware_version = "fw-1"
public_key = "keys/edgeproof-ed25519.pub.pem"

[[wave]]
kind = "global"
soak_h = 0
min_devices = 1
"""


def _record_golden(model: Path, out: Path) -> None:
    """Golden inputs and the outputs ``model`` gives for them, as the agent's ``update`` reads them."""
    x = np.random.default_rng(7).random((2, 1, 32, 32), dtype=np.float32)
    (logits,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(["logits"], {"input": x})
    np.savez(out, input__input=x, output__logits=logits)


@pytest.fixture
def releases(tmp_path: Path) -> Path:
    """Two signed releases: the digits model (known good) and a candidate with a retrained head bias, each with its
    golden file; the r2 boards' own golden file was recorded from the baseline and not re-recorded for the candidate."""
    work = tmp_path / "releases"
    work.mkdir()
    private, _ = generate_keypair(work / "keys")
    model = onnx.load(str(DIGITS_MODEL))
    onnx.save(model, str(work / "baseline.onnx"))
    bias = next(t for t in model.graph.initializer if t.name == "head.bias")
    shifted = numpy_helper.to_array(bias).copy()
    shifted[3] += 0.5
    bias.CopyFrom(numpy_helper.from_array(shifted, "head.bias"))
    onnx.save(model, str(work / "candidate.onnx"))
    old = json.loads(V1_BOM.read_text())["metadata"]["component"]["hashes"][0]["content"]
    for name, firmware in (("baseline", "fw-1"), ("candidate", "fw-2")):
        onnx_path = work / f"{name}.onnx"
        sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
        # the BOM's passing host target, gated on the firmware the release pairs the model with
        text = V1_BOM.read_text().replace(old, sha).replace(str(DIGITS_MODEL), str(onnx_path)).replace(NO_FIRMWARE, firmware)
        (work / f"{name}.bom.json").write_bytes(canonical_bytes(json.loads(text)))
        sign_bom(work / f"{name}.bom.json", private, onnx_path)
        _record_golden(onnx_path, work / f"{name}.golden.npz")
    _record_golden(work / "baseline.onnx", work / "candidate.golden.r2.npz")  # stale: the baseline's outputs
    (work / "rollout.toml").write_text(PLAN)
    return work


@pytest.fixture
def fleet():
    """Two local agents, each its own process and state dir, labelled as their owners configured them."""
    boards = [
        Board(id=f"cam-{rev}", chip_revision=rev, extra_args=("--label", "cohort=field", "--label", f"region={region}"))
        for rev, region in (("r1", "eu-north"), ("r2", "us-west"))
    ]
    agents = AgentFleet(boards)
    yield agents
    agents.close()


def test_a_device_that_fails_its_health_check_reverts_by_itself_and_the_controller_records_it(releases, tmp_path, fleet):
    plan = load_plan(releases / "rollout.toml")
    inventory = {d.device_id: d.labels for d in fleet.inventory()}
    # the agent's labels, the inventory's chip revision, the host as board; no firmware label: nothing installed yet
    assert inventory["cam-r2"] == {"cohort": "field", "region": "us-west", "chip_revision": "r2", "board": "host"}
    plan, waves = validate_plan(plan, fleet.inventory())
    good, new = plan.known_good, plan.release
    ids = sorted(inventory)
    fleet.send(ids, good, "provision:baseline", "field")  # both boards start on the known-good pair, committed
    assert {r.model_sha256 for r in fleet.reported(ids).values()} == {good.model_sha256}

    clock = [0.0]
    with FleetStore(tmp_path / "fleet.duckdb") as store:
        ctl = Controller(plan, fleet, store, tmp_path / "run", lambda: clock[0])
        ctl.start(waves, actor="test")
        ctl.step()  # sends the wave: each agent writes its inactive slot and health-checks it
        clock[0] += 60.0
        state = ctl.step()  # reconciles what they re-report, judges the wave
        clock[0] += 60.0
        state = ctl.step()  # reconciles the rollback
    intent = f"wave:0:global:{new.name}"

    # the healthy board committed the candidate and re-reports it
    healthy = fleet.reported(["cam-r1"])["cam-r1"]
    assert (healthy.model_sha256, healthy.firmware_version, healthy.slot, healthy.committed) == (new.model_sha256, "fw-2", "b", True)
    assert healthy.intent == intent and healthy.reverted is None
    # the other went back to its known-good slot by itself; its hello says so, typed
    hello = fleet.clients["cam-r2"].hello()
    assert hello.slots is not None and hello.slots.last_update is not None
    assert hello.slots.active == "a" and hello.slots.committed and hello.slots.firmware_version == "fw-1"
    assert hello.slots.model_sha256 == {"a": good.model_sha256, "b": new.model_sha256}  # the tried model is still in b
    assert hello.slots.last_update.self_reverted and hello.slots.last_update.intent == intent
    assert hello.slots.last_update.reason.startswith("health check failed: golden output logits differs from the recorded one")
    slot_dir = local_state_dir(Board(id="cam-r2")) / "slots"
    assert hashlib.sha256((slot_dir / "a" / "model.onnx").read_bytes()).hexdigest() == good.model_sha256

    entries = Journal(tmp_path / "run").entries
    (revert,) = [e for e in entries if e["kind"] == "self-revert"]
    assert revert["device"] == "cam-r2" and revert["intent"] == intent and revert["actor"] == "device:cam-r2"
    assert (revert["model_sha256"], revert["firmware_version"], revert["slot"]) == (good.model_sha256, "fw-1", "a")
    assert revert["on_known_good"] is True and revert["reason"] == hello.slots.last_update.reason
    wave_reconciled = next(e for e in entries if e["id"] == f"reconciled:{intent}")
    assert wave_reconciled["devices"] == 1 and wave_reconciled["self_reverted"] == 1

    # the controller halts the wave and rolls back the failing stratum: the device already runs known-good, nothing is sent
    r2 = stratum_of(inventory["cam-r2"])
    fail = next(d for d in state.decisions if d["outcome"] == "fail")
    assert fail["strata"] == [r2] and "cam-r2" in fail["reason"]
    assert fail["evidence"][0]["alarm"] == "device-health-check" and fail["evidence"][0]["reported_model_sha256"] == good.model_sha256
    assert state.phase == "halted" and not state.pending and not state.unreconciled
    rollback = next(e for e in entries if e["kind"] == "send" and e["purpose"] == "rollback")
    assert rollback["devices"] == [] and rollback["strata"] == [r2]
    assert {intent for (_, intent) in fleet.sends} == {"provision:baseline", intent} and max(fleet.sends.values()) == 1
    assert fleet.updates["cam-r2"]["outcome"] == "reverted" and fleet.updates["cam-r1"]["outcome"] == "committed"
    healthy_check = fleet.updates["cam-r1"]
    assert (
        healthy_check["health"]["p50_limit_ms"] == 1000.0
        and healthy_check["p50_limit_source"] == "budgets.p95_ms budget in candidate.bom.json"
    )
    assert healthy_check["health"]["p50_ms"] <= 1000.0 and "measured by perf_counter_ns" in healthy_check["health"]["p50_provenance"]


def test_an_agent_without_slots_says_hello_without_them():
    """An older agent's hello has no ``slots`` object; one before per-slot contents names the active slot's model only."""
    assert parse_slots(None) is None
    older = parse_slots({"active": "a", "model_sha256": "ab" * 32, "firmware_version": "fw-1", "committed": True, "intent": "r1"})
    assert older is not None and older.active_model_sha256 == "ab" * 32 and older.last_update is None
    broken = parse_slots({"error": "state.json: not readable slot state"})
    assert broken is not None and broken.error == "state.json: not readable slot state" and broken.active_model_sha256 is None


BOARDS_TOML = """\
[devices.cam-r1]
transport = "local"
chip_revision = "r1"
agent = {r1}

[devices.cam-r2]
transport = "local"
chip_revision = "r2"
agent = {r2}
"""


def test_the_cli_drives_a_fleet_of_agents_from_the_plan_and_status_shows_the_self_revert(releases, tmp_path):
    """``[target] kind = "agents"``: `rollout start` sends the wave to the inventory's agents in real time, the r2 board's
    golden check fails and it reverts by itself; the rollout halts, `rollout run` finds nothing left to send, and
    `rollout status` prints the self-revert as the device re-reported it."""
    from typer.testing import CliRunner

    from edgeproof.cli._app import app

    agent = {  # the agent started as its owner configured it: this interpreter, its labels
        rev: json.dumps(f"{sys.executable} -m edgeproof_agent --label cohort=field --label region={region}")
        for rev, region in (("r1", "eu-north"), ("r2", "us-west"))
    }
    (releases / "boards.toml").write_text(BOARDS_TOML.format(**agent))
    image = b"fw-2 image for the host stand-in " * 256  # the release's firmware: written into each board's inactive slot
    (releases / "fw-2.bin").write_bytes(image)
    pinned = f'firmware_image = "fw-2.bin"\nfirmware_sha256 = "{hashlib.sha256(image).hexdigest()}"\n'
    text = PLAN.replace('firmware_version = "fw-2"\n', 'firmware_version = "fw-2"\n' + pinned)
    (releases / "rollout.toml").write_text(text + '\n[target]\nkind = "agents"\nboards = "boards.toml"\n')
    plan = load_plan(releases / "rollout.toml")
    provision = agent_fleet(plan)  # both boards start on the known-good pair, committed
    try:
        checked, _ = validate_plan(plan, provision.inventory())
        provision.send(sorted(d.device_id for d in provision.inventory()), checked.known_good, "provision:baseline", "field")
    finally:
        provision.close()

    runner = CliRunner()
    dry = runner.invoke(app, ["rollout", "plan", "--dry-run", str(releases / "rollout.toml")])
    assert dry.exit_code == 0, dry.output
    assert "fleet: 2 devices (agents of " in dry.output and "rollback target: host on fw-1 (2 devices)" in dry.output
    assert f"firmware image {releases / 'fw-2.bin'} sha256 {hashlib.sha256(image).hexdigest()[:12]}… matches" in dry.output
    folder = tmp_path / "run"
    args = ["--journal", str(folder), "--poll-s", "0.05", "--max-h", "0.05"]
    started = runner.invoke(app, ["rollout", "start", str(releases / "rollout.toml"), *args])
    assert started.exit_code == 1, started.output  # halted
    assert "halted" in started.output.splitlines()[0] and "wall-clock hours since the start" in started.output
    again = runner.invoke(app, ["rollout", "run", *args])
    assert again.exit_code == 1 and "halted" in again.output.splitlines()[0], again.output

    entries = Journal(folder).entries
    # these agents were started without --telemetry: each is journalled once with why its gates see no data
    off = [e for e in entries if e["kind"] == "telemetry-off"]
    assert sorted(e["device"] for e in off) == ["cam-r1", "cam-r2"]
    assert {e["reason"] for e in off} == {"not asked for (start the agent with --telemetry DIR)"}
    sends = [e for e in entries if e["kind"] == "sent"]
    assert [e["devices_sent"] for e in sends] == [2, 0]  # the wave to both boards; the rollback owes nothing
    good = checked.known_good
    status = runner.invoke(app, ["rollout", "status", "--journal", str(folder)])
    assert status.exit_code == 0, status.output
    (line,) = [s for s in status.output.splitlines() if "self-revert:" in s]
    assert "device cam-r2 (r2 × us-west) reverted wave:0:global:candidate by itself: health check failed: golden output logits" in line
    assert f"re-reports slot a, model {good.model_sha256[:12]}…, firmware fw-1, committed; on the known-good pair: yes" in line
    assert "1 self-reverted" in status.output and "fail by controller: 1 device(s) reverted the release by themselves" in status.output
    after = AgentFleet([Board(id="cam-r1")])
    try:
        r1 = after.reported(["cam-r1"])["cam-r1"]
        slots = after.clients["cam-r1"].hello().slots
    finally:
        after.close()
    assert (r1.model_sha256, r1.firmware_version, r1.committed) == (checked.release.model_sha256, "fw-2", True)
    assert slots is not None and slots.firmware_sha256 == hashlib.sha256(image).hexdigest()  # the image re-reported with the version
    assert (local_state_dir(Board(id="cam-r1")) / "slots" / "b" / "firmware.bin").read_bytes() == image


def test_a_firmware_image_is_refused_at_submit_unless_it_matches_its_pin_and_its_bom(releases):
    """The plan pins the image's sha256; a signed BOM that states one for a firmware component must agree with it."""
    from edgeproof.bom._sign import PRIVATE_KEY_NAME
    from edgeproof.errors import DataError
    from edgeproof.rollout import Device

    image = releases / "fw-2.bin"
    image.write_bytes(b"fw-2 image")
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    fleet = [Device("cam-1", {"board": "host", "chip_revision": "r1", "region": "eu-north", "cohort": "field"})]
    path = releases / "rollout.toml"

    def submit(pin: str, bom: str = "candidate.bom.json") -> None:
        pinned = f'firmware_image = "fw-2.bin"\nfirmware_sha256 = "{pin}"\n'
        path.write_text(
            PLAN.replace('firmware_version = "fw-2"\n', 'firmware_version = "fw-2"\n' + pinned).replace("candidate.bom.json", bom)
        )
        validate_plan(load_plan(path), fleet)

    submit(sha)  # matches its pin; the BOM states no image hash (the builder records firmware versions only)
    with pytest.raises(
        DataError, match=r"rollout.toml:6: release.firmware_image: fw-2.bin hashes to [0-9a-f]{12}…, the plan pins 000000000000…"
    ):
        submit("0" * 64)
    doc = json.loads((releases / "candidate.bom.json").read_text())
    other = hashlib.sha256(b"another build").hexdigest()
    doc["components"].append(
        {
            "type": "firmware",
            "bom-ref": "firmware:host",
            "name": "host firmware",
            "version": "fw-2",
            "hashes": [{"alg": "SHA-256", "content": other}],
        }
    )
    (releases / "stated.bom.json").write_bytes(canonical_bytes(doc))
    sign_bom(releases / "stated.bom.json", releases / "keys" / PRIVATE_KEY_NAME, releases / "candidate.onnx")
    with pytest.raises(DataError, match=f"its signed BOM states {other[:12]}… for firmware:host"):
        submit(sha, "stated.bom.json")
    with pytest.raises(DataError, match=r"release.firmware_sha256: must be 64 lowercase hex digits"):
        submit("ABC")


def test_an_agents_target_that_names_no_board_of_its_inventory_is_one_line(releases):
    from edgeproof.errors import DataError

    (releases / "boards.toml").write_text('[devices.cam-1]\ntransport = "local"\n')
    path = releases / "rollout.toml"
    path.write_text(PLAN + '\n[target]\nkind = "agents"\nboards = "boards.toml"\ndevices = ["cam-9"]\n')
    with pytest.raises(DataError, match=r"target.devices: 'cam-9' is not a board of .*boards.toml \(it has cam-1, local\)"):
        agent_fleet(load_plan(path))
    path.write_text(PLAN + '\n[target]\nkind = "cloud"\n')
    with pytest.raises(DataError, match=r"rollout.toml:2[0-9]: target.kind: must be one of simulated, agents, got 'cloud'"):
        load_plan(path)
    path.write_text(PLAN + '\n[target]\nkind = "agents"\n')
    with pytest.raises(DataError, match=r"target: missing 'boards'"):
        load_plan(path)


GATED_PLAN = PLAN.replace(
    '[[wave]]\nkind = "global"\n',
    '[[wave]]\nkind = "canary"\nmax_devices = 1\nsoak_h = 1\nmin_devices = 1\n\n[[wave]]\nkind = "global"\n',
) + (
    # two devices can give a judged wave one device against one control: the smallest minimum the validator takes (1);
    # the alarms whose data a workload on the host records (no energy meter, no confidence hook, no accelerator here)
    '\n[gates]\nmin_devices = 1\nalarms = ["crash_rate", "telemetry_gap"]\n'
)


def test_the_agents_telemetry_reaches_the_gates_and_the_canary_is_judged_on_its_evidence(releases, tmp_path):
    """Two agents in one stratum, recording telemetry: the canary wave updates one, each poll both run their active slot's
    model and the driver pulls and ingests their segments; the wave's gate then judges one device against one control
    on what they recorded (n devices, inferences), not on NoData."""
    from edgeproof.rollout._run import AgentTelemetry, gate_thresholds, run_agents

    on_device = tmp_path / "on-device"
    boards = [
        Board(
            id=f"cam-{i}",
            chip_revision="r1",
            extra_args=("--label", "cohort=field", "--label", "region=eu-north", "--telemetry", str(on_device / f"cam-{i}")),
        )
        for i in (1, 2)
    ]
    (releases / "rollout.toml").write_text(GATED_PLAN)
    agents = AgentFleet(boards)
    try:
        assert agents.telemetry_off == {}
        plan, waves = validate_plan(load_plan(releases / "rollout.toml"), agents.inventory())
        (canary,), (rest,) = [[d.device_id for d in w] for w in waves]
        good, new = plan.known_good, plan.release
        agents.send([canary, rest], good, "provision:baseline", "field")
        folder = tmp_path / "run"
        folder.mkdir()
        clock = [0.0]
        with FleetStore(folder / "fleet.duckdb") as store:
            ctl = Controller(plan, agents, store, folder, lambda: clock[0], gate_thresholds(plan))
            ctl.start(waves, actor="test")
            collect = AgentTelemetry(agents, store, folder, plan.gates.control, lambda: clock[0], runs=300)

            def sleep(seconds: float) -> None:
                clock[0] += seconds

            # an hour a poll in the controller's clock: two polls (each a workload of 300 calls a device), two judgements
            state = run_agents(ctl, poll_s=3600.0, max_h=2.5, sleep=sleep, elapsed_s=lambda: clock[0], collect=collect)
            rows = store.con.execute(
                "SELECT d.device_id, s.cohort, s.model_sha256, s.firmware_version, s.chip_revision, s.region, count(*), sum(w.inferences) "
                "FROM window_rows w JOIN label_sets s USING (label_key) JOIN devices d USING (device_key) GROUP BY ALL ORDER BY 1"
            ).fetchall()
            again = collect()  # a poll more: re-pulled bytes and re-ingested records are not stored twice
            assert again.windows == 2 and again.duplicates == 0
        # each device's windows carry the rollout's cohort for it and what its active slot holds
        assert sorted(rows) == sorted(
            [
                (canary, "canary", new.model_sha256, "fw-2", "r1", "eu-north", 2, 600.0),
                (rest, "control", good.model_sha256, "fw-1", "r1", "eu-north", 2, 600.0),
            ]
        )
        for d in (canary, rest):  # the lab's copy of each segment is the device's file, byte for byte
            device_files = {p.name: p.read_bytes() for p in (on_device / d).glob("*.eptseg")}
            assert device_files and {p.name: p.read_bytes() for p in (folder / "telemetry" / d).iterdir()} == device_files
        assert collect.workloads[canary]["labels"]["model_sha256"] == new.model_sha256 and collect.workloads[canary]["errors"] == 0
    finally:
        agents.close()

    holds = [d for d in state.decisions if d["wave"] == 0]
    assert [d["outcome"] for d in holds] == ["hold", "hold"] and state.phase == "holding" and state.wave == 0
    last = holds[-1]
    # one device a side: every gate has data, and neither can be decided with it. crash_rate: 0 errors in 600 inferences
    # bounds the cohort's rate only to a few per thousand at this alpha, over the 0.1% threshold; telemetry_gap: 0 of 1
    # device silent is an interval over most of [0, 1]
    by_alarm = {e["alarm"]: e for e in last["evidence"]}
    assert set(by_alarm) == {"crash_rate", "telemetry_gap"}
    assert all(e["verdict"] == "inconclusive" and e["n_devices"] == 1 for e in by_alarm.values())
    assert by_alarm["crash_rate"]["n_samples"] == 600.0 and by_alarm["crash_rate"]["samples_unit"] == "inferences"
    assert by_alarm["crash_rate"]["estimate"] == 0.0 and by_alarm["crash_rate"]["interval"][1] > by_alarm["crash_rate"]["threshold"]
    assert by_alarm["telemetry_gap"]["n_samples"] == 1.0 and by_alarm["crash_rate"]["provenance"] == "measured:field:2 devices"
    assert "crash_rate inconclusive" in last["reason"] and "no telemetry" not in last["reason"]
    assert not Journal(folder).of_kind("telemetry-off", "telemetry-error")


def test_a_device_that_re_reports_another_firmware_image_is_not_reconciled(releases, tmp_path, fleet):
    """The release pins its image's sha256: a device whose active slot re-reports another image is not reconciled,
    though its model and firmware version match; once it reports the pinned image again, it is."""
    image = b"fw-2 image " * 64
    (releases / "fw-2.bin").write_bytes(image)
    pinned = f'firmware_image = "fw-2.bin"\nfirmware_sha256 = "{hashlib.sha256(image).hexdigest()}"\n'
    (releases / "rollout.toml").write_text(PLAN.replace('firmware_version = "fw-2"\n', 'firmware_version = "fw-2"\n' + pinned))
    plan, waves = validate_plan(load_plan(releases / "rollout.toml"), fleet.inventory())
    ids = sorted(d.device_id for d in fleet.inventory())
    fleet.send(ids, plan.known_good, "provision:baseline", "field")
    clock = [0.0]
    with FleetStore(tmp_path / "fleet.duckdb") as store:
        ctl = Controller(plan, fleet, store, tmp_path / "run", lambda: clock[0])
        ctl.start(waves, actor="test")
        ctl.step()  # sends the wave; cam-r1 commits the candidate with its image
        meta_path = local_state_dir(Board(id="cam-r1")) / "slots" / "b" / "meta.json"
        meta = json.loads(meta_path.read_text())
        assert meta["firmware_sha256"] == plan.release.firmware_sha256
        meta_path.write_text(json.dumps({**meta, "firmware_sha256": hashlib.sha256(b"another image").hexdigest()}))
        reported = fleet.reported(["cam-r1"])["cam-r1"]
        assert (reported.model_sha256, reported.firmware_version) == (plan.release.model_sha256, "fw-2")
        assert reported.firmware_sha256 == hashlib.sha256(b"another image").hexdigest()
        clock[0] += 60.0
        state = ctl.step()
        intent = f"wave:0:global:{plan.release.name}"
        assert [e["id"] for e in state.unreconciled] == [intent]
        assert f"reconciled:{intent}" not in Journal(tmp_path / "run").ids
        meta_path.write_text(json.dumps(meta))  # the device re-reports the pinned image
        clock[0] += 60.0
        state = ctl.step()
        assert f"reconciled:{intent}" in Journal(tmp_path / "run").ids


def test_a_pull_sends_whole_frames_only_and_resumes_where_the_lab_copy_ends(tmp_path, monkeypatch):
    """The board's side of ``pull-telemetry``: a frame still being written stays on the board, a small reply budget
    splits the pull, and the lab's copy grown from the replies reads back every window the board recorded."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "agent" / "src"))
    from edgeproof_agent._telemetry import JobTelemetry
    from edgeproof_agent._workload import WorkloadRun

    from edgeproof.telemetry import read_segments

    board = JobTelemetry(tmp_path / "board")
    labels = {"device_id": "cam-1", "model_sha256": "ab" * 32, "firmware_version": "fw-1", "region": "eu", "chip_revision": "r1"}
    for i in range(3):
        assert board.write_workload({**labels, "cohort": f"c{i}"}, WorkloadRun([1.0, 2.0, 3.0], 0, None, [], i, i + 1)) == []
    (segment,) = (tmp_path / "board").glob("*.eptseg")
    whole = segment.read_bytes()
    with segment.open("ab") as f:
        f.write(whole[8:40])  # the head and a little of a fourth frame: a write under way
    lab = tmp_path / "lab"
    lab.mkdir()
    replies = 0
    while True:
        offsets = {p.name: p.stat().st_size for p in lab.iterdir()}
        sent, complete = board.segments_since(offsets, max_bytes=len(whole) // 2)
        replies += 1
        for s in sent:
            with (lab / s["name"]).open("ab") as f:
                assert f.tell() == s["offset"]
                f.write(base64.b64decode(s["data"]))
        if complete:
            break
    assert replies > 1 and (lab / segment.name).read_bytes() == whole  # the torn fourth frame stayed on the board
    assert sorted(w.labels.cohort for w in read_segments(lab).windows) == ["c0", "c1", "c2"]
    assert board.segments_since({segment.name: len(whole)}, 1 << 20) == ([], True)
