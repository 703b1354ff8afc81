"""Budget contract: loading, error messages with file and line, units, waivers and verdicts on real records."""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path

import pytest

from edgeproof.contract import evaluate, load_contract, template_text, write_template
from edgeproof.errors import ContractError, RecordError
from edgeproof.measure.stats import summarize
from edgeproof.records import (
    EnvFingerprint,
    Evaluation,
    Figure,
    ModelRef,
    NodeRecord,
    Placement,
    RunRecord,
    RuntimeSettings,
    ScenarioResult,
    SessionSamples,
    SliceMetrics,
    TargetRef,
)

ROOT = Path(__file__).resolve().parents[1]
DIGITS_CONTRACT = ROOT / "examples" / "digits" / "edgeproof.toml"
EDGEPROOF = ROOT / ".venv" / "bin" / "edgeproof"

# 1..100 ms in one session: numpy's linear p95 is 95.05 ms and p99 is 99.01 ms.
SAMPLES_MS = [float(v) for v in range(1, 101)]

BASE = """\
[contract]
name = "test"
targets = ["host", "board-a"]

[budgets]
scenario = "single-stream"
p95_ms = "100 ms"
p99_ms = 0.1
peak_rss_mib = "1 GiB"
energy_mj_per_inference = "3 mJ"
"""


def write(tmp_path: Path, text: str, name: str = "edgeproof.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def line_number(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def make_record(
    samples_ms: list[float] = SAMPLES_MS,
    *,
    target: str = "host",
    scenario: ScenarioResult | None = None,
    energy: Figure | None = None,
    peak_rss: Figure | None = None,
    placement: Placement | None = None,
    evaluation: Evaluation | None = None,
) -> RunRecord:
    """A real RunRecord whose latency summary is computed from its samples by measure.stats."""
    return RunRecord(
        kind="measured",
        model=ModelRef(path="model.onnx", name="model", sha256="0" * 64, size_bytes=500_000),
        target=TargetRef(id=target, kind="host" if target == "host" else "simulated"),
        settings=RuntimeSettings(),
        scenario=scenario or ScenarioResult(name="single-stream"),
        sessions=[SessionSamples(warmup_ms=[], samples_ms=samples_ms, started_at="2026-11-25T00:00:00+00:00")],
        latency=summarize([samples_ms]),
        latency_provenance="measured:perf_counter_ns",
        load_time_ms=Figure.measured(40.0, "ms", "perf_counter_ns"),
        peak_rss_mib=peak_rss or Figure.measured(90.0, "MiB", "psutil"),
        model_size_mib=Figure.measured(0.47, "MiB", "file size"),
        energy_mj_per_inference=energy or Figure.unavailable("mJ", "no power meter on this host"),
        sustained_w=Figure.unavailable("W", "no power meter on this host"),
        temperature_c=Figure.unavailable("C", "no thermal sensor"),
        placement=placement,
        evaluation=evaluation,
        env=EnvFingerprint(
            hostname="ci",
            os="linux",
            cpu_model="test",
            cpu_cores=2,
            ram_gib=8.0,
            python="3.11",
            onnxruntime="1.32.0",
            onnx="1.17",
            providers=["CPUExecutionProvider"],
            edgeproof="0.1.0",
        ),
    )


def clause(verdict, clause_id):
    return next(c for c in verdict.clauses if c.clause == clause_id)


# --- loading -------------------------------------------------------------------------------------


def test_template_loads_and_names_every_section(tmp_path):
    path = write_template(tmp_path / "edgeproof.toml")
    assert path.read_text() == template_text()
    contract = load_contract(path)
    ids = [c.id for c in contract.hard_clauses()]
    assert ids[:2] == ["budgets.p95_ms", "budgets.p99_ms"]
    assert "slices.noise.max_drop_pp" in ids
    assert contract.budgets.load_time_ms == 2000.0  # "2 s"
    assert contract.budgets.cpu_fallback_frac == pytest.approx(0.10)  # "10 %"
    assert contract.regression.p50_pct == 3 and contract.regression.p95_pct == 10 and contract.regression.energy_pct == 5
    assert [s.owner for s in contract.escalation][0] == "ml-team@example.com"
    assert contract.sha256 == __import__("hashlib").sha256(path.read_bytes()).hexdigest()


