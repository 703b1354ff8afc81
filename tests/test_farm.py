"""The board matrix: two local agents standing in for two chip revisions, two models each; one board
dies for good when its profile starts, so its cells are errors with the reason and the others complete."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import DIGITS_MODEL, make_matmul_model
from edgeproof.agent import local_state_dir
from edgeproof.errors import TargetError
from edgeproof.farm.matrix import load_matrix, matrix_outcome, run_matrix
from edgeproof.measure.runner import ProfileOptions
from edgeproof.records import RuntimeSettings
from test_agent import write_contract

QUICK = ProfileOptions(
    min_sessions=1, max_sessions=1, samples_per_session=20, warmup=3, time_budget_s=5, cold_start_repeats=0, profile_nodes=False
)

# A board that can be switched off: once DEAD exists, its agent never starts again.
POWER_SWITCHED_AGENT = """
import os, sys
if os.path.exists({dead!r}):
    sys.stderr.write("no route to host: board powered off\\n")
    sys.exit(1)
os.execv(sys.executable, [sys.executable, "-m", "edgeproof_agent", *sys.argv[1:]])
"""


def shelf(tmp_path: Path) -> tuple[Path, Path]:
    """An inventory of two chip revisions (rev-b behind a power switch) and a 2 × 2 matrix file."""
    dead = tmp_path / "rev-b.dead"
    wrapper = tmp_path / "switched_agent.py"
    wrapper.write_text(POWER_SWITCHED_AGENT.format(dead=str(dead)))
    boards = tmp_path / "boards.toml"
    boards.write_text(
        '[devices.rev-a]\nchip_revision = "a"\ntransport = "local"\n\n'
        f'[devices.rev-b]\nchip_revision = "b"\ntransport = "local"\nagent = "{sys.executable} {wrapper}"\n'
    )
    mlp = make_matmul_model(tmp_path / "mlp.onnx", symbolic=("batch",))
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(f'models = ["{DIGITS_MODEL}", "{mlp.name}"]\ndevices = "all-devices"\ncontract = "edgeproof.toml"\n')
    write_contract(tmp_path)
    return boards, matrix


def kill_for_good_when_profiling_starts(state_dir: Path, dead: Path) -> threading.Thread:
    """Watch the board's lock: when a profile takes it, switch the board off and kill its agent."""

    def watch() -> None:
        holder = state_dir / "board.holder.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                pid = json.loads(holder.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.02)
                continue
            dead.touch()
            os.kill(pid, signal.SIGKILL)
            return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_board_dead_for_good_errors_its_cells_and_the_others_complete(tmp_path, monkeypatch):
    boards, matrix = shelf(tmp_path)
    monkeypatch.setenv("EDGEPROOF_BOARDS", str(boards))
    plan = load_matrix(matrix)
    assert [d.id for d in plan.devices] == ["rev-a", "rev-b"] and len(plan.cells()) == 4
    rev_b = next(d for d in plan.devices if d.id == "rev-b")
    watcher = kill_for_good_when_profiling_starts(local_state_dir(rev_b), tmp_path / "rev-b.dead")
    cells = run_matrix(plan, RuntimeSettings(), QUICK, allow_unverified=True)  # QUICK skips cold starts (peak RSS)
    watcher.join(5)
    by = {(c.device_id, c.model.name): c for c in cells}
    assert len(by) == 4
    for model in ("model.onnx", "mlp.onnx"):
        good = by[("rev-a", model)]
        assert good.outcome == "pass" and good.record is not None and good.verdict is not None
        assert good.record.latency_provenance == "measured:agent:rev-a" and good.record.env.extra["chip_revision"] == "a"
        lost = by[("rev-b", model)]
        assert lost.outcome == "error" and lost.record is None
        assert "board lost" in (lost.error or "") and "board powered off" in (lost.error or "")
    assert matrix_outcome(cells) == "undecided"  # never a pass


def test_a_matrix_file_with_an_unknown_device_is_one_line(tmp_path, monkeypatch):
    boards, matrix = shelf(tmp_path)
    monkeypatch.setenv("EDGEPROOF_BOARDS", str(boards))
    matrix.write_text('models = ["m.onnx"]\ndevices = ["rev-a", "rev-c"]\n')
    with pytest.raises(TargetError, match="unknown device 'rev-c'.*did you mean"):
        load_matrix(matrix)
    matrix.write_text('models = "m.onnx"\n')
    with pytest.raises(TargetError, match="models: expected a list"):
        load_matrix(matrix)


def test_the_amdsmi_shim_lets_ray_import_where_amdsmi_cannot_load():
    """zeus installs amdsmi, whose import raises KeyError without ROCm's library; Ray guards only
    against ImportError, so `import ray` would fail. The shim turns that import into an ImportError."""
    import subprocess

    from edgeproof.farm.ray_farm import amdsmi_shim

    probe = "import contextlib, io\ntry:\n    with contextlib.redirect_stdout(io.StringIO()):\n        import amdsmi\n    print('ok')\nexcept ImportError:\n    print('import-error')\nexcept Exception as exc:\n    print(type(exc).__name__)\n"
    plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
    shim = amdsmi_shim()
    if shim is None:
        assert plain in ("ok", "import-error")  # amdsmi loads, or is absent: nothing to shim
        return
    assert plain not in ("ok", "import-error")
    shimmed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": shim})
    assert shimmed.stdout.strip() == "import-error"
