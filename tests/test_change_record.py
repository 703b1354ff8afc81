"""Change record between two real BOMs (fp32 reference and static INT8 of the digits model): diff, deltas, rollback."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import DIGITS_CONTRACT, DIGITS_MODEL, variant_ref
from edgeproof.bom import NO_RECIPE, Stated, StatedClause, build_bom, generate_keypair, read_bom, sign_bom
from edgeproof.change_record import (
    CHANGE_RECORD_SCHEMA,
    WHY_PLACEHOLDER,
    ChangeRecord,
    budget_delta,
    build_change_record,
    load_change_record,
    render_markdown,
    write_change_record,
)
from edgeproof.cli import app
from edgeproof.contract import load_contract
from edgeproof.data import calibration_set, load_dataset, make_slices
from edgeproof.errors import RecordError
from edgeproof.evaluate import evaluate, reference_outputs
from edgeproof.gate import gate_target
from edgeproof.measure.runner import ProfileOptions, profile_model
from edgeproof.records import Figure, save_record
from edgeproof.variants import Recipe, build_variant

# Written by edgeproof before the change record was typed (schema /1): two BOMs, a signature, the record.
V1 = Path(__file__).parent / "data" / "release_v1"
QUICK = ProfileOptions(
    min_sessions=2, max_sessions=2, samples_per_session=60, warmup=5, time_budget_s=5, cold_start_repeats=1, check_fitness=False
)


def roomy_contract(path: Path) -> Path:
    """The digits contract with latency budgets of 1 s.

    The gate refuses a baseline that fails its own contract, and a p99 from 120 samples on a
    busy shared host can pass 10 ms; this test is about the change record, not that tail.
    """
    text = DIGITS_CONTRACT.read_text()
    text = re.sub(r"^(p9[59]_ms) = .*$", r'\1 = "1 s"', text, flags=re.M)
    text = text.replace('entry = "dataset.py:load"', f'entry = "{DIGITS_CONTRACT.parent / "dataset.py"}:load"')
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def boms(tmp_path_factory):
    """BOM A: fp32 reference; BOM B: static INT8. Both measured here, evaluated on the contract's slices and gated."""
    work = tmp_path_factory.mktemp("change")
    contract = load_contract(roomy_contract(work / "edgeproof.toml"))
    dataset = load_dataset(str(contract.data.entry), contract.path.parent)
    slices = make_slices(dataset, contract.slice_specs())
    reference = reference_outputs(DIGITS_MODEL, slices)
    calibration = calibration_set(dataset, contract.slice_specs(), ("nominal",))
    recipes = {"a": (Recipe(precision="fp32"), None), "b": (Recipe(precision="int8-static", per_channel=True), calibration)}
    out, runs = {}, {}
    for side, (recipe, cal) in recipes.items():
        variant = build_variant(DIGITS_MODEL, recipe, cal, work / "cache")
        runs[side] = profile_model(variant.path, options=QUICK).model_copy(
            update={
                "variant": variant_ref(variant),
                "evaluation": evaluate(variant.path, reference, slices, dataset.id),
            }
        )
        run = save_record(runs[side], work / f"run-{side}.json")
        # the candidate is gated against the release in the field, as a release pipeline does
        verdict = save_record(gate_target(contract, runs[side], runs.get("a") if side == "b" else None), work / f"verdict-{side}.json")
        bom = work / f"bom-{side}.json"
        build_bom([run], bom, [verdict], contract.path)
        out[side] = bom
    # the release in the field was never gated: its BOM holds the same run as "a", without a verdict
    out["a-ungated"] = work / "bom-a-ungated.json"
    build_bom([work / "run-a.json"], out["a-ungated"], [], contract.path)
    private, _ = generate_keypair(work / "keys")
    out["signature"] = sign_bom(out["a"], private)
    out["contract"] = contract
    return out


@pytest.fixture(scope="module")
def record(boms):
    return build_change_record(read_bom(boms["a"]), read_bom(boms["b"]), "int8 to meet the energy budget")


def test_what_changed_names_model_hashes_and_recipe_fields(boms, record):
    a, b = read_bom(boms["a"]), read_bom(boms["b"])
    changed = {c.field: (c.before, c.after) for c in record.what_changed}
    assert changed["model.sha256"] == (a.model_sha256, b.model_sha256)
    assert changed["recipe.precision"] == ("fp32", "int8-static")
    assert changed["recipe.calibrator"] == ("n/a", "minmax")
    assert changed["recipe.calibration_id"][1] == b.recipe.calibration_id
    assert "contract.sha256" in record.unchanged
    assert "host: runtime.onnxruntime" in record.unchanged