def test_write_template_refuses_to_overwrite(tmp_path):
    path = write(tmp_path, "keep me")
    with pytest.raises(ContractError, match="already exists"):
        write_template(path)
    assert path.read_text() == "keep me"


def test_digits_example_loads():
    contract = load_contract(DIGITS_CONTRACT)
    assert contract.budgets.p95_ms == 5.0 and contract.budgets.peak_rss_mib == 400.0
    assert contract.data_file == (DIGITS_CONTRACT.parent / "dataset.py").resolve()
    kinds = {name: s.kind for name, s in contract.slices.items()}
    assert set(kinds.values()) == {"nominal", "stress", "tail"}
    assert contract.model.precisions == ["fp32", "fp16", "int8"]
    (waiver,) = contract.waivers
    assert waiver.clause == "budgets.energy_mj_per_inference" and waiver.target == "host"
    assert waiver.expires == date(2027, 6, 30)


def test_digits_example_data_and_slices_materialise():
    from edgeproof.data.dataset import load_dataset
    from edgeproof.data.slices import make_slices

    contract = load_contract(DIGITS_CONTRACT)
    assert contract.data_entry == "dataset.py:load"
    dataset = load_dataset(contract.data_entry, contract.base_dir)
    slices = make_slices(dataset, contract.slice_specs())
    assert [s.name for s in slices] == list(contract.slices)
    nominal, noise = slices[0], slices[1]
    assert (nominal.x == dataset.evaluation.x).all() and not (noise.x == nominal.x).all()


def test_defaults_apply_when_sections_are_absent(tmp_path):
    contract = load_contract(write(tmp_path, "[budgets]\np95_ms = 5\n"))
    assert contract.scenario == "single-stream"
    assert (contract.regression.p50_pct, contract.regression.p95_pct, contract.regression.p99_pct) == (3, 10, 10)
    assert contract.waivers == [] and contract.data is None and contract.data_file is None


@pytest.mark.parametrize(
    ("written", "field", "value"),
    [
        ('"1.5 s"', "p95_ms", 1500.0),
        ('"800 us"', "p95_ms", 0.8),
        ("25", "p95_ms", 25.0),
        ('"1 GiB"', "peak_rss_mib", 1024.0),
        ('"100 MB"', "peak_rss_mib", 100e6 / 2**20),
        ('"0.5 J"', "energy_mj_per_inference", 500.0),
        ('"500 mW"', "sustained_w", 0.5),
        ('"85 C"', "temperature_c", 85.0),
        ('"5 %"', "cpu_fallback_frac", 0.05),
        ("0", "cpu_fallback_frac", 0.0),
    ],
)
def test_units_convert_to_the_field_unit(tmp_path, written, field, value):
    contract = load_contract(write(tmp_path, f"[budgets]\n{field} = {written}\n"))
    assert getattr(contract.budgets, field) == pytest.approx(value)


# --- bad contracts: one line with file, line and field --------------------------------------------


def assert_error(tmp_path, text, needle_line, *fragments):
    path = write(tmp_path, text)
    with pytest.raises(ContractError) as info:
        load_contract(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line_number(text, needle_line)}:"), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_misspelled_key_names_file_line_and_suggestion(tmp_path):
    text = BASE.replace("p99_ms = 0.1", "p99ms = 0.1")
    assert_error(tmp_path, text, "p99ms", "budgets.p99ms", "unknown key 'p99ms'", "did you mean 'p99_ms'?")


def test_misspelled_table_is_reported_at_its_header(tmp_path):
    text = BASE + "\n[regresion]\np50_pct = 2\n"
    assert_error(tmp_path, text, "[regresion]", "unknown table 'regresion'", "did you mean 'regression'?")


def test_misspelled_key_inside_array_of_tables_and_inline_table(tmp_path):
    text = BASE + (
        '\n[[escalation]]\nowner = "a"\noptions = ["waiver"]\n'
        '\n[[escalation]]\nowner = "b"\noptoins = ["waiver"]\n'
        '\n[slices.noise]\nkind = "stress"\ntransforms = [\n'
        '  { name = "blur", severity = 0.2 },\n  { name = "gaussian_noise", sevrity = 0.2 },\n]\n'
    )
    assert_error(tmp_path, text, "optoins", "escalation[1].optoins", "did you mean 'options'?")
    text = text.replace("optoins", "options")
    assert_error(tmp_path, text, "sevrity", "slices.noise.transforms[1].sevrity", "did you mean 'severity'?")
    text = text.replace("sevrity", "severity") + "\n[escalation.notes]\ntext = 'a sub-table of the last step'\n"
    assert_error(tmp_path, text, "[escalation.notes]", "escalation[1].notes", "unknown table 'notes'")


