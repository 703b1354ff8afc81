"""Staged rollout over the fleet simulator: plan validation at submit, gated waves, rollback of a failing stratum, crash-resume from the journal."""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import pickle
import random
import shutil
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest

from edgeproof.bom import canonical_bytes, generate_keypair, sign_bom
from edgeproof.bom._sign import PRIVATE_KEY_NAME
from edgeproof.fleet import FleetSpec
from edgeproof.rollout import (
    Controller,
    Journal,
    SimulatedFleet,
    drive,
    fold,
    gate_thresholds,
    load_plan,
    operator_command,
    run_simulated,
    simulated_fleet,
    validate_plan,
)
from edgeproof.rollout._journal import JOURNAL_NAME
from edgeproof.rollout._transport import SEND_LOG_NAME

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


BOARDS = tuple(b.target for b in FleetSpec().boards)  # the simulated fleet's boards: the hardware classes with fw-1


def _with_board_verdicts(doc: dict, verdicts: dict[str, str], firmware: str = "fw-1") -> dict:
    """The BOM with a gated target per board (the host target's verdict restated for it, on ``firmware``): what the
    rollout's compatibility check reads. The figures stay the host's; only the target ids, verdict and firmware change."""
    host = next(c for c in doc["components"] if c["bom-ref"] == "target:host")
    for board, verdict in verdicts.items():
        target = json.loads(json.dumps(host)) | {"bom-ref": f"target:{board}", "name": board}
        restated = {"edgeproof:firmware.version": firmware, "edgeproof:gate.verdict": verdict}
        target["properties"] = [p | {"value": restated.get(p["name"], p["value"])} for p in target["properties"]]
        doc["components"].append(target)
    return doc


