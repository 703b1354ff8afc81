"""Release gate: A/A passes, an injected in-graph slowdown fails, bad input is one line, outputs parse."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import date

import numpy as np
import pytest

from conftest import DIGITS_MODEL, run_cli
from edgeproof.contract import evaluate, load_contract
from edgeproof.errors import RecordError
from edgeproof.gate import gate, mcnemar_worse_p, unpaired_ratio
from edgeproof.gate_output import to_junit, to_markdown, to_sarif
from edgeproof.measure.interleaved import InterleaveOptions, interleaved_ab
from edgeproof.measure.runner import ProfileOptions, profile_model
from edgeproof.measure.stats import summarize
from edgeproof.records import Figure, RunRecord, SessionSamples, WaiverUse, load_verdicts, save_record
from edgeproof.slowdown import add_busy_branch

CONTRACT = """
[contract]
name = "gate-test"
[budgets]
scenario = "single-stream"
p95_ms = "50 ms"
peak_rss_mib = "2000 MiB"
[regression]
p50_pct = 3.0
p95_pct = 10.0
"""
QUICK = dict(cold_start_repeats=1, check_fitness=False)


@pytest.fixture(scope="module")
def contract(tmp_path_factory):
    path = tmp_path_factory.mktemp("c") / "contract.toml"
    path.write_text(CONTRACT)
    return load_contract(path)


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory):
    # 12 extra 128-wide MatMuls cost about 10% on the digits model on this kind of host
    return add_busy_branch(DIGITS_MODEL, tmp_path_factory.mktemp("m") / "slow.onnx", chain=12)


def test_busy_branch_keeps_outputs(slow_model):
    import onnxruntime as ort

    x = {"input": np.random.default_rng(0).random((2, 1, 32, 32), dtype=np.float32)}
    a = ort.InferenceSession(str(DIGITS_MODEL), providers=["CPUExecutionProvider"]).run(None, x)[0]
    b = ort.InferenceSession(str(slow_model), providers=["CPUExecutionProvider"]).run(None, x)[0]
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.slow
def test_same_model_twice_passes(contract):
    base, cand = interleaved_ab(DIGITS_MODEL, DIGITS_MODEL, options=ProfileOptions(**QUICK), ab=InterleaveOptions(pairs=4))
    [verdict] = gate(contract, [cand], [base])
    p50 = next(c for c in verdict.clauses if c.clause == "regression.p50")
    assert verdict.passed, [c for c in verdict.clauses if c.status != "pass"]
    assert 0.95 < p50.value < 1.05


@pytest.fixture(scope="module")
def slow_pair(slow_model):
    return interleaved_ab(DIGITS_MODEL, slow_model, options=ProfileOptions(**QUICK), ab=InterleaveOptions(pairs=4))


@pytest.mark.slow
def test_injected_slowdown_fails_on_latency(contract, slow_pair):
    base, cand = slow_pair
    [verdict] = gate(contract, [cand], [base])
    assert not verdict.passed
    p50 = next(c for c in verdict.clauses if c.clause == "regression.p50")
    assert p50.status == "fail" and p50.value > 1.04
    assert "slower" in p50.note and "95% CI" in p50.note
    assert verdict.binding_clause == "regression.p50"


@pytest.mark.slow
def test_a_waiver_on_a_regression_clause_applies_until_it_expires(tmp_path, slow_pair):
    base, cand = slow_pair
    waivers = "".join(
        f'[[waivers]]\nclause = "regression.{m}"\nowner = "perf@example.com"\nreason = "known cost of the new head"\nexpires = 2099-01-01\n'
        for m in ("p50", "p95", "p99")
    )
    path = tmp_path / "waived.toml"
    path.write_text(CONTRACT + waivers)
    [verdict] = gate(load_contract(path), [cand], [base])
    p50 = next(c for c in verdict.clauses if c.clause == "regression.p50")
    assert p50.status == "waived" and verdict.passed
    assert "regression.p50" in {w.clause for w in verdict.waivers_applied}
    [expired] = gate(load_contract(path), [cand], [base], today=date(2099, 1, 2))
    assert not expired.passed and next(c for c in expired.clauses if c.clause == "regression.p50").status == "fail"
    assert expired.outcome == "fail" and "regression.p50" in {w.clause for w in expired.waivers_expired}


def _record(samples_per_session, base: RunRecord) -> RunRecord:
    sessions = [SessionSamples(warmup_ms=[], samples_ms=s, started_at="2026-11-25T00:00:00+00:00") for s in samples_per_session]
    return base.model_copy(update={"sessions": sessions, "latency": summarize(samples_per_session), "interleave": None})


@pytest.fixture(scope="module")
def host_record():
    return profile_model(DIGITS_MODEL, options=ProfileOptions(min_sessions=2, max_sessions=2, samples_per_session=40, warmup=5, **QUICK))


def test_unpaired_ratio_uses_session_spread(host_record):
    rng = np.random.default_rng(3)
    base = _record([list(1.0 + 0.01 * rng.standard_normal(200)) for _ in range(4)], host_record)
    slower = _record([list(1.2 + 0.01 * rng.standard_normal(200)) for _ in range(4)], host_record)
    est = unpaired_ratio(base, slower, 0.5)
    assert est.low > 1.15 and est.high < 1.25
    assert unpaired_ratio(_record([[1.0] * 50], host_record), slower, 0.5) is None


def test_mcnemar_paired_accuracy():
    labels = [0] * 100
    base = [0] * 100
    worse = [1] * 12 + [0] * 88
    p, b, c = mcnemar_worse_p(base, worse, labels)
    assert (b, c) == (12, 0) and p < 0.001
    assert mcnemar_worse_p(base, base, labels)[0] == 1.0


def test_accuracy_regression_is_judged_against_the_slice_floor(tmp_path):
    from edgeproof.contract import load_contract
    from edgeproof.gate import ACCURACY_ALPHA, accuracy_margin, drop_beyond_margin_p

    # 6 of 360 rows only the baseline got right (a 1.7 pp drop, every discordant row one way):
    # significantly worse than the baseline, but not by more than a 5 pp floor
    assert drop_beyond_margin_p(6, 0, 360, 0.0) < ACCURACY_ALPHA
    assert drop_beyond_margin_p(6, 0, 360, 0.05) > 0.5
    # a 10 pp drop is beyond a 5 pp floor with evidence; a 5.5 pp one is not shown to be
    assert drop_beyond_margin_p(36, 0, 360, 0.05) < ACCURACY_ALPHA
    assert drop_beyond_margin_p(20, 0, 360, 0.05) > ACCURACY_ALPHA
    path = tmp_path / "c.toml"
    path.write_text(
        '[contract]\nname = "floors"\n[budgets]\np95_ms = "5 ms"\n'
        '[slices.contrast]\nkind = "stress"\npart = "contrast"\nmax_drop_pp = 5.0\n[slices.nominal]\nkind = "nominal"\n'
    )
    contract = load_contract(path)
    assert accuracy_margin(contract, "contrast", None, 0.85) == (0.05, "max_drop_pp = 5")
    assert accuracy_margin(contract, "nominal", None, 0.99) == (0.0, "")  # no floor: any significant drop fails
    assert accuracy_margin(contract, "absent", None, 0.99) == (0.0, "")


def test_baseline_for_another_model_is_refused(contract, host_record):
    other = host_record.model_copy(update={"inputs": {"x": [1, 16]}, "run_id": "other"})
    with pytest.raises(RecordError, match="another model"):
        gate(contract, [host_record], [other])


def test_baseline_failing_its_contract_is_refused(tmp_path, host_record):
    path = tmp_path / "tight.toml"
    path.write_text(CONTRACT.replace('p95_ms = "50 ms"', 'p95_ms = "0.001 ms"'))
    with pytest.raises(RecordError, match="fails its own contract"):
        gate(load_contract(path), [host_record], [host_record])


def test_outputs_parse(contract, host_record):
    verdicts = gate(contract, [host_record])
    junit = ET.fromstring(to_junit(verdicts).split("?>", 1)[1])
    cases = junit.findall(".//testcase")
    assert {c.get("name") for c in cases} == {c.clause for c in verdicts[0].clauses}
    sarif = json.loads(to_sarif(verdicts, "model.onnx"))
    assert sarif["version"] == "2.1.0"
    assert "edgeproof gate" in to_markdown(verdicts)


@pytest.mark.slow
def test_cli_gate_bad_input_is_one_line(tmp_path, host_record):
    contract_path = tmp_path / "c.toml"
    contract_path.write_text(CONTRACT)
    good = tmp_path / "good.json"
    good.write_text(host_record.model_dump_json())
    old = json.loads(host_record.model_dump_json())
    old["schema_version"] = "edgeproof.run/0"
    (tmp_path / "old.json").write_text(json.dumps(old))
    missing = json.loads(host_record.model_dump_json())
    del missing["latency"]
    (tmp_path / "missing.json").write_text(json.dumps(missing))
    other = json.loads(host_record.model_dump_json())
    other["inputs"] = {"tokens": [1, 8]}
    other["run_id"] = "other"
    (tmp_path / "other.json").write_text(json.dumps(other))
    cases = [
        (["--candidate", str(tmp_path / "old.json")], "schema_version"),
        (["--candidate", str(tmp_path / "missing.json")], "latency"),
        (["--candidate", str(good), "--baseline", str(tmp_path / "other.json")], "another model"),
        (["--candidate", str(tmp_path / "nope.json")], "no such file"),
    ]
    for args, expect in cases:
        proc = run_cli("gate", "--contract", str(contract_path), *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and expect in lines[0] and "Traceback" not in proc.stderr
    ok = run_cli("gate", "--contract", str(contract_path), "--candidate", str(good), "--out", str(tmp_path / "g"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (tmp_path / "g" / "gate.junit.xml").exists() and (tmp_path / "g" / "gate.sarif").exists()


@pytest.mark.slow
def test_a_new_op_the_board_accelerator_lacks_fails_on_the_new_fallback_node(tmp_path, contract):
    """Board matrix: the host run and a simulated board in one gate, one verdict each; on the board,
    the candidate's Erf (absent from the Hailo-8's op list) falls back to the CPU and fails."""
    from conftest import make_qdq_chain
    from edgeproof.records import save_record
    from edgeproof.simulate import simulate_run

    sim = {"sessions": 2, "samples_per_session": 50}
    paths = {}
    for name, middle in (("base", "Sigmoid"), ("cand", "Erf")):
        model = make_qdq_chain(tmp_path / f"{name}.onnx", middle)
        paths[name] = tmp_path / f"{name}.hailo.run.json"
        save_record(simulate_run(model, "hailo-8-rpi5", **sim), paths[name])
    contract_path = tmp_path / "c.toml"
    contract_path.write_text(CONTRACT)
    out = tmp_path / "gate"
    r = run_cli(
        "gate", "--contract", str(contract_path), "--candidate", str(paths["cand"]), "--baseline", str(paths["base"]), "--out", str(out)
    )
    assert r.returncode == 1, r.stdout + r.stderr
    [verdict] = json.loads((out / "gate.json").read_text())["verdicts"]
    fallback = next(c for c in verdict["clauses"] if c["clause"] == "regression.new_fallback_nodes")
    assert fallback["status"] == "fail" and "Erf ×1" in fallback["note"]
    assert fallback["provenance"].startswith("simulated:hailo-8-rpi5@")
    # the same gate over a host record as well: one verdict per target, the host one unaffected
    host_path = tmp_path / "host.run.json"
    save_record(
        profile_model(DIGITS_MODEL, options=ProfileOptions(min_sessions=2, max_sessions=2, samples_per_session=40, warmup=5, **QUICK)),
        host_path,
    )
    r = run_cli(
        "gate",
        "--contract",
        str(contract_path),
        "--candidate",
        str(host_path),
        "--candidate",
        str(paths["cand"]),
        "--baseline",
        str(paths["base"]),
        "--out",
        str(out),
    )
    assert r.returncode == 1
    verdicts = {v["target"]: v for v in json.loads((out / "gate.json").read_text())["verdicts"]}
    assert verdicts.keys() == {"host", "hailo-8-rpi5"}
    assert verdicts["host"]["passed"] and not verdicts["hailo-8-rpi5"]["passed"]


def test_a_baseline_of_another_model_is_refused_by_its_interface_even_when_simulated(tmp_path, contract):
    from conftest import make_matmul_model
    from edgeproof.simulate import simulate_run

    sim = {"sessions": 2, "samples_per_session": 50}
    digits = simulate_run(DIGITS_MODEL, "raspberry-pi-5", **sim)
    other = simulate_run(make_matmul_model(tmp_path / "mlp.onnx"), "raspberry-pi-5", **sim)
    with pytest.raises(RecordError, match=r"is for another model: inputs \['x'\] vs \['input'\] \(baseline vs candidate\)"):
        gate(contract, [digits], [other])


def test_the_gate_adds_pairs_only_while_a_latency_clause_is_undecided():
    from edgeproof.gate import regression_decided

    rng = np.random.default_rng(5)
    blocks, size = 20, 20

    def sessions(scale: float, n: int = 10) -> list[list[float]]:
        return [list(scale * (1 + 0.02 * rng.standard_normal()) * rng.lognormal(0, 0.1, blocks * size)) for _ in range(n)]

    decided = regression_decided(3.0, 10.0, blocks, size)
    base = sessions(1.0)
    assert decided(base, sessions(1.0))  # no change: settled as a pass
    assert decided(base, sessions(1.5))  # far past both limits: settled as a regression
    assert not decided(base, sessions(1.03))  # the centre sits on its 3% limit: measure more


def test_an_undecided_gate_measures_up_to_max_pairs(slow_model):
    from edgeproof.measure.interleaved import interleaved_sessions_until
    from edgeproof.model import load_model, resolve_inputs, synthetic_feeds
    from edgeproof.records import RuntimeSettings

    feeds = [synthetic_feeds(resolve_inputs(load_model(DIGITS_MODEL)))]
    ab = InterleaveOptions(pairs=2, blocks=4, block_size=10, warmup=5, max_pairs=5, step=2)
    never, always = (lambda a, b: False), (lambda a, b: True)
    a, b = interleaved_sessions_until((DIGITS_MODEL, slow_model), (feeds, feeds), RuntimeSettings(), ab, never)
    assert len(a) == len(b) == 5 and all(len(s.samples_ms) == 40 for s in a + b)
    a, _ = interleaved_sessions_until((DIGITS_MODEL, slow_model), (feeds, feeds), RuntimeSettings(), ab, always)
    assert len(a) == 2


NO_ENERGY = {"energy_mj_per_inference": Figure.unavailable("mJ", "no power meter in this test")}
ENERGY_BUDGET = 'peak_rss_mib = "2000 MiB"\nenergy_mj_per_inference = "5 mJ"'


def _waiver_notes(result) -> list[str]:
    return [part for part in result.note.split("; ") if "waive" in part or "allowed" in part]


def test_the_contract_and_the_gate_apply_a_waiver_by_the_same_rule(tmp_path, host_record):
    """The same waiver on a contract clause (energy, no meter) and on regression clauses (one session
    a side, so no interval): waived alike while active; alike unverified, noted and listed once expired."""
    clauses = ["budgets.energy_mj_per_inference", "regression.p50", "regression.p95", "regression.p99"]
    waivers = "".join(
        f'[[waivers]]\nclause = "{c}"\ntarget = "host"\nowner = "ops"\nreason = "known gap"\nexpires = 2030-01-01\n' for c in clauses
    )
    path = tmp_path / "c.toml"
    path.write_text(CONTRACT.replace('peak_rss_mib = "2000 MiB"', ENERGY_BUDGET) + waivers)
    contract = load_contract(path)
    samples = [list(np.linspace(1.0, 1.2, 50))]
    one_session = [SessionSamples(warmup_ms=[], samples_ms=samples[0], started_at="2026-11-25T00:00:00+00:00")]
    base = host_record.model_copy(update={"sessions": one_session, "latency": summarize(samples), **NO_ENERGY})
    cand = base.model_copy(update={"run_id": "cand"})

    [active] = gate(contract, [cand], [base], today=date(2029, 12, 31))
    judged = {c.clause: c for c in active.clauses}
    assert active.outcome == "pass" and {w.clause for w in active.waivers_applied} == set(clauses)
    for clause in clauses:
        use = judged[clause].waiver
        assert judged[clause].status == "waived" and use == WaiverUse(
            clause=clause, owner="ops", reason="known gap", expires=date(2030, 1, 1), target="host"
        )
        assert _waiver_notes(judged[clause]) == ["waived by ops until 2030-01-01: known gap"]
    assert judged["budgets.energy_mj_per_inference"] == evaluate(contract, cand, today=date(2029, 12, 31)).clauses[-1]

    # expired: every clause is back to unverified, noted, listed, and the verdict says what would decide it
    [expired] = gate(contract, [cand], [base], today=date(2030, 1, 2))
    judged = {c.clause: c for c in expired.clauses}
    assert expired.outcome == "undecided" and not expired.passed and expired.waivers_applied == []
    assert [w.clause for w in expired.waivers_expired] == clauses
    for clause in clauses:
        assert judged[clause].status == "unverified" and judged[clause].waiver is None
        assert _waiver_notes(judged[clause]) == ["waiver by ops expired on 2030-01-01, not applied"]
    assert [why.split(":")[0] for why in expired.undecided_because] == clauses
    assert "gate --measure" in expired.undecided_because[1]

    [allowed] = gate(contract, [cand], [base], allow_unverified=True, today=date(2030, 1, 2))
    assert allowed.outcome == "pass" and allowed.undecided_because == []
    assert all("counted as passing only because unverified clauses are allowed" in c.note for c in allowed.clauses if c.clause in clauses)


def test_cli_gate_that_cannot_decide_exits_3_and_every_output_says_so(tmp_path, host_record):
    contract_path = tmp_path / "c.toml"
    contract_path.write_text(CONTRACT.replace('peak_rss_mib = "2000 MiB"', ENERGY_BUDGET))
    cand = tmp_path / "cand.json"
    save_record(host_record.model_copy(update=NO_ENERGY), cand)
    out = tmp_path / "g"
    proc = run_cli("gate", "--contract", str(contract_path), "--candidate", str(cand), "--out", str(out))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "COULD NOT DECIDE (1 target)" in proc.stdout and "could not decide: budgets.energy_mj_per_inference: no data" in proc.stdout

    doc = json.loads((out / "gate.json").read_text())
    assert doc["outcome"] == "undecided" and doc["passed"] is False
    [verdict] = load_verdicts(out / "gate.json")
    assert verdict.outcome == "undecided" and "power meter" in verdict.undecided_because[0]
    assert "## edgeproof gate: COULD NOT DECIDE" in (out / "gate.md").read_text()
    suite = ET.fromstring((out / "gate.junit.xml").read_text().split("?>", 1)[1]).find("testsuite")
    assert suite.get("failures") == "0" and suite.get("errors") == "1"
    [energy] = [r for r in json.loads((out / "gate.sarif").read_text())["runs"][0]["results"]]
    assert energy["ruleId"] == "budgets.energy_mj_per_inference" and energy["properties"]["outcome"] == "undecided"
    assert "could not decide" in energy["message"]["text"]

    allowed = run_cli("gate", "--contract", str(contract_path), "--candidate", str(cand), "--allow-unverified")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def test_a_verdict_written_before_outcomes_existed_still_loads(tmp_path):
    """A gate.json of the first release: waivers and regressions as plain objects, no outcome."""
    clause = {
        "clause": "budgets.energy_mj_per_inference",
        "status": "unverified",
        "value": None,
        "budget": 5.0,
        "unit": "mJ",
        "margin": None,
        "interval": None,
        "provenance": "unavailable:no meter",
        "hard": True,
        "note": "",
        "waiver": None,
    }
    waived = {
        **clause,
        "clause": "budgets.p95_ms",
        "status": "waived",
        "waiver": {"clause": "budgets.p95_ms", "owner": "ops", "reason": "lab", "expires": "2027-06-30", "target": None},
    }
    old = {
        "schema_version": "edgeproof.verdict/1",
        "target": "host",
        "passed": False,
        "clauses": [clause, waived],
        "binding_clause": clause["clause"],
        "allow_unverified": False,
        "waivers_applied": [waived["waiver"]],
        "waivers_expired": [],
        "regressions": [{"clause": "regression.p50", "status": "pass", "ratio": 1.01, "interval": [0.99, 1.02], "limit": 1.03, "note": ""}],
        "contract_sha256": None,
    }
    path = tmp_path / "gate.json"
    path.write_text(json.dumps({"passed": False, "verdicts": [old]}))
    [verdict] = load_verdicts(path)
    assert (
        verdict.outcome == "undecided"
        and verdict.waivers_applied[0].sentence() == "budgets.p95_ms on every target, owner ops, until 2027-06-30: lab"
    )
    assert verdict.regressions[0].interval == (0.99, 1.02)
    path.write_text(json.dumps({"passed": False, "verdicts": [{**old, "clauses": [{**clause, "status": "fail", "value": 9.0}, waived]}]}))
    assert load_verdicts(path)[0].outcome == "fail"


def test_over_several_targets_a_failure_outranks_could_not_decide():
    from edgeproof.outcome import EXIT_FAIL, EXIT_PASS, EXIT_UNDECIDED, exit_code, overall

    assert exit_code(overall(["pass", "undecided", "fail"])) == EXIT_FAIL
    assert exit_code(overall(["pass", "undecided"])) == EXIT_UNDECIDED
    assert exit_code(overall(["pass", "pass"])) == EXIT_PASS