def test_budgets_impacted_gives_p95_delta_with_intervals(boms, record):
    a, b = read_bom(boms["a"]), read_bom(boms["b"])
    pa, pb = a.targets["host"].figures["p95_ms"].figure, b.targets["host"].figures["p95_ms"].figure
    p95 = next(d for d in record.budgets_impacted if d.figure == "p95_ms")
    assert (p95.before, p95.after) == (pa.value, pb.value)
    assert p95.delta_pct == pytest.approx((pb.value - pa.value) / pa.value * 100)
    assert f"p95_ms on host: {pa.value:.4g} → {pb.value:.4g} ms" in p95.text
    assert "95% CI" in p95.text and p95.budget == 1000.0
    overlap = pa.interval[0] <= pb.interval[1] and pb.interval[0] <= pa.interval[1]
    assert p95.moved == (not overlap)
    # every slice floor of the contract is a budgeted figure, with its accuracy drop on both sides
    drops = {d.figure for d in record.budgets_impacted if d.figure.startswith("slices.")}
    assert drops == {f"slices.{name}.drop_pp" for name in boms["contract"].slices}
    nominal = next(d for d in record.budgets_impacted if d.figure == "slices.nominal.drop_pp")
    assert nominal.before == 0.0  # the fp32 variant is the reference itself
    assert nominal.after == b.targets["host"].figures["slices.nominal.drop_pp"].figure.value


def test_gate_regressions_against_the_baseline_are_reported(boms, record):
    clauses = read_bom(boms["b"]).targets["host"].clauses
    regression_clauses = [c.clause for c in clauses if c.clause.startswith("regression.")]
    assert regression_clauses, "the candidate was gated against a baseline"
    assert [r.clause for r in record.regressions] == regression_clauses
    assert not any(d.figure.startswith("regression.") for d in record.budgets_impacted)
    assert "Regression vs the baseline" in render_markdown(record)


def test_rollback_path_is_the_previous_bom_and_its_model(boms, record):
    a = read_bom(boms["a"])
    rollback = record.rollback
    assert rollback.bom == os.path.relpath(boms["a"], Path.cwd())
    assert rollback.bom_sha256 == hashlib.sha256(boms["a"].read_bytes()).hexdigest()
    assert rollback.model_sha256 == a.model_sha256 and rollback.model_file == Path(a.model_path).name
    assert rollback.signature == os.path.relpath(boms["signature"], Path.cwd())


def test_tests_telemetry_and_caveats(boms, record):
    b = read_bom(boms["b"])
    (host,) = record.tests_run
    assert host.target == "host" and host.verdict == b.targets["host"].props["gate.verdict"]
    assert sum(host.clause_counts.values()) == len(b.targets["host"].clauses)
    watched = {t.field: t.why for t in record.telemetry_to_watch}
    assert "quantization recipe changed" in watched["confidence_mean (accuracy proxy)"]
    assert "cpu_fallback_frac" in watched
    # the host has no power meter: the new BOM's caveats say energy is unavailable, and the board sees it
    assert any("energy_mj_per_inference" in c for c in record.hardware_caveats)


def test_markdown_has_every_section_and_why(record):
    text = render_markdown(record)
    headings = ("What changed", "Why", "Budgets impacted", "Tests run", "Rollback path", "Telemetry fields to watch", "Hardware caveats")
    for heading in headings:
        assert f"## {heading}" in text
    assert "int8 to meet the energy budget" in text
    assert record.previous.model_sha256[:12] in text and record.candidate.model_sha256[:12] in text


def test_identical_boms_change_nothing_and_why_is_a_placeholder(boms):
    same = build_change_record(read_bom(boms["b"]), read_bom(boms["b"]))
    assert same.what_changed == [] and same.why == WHY_PLACEHOLDER
    assert not any(d.moved for d in same.budgets_impacted)
    assert "Nothing in the BOMs differs." in render_markdown(same)


def test_cli_writes_markdown_and_json(boms, tmp_path):
    result = CliRunner().invoke(app, ["change-record", "--from", str(boms["a"]), "--to", str(boms["b"]), "-o", str(tmp_path / "cr.md")])
    assert result.exit_code == 0, result.stderr
    data = json.loads((tmp_path / "cr.json").read_text())
    assert data["schema_version"] == "edgeproof.change-record/2" and data["why"] == WHY_PLACEHOLDER
    assert (tmp_path / "cr.md").read_text().startswith("# Change record:")
    markdown, _, written = write_change_record(boms["a"], boms["b"])
    assert written == [] and markdown.startswith("# Change record:")


def test_cli_refuses_a_file_that_is_not_a_bom(boms, tmp_path):
    not_bom = tmp_path / "run.json"
    not_bom.write_text(json.dumps({"schema_version": "edgeproof.run/1"}))
    result = CliRunner().invoke(app, ["change-record", "--from", str(not_bom), "--to", str(boms["b"])])
    assert result.exit_code == 2
    assert "not a CycloneDX BOM" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_ungated_baseline_bolds_only_what_moved(boms):
    """ "not gated → pass" is no change: against its own ungated copy a release bolds nothing."""
    same = build_change_record(read_bom(boms["a-ungated"]), read_bom(boms["a"]))
    assert {d.status_before for d in same.budgets_impacted} == {"not gated"}
    assert same.bold == [] and "**" not in render_markdown(same)
    assert "0 of" in render_markdown(same)
    candidate = build_change_record(read_bom(boms["a-ungated"]), read_bom(boms["b"]))
    assert candidate.bold == [d for d in candidate.budgets_impacted if d.moved]


