"""Staged rollout over the fleet simulator: plan validation at submit, gated waves, rollback of a failing stratum, crash-resume from the journal."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import onnx
import pytest

from edgeproof.bom import canonical_bytes, generate_keypair, sign_bom
from edgeproof.fleet import FleetSpec
from edgeproof.rollout import (
    Controller,
    Journal,
    SimulatedFleet,
    drive,
    gate_thresholds,
    load_plan,
    operator_command,
    run_simulated,
    simulated_fleet,
    validate_plan,
)

ROOT = Path(__file__).resolve().parents[1]
DIGITS_MODEL = ROOT / "examples" / "digits" / "model.onnx"
V1_BOM = ROOT / "tests" / "data" / "release_v1" / "a.bom.json"
DEVICES = 1500

PLAN = """\
[release]
name = "candidate"
bom = "candidate.bom.json"
model = "candidate.onnx"
firmware_version = "fw-1"
public_key = "keys/edgeproof-ed25519.pub.pem"

[known_good]
name = "baseline"
bom = "baseline.bom.json"
model = "baseline.onnx"
firmware_version = "fw-1"
public_key = "keys/edgeproof-ed25519.pub.pem"

[gates]
alarms = ["fallback_rate", "p95_drift", "crash_rate"]
min_devices = 5
escalate_after_h = 12

[policy]
rollback = "stratum"

[target]
kind = "simulated"
devices = {devices}
seed = {seed}
internal_frac = 0.2
{faults}

[[wave]]
kind = "internal"
select = {{ cohort = "internal", chip_revision = ["A1", "H8-r1", "H8-r2"] }}
soak_h = 3
min_devices = 5

[[wave]]
kind = "canary"
max_pct = 40
soak_h = 4
min_devices = 10

[[wave]]
kind = "regional"
select = {{ region = ["eu-north", "us-west"] }}
max_pct = 60
soak_h = 3
min_devices = 5