def test_dotted_and_quoted_keys_are_located(tmp_path):
    text = BASE + '\n[slices]\nnominal.kind = "nominal"\n"noise".kind = "stres"\n'
    assert_error(tmp_path, text, '"noise".kind', "slices.noise.kind", "did you mean 'stress'?")
    text = 'budgets.p95_ms = 5\ncontract = { name = "x", ownr = "y" }\n'
    assert_error(tmp_path, text, "ownr", "contract.ownr", "did you mean 'owner'?")


@pytest.mark.parametrize("bad", ["0", "-5", '"-5 ms"', '"0 s"'])
def test_zero_or_negative_budget(tmp_path, bad):
    text = BASE.replace('p95_ms = "100 ms"', f"p95_ms = {bad}")
    assert_error(tmp_path, text, "p95_ms", "budgets.p95_ms", "must be > 0")


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [('"100 mss"', "unknown unit 'mss'"), ('"100 MiB"', "is a memory size, this field needs a time"), ('"100"', "has no unit")],
)
def test_unknown_or_foreign_unit(tmp_path, bad, fragment):
    text = BASE.replace('p95_ms = "100 ms"', f"p95_ms = {bad}")
    assert_error(tmp_path, text, "p95_ms", "budgets.p95_ms", fragment)


def test_waiver_without_expiry(tmp_path):
    text = BASE + '\n[[waivers]]\nclause = "budgets.p95_ms"\nowner = "ops"\nreason = "lab board"\n'
    assert_error(tmp_path, text, "[[waivers]]", "waivers[0]", "no expiry")


def test_waiver_for_unknown_clause_suggests_the_right_one(tmp_path):
    text = BASE + '\n[[waivers]]\nclause = "budgets.p95"\nowner = "ops"\nreason = "r"\nexpires = 2030-01-01\n'
    assert_error(tmp_path, text, 'clause = "budgets.p95"', "waivers[0].clause", "did you mean 'budgets.p95_ms'?")


@pytest.mark.parametrize(
    ("old", "new", "needle", "fragment"),
    [
        ('name = "test"', "name = 5", "name = 5", "expected a string, got an integer"),
        ('p95_ms = "100 ms"', "p95_ms = true", "p95_ms", "got a boolean"),
        ('targets = ["host", "board-a"]', 'targets = "host"', "targets", "expected an array"),
    ],
)
def test_wrong_type(tmp_path, old, new, needle, fragment):
    assert_error(tmp_path, BASE.replace(old, new), needle, "wrong type", fragment)


def test_toml_syntax_error_gives_line(tmp_path):
    text = BASE.replace('p95_ms = "100 ms"', 'p95_ms = "100 ms')
    assert_error(tmp_path, text, "p95_ms", "TOML syntax error")


def test_unknown_slice_kind_and_transform(tmp_path):
    text = BASE + '\n[slices.noise]\nkind = "stres"\ntransforms = [{ name = "blur", severity = 0.2 }]\nmax_drop_pp = 3\n'
    assert_error(tmp_path, text, 'kind = "stres"', "slices.noise.kind", "did you mean 'stress'?")
    text = text.replace('"stres"', '"stress"').replace('"blur"', '"blurr"')
    assert_error(tmp_path, text, "[slices.noise]", "slices.noise", "unknown transform 'blurr'")


def test_contract_without_hard_budget(tmp_path):
    path = write(tmp_path, '[contract]\nname = "empty"\n')
    with pytest.raises(ContractError, match="no hard budgets"):
        load_contract(path)


def test_missing_file(tmp_path):
    with pytest.raises(ContractError, match="no such file"):
        load_contract(tmp_path / "nope.toml")


# --- evaluation ----------------------------------------------------------------------------------


