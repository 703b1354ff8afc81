"""The contract's pipeline and metric per output: raw-data slices, stage timing, scoped budgets, user metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_cli
from edgeproof.accuracy import contract_dataset, contract_metrics, contract_slices, evaluate_for_contract
from edgeproof.contract import load_contract
from edgeproof.data.pipeline import Pipeline, PipelineSpec, StepSpec
from edgeproof.errors import ContractError, DataError
from edgeproof.evaluate import OutputMetric, row_scores
from edgeproof.gate import accuracy_clauses, paired_error_worse_p
from edgeproof.records import load_record

GLYPHS = ROOT / "examples" / "glyphs"
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture
def glyphs(tmp_path) -> Path:
    """A copy of the glyphs example to edit the contract of."""
    folder = tmp_path / "glyphs"
    shutil.copytree(GLYPHS, folder, ignore=shutil.ignore_patterns("__pycache__", "make.py"))
    return folder


def edit(contract: Path, old: str, new: str) -> Path:
    text = contract.read_text()
    assert old in text, old
    contract.write_text(text.replace(old, new))
    return contract


def test_builtin_steps_normalise_raw_frames_like_numpy():
    spec = PipelineSpec(
        raw_layout="NHWC",
        raw_range=[0.0, 255.0],
        preprocess=[
            StepSpec(op="scale", factor=1 / 255),
            StepSpec(op="normalize", mean=MEAN, std=STD),
            StepSpec(op="layout", to="NCHW"),
        ],
    )
    pipe = Pipeline.load(spec, ".")
    raw = np.random.default_rng(0).uniform(0, 255, (2, 5, 7, 3)).astype(np.float32)
    expected = ((raw / 255 - np.array(MEAN)) / np.array(STD)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(pipe.preprocess(raw), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pipe.unit_to_raw(pipe.raw_to_unit(raw)), raw, rtol=1e-5, atol=1e-3)


def test_resize_keeps_a_constant_image_constant_and_hits_the_size():
    pipe = Pipeline.load(PipelineSpec(preprocess=[StepSpec(op="resize", size=[9, 4])]), ".")
    out = pipe.preprocess(np.full((1, 3, 5, 6), 0.25, np.float32))
    assert out.shape == (1, 3, 9, 4) and np.allclose(out, 0.25)


def test_a_normalised_input_model_gets_transform_slices_from_raw_data():
    contract = load_contract(GLYPHS / "edgeproof.toml")
    dataset, slices = contract_slices(contract, GLYPHS / "model.onnx")
    by_name = {s.name: s for s in slices}
    nominal, dark = by_name["nominal"].x, by_name["low_light"].x
    assert nominal.shape[1] == 3 and nominal.min() < -1.0, "the model is fed ImageNet-normalised NCHW frames"
    assert dark.mean() < nominal.mean(), "low light darkens the raw frames before normalisation"
    assert by_name["noise"].id != by_name["nominal"].id and "ink" in by_name["nominal"].labels


def test_mse_and_user_metrics_score_each_row():
    out = np.array([[1.0], [2.0], [4.0]], np.float32)
    y = np.array([1.0, 1.0, 1.0], np.float32)
    rows, value = row_scores(OutputMetric(name="mse", higher_is_better=False), out, y)
    assert rows.tolist() == [0.0, 1.0, 9.0] and value == pytest.approx(10 / 3)
    scalar = OutputMetric(name="m.py:f", fn=lambda o, lab: 0.5)
    assert row_scores(scalar, out, y) == (None, 0.5)


def test_paired_interval_flags_a_worse_regression_head_and_not_an_equal_one():
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 1, 300)
    p_worse, mean, lo, _ = paired_error_worse_p(base.tolist(), (base + 0.05 + rng.normal(0, 0.02, 300)).tolist(), higher_is_better=False)
    assert p_worse < 0.001 and lo > 0 and mean == pytest.approx(0.05, abs=0.01)
    p_same, *_ = paired_error_worse_p(base.tolist(), (base + rng.normal(0, 0.02, 300)).tolist(), higher_is_better=False)
    assert p_same > 0.01


def test_two_outputs_are_judged_by_their_own_metric_and_gated_pairwise():
    contract = load_contract(GLYPHS / "edgeproof.toml")
    ev = evaluate_for_contract(contract, GLYPHS / "model.onnx")
    assert ev is not None and ev.metric == "logits:top1, ink:mse"
    nominal = ev.slices["nominal"]
    assert nominal.outputs["logits"].higher_is_better and not nominal.outputs["ink"].higher_is_better
    assert nominal.outputs["ink"].increase == 0.0 and 0 < nominal.outputs["ink"].value < 0.01
    assert len(ev.scores["nominal"]["ink"]) == nominal.n
    # the same evaluation on both sides of a gate: nothing is worse, and each output has the paired
    # test its metric calls for; a head made worse on every row fails its own clause only
    rec = load_record(ROOT / "tests" / "data" / "v2" / "measured.run.json").model_copy(update={"evaluation": ev})
    clauses = {c.clause: c for c in accuracy_clauses(rec, rec)}
    assert clauses["regression.accuracy.nominal"].status == "pass" and "McNemar" in clauses["regression.accuracy.nominal"].provenance
    assert (
        clauses["regression.accuracy.nominal.ink"].status == "pass" and "paired t" in clauses["regression.accuracy.nominal.ink"].provenance
    )
    worse_scores = {k: {**v, "ink": [r + 0.01 for r in v["ink"]]} for k, v in ev.scores.items()}
    worse = rec.model_copy(update={"evaluation": ev.model_copy(update={"scores": worse_scores})})
    clauses = {c.clause: c for c in accuracy_clauses(rec, worse)}
    assert clauses["regression.accuracy.nominal.ink"].status == "fail" and clauses["regression.accuracy.nominal"].status == "pass"


def test_a_floor_in_the_wrong_unit_for_its_metric_is_refused(glyphs):
    edit(glyphs / "edgeproof.toml", "outputs.ink.max_increase_pct = 50", "outputs.ink.max_drop_pp = 5")
    with pytest.raises(ContractError, match="lower is better.*max_increase"):
        load_contract(glyphs / "edgeproof.toml")


def test_a_metric_function_is_loaded_from_the_contract_folder(glyphs):
    (glyphs / "score.py").write_text("def ink_error(outputs, labels):\n    return abs(outputs[:, 0] - labels[:, 0])\n")
    edit(glyphs / "edgeproof.toml", 'metric = "mse"', 'metric = "score.py:ink_error"\nhigher_is_better = false')
    contract = load_contract(glyphs / "edgeproof.toml")
    assert [m.name for m in contract_metrics(contract)] == ["top1", "score.py:ink_error"]
    ev = evaluate_for_contract(contract, glyphs / "model.onnx")
    assert ev.slices["nominal"].outputs["ink"].value == pytest.approx(np.mean(ev.scores["nominal"]["ink"]))
    assert contract_dataset(contract).pipeline is not None


@pytest.mark.slow
def test_a_metric_function_that_raises_is_one_line_naming_it_exit_2(glyphs):
    (glyphs / "bad.py").write_text("def score(outputs, labels):\n    raise ValueError('boxes and labels disagree')\n")
    edit(glyphs / "edgeproof.toml", 'metric = "mse"', 'metric = "bad.py:score"\nhigher_is_better = true')
    edit(glyphs / "edgeproof.toml", "outputs.ink.max_increase_pct = 50", "outputs.ink.max_drop_pp = 5")
    edit(glyphs / "edgeproof.toml", "outputs.ink.max_increase_pct = 100", "outputs.ink.max_drop_pp = 10")
    res = run_cli("check", str(glyphs / "model.onnx"), "--contract", str(glyphs / "edgeproof.toml"), "--sessions", "1", "--samples", "30")
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.strip().splitlines() if line.strip() and "zeus" not in line and "amdsmi" not in line]
    assert len(lines) == 1 and "bad.py:score" in lines[0] and "ValueError" in lines[0] and "Traceback" not in res.stderr


SLOW_PRE = """import time
import numpy as np

