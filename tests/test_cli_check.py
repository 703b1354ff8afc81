"""`edgeproof check` end to end: the example passes; bad contracts are one line and exit 2; waivers expire; undecided is exit 3."""

from __future__ import annotations

import functools
import json

import pytest

from conftest import DIGITS_CONTRACT, DIGITS_MODEL, run_cli

QUICK = ["--sessions", "2", "--samples", "60", "--time-budget", "5"]


def _contract_copy(tmp_path, edit):
    text = DIGITS_CONTRACT.read_text()
    path = tmp_path / "edgeproof.toml"
    path.write_text(edit(text))
    # the contract names its data and reference model relative to itself
    for name in ("dataset.py", "model.onnx"):
        (tmp_path / name).symlink_to(DIGITS_CONTRACT.parent / name)
    return path


@pytest.mark.slow
def test_example_contract_passes_with_every_slice_judged(tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("check", str(DIGITS_MODEL), "--contract", str(DIGITS_CONTRACT), "--json", str(out), *QUICK)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verdict = json.loads(out.with_suffix(".verdict.json").read_text())
    statuses = {c["clause"]: c["status"] for c in verdict["clauses"]}
    assert all(s in ("pass", "waived") for s in statuses.values()), statuses
    assert statuses["slices.nominal.max_drop_pp"] == "pass"
    record = json.loads(out.read_text())
    assert record["evaluation"]["slices"]["nominal"]["accuracy"] > 0.95


def test_misspelled_key_is_one_line_with_suggestion(tmp_path):
    path = _contract_copy(tmp_path, lambda t: t.replace("p95_ms =", "p95_msec =", 1))
    proc = run_cli("check", str(DIGITS_MODEL), "--contract", str(path), *QUICK)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "edgeproof.toml:" in lines[0] and "p95_msec" in lines[0] and "did you mean 'p95_ms'" in lines[0]


def test_negative_budget_is_one_line(tmp_path):
    path = _contract_copy(tmp_path, lambda t: t.replace('p99_ms = "10 ms"', 'p99_ms = "-10 ms"'))
    proc = run_cli("check", str(DIGITS_MODEL), "--contract", str(path), *QUICK)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "p99_ms" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_expired_waiver_does_not_apply(tmp_path):
    # roomy latency budgets, so only the energy clause (no meter on this host) can keep the verdict from passing
    roomy = {"2027-06-30": "2025-01-31", 'p95_ms = "5 ms"': 'p95_ms = "1 s"', 'p99_ms = "10 ms"': 'p99_ms = "1 s"'}
    path = _contract_copy(tmp_path, lambda t: functools.reduce(lambda text, kv: text.replace(*kv), roomy.items(), t))
    out = tmp_path / "r.json"
    proc = run_cli("check", str(DIGITS_MODEL), "--contract", str(path), "--json", str(out), *QUICK)
    verdict = json.loads(out.with_suffix(".verdict.json").read_text())
    energy = next(c for c in verdict["clauses"] if c["clause"] == "budgets.energy_mj_per_inference")
    assert verdict["waivers_expired"] and energy["status"] == "unverified"
    # nothing fails on evidence, so the verdict cannot be decided here, and says what would decide it
    assert proc.returncode == 3 and "expired" in proc.stdout, proc.stdout + proc.stderr
    assert verdict["outcome"] == "undecided" and "could not decide: budgets.energy_mj_per_inference: no data" in proc.stdout
    assert "power meter" in proc.stdout
    allowed = run_cli("check", str(DIGITS_MODEL), "--contract", str(path), "--allow-unverified", *QUICK)
    assert allowed.returncode == 0 and "--allow-unverified" in allowed.stdout


@pytest.mark.slow
def test_a_budget_the_run_cannot_answer_is_undecided_exit_3_saying_what_would_decide_it(tmp_path):
    """The only hard budget is written for a periodic scenario; measured back to back, nothing fails
    and nothing passes: exit 3, not 1, and the output names the clause and how to decide it."""
    path = tmp_path / "c.toml"
    path.write_text('[contract]\nname = "periodic-only"\n[budgets]\nscenario = "periodic:50"\np95_ms = "50 ms"\n')
    out = tmp_path / "r.json"
    proc = run_cli("check", str(DIGITS_MODEL), "--contract", str(path), "--scenario", "single-stream", "--json", str(out), *QUICK)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "contract verdict on host: COULD NOT DECIDE" in proc.stdout
    assert "could not decide: budgets.p95_ms: no data (budget is for scenario periodic:50, the record ran single-stream" in proc.stdout
    assert "measure under the contract's scenario" in proc.stdout and "--allow-unverified" in proc.stdout
    verdict = json.loads(out.with_suffix(".verdict.json").read_text())
    assert verdict["outcome"] == "undecided" and verdict["passed"] is False and len(verdict["undecided_because"]) == 1