def _signed_bom(folder: Path, name: str, model: Path, verdicts: dict[str, str], private_key: Path) -> Path:
    """``folder/name.bom.json``: the v1 BOM made over to ``model``, with ``verdicts`` per board, signed."""
    old = json.loads(V1_BOM.read_text())["metadata"]["component"]["hashes"][0]["content"]
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    text = V1_BOM.read_text().replace(old, sha).replace(str(DIGITS_MODEL), str(model))
    bom = folder / f"{name}.bom.json"
    bom.write_bytes(canonical_bytes(_with_board_verdicts(json.loads(text), verdicts)))
    sign_bom(bom, private_key, model)
    return bom


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> Path:
    """Two signed releases: the digits model as given (known good) and a re-saved copy of it (the candidate), each BOM
    passing on every board of the simulated fleet with fw-1."""
    work = tmp_path_factory.mktemp("releases")
    private, _ = generate_keypair(work / "keys")
    shutil.copy(DIGITS_MODEL, work / "baseline.onnx")
    model = onnx.load(DIGITS_MODEL)
    model.doc_string = "candidate release"
    onnx.save(model, work / "candidate.onnx")
    for name in ("baseline", "candidate"):
        _signed_bom(work, name, work / f"{name}.onnx", dict.fromkeys(BOARDS, "pass"), private)
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
        (
            lambda t: t.replace('bom = "candidate.bom.json"', 'bom = "candidate-one-board.bom.json"'),
            f"candidate-one-board.bom.json carries no passing verdict for board {BOARDS[1]} with firmware fw-1 (",
        ),
        (
            lambda t: t.replace('bom = "candidate.bom.json"', 'bom = "candidate-fails-one.bom.json"'),
            f"no passing verdict for board {BOARDS[1]} with firmware fw-1 (",
        ),
        (lambda t: t.replace('firmware_version = "fw-1"', 'firmware_version = "fw-2"', 1), "2 of 2 hardware classes uncovered"),
        (
            lambda t: t.replace('bom = "baseline.bom.json"', 'bom = "baseline-fails-one.bom.json"'),
            f"known_good.bom: {{tmp}}/baseline-fails-one.bom.json carries no passing verdict for board {BOARDS[1]} with firmware fw-1 (",
        ),
    ],
    ids=[
        "model-swapped",
        "unsigned",
        "tampered-bom",
        "short-of-100",
        "selects-nothing",
        "stratum-too-small",
        "bad-kind",
        "bom-lacks-a-board",
        "bom-fails-a-board",
        "bom-not-on-the-firmware",
        "rollback-target-fails-a-board",
    ],
)
@pytest.mark.parametrize("verb", ["plan", "start"])
def test_bad_plans_are_refused_at_submit_with_one_line(releases, tmp_path, edit, message, verb):
    from typer.testing import CliRunner

    from edgeproof.cli._app import app

    shutil.copy(releases / "baseline.bom.json", tmp_path / "unsigned.bom.json")
    raw = (releases / "candidate.bom.json").read_bytes()
    (tmp_path / "tampered.bom.json").write_bytes(raw.replace(b"SHA-256", b"SHA-512", 1))  # one field changed after signing
    shutil.copy(releases / "candidate.bom.json.sig", tmp_path / "tampered.bom.json.sig")
    private = releases / "keys" / PRIVATE_KEY_NAME
    for name, verdicts in (("candidate-one-board", {BOARDS[0]: "pass"}), ("candidate-fails-one", {BOARDS[0]: "pass", BOARDS[1]: "fail"})):
        _signed_bom(tmp_path, name, releases / "candidate.onnx", verdicts, private)  # signed, but not for every board
    # the known-good pair is the rollback target: its BOM must pass on every board the waves reach too
    _signed_bom(tmp_path, "baseline-fails-one", releases / "baseline.onnx", {BOARDS[0]: "pass", BOARDS[1]: "fail"}, private)
    plan = _plan(releases, tmp_path, edit=edit)
    folder = tmp_path / "run"
    args = ["plan", "--dry-run", str(plan)] if verb == "plan" else ["start", str(plan), "--journal", str(folder)]
    result = CliRunner().invoke(app, ["rollout", *args])
    err = result.stderr if result.stderr_bytes is not None else result.output
    assert result.exit_code == 2, result.output
    message = message.replace("{tmp}", str(tmp_path))
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert f"{plan}:" in err and "Traceback" not in result.output
    assert not folder.exists()  # a refused start leaves nothing behind


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
    compatible = next(line for line in dry.output.splitlines() if line.startswith("hardware classes:"))
    assert all(f"{board} on fw-1" in compatible for board in BOARDS), compatible
    folder = tmp_path / "run"
    started = runner.invoke(app, ["rollout", "start", str(plan), "--journal", str(folder)])
    assert started.exit_code == 0, started.output
    status = runner.invoke(app, ["rollout", "status", "--journal", str(folder)])
    assert status.exit_code == 0 and "complete" in status.output
    refused = runner.invoke(app, ["rollout", "pause", "--journal", str(folder)])
    assert refused.exit_code == 2


def _forked(call: Callable[[], object]) -> int:
    """Fork a child process that runs ``call`` and exits with its exit status; its pid. The child starts with this process's
    imports and cached board simulations instead of paying for them again, and it is a process of its own: kill -9 ends it."""
    gc.freeze()  # the child's collections skip the objects it inherits, so they are not copied page by page
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 70
        try:
            call()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    gc.unfreeze()
    return pid