def test_pass_fail_and_margins_against_a_record(tmp_path):
    contract = load_contract(write(tmp_path, BASE))
    record = make_record(energy=Figure.measured(2.0, "mJ", "nvml"))
    verdict = evaluate(contract, record, today=date(2026, 11, 25))

    p95 = clause(verdict, "budgets.p95_ms")
    assert p95.status == "pass" and p95.value == pytest.approx(95.05) and p95.budget == 100.0
    assert p95.margin == pytest.approx(4.95) and p95.unit == "ms" and p95.provenance == "measured:perf_counter_ns"
    upper = record.latency.ci["p95"].high
    assert f"95% CI upper bound {upper:.4g} ms" in p95.note and (upper > 100) == ("over budget" in p95.note)

    p99 = clause(verdict, "budgets.p99_ms")
    assert p99.status == "fail" and p99.margin == pytest.approx(0.1 - 99.01)

    rss = clause(verdict, "budgets.peak_rss_mib")
    assert rss.status == "pass" and rss.margin == pytest.approx(1024 - 90) and rss.provenance == "measured:psutil"
    energy = clause(verdict, "budgets.energy_mj_per_inference")
    assert energy.status == "pass" and energy.margin == pytest.approx(1.0)

    assert not verdict.passed
    assert verdict.binding_clause == "budgets.p99_ms"
    assert "worst relative margin" in p99.note
    assert verdict.contract_sha256 == contract.sha256 and verdict.target == "host"


def test_binding_clause_when_all_pass_is_the_smallest_headroom(tmp_path):
    contract = load_contract(write(tmp_path, BASE.replace("p99_ms = 0.1", 'p99_ms = "200 ms"')))
    verdict = evaluate(contract, make_record(energy=Figure.measured(2.9, "mJ", "nvml")))
    assert verdict.passed
    # headroom: p95 4.95/100 = 5%, p99 101/200 = 50%, rss 89%, energy 0.1/3 = 3.3%
    assert verdict.binding_clause == "budgets.energy_mj_per_inference"
    assert "smallest relative headroom" in clause(verdict, "budgets.energy_mj_per_inference").note


def test_record_units_are_converted(tmp_path):
    contract = load_contract(write(tmp_path, BASE))
    verdict = evaluate(contract, make_record(peak_rss=Figure.measured(2.0, "GiB", "psutil")))
    rss = clause(verdict, "budgets.peak_rss_mib")
    assert rss.value == 2048.0 and rss.status == "fail"
    with_interval = make_record(peak_rss=Figure.measured(0.5, "GiB", "psutil", interval=(0.4, 1.1)))
    rss = clause(evaluate(contract, with_interval), "budgets.peak_rss_mib")
    assert rss.status == "pass" and rss.margin == 512.0 and "interval upper bound 1126 MiB (over budget)" in rss.note
    with pytest.raises(RecordError, match="peak_rss_mib"):
        evaluate(contract, make_record(peak_rss=Figure.measured(2.0, "ms", "psutil")))


def test_unverified_energy_leaves_the_verdict_undecided_unless_allowed(tmp_path):
    contract = load_contract(write(tmp_path, BASE.replace("p99_ms = 0.1", 'p99_ms = "200 ms"')))
    record = make_record()  # no power meter: energy unavailable, never 0
    strict = evaluate(contract, record)
    energy = clause(strict, "budgets.energy_mj_per_inference")
    assert energy.status == "unverified" and energy.value is None and energy.margin is None
    assert energy.provenance.startswith("unavailable:")
    assert not strict.passed and strict.binding_clause == "budgets.energy_mj_per_inference"
    # nothing fails on evidence, so the verdict is "could not decide", saying what would decide it
    assert strict.outcome == "undecided"
    [why] = strict.undecided_because
    assert why.startswith("budgets.energy_mj_per_inference: no data (") and "power meter" in why and "--allow-unverified" in why

    lenient = evaluate(contract, record, allow_unverified=True)
    assert lenient.passed and lenient.outcome == "pass" and lenient.allow_unverified and lenient.undecided_because == []
    assert clause(lenient, "budgets.energy_mj_per_inference").status == "unverified"
    assert "unverified clauses are allowed" in clause(lenient, "budgets.energy_mj_per_inference").note


