"""Record-mode gate (two stored runs): the reference workload cancels host drift, old records still gate, the verdict says which term."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import DIGITS_MODEL
from edgeproof.contract import load_contract
from edgeproof.errors import RecordError
from edgeproof.gate import (
    DEFAULT_NORMALISED_SD_LOG,
    MIN_AA_PAIRS,
    RatioEstimate,
    between_run_from_history,
    gate,
    normalised_ratio,
    regression_fails,
    unpaired_ratio,
)
from edgeproof.gate_output import to_markdown
from edgeproof.measure.reference import REFERENCE_ID, normalised_run, reference_model, reference_run
from edgeproof.measure.runner import ProfileOptions, profile_model
from edgeproof.measure.stats import summarize
from edgeproof.records import ReferenceProbe, RunRecord, SessionSamples, load_record, save_record

DATA = Path(__file__).parent / "data"
CONTRACT = """
[contract]
name = "record-mode"
[budgets]
scenario = "single-stream"
p95_ms = "50 ms"
[regression]
p50_pct = 3.0
p95_pct = 10.0
"""


@pytest.fixture(scope="module")
def measured():
    """A stored host run (schema 2, no reference), the template for synthetic runs."""
    return load_record(DATA / "v2" / "measured.run.json")


@pytest.fixture()
def contract(tmp_path):
    path = tmp_path / "contract.toml"
    path.write_text(CONTRACT)
    return load_contract(path)


def _run(template: RunRecord, model_ms: float, reference_ms: float, seed: int, created_at: str, sessions: int = 3) -> RunRecord:
    """A run whose model takes ``model_ms`` and the reference ``reference_ms`` (1% noise): a host that
    is slower by some factor scales both, a slower model only the first."""
    rng = np.random.default_rng(seed)
    noisy = lambda centre, n: list(centre * np.exp(0.01 * rng.standard_normal(n)))  # noqa: E731
    samples = [noisy(model_ms, 200) for _ in range(sessions)]
    probes = [ReferenceProbe(model_ms=noisy(model_ms, 40 * 5), reference_ms=noisy(reference_ms, 40 * 20)) for _ in range(sessions)]
    stamped = [SessionSamples(warmup_ms=[], samples_ms=s, started_at=created_at) for s in samples]
    return template.model_copy(
        update={
            "sessions": stamped,
            "latency": summarize(samples),
            "reference": reference_run(probes, model_block=5),
            "created_at": created_at,
            "run_id": f"run{seed}",
            "interleave": None,
        }
    )


def test_reference_workload_is_fixed():
    """The workload's bytes do not depend on a random generator: two builds hash alike."""
    a, b = (hashlib.sha256(reference_model().SerializeToString()).hexdigest() for _ in range(2))
    assert a == b and REFERENCE_ID.endswith("/1")


def test_a_measured_run_carries_its_probes_and_reloads(tmp_path):
    options = ProfileOptions(
        min_sessions=2,
        max_sessions=2,
        samples_per_session=40,
        warmup=5,
        cold_start_repeats=0,
        profile_nodes=False,
        check_fitness=False,
        reference=True,
    )
    measured = profile_model(DIGITS_MODEL, options=options)
    ref = measured.reference
    assert ref is not None and ref.workload == REFERENCE_ID and len(ref.probes) == 2
    assert all(
        len(p.model_ms) == ref.blocks * ref.model_block and len(p.reference_ms) == ref.blocks * ref.reference_block for p in ref.probes
    )
    centre, variance = normalised_run(ref)
    assert np.isfinite(centre) and variance > 0
    # the model's own figures come from its sessions alone, not the probe
    assert measured.latency.n_samples == 80
    again = load_record(save_record(measured, tmp_path / "run.json"))
    assert again.reference == ref


def test_drift_of_the_host_cancels(measured):
    """The candidate run found the host 25% slower and the model 10% slower: model/reference gives
    1.10, a raw comparison 1.375."""
    base = _run(measured, 1.0, 0.5, 1, "2026-12-02T08:00:00+00:00")
    cand = _run(measured, 1.0 * 1.25 * 1.10, 0.5 * 1.25, 2, "2026-12-02T08:05:00+00:00")
    est = normalised_ratio(base, cand)
    assert est.low < 1.10 < est.high and est.low > 1.03
    assert "model/reference" in est.method and "stated default" in est.method
    raw = unpaired_ratio(base.model_copy(update={"reference": None}), cand.model_copy(update={"reference": None}), 0.5)
    assert raw is not None and raw.ratio > 1.3


def test_record_mode_verdict_says_which_term(contract, measured):
    base = _run(measured, 1.0, 0.5, 1, "2026-12-02T08:00:00+00:00")
    same = _run(measured, 1.0 * 1.2, 0.5 * 1.2, 3, "2026-12-02T08:05:00+00:00")  # same model, host 20% slower
    [verdict] = gate(contract, [same], [base])
    p50 = next(c for c in verdict.clauses if c.clause == "regression.p50")
    assert p50.status == "pass" and 0.97 < p50.value < 1.03
    assert verdict.record_mode[0].startswith("p50 compared as model/reference")
    assert "stated default" in verdict.record_mode[0]
    assert "p95 and p99 compared raw" in verdict.record_mode[1]
    assert "Record mode" in to_markdown([verdict])


