"""Evaluation, calibration and per-node speed on models with several inputs: rows from the data by
input name, fixed values from the contract's [model.feeds], and raw uint8 camera data through a pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import run_cli
from edgeproof.accuracy import contract_evaluator, contract_slices, evaluate_for_contract
from edgeproof.contract import load_contract
from edgeproof.data import calibration_set, check_fits_model, load_dataset
from edgeproof.data.feeds import Inputs
from edgeproof.data.slices import transformed
from edgeproof.errors import DataError, ModelError
from edgeproof.evaluate import infer_outputs
from edgeproof.model import Model
from edgeproof.variants import Recipe, build_variant, compare_node_speed
from edgeproof.variants.mixed import rank_nodes
from test_feeds import conv_model


def _save(nodes, inputs, outputs, inits, path: Path) -> Path:
    model = helper.make_model(
        helper.make_graph(nodes, path.stem, inputs, outputs, initializer=inits), opset_imports=[helper.make_opsetid("", 13)]
    )
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def two_input_model(path: Path) -> Path:
    """logits = a @ Wa + b @ Wb: ``a`` and ``b`` are both [batch, 4], three classes."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(0, 1, (4, 3)).astype(np.float32), n) for n in ("wa", "wb")]
    nodes = [
        helper.make_node("MatMul", ["a", "wa"], ["pa"], name="mm_a"),
        helper.make_node("MatMul", ["b", "wb"], ["pb"], name="mm_b"),
        helper.make_node("Add", ["pa", "pb"], ["logits"], name="add"),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in ("a", "b")]
    return _save(nodes, inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], inits, path)


def two_input_logits(path: Path, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    return a @ w["wa"] + b @ w["wb"]


def recurrent_model(path: Path) -> Path:
    """A voice-activity-like model: ``input`` [?, ?] (free dims written -1), ``state`` [2, ?, 8], ``sr``
    an int64 scalar. output = sigmoid(input @ W · sr/16000 + mean(state)) [?, 1]; stateN = state/2 + 1."""
    rng = np.random.default_rng(4)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (16, 1)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array(16000.0, np.float32), "k16"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "w"], ["level"], name="mm"),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Div", ["srf", "k16"], ["scale"], name="div"),
        helper.make_node("Mul", ["level", "scale"], ["lv"], name="mul"),
        helper.make_node("ReduceMean", ["state"], ["smean"], keepdims=0, name="smean"),
        helper.make_node("Add", ["lv", "smean"], ["z"], name="add"),
        helper.make_node("Sigmoid", ["z"], ["output"], name="sig"),
        helper.make_node("Mul", ["state", "half"], ["sh"], name="halve"),
        helper.make_node("Add", ["sh", "one"], ["stateN"], name="next"),
    ]
    audio = helper.make_tensor_value_info("input", TensorProto.FLOAT, [-1, -1])
    inputs = [
        audio,
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 8]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
    ]
    outputs = [
        helper.make_tensor_value_info("output", TensorProto.FLOAT, [-1, 1]),
        helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", 8]),
    ]
    return _save(nodes, inputs, outputs, inits, path)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_two_input_model_is_evaluated_on_both_inputs_from_the_npz(tmp_path):
    model = two_input_model(tmp_path / "two.onnx")
    rng = np.random.default_rng(0)
    arrays = {}
    for part, n in (("calibration", 16), ("test", 40), ("night", 24)):
        a, b = rng.normal(0, 1, (n, 4)).astype(np.float32), rng.normal(0, 1, (n, 4)).astype(np.float32)
        truth = two_input_logits(model, a, b).argmax(axis=1)
        y = np.where(rng.random(n) < 0.25, (truth + 1) % 3, truth)  # a quarter of the labels disagree
        arrays |= {f"x_{part}__a": a, f"x_{part}__b": b, f"y_{part}": y}
    np.savez(tmp_path / "d.npz", **arrays)
    contract = load_contract(
        _write(
            tmp_path / "c.toml",
            '[data]\nnpz = "d.npz"\n[budgets]\np95_ms = 100\n'
            '[slices.nominal]\nkind = "nominal"\nmax_drop_pp = 1\n[slices.night]\nkind = "tail"\npart = "night"\n',
        )
    )
    evaluation = evaluate_for_contract(contract, model)
    assert evaluation is not None
    for name, part in (("nominal", "test"), ("night", "night")):
        by_hand = two_input_logits(model, arrays[f"x_{part}__a"], arrays[f"x_{part}__b"]).argmax(axis=1)
        expected = float(np.mean(by_hand == arrays[f"y_{part}"]))
        # the reference is the model itself: the variant and the reference agree row for row
        assert evaluation.slices[name].accuracy == pytest.approx(expected) and evaluation.slices[name].agreement == 1.0
        # b matters: top-1 from a alone is another number
        assert expected != pytest.approx(
            float(
                np.mean(two_input_logits(model, arrays[f"x_{part}__a"], 0 * arrays[f"x_{part}__b"]).argmax(axis=1) == arrays[f"y_{part}"])
            )
        )
    # the per-node speed profile feeds every input too (a slice's Inputs; ONNX Runtime refuses a run missing one)
    _, slices = contract_slices(contract, model)
    assert "mm_a" in {n.name for n in compare_node_speed(model, model, slices[0].inputs, runs=3).nodes}