def test_bold_is_a_move_beyond_the_intervals_or_a_verdict_changing_its_mind():
    def stated(value: float) -> Stated:
        return Stated(Figure.measured(value, "ms", "perf_counter_ns", interval=(value - 1, value + 1)), 0.95)

    def clause(status: str) -> StatedClause:
        return StatedClause(
            clause="budgets.p95_ms", status=status, value=10.0, budget=10.5, unit="ms", provenance="measured:perf_counter_ns"
        )

    steady, moved = stated(10.0), stated(20.0)
    assert not budget_delta("host", "p95_ms", steady, steady, None, clause("pass")).changed
    assert not budget_delta("host", "p95_ms", steady, stated(10.5), clause("pass"), clause("pass")).changed  # intervals overlap
    assert budget_delta("host", "p95_ms", steady, steady, clause("pass"), clause("fail")).changed
    assert budget_delta("host", "p95_ms", steady, moved, None, clause("fail")).changed


def test_written_record_names_files_relative_to_itself_and_the_model_by_name(boms, tmp_path):
    out = tmp_path / "review" / "cr"
    markdown, record, _ = write_change_record(boms["a"], boms["b"], "int8", out)
    text = (tmp_path / "review" / "cr.json").read_text()
    work = str(boms["a"].parent)
    assert work not in markdown and work not in text
    assert (out.parent / record.rollback.bom).resolve() == boms["a"].resolve()
    assert (out.parent / record.candidate.bom).resolve() == boms["b"].resolve()
    assert (out.parent / record.rollback.signature).resolve() == boms["signature"].resolve()
    assert record.rollback.model_file == "model.onnx"
    assert record.candidate.bom_sha256 == hashlib.sha256(boms["b"].read_bytes()).hexdigest()
    assert load_change_record(tmp_path / "review" / "cr.json") == record


def test_first_lines_say_no_recipe_in_words(boms):
    same = build_change_record(read_bom(boms["a-ungated"]), read_bom(boms["a"]))
    assert same.previous.recipe == "fp32"
    old_style = build_change_record(read_bom(V1 / "a.bom.json"), read_bom(V1 / "b.bom.json"))
    head = render_markdown(old_style).splitlines()[:4]
    assert head[2] == f"From `{old_style.previous.bom}` (sha256 `{old_style.previous.bom_sha256[:12]}…`): {NO_RECIPE}."
    assert "none (model as given)" not in render_markdown(old_style)


def test_version_1_record_loads_renders_and_keeps_its_figures():
    doc = json.loads((V1 / "change-record.json").read_text())
    assert doc["schema"] == "edgeproof.change-record/1"
    record = load_change_record(V1 / "change-record.json")
    assert record.schema_version == CHANGE_RECORD_SCHEMA
    assert record.previous.model_sha256 == doc["from"]["model_sha256"] and record.previous.recipe == NO_RECIPE
    assert record.candidate.recipe == doc["to"]["recipe"]
    assert [d.model_dump(mode="json") for d in record.budgets_impacted] == doc["budgets_impacted"]
    assert [r.text for r in record.regressions] == doc["regressions"]
    assert [t.model_dump() for t in record.tests_run] == doc["tests_run"]
    assert record.rollback.model_file == doc["rollback"]["model_path"] and record.rollback.bom_sha256 is None
    markdown = render_markdown(record)
    assert "int8 to meet the energy budget" in markdown and f"From `{doc['from']['bom']}`: {NO_RECIPE}." in markdown
    assert ChangeRecord.model_validate_json(record.model_dump_json()) == record


def test_the_same_old_boms_give_the_same_budgets_as_version_1_did():
    """BOMs written before the BOM facts were typed read back to the very figures the /1 record stated."""
    old = load_change_record(V1 / "change-record.json")
    new = build_change_record(read_bom(V1 / "a.bom.json"), read_bom(V1 / "b.bom.json"), old.why, base=V1)
    assert new.budgets_impacted == old.budgets_impacted
    assert new.regressions == old.regressions
    # /2 names the waiver behind a waived clause; /1 said only "waived"
    (host,), (host_v1,) = new.tests_run, old.tests_run
    assert host.model_copy(update={"not_passing": host_v1.not_passing}) == host_v1
    assert host.not_passing == [
        "waived: budgets.energy_mj_per_inference on host, owner embedded-team@example.com, "
        "until 2027-06-30: no power meter on the CI host; energy is judged on the board targets"
    ]
    assert new.what_changed == old.what_changed and new.telemetry_to_watch == old.telemetry_to_watch
    assert (new.rollback.bom, new.rollback.signature) == ("a.bom.json", "a.bom.json.sig")


def test_a_broken_version_1_record_is_one_line(tmp_path):
    doc = json.loads((V1 / "change-record.json").read_text())
    del doc["rollback"]
    path = tmp_path / "cr.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(RecordError, match=r"cr\.json: .*not a readable edgeproof.change-record/1 record .*rollback"):
        load_change_record(path)