def _exited(pid: int, wait: bool = False) -> int | None:
    """The child's exit status (negative: the signal that ended it); None while it runs."""
    done, status = os.waitpid(pid, 0 if wait else os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if done else None


def _in_children(calls: list[Callable[[], object]], workers: int = 2, limit_s: float = 600.0) -> list[int | None]:
    """Run each call in a forked child, ``workers`` at a time (the machine has two cores); their exit statuses, in order."""
    statuses: list[int | None] = [None] * len(calls)
    queue, running = list(enumerate(calls)), dict[int, int]()
    give_up = time.monotonic() + limit_s
    while queue or running:
        if time.monotonic() > give_up:  # a child that hangs fails the test instead of holding it forever
            for pid in running:
                os.kill(pid, signal.SIGKILL)
                _exited(pid, wait=True)
            pytest.fail(f"children still running after {limit_s:g} s")
        while queue and len(running) < workers:
            i, call = queue.pop(0)
            running[_forked(call)] = i
        for pid in list(running):
            status = _exited(pid)
            if status is not None:
                statuses[running.pop(pid)] = status
        time.sleep(0.005)
    return statuses


def _cli(*argv: str) -> Callable[[], object]:
    from edgeproof.cli._app import app

    return lambda: app(list(argv), prog_name="edgeproof")


@pytest.mark.slow
def test_acceptance_over_20_seeds(releases, tmp_path):
    """Issue #17's acceptance on the simulated fleet: clean 20/20 complete; fallback on A2 halts at canary in >= 19/20,
    rolls back only A2 devices, and each rolled-back device re-reports the known-good pair. 2000 devices, so that every
    seed's strata meet the plan's minimums (at 1500, 6 of the 20 seeds are refused at submit; at 1800, none). The first
    rollout runs here, the other 39 in forked children, two at a time; each writes what it saw."""

    def rollout(run: Path, seed: int, faults: str) -> None:
        ctl, fleet, waves = _controller(_plan(releases, run, seed=seed, faults=faults, devices=2000), run / "run")
        ctl.start(waves, actor="test")
        state = run_simulated(ctl, fleet, step_h=1.0, max_h=80)
        labels = {d.device_id: d.labels for d in fleet.inventory()}
        seen = {
            "phase": state.phase,
            "wave": state.wave,
            "failed": any(d["outcome"] == "fail" for d in state.decisions),
            "rolled_back_revisions": sorted({labels[d]["chip_revision"] for d in state.rolled_back}),
            "rolled_back_report": sorted({r.model_sha256 for r in fleet.reported(sorted(state.rolled_back)).values()}),
            "known_good": ctl.plan.known_good.model_sha256,
            "most_sends_per_intent": max(fleet.sends.values()),
        }
        fleet.close()
        (run / "seen.json").write_text(json.dumps(seen))

    runs = [(tmp_path / f"s{seed}{'f' if faults else 'c'}", seed, faults) for seed in range(20) for faults in ("", FALLBACK_A2)]
    for run, _, _ in runs:
        run.mkdir()
    rollout(*runs[0])  # here: its board simulations, lazy imports and caches come along to every forked child
    statuses = _in_children([functools.partial(rollout, *r) for r in runs[1:]])
    assert statuses == [0] * (len(runs) - 1), statuses
    clean, halted_at_canary = 0, 0
    for run, _, faults in runs:
        seen = json.loads((run / "seen.json").read_text())
        assert seen["most_sends_per_intent"] == 1, run
        if not faults:
            clean += seen["phase"] == "complete" and not seen["failed"]
        elif (seen["phase"], seen["wave"]) == ("halted", 1):
            halted_at_canary += seen["rolled_back_revisions"] == ["A2"] and seen["rolled_back_report"] == [seen["known_good"]]
    assert clean == 20 and halted_at_canary >= 19, (clean, halted_at_canary)


def _journal_length(folder: Path) -> int:
    """Complete entries in the journal (a line torn by a kill has no newline yet), without parsing them: cheap to poll."""
    path = folder / JOURNAL_NAME
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _sends(folder: Path) -> list[dict]:
    """The fleet's durable send log, as the devices took it (a line torn by a kill never reached them)."""
    log, sends = folder / SEND_LOG_NAME, []
    for line in log.read_bytes().splitlines() if log.exists() else []:
        try:
            sends.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return sends


def _fleet_end(folder: Path) -> dict[str, tuple[str, str]]:
    """Each device's last intent and release, from the send log: the fleet's end state."""
    return {d: (s["intent"], s["release"][0]) for s in _sends(folder) for d in s["devices"]}


def _timeline(pid: int, folder: Path) -> tuple[int | None, list[float]]:
    """Watch a forked controller to its end: its exit status, and when (seconds from now) its journal reached each length."""
    t0, marks = time.monotonic(), list[float]()
    while (status := _exited(pid)) is None or _journal_length(folder) > len(marks):
        marks += [time.monotonic() - t0] * (_journal_length(folder) - len(marks))
        time.sleep(0.001)
    return status, marks


@pytest.mark.slow
def test_kill_9_at_20_random_points_resumes_to_the_same_end_state(releases, tmp_path):
    """Issue #17's acceptance: `rollout start` processes killed with SIGKILL at 20 random points of a rollout that halts and
    rolls back; `rollout run` goes on from each one's journal and fleet to the reference's end state, and no device is sent
    the same release twice for one intent. Half the points are right after a random journal entry (a transition just
    journalled, the next not yet), half a random moment of the reference run's time (most fall in simulated soak hours:
    segments, ingest, snapshots), replayed as "after entry k, so many seconds more", cut short by entry k + 1. The plan's
    first soaks are shortened to 1 h and 2 h, so that each run is cheap: its journal goes through the same 12 transitions."""
    plan = _plan(
        releases, tmp_path, faults=FALLBACK_A2, edit=lambda t: t.replace("soak_h = 3", "soak_h = 1", 1).replace("soak_h = 4", "soak_h = 2")
    )
    assert [w.soak_h for w in load_plan(plan).waves[:2]] == [1.0, 2.0]
    ref = drive(tmp_path / "ref", plan, actor="test")  # here: its board simulations and imports come along to the children
    assert ref.phase == "halted" and ref.rolled_back, ref.phase
    # the same rollout in a controller process of its own, unkilled: when its journal reached each length
    start = functools.partial(_cli, "rollout", "start", str(plan), "--actor", "test", "--journal")
    status, marks = _timeline(_forked(start(str(tmp_path / "timed"))), tmp_path / "timed")
    assert status == 1 and Journal(tmp_path / "timed").entries[-1]["id"] == Journal(tmp_path / "ref").entries[-1]["id"]  # 1: halted
    rng = random.Random(17)
    points = []
    for i in range(20):  # k <= len - 2: the kill lands before the controller could have ended
        if i % 2:
            moment = rng.uniform(marks[0], marks[-2])
            k = max(n for n, at in enumerate(marks, 1) if at <= moment)
            points.append((tmp_path / f"kill{i}", k, moment - marks[k - 1]))
        else:
            points.append((tmp_path / f"kill{i}", rng.randint(1, len(marks) - 2), 0.0))
    killed_at: dict[Path, tuple[int, int, float]] = {}
    queue, running, deadlines = list(points), dict[int, tuple[Path, int, float]](), dict[int, float]()
    give_up = time.monotonic() + 600.0
    while queue or running:  # two controllers at a time, each killed at its point
        assert time.monotonic() < give_up, f"controllers not at their kill points after 600 s: {list(running.values())}"
        while queue and len(running) < 2:
            folder, k, delay = queue.pop(0)
            running[_forked(start(str(folder)))] = (folder, k, delay)
        for pid, (folder, k, delay) in list(running.items()):
            assert _exited(pid) is None, f"the controller in {folder} ended before its kill point"
            length = _journal_length(folder)
            if pid not in deadlines and length >= k:
                deadlines[pid] = time.monotonic() + delay
            if pid in deadlines and (time.monotonic() >= deadlines[pid] or length > k):
                os.kill(pid, signal.SIGKILL)
                assert _exited(pid, wait=True) == -signal.SIGKILL
                hours = pickle.loads((folder / "fleet-sim.pickle").read_bytes())[0].hours
                killed_at[folder] = (_journal_length(folder), len(_sends(folder)), hours)
                del running[pid], deadlines[pid]  # the pid may be reused
        time.sleep(0.002)

    # `rollout run` from each killed folder, two at a time, each to its end: halted like the reference (exit 1)
    assert _in_children([_cli("rollout", "run", "--journal", str(folder)) for folder, _, _ in points]) == [1] * len(points)
    ref_end = _fleet_end(tmp_path / "ref")
    outcomes = [(d["wave"], d["outcome"], d["at_s"]) for d in ref.decisions]
    for folder, k, delay in points:
        entries = Journal(folder).entries
        state = fold(entries)
        where = f"killed at {killed_at[folder]} (journal entries, sends, fleet hours), after entry {k} + {delay:.2f} s"
        assert (state.phase, state.wave, sorted(state.rolled_back)) == (ref.phase, ref.wave, sorted(ref.rolled_back)), where
        assert [(d["wave"], d["outcome"], d["at_s"]) for d in state.decisions] == outcomes, where
        assert max(Counter(e["id"] for e in entries).values()) == 1, where
        sends = Counter((d, s["intent"]) for s in _sends(folder) for d in s["devices"])
        assert max(sends.values()) == 1, (where, [key for key, n in sends.items() if n > 1][:3])
        assert _fleet_end(folder) == ref_end, where
    assert len({at[0] for at in killed_at.values()}) >= 5, killed_at  # killed at many points of the rollout