def test_fixed_state_and_int64_scalar_from_the_contract_evaluate_each_row_independently(tmp_path):
    model = recurrent_model(tmp_path / "vad.onnx")
    rng = np.random.default_rng(1)
    rows = rng.normal(0, 1, (7, 16)).astype(np.float32)
    state = np.full((2, 1, 8), 0.25)
    out = infer_outputs(model, Inputs({"": rows}, {"state": state, "sr": np.asarray(8000)}))
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    one = [sess.run(None, {"input": rows[i : i + 1], "state": state.astype(np.float32), "sr": np.array(8000, np.int64)}) for i in range(7)]
    # every row is run alone from the same state: one output row per data row, each output whole
    assert out["output"].shape == (7, 1, 1) and out["stateN"].shape == (7, 2, 1, 8)
    assert np.allclose(out["output"][:, 0], np.stack([o[0] for o in one])[:, 0])
    assert np.allclose(out["stateN"], 0.25 / 2 + 1)
    # nothing to feed 'sr': one line naming it and the fix
    with pytest.raises(DataError, match=r"model input 'sr'.*\[model.feeds.sr\]"):
        infer_outputs(model, Inputs({"": rows}, {"state": state}))


def _vad_data(tmp_path: Path, model: Path) -> None:
    rng = np.random.default_rng(2)
    arrays = {}
    for part, n in (("calibration", 16), ("test", 24), ("noisy", 24)):
        x = rng.normal(0, 1 if part != "noisy" else 3, (n, 16)).astype(np.float32)
        level = x @ numpy_helper.to_array(onnx.load(model).graph.initializer[0])
        arrays |= {f"x_{part}": x, f"y_{part}": (level[:, 0] > 0).astype(np.int64)}
        arrays[f"y_{part}__output"] = (level > 0).astype(np.float32)
    np.savez(tmp_path / "d.npz", **arrays)


VAD_CONTRACT = """[model]
precisions = ["fp32", "int8"]
[model.feeds.state]
zeros = true
shape = [2, 1, 8]
[model.feeds.sr]
value = 16000
[data]
npz = "d.npz"
[evaluation.outputs.output]
metric = "mse"
[budgets]
p95_ms = 100
[slices.nominal]
kind = "nominal"
outputs.output.max_increase = 0.05
[slices.noisy]
kind = "stress"
part = "noisy"
outputs.output.max_increase = 0.05
"""