SLEEP_S = {sleep}


def preprocess(frames):
    time.sleep(SLEEP_S)
    x = frames / 255.0
    x = (x - np.array({mean}, np.float32)) / np.array({std}, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
"""


@pytest.mark.slow
def test_a_slow_preprocessing_step_shows_in_the_pre_stage_and_the_pipeline_budget_not_the_model(glyphs, tmp_path):
    sleep_ms = 8.0
    (glyphs / "slow.py").write_text(SLOW_PRE.format(sleep=sleep_ms / 1000, mean=MEAN, std=STD))
    contract = glyphs / "edgeproof.toml"
    text = contract.read_text()
    start, end = text.index("preprocess = ["), text.index("postprocess =")
    contract.write_text(text[:start] + 'preprocess = "slow.py:preprocess"\n' + text[end:])
    edit(contract, 'p95_ms = "20 ms"', 'p95_ms = "4 ms"')

    out = tmp_path / "profile.json"
    res = run_cli(
        "profile", str(glyphs / "model.onnx"), "--contract", str(contract), "--sessions", "1", "--samples", "50", "--json", str(out)
    )
    assert res.returncode == 0, res.stderr
    stages = json.loads(out.read_text())["stages"]
    by = {s["name"]: s for s in stages["stages"]}
    assert set(by) == {"pre", "copy_in", "model", "copy_out", "post"}
    assert by["pre"]["p50_ms"] >= sleep_ms and by["model"]["p50_ms"] < sleep_ms / 4
    assert by["pre"]["share"] > 0.8 and sum(s["share"] for s in by.values()) == pytest.approx(1.0)
    assert stages["total"]["p95_ms"] >= sleep_ms and "slow.py:preprocess" in stages["pipeline"]

    verdict_path = tmp_path / "check.json"
    res = run_cli(
        "check", str(glyphs / "model.onnx"), "--contract", str(contract), "--sessions", "1", "--samples", "50", "--json", str(verdict_path)
    )
    assert res.returncode == 1, res.stdout + res.stderr
    verdict = json.loads(verdict_path.with_suffix(".verdict.json").read_text())
    p95 = next(c for c in verdict["clauses"] if c["clause"] == "budgets.p95_ms")
    record = json.loads(verdict_path.read_text())
    assert p95["status"] == "fail" and p95["value"] >= sleep_ms and "pipeline scope" in p95["note"]
    assert record["latency"]["p95_ms"] < sleep_ms / 2, "the model's own session time (a model-scoped budget) does not hold the sleep"


def test_a_pipeline_scope_without_a_pipeline_is_refused(glyphs):
    contract = glyphs / "edgeproof.toml"
    text = contract.read_text()
    start, end = text.index("\n[pipeline]\n"), text.index("\n[evaluation.outputs.logits]")
    contract.write_text(text[:start] + text[end:])
    with pytest.raises(ContractError, match="needs a \\[pipeline\\]"):
        load_contract(contract)


def test_a_python_step_that_raises_names_the_step(glyphs):
    (glyphs / "pre.py").write_text("def pre(x):\n    raise RuntimeError('camera unplugged')\n")
    contract = glyphs / "edgeproof.toml"
    text = contract.read_text()
    start, end = text.index("preprocess = ["), text.index("postprocess =")
    contract.write_text(text[:start] + 'preprocess = "pre.py:pre"\n' + text[end:])
    with pytest.raises(DataError, match="preprocess step 'pre.py:pre' raised RuntimeError: camera unplugged"):
        contract_slices(load_contract(contract), glyphs / "model.onnx")