def waiver_toml(expires: str, target: str | None = None, clause_id: str = "budgets.energy_mj_per_inference") -> str:
    scope = f'target = "{target}"\n' if target else ""
    return f'\n[[waivers]]\nclause = "{clause_id}"\n{scope}owner = "ops"\nreason = "no meter"\nexpires = {expires}\n'


def test_active_waiver_waives_and_expired_waiver_does_not(tmp_path):
    text = BASE.replace("p99_ms = 0.1", 'p99_ms = "200 ms"') + waiver_toml("2027-06-30", target="host")
    contract = load_contract(write(tmp_path, text))
    record = make_record()

    active = evaluate(contract, record, today=date(2027, 6, 30))  # the expiry day itself still counts
    energy = clause(active, "budgets.energy_mj_per_inference")
    assert energy.status == "waived" and energy.waiver.owner == "ops" and energy.waiver.expires == date(2027, 6, 30)
    assert active.passed and active.waivers_applied == [energy.waiver] and active.waivers_expired == []

    expired = evaluate(contract, record, today=date(2027, 7, 1))
    energy = clause(expired, "budgets.energy_mj_per_inference")
    assert energy.status == "unverified" and energy.waiver is None and "expired on 2027-06-30" in energy.note
    assert not expired.passed and expired.waivers_applied == []
    assert [w.clause for w in expired.waivers_expired] == ["budgets.energy_mj_per_inference"]
    assert expired.outcome == "undecided"


def test_waiver_scoped_to_another_target_does_not_apply(tmp_path):
    text = BASE.replace("p99_ms = 0.1", 'p99_ms = "200 ms"') + waiver_toml("2030-01-01", target="board-a")
    verdict = evaluate(load_contract(write(tmp_path, text)), make_record(target="host"), today=date(2026, 1, 1))
    assert clause(verdict, "budgets.energy_mj_per_inference").status == "unverified" and not verdict.passed


def test_waiver_on_a_passing_clause_is_not_used(tmp_path):
    text = BASE + waiver_toml("2030-01-01", clause_id="budgets.p95_ms")
    verdict = evaluate(load_contract(write(tmp_path, text)), make_record(), today=date(2026, 1, 1))
    p95 = clause(verdict, "budgets.p95_ms")
    assert p95.status == "pass" and "not needed" in p95.note and verdict.waivers_applied == []


def test_latency_under_another_scenario_is_unverified(tmp_path):
    contract = load_contract(write(tmp_path, BASE.replace('"single-stream"', '"periodic:30"')))
    verdict = evaluate(contract, make_record())
    p95 = clause(verdict, "budgets.p95_ms")
    assert p95.status == "unverified" and "periodic:30" in p95.note and "single-stream" in p95.note
    matching = make_record(scenario=ScenarioResult(name="periodic", rate_hz=30.0))
    assert clause(evaluate(contract, matching), "budgets.p95_ms").status == "pass"
    other_rate = make_record(scenario=ScenarioResult(name="periodic", rate_hz=60.0))
    assert clause(evaluate(contract, other_rate), "budgets.p95_ms").status == "unverified"


def test_slice_floors_judge_the_evaluation(tmp_path):
    text = (
        BASE
        + '\n[slices.nominal]\nkind = "nominal"\nmax_drop_pp = 1\n'
        + ('\n[slices.noise]\nkind = "stress"\ntransforms = [{ name = "gaussian_noise", severity = 0.25 }]\nmax_drop_pp = "4 pp"\n')
    )
    contract = load_contract(write(tmp_path, text))
    assert clause(evaluate(contract, make_record()), "slices.noise.max_drop_pp").status == "unverified"

    def metrics(name, acc, ref):
        return SliceMetrics(
            slice_id=f"{name}-id",
            n=360,
            accuracy=acc,
            reference_accuracy=ref,
            drop_pp=100 * (ref - acc),
            agreement=0.99,
            mean_confidence=0.9,
            confidence_shift=0.0,
        )

    evaluation = Evaluation(dataset_id="digits", reference_sha256="0" * 64, slices={"nominal": metrics("nominal", 0.99, 0.99)})
    verdict = evaluate(contract, make_record(evaluation=evaluation))
    nominal = clause(verdict, "slices.nominal.max_drop_pp")
    assert nominal.status == "pass" and nominal.value == 0.0 and nominal.unit == "pp"
    assert clause(verdict, "slices.noise.max_drop_pp").status == "unverified"  # not evaluated

    evaluation.slices["noise"] = metrics("noise", 0.90, 0.95)
    noise = clause(evaluate(contract, make_record(evaluation=evaluation)), "slices.noise.max_drop_pp")
    assert noise.status == "fail" and noise.value == pytest.approx(5.0) and noise.margin == pytest.approx(-1.0)
    assert noise.provenance == "measured:evaluate(noise-id)"