def test_contract_feeds_reach_evaluation_and_calibration(tmp_path):
    model = recurrent_model(tmp_path / "vad.onnx")
    _vad_data(tmp_path, model)
    contract = load_contract(_write(tmp_path / "c.toml", VAD_CONTRACT))
    dataset, slices = contract_slices(contract, model)
    assert set(slices[0].feeds) == {"state", "sr"} and slices[0].feeds["sr"] == 16000
    judge = contract_evaluator(contract, model, dataset, slices)
    int8 = build_variant(
        Model.load(model), Recipe(precision="int8-static"), calibration_set(dataset, contract.slice_specs()), tmp_path / "cache"
    )
    ev = judge(int8.path)
    assert ev.outputs == {"output": "mse"} and ev.slices["noisy"].outputs["output"].increase is not None
    # a contract with another sample rate gives another slice (the feeds are part of its ID)
    other = load_contract(_write(tmp_path / "c2.toml", VAD_CONTRACT.replace("value = 16000", "value = 8000")))
    assert contract_slices(other, model)[1][0].id != slices[0].id


@pytest.mark.slow
def test_int64_scalar_feed_through_optimize(tmp_path):
    model = recurrent_model(tmp_path / "vad.onnx")
    _vad_data(tmp_path, model)
    contract = _write(tmp_path / "c.toml", VAD_CONTRACT)
    quick = ["--time-budget", "10", "--threads", "1", "--opt-levels", "all", "--samples", "20", "--sessions", "1"]
    proc = run_cli("optimize", str(model), "--contract", str(contract), *quick, "--out", str(tmp_path / "o"))
    assert proc.returncode in (0, 1, 3), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    runs = [json.loads(p.read_text()) for p in (tmp_path / "o" / "runs").glob("*.json")]
    assert runs and all(r["inputs"]["sr"] == [] and r["inputs"]["state"] == [2, 1, 8] for r in runs)
    # static INT8 calibrated with the contract's state and sample rate, and judged by mse on 'output'
    search = json.loads((tmp_path / "o" / "search.json").read_text())
    static = [v for v in search["variants"] if v["precision"] == "int8-static"]
    assert static and any(v["evaluation_worst_drop_pp"] is not None for v in static)


def test_static_int8_calibrates_every_input(tmp_path):
    model = two_input_model(tmp_path / "two.onnx")
    rng = np.random.default_rng(6)
    arrays = {}
    for part, n in (("calibration", 32), ("test", 16)):
        # b spans ten times a's range: its quantization scale must say so
        arrays |= {
            f"x_{part}__a": rng.uniform(0, 1, (n, 4)).astype(np.float32),
            f"x_{part}__b": rng.uniform(0, 10, (n, 4)).astype(np.float32),
            f"y_{part}": rng.integers(0, 3, n),
        }
    np.savez(tmp_path / "d.npz", **arrays)
    dataset = load_dataset("d.npz", tmp_path)
    calibration = calibration_set(dataset, [])
    assert set(calibration.inputs.rows) == {"a", "b"}
    variant = build_variant(Model.load(model), Recipe(precision="int8-static"), calibration, tmp_path / "cache")
    quant = onnx.load(variant.path)
    inits = {t.name: numpy_helper.to_array(t) for t in quant.graph.initializer}
    scale = {n.input[0]: float(inits[n.input[1]]) for n in quant.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in ("a", "b")}
    assert set(scale) == {"a", "b"}
    assert scale["b"] / scale["a"] == pytest.approx(10.0, rel=0.1)
    got = infer_outputs(variant.path, Inputs({"a": arrays["x_test__a"], "b": arrays["x_test__b"]}))["logits"]
    ref = two_input_logits(model, arrays["x_test__a"], arrays["x_test__b"])
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
    # mixed precision ranks nodes on every input too
    ranking = rank_nodes(Model.load(model), Recipe(precision="int8-static"), calibration.inputs, calibration, tmp_path / "cache")
    assert len(ranking) == 2 and all(r.output_nsr is not None for r in ranking)  # mm_a, and mm_b + add fused by pre-processing


