"""`make demo`'s step runner: each step a real command in its own forked process, its exit code kept."""

from __future__ import annotations

import os

import pytest

from edgeproof.demo import run_step


@pytest.mark.slow  # imports the whole command line in this process (2–6 s on the 2-core host)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only; there the demo starts a new interpreter per step")
def test_a_step_runs_in_a_forked_process_and_keeps_its_exit_code(capfd):
    assert run_step(["init", "--data", "d.npz"]) == 2  # bad input: one line, exit 2
    err = capfd.readouterr().err
    assert "--model" in err and "Traceback" not in err
    parent = os.getpid()
    assert run_step(["--help"]) == 0
    assert os.getpid() == parent  # the step ran in a child; this process goes on
    assert "Usage" in capfd.readouterr().out