def test_cpu_fallback_prefers_time_fraction(tmp_path):
    contract = load_contract(write(tmp_path, '[budgets]\ncpu_fallback_frac = "10 %"\n'))
    nodes = [NodeRecord(name="a", op_type="Conv", provider="NPU"), NodeRecord(name="b", op_type="Softmax", provider="CPU")]
    by_nodes = Placement(
        nodes=nodes,
        primary_provider="NPU",
        fallback_node_frac=0.5,
        fallback_flop_frac=None,
        fallback_time_frac=None,
        provenance="simulated:board-a@1",
    )
    result = clause(evaluate(contract, make_record(placement=by_nodes)), "budgets.cpu_fallback_frac")
    assert result.status == "fail" and result.value == 0.5 and result.provenance == "simulated:board-a@1 (by node count)"
    by_time = by_nodes.model_copy(update={"fallback_time_frac": 0.02})
    result = clause(evaluate(contract, make_record(placement=by_time)), "budgets.cpu_fallback_frac")
    assert result.status == "pass" and result.value == 0.02 and result.provenance == "simulated:board-a@1"
    assert clause(evaluate(contract, make_record()), "budgets.cpu_fallback_frac").status == "unverified"


def test_digits_example_passes_on_host_with_its_energy_waiver():
    contract = load_contract(DIGITS_CONTRACT)
    record = make_record([0.55 + 0.001 * i for i in range(300)])
    verdict = evaluate(contract, record, today=date(2026, 11, 25), allow_unverified=False)
    statuses = {c.clause: c.status for c in verdict.clauses}
    assert statuses["budgets.energy_mj_per_inference"] == "waived"
    # no evaluation in this record, so the slice floors are unverified and the verdict is honestly undecided
    assert statuses["slices.nominal.max_drop_pp"] == "unverified" and not verdict.passed and verdict.outcome == "undecided"
    assert all(
        statuses[c] == "pass"
        for c in ("budgets.p95_ms", "budgets.p99_ms", "budgets.peak_rss_mib", "budgets.load_time_ms", "budgets.model_size_mib")
    )


# --- command line --------------------------------------------------------------------------------