def test_raw_uint8_camera_frames_through_a_pipeline(tmp_path):
    model = conv_model(tmp_path / "m.onnx", ["batch", 3, "h", "w"])
    rng = np.random.default_rng(7)
    frames = {p: rng.integers(0, 256, (n, 12, 20, 3), dtype=np.uint8) for p, n in (("calibration", 8), ("test", 10))}
    np.savez(
        tmp_path / "d.npz", **{f"x_{p}": f for p, f in frames.items()}, **{f"y_{p}": rng.integers(0, 4, len(f)) for p, f in frames.items()}
    )
    body = """[data]
npz = "d.npz"
[budgets]
p95_ms = 100
[slices.nominal]
kind = "nominal"
max_drop_pp = 0
[slices.noise]
kind = "stress"
transforms = [{ name = "gaussian_noise", severity = 0.3 }]
[slices.occluded]
kind = "tail"
transforms = [{ name = "occlusion", severity = 0.5 }]
"""
    pipeline = """[pipeline]
raw_layout = "NHWC"
preprocess = [
  { op = "scale", factor = 0.00392156862745098 },
  { op = "normalize", mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5] },
  { op = "layout", to = "NCHW" },
  { op = "cast", dtype = "float32" },
]
"""
    # without a pipeline, raw uint8 for a float input is one line naming the input and the fix
    with pytest.raises(DataError, match=r"rows for input 'x' are uint8 but m.onnx takes float32; .*\[pipeline\]"):
        contract_slices(load_contract(_write(tmp_path / "c.toml", body)), model)
    contract = load_contract(_write(tmp_path / "c.toml", body + pipeline))
    dataset, slices = contract_slices(contract, model)
    assert dataset.evaluation.x.dtype == np.uint8
    by_name = {s.name: s for s in slices}
    manual = (frames["test"].astype(np.float32) / 255.0 - 0.5) / 0.5
    assert np.allclose(by_name["nominal"].x, manual.transpose(0, 3, 1, 2), atol=1e-5)
    # transforms act on the raw frames as [0, 1] images and give uint8 frames back (0..255 spans 0..1
    # when raw_range is not written)
    noisy = transformed(frames["test"], contract.slice_specs()[1], dataset.pipeline)
    assert noisy.dtype == np.uint8 and noisy.shape == frames["test"].shape
    assert 10 < np.abs(noisy.astype(int) - frames["test"]).mean() < 120
    occluded = transformed(frames["test"], contract.slice_specs()[2], dataset.pipeline)
    assert (occluded == 0).all(axis=-1).sum() >= 10 * 4 * 4  # a black square of round(0.6 · 0.5 · 12) = 4 px per frame
    assert by_name["noise"].x.dtype == np.float32 and not np.allclose(by_name["noise"].x, by_name["nominal"].x)
    calibration = calibration_set(dataset, contract.slice_specs(), ("nominal", "stress"))
    assert calibration.x.dtype == np.float32 and calibration.x.shape == (8, 3, 12, 20)
    evaluation = evaluate_for_contract(contract, model)
    assert evaluation is not None and evaluation.slices["nominal"].drop_pp == 0.0
    check_fits_model(dataset, model)


def test_int8_of_a_model_whose_weights_sit_in_if_branches_is_refused_not_faked(tmp_path):
    """silero-vad's network lives inside an If on the sample rate: onnxruntime's quantizers leave it
    float, so an "INT8" variant would be the float model under another name."""
    w = numpy_helper.from_array(np.random.default_rng(8).normal(0, 1, (4, 2)).astype(np.float32), "w")
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    branches = [
        helper.make_graph([helper.make_node("MatMul", ["x", "w"], [f"y_{k}"], name=f"mm_{k}")], k, [], [out]) for k in ("then", "else")
    ]
    for g, k in zip(branches, ("then", "else"), strict=True):
        g.output[0].name = f"y_{k}"
    nodes = [
        helper.make_node("Equal", ["sr", "k16"], ["is16"], name="eq"),
        helper.make_node("If", ["is16"], ["y"], then_branch=branches[0], else_branch=branches[1], name="branch"),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
    ]
    k16 = numpy_helper.from_array(np.array(16000, np.int64), "k16")
    path = _save(nodes, inputs, [out], [w, k16], tmp_path / "if.onnx")
    with pytest.raises(ModelError, match=r"2 weighted nodes .* inside If subgraphs"):
        build_variant(Model.load(path), Recipe(precision="int8-dynamic"), None, tmp_path / "cache")