def test_slower_model_fails_and_advises_measure(contract, measured):
    base = _run(measured, 1.0, 0.5, 1, "2026-12-02T08:00:00+00:00")
    cand = _run(measured, 1.10, 0.5, 4, "2026-12-02T08:05:00+00:00")
    [verdict] = gate(contract, [cand], [base])
    p50 = next(c for c in verdict.clauses if c.clause == "regression.p50")
    assert p50.status == "fail" and verdict.outcome == "fail"
    assert any("gate --measure" in a for a in verdict.advice)
    assert "- advice:" in to_markdown([verdict])


def test_an_old_record_without_reference_gates_with_the_old_term(contract, measured):
    old = load_record(DATA / "v2" / "measured.run.json")
    assert old.reference is None
    base = _run(measured, 1.0, 0.5, 1, "2026-12-02T08:00:00+00:00").model_copy(update={"reference": None})
    cand = _run(measured, 1.0, 0.5, 5, "2026-12-02T08:05:00+00:00")
    [verdict] = gate(contract, [cand], [base])
    line = verdict.record_mode[0]
    assert line.startswith("p50 compared raw") and "the baseline record has no reference workload" in line
    assert "between-run spread: stated default" in line


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_older_fixtures_still_load(version):
    for path in sorted((DATA / version).glob("*.run.json")):
        assert load_record(path).reference is None, path


def test_history_gives_the_normalised_term(measured):
    runs = [_run(measured, 1.0, 0.5 * (1 + 0.03 * (i % 3)), 10 + i, f"2026-12-02T08:{i:02d}:00+00:00") for i in range(MIN_AA_PAIRS + 1)]
    found = between_run_from_history(runs, runs[0])
    assert found.normalised_source == "history" and found.normalised_pairs == MIN_AA_PAIRS
    assert "the spread of 10 A/A run pairs with the reference workload in the history" in found.describe_normalised()
    # only the reference moved (by 0, 3 or 6%), so model/reference drifted between runs: the term shows it
    assert found.normalised_sd_log > 0.01
    few = between_run_from_history(runs[:4], runs[0])
    assert few.normalised_source == "default" and few.normalised_sd_log == DEFAULT_NORMALISED_SD_LOG
    assert "3 of 10 A/A run pairs" in few.describe_normalised()


def test_a_probe_that_does_not_fill_its_blocks_is_one_line(measured, tmp_path):
    run = _run(measured, 1.0, 0.5, 1, "2026-12-02T08:00:00+00:00")
    raw = json.loads(run.model_dump_json())
    raw["reference"]["probes"][0]["model_ms"].pop()
    path = tmp_path / "bad.run.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(RecordError, match=r"bad\.run\.json: reference: .*probes\.0: 199 model and 800 reference samples"):
        load_record(path)


def _est(ratio: float, sd_log: float) -> RatioEstimate:
    half = 1.959964 * sd_log
    return RatioEstimate("p50", ratio, ratio * np.exp(-half), ratio * np.exp(half), "test", 6)


def test_record_mode_rule_is_significant_and_beyond_the_tolerance():
    # two runs made apart: intervals ±5% wide (sd 2.6% in log, the stated default)
    sd = DEFAULT_NORMALISED_SD_LOG
    assert regression_fails(_est(1.10, sd), 1.03, apart=True)  # +10%: beyond 3% and significant
    assert regression_fails(_est(1.07, sd), 1.03, apart=True)
    assert not regression_fails(_est(1.07, sd), 1.03)  # the together-rule wants the whole interval past 1.03
    assert not regression_fails(_est(1.02, sd / 4), 1.03, apart=True)  # significant but within the tolerance
    assert not regression_fails(_est(1.045, sd), 1.03, apart=True)  # beyond the tolerance, not significant at 1%
    # a same-speed pair fails at most 1% of the time: the estimate would have to lie 2.33 sd above 1
    assert not regression_fails(_est(float(np.exp(2.3 * sd)), sd), 1.03, apart=True)
    assert regression_fails(_est(float(np.exp(2.4 * sd)), sd), 1.03, apart=True)


def test_one_session_hit_by_a_burst_does_not_fail_the_tail(contract, measured):
    base = _run(measured, 1.0, 0.5, 1, "2026-12-02T08:00:00+00:00")
    cand = _run(measured, 1.0, 0.5, 2, "2026-12-02T08:05:00+00:00")
    burst = [
        SessionSamples(
            warmup_ms=[], samples_ms=[x * (3.0 if i % 10 == 0 else 1.0) for i, x in enumerate(s.samples_ms)], started_at=s.started_at
        )
        for s in cand.sessions[:1]
    ]
    cand = cand.model_copy(update={"sessions": burst + cand.sessions[1:]})  # one session's p95 three times slower
    [verdict] = gate(contract, [cand], [base])
    p95 = next(c for c in verdict.clauses if c.clause == "regression.p95")
    assert p95.status == "pass" and p95.value is not None and p95.value < 1.05
    slow = _run(measured, 1.2, 0.5, 3, "2026-12-02T08:10:00+00:00")  # every session 20% slower: a regression
    [verdict] = gate(contract, [slow], [base])
    assert next(c for c in verdict.clauses if c.clause == "regression.p95").status == "fail"