[[wave]]
kind = "global"
max_pct = {last_pct}
soak_h = 2
"""
FALLBACK_A2 = '[[target.fault]]\nkind = "provider-fallback"\nrelease = "candidate"\nchip_revision = "A2"\nrate = 0.05'


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> Path:
    """Two signed releases: the digits model as given (known good) and a re-saved copy of it (the candidate)."""
    work = tmp_path_factory.mktemp("releases")
    private, _ = generate_keypair(work / "keys")
    shutil.copy(DIGITS_MODEL, work / "baseline.onnx")
    model = onnx.load(DIGITS_MODEL)
    model.doc_string = "candidate release"
    onnx.save(model, work / "candidate.onnx")
    old = json.loads(V1_BOM.read_text())["metadata"]["component"]["hashes"][0]["content"]
    for name in ("baseline", "candidate"):
        onnx_path = work / f"{name}.onnx"
        sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
        text = V1_BOM.read_text().replace(old, sha).replace(str(DIGITS_MODEL), str(onnx_path))
        (work / f"{name}.bom.json").write_bytes(canonical_bytes(json.loads(text)))
        sign_bom(work / f"{name}.bom.json", private, onnx_path)
    return work


def _plan(
    releases: Path, tmp: Path, seed: int = 0, faults: str = "", last_pct: int = 100, edit=lambda t: t, devices: int = DEVICES
) -> Path:
    for f in releases.iterdir():
        target = tmp / f.name
        if not target.exists():
            (shutil.copytree if f.is_dir() else shutil.copy)(f, target)
    path = tmp / "rollout.toml"
    path.write_text(edit(PLAN.format(devices=devices, seed=seed, faults=faults, last_pct=last_pct)))
    return path


def _controller(plan_path: Path, folder: Path, journal=Journal) -> tuple[Controller, SimulatedFleet, list]:
    plan = load_plan(plan_path)
    fleet = simulated_fleet(plan, folder)
    plan, waves = validate_plan(plan, fleet.inventory())
    return Controller(plan, fleet, fleet.store, folder, fleet.now_s, gate_thresholds(plan), journal), fleet, waves


def test_clean_release_reaches_the_whole_fleet_without_a_halt(releases, tmp_path):
    ctl, fleet, waves = _controller(_plan(releases, tmp_path), tmp_path / "run")
    ctl.start(waves, actor="test")
    state = run_simulated(ctl, fleet, step_h=1.0, max_h=80)
    assert state.phase == "complete", [d["reason"] for d in state.decisions[-3:]]
    outcomes = [(d["wave"], d["outcome"]) for d in state.decisions if d["outcome"] != "hold"]
    assert outcomes == [(0, "pass"), (1, "pass"), (2, "pass"), (3, "pass")]
    everyone = [d.device_id for d in fleet.inventory()]
    reported = fleet.reported(everyone)
    assert {r.model_sha256 for r in reported.values()} == {ctl.plan.release.model_sha256}
    assert max(fleet.sends.values()) == 1 and len(fleet.sends) == DEVICES
    fleet.close()


def test_fallback_on_one_revision_halts_at_canary_and_rolls_back_only_that_revision(releases, tmp_path):
    ctl, fleet, waves = _controller(_plan(releases, tmp_path, faults=FALLBACK_A2), tmp_path / "run")
    ctl.start(waves, actor="test")
    state = run_simulated(ctl, fleet, step_h=1.0, max_h=80)
    assert state.phase == "halted"
    fail = next(d for d in state.decisions if d["outcome"] == "fail")
    assert fail["wave"] == 1 and all(s.startswith("A2 ×") for s in fail["strata"])
    assert {e["alarm"] for e in fail["evidence"]} >= {"fallback_rate"} and all(e["stratum"].startswith("A2") for e in fail["evidence"])
    assert fail["release_model_sha256"] == ctl.plan.release.model_sha256
    # the rollback is verified: every rolled-back device re-reported the known-good pair before the run ended
    assert not state.unreconciled and Journal(tmp_path / "run").entries[-1]["id"].startswith("reconciled:rollback:")
    labels = {d.device_id: d.labels for d in fleet.inventory()}
    rolled = sorted(state.rolled_back)
    assert rolled and {labels[d]["chip_revision"] for d in rolled} == {"A2"}
    good = ctl.plan.known_good
    assert all((r.model_sha256, r.firmware_version) == (good.model_sha256, good.firmware_version) for r in fleet.reported(rolled).values())
    # the candidate never went past the canary; devices outside the failing strata keep it
    sent = {d for w in state.wave_devices[:2] for d in w}
    assert {d for (d, intent) in fleet.sends if intent.startswith("wave:")} == sent
    kept = fleet.reported(sorted(sent - state.rolled_back))
    assert kept and {r.model_sha256 for r in kept.values()} == {ctl.plan.release.model_sha256}
    assert max(fleet.sends.values()) == 1
    fleet.close()


class _Crash(Exception):
    pass


def _crashing_journal(limit: int):
    class CrashingJournal(Journal):
        def append(self, entry):
            if entry["id"] not in self.ids and len(self.entries) >= limit:
                raise _Crash
            return super().append(entry)

    return CrashingJournal


# 2: the first wave sent but its "sent" not journalled; 7: mid-canary; -2: the rollback sent but not confirmed
@pytest.mark.parametrize("crash_at", [2, 7, -2])
def test_a_controller_killed_mid_rollout_resumes_to_the_same_end_state_without_duplicate_sends(releases, tmp_path, crash_at):
    plan_path = _plan(releases, tmp_path, faults=FALLBACK_A2)
    ref_ctl, ref_fleet, waves = _controller(plan_path, tmp_path / "ref")
    ref_ctl.start(waves, actor="test")
    ref = run_simulated(ref_ctl, ref_fleet, step_h=1.0, max_h=80)
    ref_fleet.close()

    crash_at = crash_at if crash_at > 0 else len(Journal(tmp_path / "ref").entries) + crash_at
    assert Journal(tmp_path / "ref").entries[crash_at]["kind"] in ("sent", "decision", "send", "reconciled")
    folder = tmp_path / "crash"
    ctl, fleet, waves = _controller(plan_path, folder, _crashing_journal(crash_at))
    ctl.start(waves, actor="test")
    with pytest.raises(_Crash):
        run_simulated(ctl, fleet, step_h=1.0, max_h=80)
    assert len(Journal(folder).entries) == crash_at
    resumed = Controller(ctl.plan, fleet, fleet.store, folder, fleet.now_s, ctl.rollback)
    state = run_simulated(resumed, fleet, step_h=1.0, max_h=80)
    assert (state.phase, state.wave, sorted(state.rolled_back)) == (ref.phase, ref.wave, sorted(ref.rolled_back))
    assert max(fleet.sends.values()) == 1, [k for k, n in fleet.sends.items() if n > 1][:3]
    kinds = Counter(e["id"] for e in Journal(folder).entries)
    assert max(kinds.values()) == 1
    fleet.close()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('model = "candidate.onnx"', 'model = "baseline.onnx"'), "release.bom: signature does not verify: "),
        (lambda t: t.replace('bom = "baseline.bom.json"', 'bom = "unsigned.bom.json"'), "known_good.bom: "),
        (lambda t: t.replace('bom = "candidate.bom.json"', 'bom = "tampered.bom.json"'), "tampered.bom.json: changed since it was signed"),
        (lambda t: t.replace(f"max_pct = {100}", "max_pct = 90"), "not 100%"),
        (lambda t: t.replace('region = ["eu-north", "us-west"]', 'region = ["mars"]'), "wave[2].select: matches no device"),
        (lambda t: t.replace("min_devices = 5", "min_devices = 400"), "wave[0].min_devices: stratum"),
        (lambda t: t.replace('kind = "canary"', 'kind = "everywhere"'), "wave[1].kind: must be one of"),
    ],
    ids=["model-swapped", "unsigned", "tampered-bom", "short-of-100", "selects-nothing", "stratum-too-small", "bad-kind"],
)
def test_bad_plans_are_refused_at_submit_with_one_line(releases, tmp_path, edit, message):
    from typer.testing import CliRunner

    from edgeproof.cli._app import app

    shutil.copy(releases / "baseline.bom.json", tmp_path / "unsigned.bom.json")
    raw = (releases / "candidate.bom.json").read_bytes()
    (tmp_path / "tampered.bom.json").write_bytes(raw.replace(b"SHA-256", b"SHA-512", 1))  # one field changed after signing
    shutil.copy(releases / "candidate.bom.json.sig", tmp_path / "tampered.bom.json.sig")
    plan = _plan(releases, tmp_path, edit=edit)
    result = CliRunner().invoke(app, ["rollout", "plan", "--dry-run", str(plan)])
    err = result.stderr if result.stderr_bytes is not None else result.output
    assert result.exit_code == 2, result.output
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert f"{plan}:" in err


def test_an_undecided_wave_holds_escalates_and_advances_only_when_approved(releases, tmp_path):
    """telemetry_gap cannot be judged within a few hours (a device counts as silent after 6 h): the internal wave holds."""
    plan = _plan(
        releases, tmp_path, edit=lambda t: t.replace('alarms = ["fallback_rate", "p95_drift", "crash_rate"]', 'alarms = ["telemetry_gap"]')
    )
    folder = tmp_path / "run"
    ctl, fleet, waves = _controller(plan, folder)
    ctl.start(waves, actor="test")
    state = run_simulated(ctl, fleet, step_h=1.0, max_h=20)
    assert state.phase == "escalated" and state.wave == 0
    assert {d["outcome"] for d in state.decisions} == {"hold"} and "telemetry_gap inconclusive" in state.decisions[-1]["reason"]
    assert all(intent.startswith("wave:0:") for _, intent in fleet.sends)
    operator_command(folder, "approve", actor="alice")
    state = ctl.step()
    passed = [d for d in state.decisions if d["outcome"] == "pass"]
    assert state.wave == 1 and passed[0]["actor"] == "operator (approve)" and "approved while undecided" in passed[0]["reason"]
    fleet.close()


def test_pause_stops_sends_and_abort_rolls_every_updated_device_back(releases, tmp_path):
    folder = tmp_path / "run"
    ctl, fleet, waves = _controller(_plan(releases, tmp_path), folder)
    ctl.start(waves, actor="test")
    for _ in range(5):  # into the canary
        ctl.step()
        fleet.advance(1.0)
    operator_command(folder, "pause", actor="bob")
    sends = sum(fleet.sends.values())
    state = run_simulated(ctl, fleet, step_h=1.0, max_h=30)
    assert state.paused and sum(fleet.sends.values()) == sends
    operator_command(folder, "resume", actor="bob")
    operator_command(folder, "abort", actor="bob")
    state = ctl.step()
    assert state.phase == "aborted"
    updated = {d for w in state.wave_devices[: state.wave + 1] for d in w}
    assert state.rolled_back == updated
    good = ctl.plan.known_good.model_sha256
    assert {r.model_sha256 for r in fleet.reported(sorted(updated)).values()} == {good}
    assert next(d for d in state.decisions if d["outcome"] == "abort")["actor"] == "bob"
    fleet.close()


def test_cli_dry_run_lists_waves_and_start_runs_the_plan_to_the_end(releases, tmp_path):
    from typer.testing import CliRunner

    from edgeproof.cli._app import app

    plan = _plan(releases, tmp_path)
    runner = CliRunner()
    dry = runner.invoke(app, ["rollout", "plan", "--dry-run", str(plan)])
    assert dry.exit_code == 0, dry.output
    assert "signatures verify" in dry.output
    lines = [line for line in dry.output.splitlines() if "devices," in line and "cumulative" in line]
    assert [line.split(":")[0].strip() for line in lines] == [
        "internal (internal)",
        "canary (canary)",
        "regional (regional)",
        "global (global)",
    ]
    assert "100.0% cumulative" in lines[-1]
    folder = tmp_path / "run"
    started = runner.invoke(app, ["rollout", "start", str(plan), "--journal", str(folder)])
    assert started.exit_code == 0, started.output
    status = runner.invoke(app, ["rollout", "status", "--journal", str(folder)])
    assert status.exit_code == 0 and "complete" in status.output
    refused = runner.invoke(app, ["rollout", "pause", "--journal", str(folder)])
    assert refused.exit_code == 2


@pytest.mark.slow
def test_acceptance_over_20_seeds(releases, tmp_path):
    """Issue #17's acceptance on the simulated fleet (2500 devices, so every seed's strata meet the plan's minimums): clean 20/20 complete; fallback on A2 halts at canary in >= 19/20,
    rolls back only A2 devices, and each rolled-back device re-reports the known-good pair."""
    clean, halted_at_canary = 0, 0
    for seed in range(20):
        for faults in ("", FALLBACK_A2):
            run = tmp_path / f"s{seed}{'f' if faults else 'c'}"
            run.mkdir()
            ctl, fleet, waves = _controller(_plan(releases, run, seed=seed, faults=faults, devices=2500), run / "run")
            ctl.start(waves, actor="test")
            state = run_simulated(ctl, fleet, step_h=1.0, max_h=80)
            labels = {d.device_id: d.labels for d in fleet.inventory()}
            if not faults:
                clean += state.phase == "complete" and not any(d["outcome"] == "fail" for d in state.decisions)
            elif state.phase == "halted" and state.wave == 1:
                good = ctl.plan.known_good.model_sha256
                only_a2 = {labels[d]["chip_revision"] for d in state.rolled_back} == {"A2"}
                re_reported = {r.model_sha256 for r in fleet.reported(sorted(state.rolled_back)).values()} == {good}
                halted_at_canary += only_a2 and re_reported
            assert max(fleet.sends.values()) == 1
            fleet.close()
    assert clean == 20 and halted_at_canary >= 19, (clean, halted_at_canary)


@pytest.mark.slow
def test_kill_9_at_random_points_resumes_to_the_same_end_state(releases, tmp_path):
    """A controller process killed with SIGKILL at random journal points; `rollout run` goes on to the reference end state."""
    plan = _plan(releases, tmp_path, faults=FALLBACK_A2)
    ref = drive(tmp_path / "ref", plan, actor="test")
    ref_entries = Journal(tmp_path / "ref").entries
    outcomes = [(d["wave"], d["outcome"], d["at_s"]) for d in ref.decisions]
    rng = random.Random(17)
    killed_at: list[int] = []
    for k in range(6):
        folder = tmp_path / f"kill{k}"
        target = rng.randint(1, len(ref_entries) - 1)
        cmd = [sys.executable, "-c", "from edgeproof.cli import main; main()", "rollout", "start", str(plan), "--journal", str(folder)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and len(Journal(folder).entries) < target:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the controller finished before it was killed"
        killed_at.append(len(Journal(folder).entries))
        state = drive(folder, actor="test")
        assert (state.phase, state.wave, sorted(state.rolled_back)) == (ref.phase, ref.wave, sorted(ref.rolled_back)), target
        assert [(d["wave"], d["outcome"], d["at_s"]) for d in state.decisions] == outcomes, target
        ids = Counter(e["id"] for e in Journal(folder).entries)
        assert max(ids.values()) == 1
        fleet = SimulatedFleet(FleetSpec(devices=DEVICES), folder)  # the persisted fleet, with its send log
        assert fleet.sends and max(fleet.sends.values()) == 1, target
        fleet.close()
    assert len(set(killed_at)) >= 3, killed_at  # killed at different points of the rollout