def test_cli_init_writes_a_loadable_template(tmp_path):
    result = subprocess.run([str(EDGEPROOF), "init"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "edgeproof.toml").read_text() == template_text()
    load_contract(tmp_path / "edgeproof.toml")


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    existing = write(tmp_path, "mine", name="contract.toml")
    result = subprocess.run([str(EDGEPROOF), "init", str(existing)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "already exists" in lines[0] and str(existing.name) in lines[0]
    assert existing.read_text() == "mine"


def test_a_server_scenario_takes_a_poisson_rate(tmp_path):
    ok = '[budgets]\nscenario = "server:50"\np95_ms = "20 ms"\n'
    assert load_contract(write(tmp_path, ok)).scenario == "server:50"
    bad = '[budgets]\nscenario = "server"\np95_ms = "20 ms"\n'
    assert_error(tmp_path, bad, "scenario", "scenario 'server' needs a rate: server:HZ")


def test_the_model_must_accept_the_inputs_the_contract_declares(tmp_path):
    from conftest import DIGITS_MODEL
    from edgeproof.simulate import simulate_run

    record = simulate_run(DIGITS_MODEL, "raspberry-pi-5", sessions=2, samples_per_session=50)
    base = '[budgets]\np95_ms = "50 ms"\n[model.inputs.input]\ndtype = "float32"\n'
    cases = {
        'shape = ["batch", 1, 32, 32]': ("pass", "1 input declared, accepted"),
        "shape = [1, 1, 32, 32]": ("pass", "1 input declared, accepted"),  # a fixed size the model leaves free is accepted
        'shape = ["batch", 3, 32, 32]': ("fail", "input: shape ['batch', 1, 32, 32], the contract declares ['batch', 3, 32, 32]"),
    }
    for shape, (status, note) in cases.items():
        verdict = evaluate(load_contract(write(tmp_path, base + shape + "\n")), record)
        clause = next(c for c in verdict.clauses if c.clause == "model.inputs")
        assert clause.status == status and note in clause.note, clause
    fp16_io = write(tmp_path, '[budgets]\np95_ms = "50 ms"\n[model.inputs.image]\ndtype = "float16"\nshape = [1, 1, 32, 32]\n')
    clause = next(c for c in evaluate(load_contract(fp16_io), record).clauses if c.clause == "model.inputs")
    assert clause.status == "fail" and "image: not an input of the model (it has input)" in clause.note


# --- per-target budgets, jitter, deadline misses, binding clause ----------------------------------

PER_TARGET = """\
[budgets]
p95_ms = "100 ms"
peak_rss_mib = "1 GiB"

[budgets.raspberry-pi]
p95_ms = "50 ms"
scenario = "periodic:20"

[[waivers]]
clause = "budgets.p95_ms"
owner = "ops"
reason = "pi board on order"
expires = 2099-01-01
target = "jetson-orin-nano-8gb"
"""


def test_a_target_table_overrides_the_default_budget_clause_by_clause(tmp_path):
    contract = load_contract(write(tmp_path, PER_TARGET))
    host = evaluate(contract, make_record())
    assert clause(host, "budgets.p95_ms").status == "pass" and clause(host, "budgets.p95_ms").budget == 100.0
    assert clause(host, "budgets.p95_ms").budget_from == "[budgets]"
    # the prefix "raspberry-pi" names the board raspberry-pi-5; its p95 budget is 50 ms, its scenario periodic
    periodic = ScenarioResult(name="periodic", rate_hz=20.0, deadline_ms=50.0, deadline_miss_rate=0.5)
    pi = evaluate(contract, make_record(target="raspberry-pi-5", scenario=periodic))
    p95 = clause(pi, "budgets.p95_ms")
    assert p95.status == "fail" and p95.budget == 50.0 and p95.budget_from == "[budgets.raspberry-pi]"
    rss = clause(pi, "budgets.peak_rss_mib")  # not overridden: the default applies
    assert rss.budget == 1024.0 and rss.budget_from == "[budgets]"
    assert pi.binding_clause == "budgets.p95_ms" and contract.scenario_for("raspberry-pi-5") == "periodic:20"
    # the same run judged as the host's: single-stream budget vs a periodic record says so
    assert clause(evaluate(contract, make_record(scenario=periodic)), "budgets.p95_ms").status == "unverified"
    # the waiver keeps its clause id and is scoped by its target
    orin = evaluate(contract, make_record(samples_ms=[v * 1.5 for v in SAMPLES_MS], target="jetson-orin-nano-8gb"))
    assert clause(orin, "budgets.p95_ms").status == "waived" and orin.waivers_applied[0].target == "jetson-orin-nano-8gb"


def test_an_unknown_target_table_is_an_error_with_its_line(tmp_path):
    text = '[budgets]\np95_ms = "100 ms"\n\n[budgets.no-such-board]\np95_ms = "5 ms"\n'
    assert_error(tmp_path, text, "[budgets.no-such-board]", "budgets.no-such-board", "unknown target 'no-such-board'")
    misspelt = '[budgets]\np95_ms = "100 ms"\n[budgets.host]\np59_ms = "5 ms"\n'
    assert_error(tmp_path, misspelt, "p59_ms", "budgets.host.p59_ms", "unknown key 'p59_ms'")


def test_cli_refuses_an_unknown_target_table_with_one_line(tmp_path):
    from conftest import DIGITS_MODEL, run_cli

    path = write(tmp_path, '[budgets]\np95_ms = "100 ms"\n\n[budgets.nope]\np95_ms = "5 ms"\n')
    result = run_cli("check", str(DIGITS_MODEL), "--contract", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{path}:4: budgets.nope:" in result.stderr


def test_jitter_clause_is_p99_minus_p50_with_its_interval(tmp_path):
    # two sessions of 1..100 ms: p50 50.5, p99 99.01 -> jitter 48.51 ms
    record = make_record()
    record = record.model_copy(update={"sessions": record.sessions * 2, "latency": summarize([SAMPLES_MS, SAMPLES_MS])})
    tight = evaluate(load_contract(write(tmp_path, '[budgets]\njitter_ms = "40 ms"\n')), record)
    jitter = clause(tight, "budgets.jitter_ms")
    assert jitter.status == "fail" and abs(jitter.value - 48.51) < 0.01 and not tight.passed
    assert "95% CI upper bound" in jitter.note
    loose = evaluate(load_contract(write(tmp_path, '[budgets]\njitter_ms = "60 ms"\n')), record)
    assert clause(loose, "budgets.jitter_ms").status == "pass" and loose.passed
    # steady latency: no jitter to speak of
    steady = make_record(samples_ms=[5.0] * 100)
    assert clause(evaluate(load_contract(write(tmp_path, '[budgets]\njitter_ms = "1 ms"\n')), steady), "budgets.jitter_ms").value == 0.0


def test_deadline_miss_clause_fails_when_too_many_requests_are_late(tmp_path):
    contract = load_contract(write(tmp_path, '[budgets]\nscenario = "periodic:100"\ndeadline_miss_frac = "1 %"\n'))
    late = ScenarioResult(name="periodic", rate_hz=100.0, deadline_ms=10.0, deadline_miss_rate=0.05)
    verdict = evaluate(contract, make_record(scenario=late))
    miss = clause(verdict, "budgets.deadline_miss_frac")
    assert miss.status == "fail" and miss.value == 0.05 and verdict.outcome == "fail"
    on_time = ScenarioResult(name="periodic", rate_hz=100.0, deadline_ms=10.0, deadline_miss_rate=0.0)
    assert clause(evaluate(contract, make_record(scenario=on_time)), "budgets.deadline_miss_frac").status == "pass"
    # a single-stream record has no deadline: the clause cannot be judged and the verdict waits
    single = evaluate(contract, make_record())
    assert clause(single, "budgets.deadline_miss_frac").status == "unverified" and single.outcome == "undecided"


def test_deadline_misses_of_a_simulated_periodic_run_are_judged(tmp_path):
    from conftest import DIGITS_MODEL
    from edgeproof.simulate import simulate_run

    # the digits CNN needs well over 0.1 ms on a Pi 5: at 10 kHz every request misses its deadline
    record = simulate_run(DIGITS_MODEL, "raspberry-pi-5", rate_hz=10_000, sessions=2, samples_per_session=50)
    text = '[budgets]\np95_ms = "1 s"\n[budgets.raspberry-pi-5]\nscenario = "periodic:10000"\ndeadline_miss_frac = 0.5\n'
    verdict = evaluate(load_contract(write(tmp_path, text)), record)
    miss = clause(verdict, "budgets.deadline_miss_frac")
    assert miss.status == "fail" and miss.value > 0.5 and miss.budget_from == "[budgets.raspberry-pi-5]"


def test_binding_clause_is_the_numeric_clause_with_the_smallest_relative_margin(tmp_path):
    from conftest import DIGITS_MODEL
    from edgeproof.simulate import simulate_run

    record = simulate_run(DIGITS_MODEL, "raspberry-pi-5", sessions=2, samples_per_session=50)
    p95 = record.latency.p95_ms
    text = (
        f'[budgets]\np95_ms = {p95 * 1.2}\npeak_rss_mib = "4 GiB"\ncpu_fallback_frac = 0\n'
        '[model.inputs.input]\ndtype = "float32"\nshape = ["batch", 1, 32, 32]\n'
    )
    verdict = evaluate(load_contract(write(tmp_path, text)), record)
    assert verdict.passed and verdict.binding_clause == "budgets.p95_ms"
    inputs = clause(verdict, "model.inputs")
    assert inputs.status == "pass" and inputs.note == "1 input declared, accepted"
    # the check alone, with nothing numeric set, is what there is to bind
    only = evaluate(
        load_contract(
            write(tmp_path, '[budgets]\ncpu_fallback_frac = 0\n[model.inputs.input]\ndtype = "float32"\nshape = [1, 1, 32, 32]\n')
        ),
        record,
    )
    assert only.binding_clause in ("budgets.cpu_fallback_frac", "model.inputs")
