"""Shapes and feeds: free dims written -1 or named anywhere, arrays that fix them, several inputs
from the data, inputs given by the contract's [model.feeds], through profile, check, optimize and gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import run_cli
from edgeproof.contract import load_contract
from edgeproof.errors import DataError
from edgeproof.measure.runner import ProfileOptions, feeds_for_contract, prepare
from edgeproof.model import Model, parse_shape_overrides, resolve_inputs

QUICK = ["--sessions", "1", "--samples", "20", "--time-budget", "2"]
OPTIMIZE_QUICK = [
    "--max-candidates",
    "1",
    "--time-budget",
    "60",
    "--threads",
    "1",
    "--opt-levels",
    "all",
    "--samples",
    "20",
    "--sessions",
    "1",
]


def _save(graph: onnx.GraphProto, path: Path, opset: int = 13) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def conv_model(path: Path, dims: list, classes: int = 4) -> Path:
    """A text-line-classifier-like net: Conv → Relu → GlobalAveragePool → Flatten → Gemm, input ``x`` of ``dims``
    (``-1`` written as ``dim_value: -1``, as Paddle exports a free dim)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(0, 0.3, (8, classes)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "fc"], ["logits"], name="fc"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    for d in dims:
        dim = x.type.tensor_type.shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        else:
            dim.dim_param = d
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [-1 if dims[0] == -1 else "N", classes])
    return _save(helper.make_graph(nodes, "cls", [x], [out], initializer=[w, fc]), path)


def two_input_model(path: Path) -> Path:
    """Two float inputs ``a`` and ``b`` ([batch, 8]): logits = (a + 2b) @ W."""
    w = numpy_helper.from_array(np.random.default_rng(1).normal(0, 0.5, (8, 3)).astype(np.float32), "w")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [
        helper.make_node("Mul", ["b", "two"], ["b2"]),
        helper.make_node("Add", ["a", "b2"], ["s"]),
        helper.make_node("MatMul", ["s", "w"], ["logits"]),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 8]) for n in ("a", "b")]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    return _save(helper.make_graph(nodes, "two", inputs, [out], initializer=[w, two]), path)


def recurrent_model(path: Path) -> Path:
    """A voice-activity-like model: ``input`` [?, ?] audio, ``state`` [2, ?, 16], ``sr`` an int64
    scalar; it returns a probability, the next state and whether the sample rate is one it knows."""
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["level"], axes=[1], keepdims=1),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["srf", "k16"], ["scale"]),
        helper.make_node("Mul", ["level", "scale"], ["lv"]),
        helper.make_node("ReduceMean", ["state"], ["smean"], keepdims=0),
        helper.make_node("Add", ["lv", "smean"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["output"]),
        helper.make_node("Mul", ["state", "half"], ["stateN"]),
        # whether the sample rate is one the model knows (a multiple of 8000, not zero)
        helper.make_node("Mod", ["sr", "k8000"], ["rem"]),
        helper.make_node("Equal", ["rem", "zero"], ["multiple"]),
        helper.make_node("Greater", ["sr", "zero"], ["positive"]),
        helper.make_node("And", ["multiple", "positive"], ["sr_ok"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(16000.0, np.float32), "k16"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(8000, np.int64), "k8000"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
    ]
    audio = helper.make_tensor_value_info("input", TensorProto.FLOAT, None)
    for _ in range(2):
        audio.type.tensor_type.shape.dim.add()
    inputs = [
        audio,
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 16]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
    ]
    outputs = [
        helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1]),
        helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", 16]),
        helper.make_tensor_value_info("sr_ok", TensorProto.BOOL, []),
    ]
    return _save(helper.make_graph(nodes, "vad", inputs, outputs, initializer=inits), path)


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _split(rng: np.random.Generator, shape: tuple[int, ...], classes: int = 4, **named_shapes) -> dict[str, np.ndarray]:
    """calibration and test parts of random rows (``x_<part>``, or ``x_<part>__<input>`` per named shape)."""
    out: dict[str, np.ndarray] = {}
    for part, n in (("calibration", 8), ("test", 12)):
        if named_shapes:
            for name, row in named_shapes.items():
                out[f"x_{part}__{name}"] = rng.random((n, *row)).astype(np.float32)
        else:
            out[f"x_{part}"] = rng.random((n, *shape)).astype(np.float32)
        out[f"y_{part}"] = rng.integers(0, classes, n)
    return out


def _contract(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_minus_one_and_named_free_dims_take_a_shape_anywhere(tmp_path):
    for dims in ([-1, 3, -1, -1], ["batch", 3, "height", "width"]):
        model = Model.load(conv_model(tmp_path / "m.onnx", dims))
        assert model.io["inputs"][0][2][1] == 3 and all(isinstance(d, str) for i, d in enumerate(model.io["inputs"][0][2]) if i != 1)
        specs = resolve_inputs(model.proto, parse_shape_overrides(["x=1,3,48,192"]))
        assert specs[0].shape == (1, 3, 48, 192)
        with pytest.raises(DataError, match=r"input 'x' dim 2 is free .*--shape x=1,3,N,\.\.\..*\[budgets\] shape"):
            resolve_inputs(model.proto)
        with pytest.raises(DataError, match=r"'x' dim 1 is fixed at 3"):
            resolve_inputs(model.proto, parse_shape_overrides(["x=1,4,48,192"]))


def test_arrays_given_by_the_user_fix_every_free_dim(tmp_path):
    """A recurrent model ([?, ?] audio, a state, an int64 scalar) runs from an npz alone, no --shape."""
    model = Model.load(recurrent_model(tmp_path / "vad.onnx"))
    npz = _npz(
        tmp_path / "in.npz",
        input=np.random.default_rng(0).random((5, 1, 512)).astype(np.float32),  # a stack of 5 chunks
        state=np.zeros((2, 1, 16), np.float32),  # one sample, fed to every run
        sr=np.array(16000),
    )
    prep = prepare(model, ProfileOptions(inputs_npz=str(npz)))
    assert {s.name: s.shape for s in prep.specs} == {"input": (1, 512), "state": (2, 1, 16), "sr": ()}
    assert len(prep.feeds) == 5 and int(prep.feeds[3]["sr"]) == 16000 and prep.feeds[3]["sr"].dtype == np.int64
    _npz(npz, input=np.zeros((5, 1, 512), np.float32), state=np.zeros((2, 1, 16), np.float32))
    with pytest.raises(DataError, match=r"no array for input 'sr'.*\[model.feeds"):
        prepare(model, ProfileOptions(inputs_npz=str(npz)))


def test_contract_feeds_and_declared_shape(tmp_path):
    """[model.feeds] gives the state and the int64 sample rate; [budgets] shape fixes the audio's free dims."""
    model = Model.load(recurrent_model(tmp_path / "vad.onnx"))
    body = """
[model.feeds.state]
zeros = true
shape = [2, 1, 16]
[model.feeds.sr]
value = 8000
[budgets]
p95_ms = 100
shape = { input = [1, 256] }
"""
    contract = load_contract(_contract(tmp_path / "c.toml", body))
    prep = prepare(model, feeds_for_contract(ProfileOptions(), contract))
    assert {s.name: s.shape for s in prep.specs} == {"input": (1, 256), "state": (2, 1, 16), "sr": ()}
    assert prep.feeds[0]["sr"].dtype == np.int64 and int(prep.feeds[0]["sr"]) == 8000
    # with data, the rows are what runs are fed (the data fixes the free dims); a declared shape must agree
    _npz(tmp_path / "d.npz", **_split(np.random.default_rng(0), (256,)))
    contract = load_contract(_contract(tmp_path / "c.toml", body + '[data]\nnpz = "d.npz"\n'))
    prep = prepare(model, feeds_for_contract(ProfileOptions(), contract))
    data_test = np.load(tmp_path / "d.npz")["x_test"]
    assert len(prep.feeds) == 12 and np.array_equal(prep.feeds[2]["input"], data_test[2:3])
    contract = load_contract(_contract(tmp_path / "c.toml", body.replace("[1, 256]", "[1, 300]") + '[data]\nnpz = "d.npz"\n'))
    with pytest.raises(DataError, match=r"'input' is declared at shape \[1, 300\] but its arrays have shape \[1, 256\]"):
        prepare(model, feeds_for_contract(ProfileOptions(), contract))


def test_bad_feed_tables_are_one_line(tmp_path):
    for body, message in (
        ("[model.feeds.s]\nzeros = true\n", "zeros = true needs its shape"),
        ("[model.feeds.s]\nvalue = 1\nzeros = true\nshape = [1]\n", "exactly one of value"),
        ("[model.feeds.s]\nvalue = [1, 2, 3]\nshape = [2, 2]\n", r"does not fit shape \[2, 2\]"),
    ):
        with pytest.raises(Exception, match=message):
            load_contract(_contract(tmp_path / "c.toml", body + "[budgets]\np95_ms = 1\n"))


def test_two_inputs_read_from_the_data_by_name(tmp_path):
    from edgeproof.data import check_fits_model, load_dataset

    model = Model.load(two_input_model(tmp_path / "two.onnx"))
    _npz(tmp_path / "d.npz", **_split(np.random.default_rng(0), (), classes=3, a=(8,), b=(8,)))
    dataset = load_dataset("d.npz", tmp_path)
    check_fits_model(dataset, model)
    contract = load_contract(_contract(tmp_path / "c.toml", '[data]\nnpz = "d.npz"\n[budgets]\np95_ms = 100\n'))
    prep = prepare(model, feeds_for_contract(ProfileOptions(), contract))
    assert sorted(prep.feeds[0]) == ["a", "b"] and np.array_equal(prep.feeds[1]["b"], dataset.evaluation.more["b"][1:2])
    # an input the data lacks is one line naming it and the fix
    _npz(tmp_path / "d.npz", **{k: v for k, v in _split(np.random.default_rng(0), (), a=(8,), b=(8,)).items() if "__b" not in k})
    with pytest.raises(DataError, match=r"no rows for model input 'b'.*x_calibration__b.*\[model.feeds.b\]"):
        check_fits_model(load_dataset("d.npz", tmp_path), model)


def test_fp16_truncation_warnings_become_one_note(tmp_path, recwarn):
    from edgeproof.variants import Recipe, build_variant

    path = conv_model(tmp_path / "m.onnx", ["batch", 3, "h", "w"])
    proto = onnx.load(path)
    w = numpy_helper.to_array(proto.graph.initializer[0]).copy()
    w.flat[:5] = 1e-9  # five weights fp16 cannot hold
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w"))
    onnx.save(proto, path)
    variant = build_variant(Model.load(path), Recipe(precision="fp16"), None, tmp_path / "cache")
    assert "fp16: 5 weights under fp16's range were flushed to ±1e-7" in variant.recipe.steps
    assert not [w for w in recwarn if "truncated" in str(w.message)]


@pytest.mark.slow
def test_free_dims_through_profile_optimize_and_gate(tmp_path):
    """-1 dims and named dims, through profile (--shape, --inputs), optimize (data rows) and gate --measure."""
    neg = conv_model(tmp_path / "neg.onnx", [-1, 3, -1, -1])
    named = conv_model(tmp_path / "named.onnx", ["batch", 3, "height", "width"])
    npz = _npz(tmp_path / "x.npz", x=np.random.default_rng(0).random((1, 3, 48, 192)).astype(np.float32))
    for model, how in ((neg, ["--shape", "x=1,3,48,192"]), (named, ["--inputs", str(npz)])):
        proc = run_cli("profile", str(model), *how, *QUICK, "--json", str(tmp_path / "r.json"))
        assert proc.returncode == 0, proc.stderr
        assert json.loads((tmp_path / "r.json").read_text())["inputs"] == {"x": [1, 3, 48, 192]}
    _npz(tmp_path / "d.npz", **_split(np.random.default_rng(1), (3, 48, 192)))
    contract = _contract(tmp_path / "c.toml", '[model]\nprecisions = ["fp32"]\n[data]\nnpz = "d.npz"\n[budgets]\np95_ms = 1000\n')
    proc = run_cli("optimize", str(neg), "--contract", str(contract), *OPTIMIZE_QUICK, "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = list((tmp_path / "o" / "runs").glob("*.json"))
    assert runs and json.loads(runs[0].read_text())["inputs"] == {"x": [1, 3, 48, 192]}
    proc = run_cli("gate", "--contract", str(contract), "--measure", str(named), str(named), "--pairs", "2", "--max-pairs", "2")
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert "PASS" in proc.stdout or "FAIL" in proc.stdout


@pytest.mark.slow
def test_contract_feeds_an_int64_scalar_and_a_missing_input_is_one_line(tmp_path):
    vad = recurrent_model(tmp_path / "vad.onnx")
    _npz(tmp_path / "d.npz", **_split(np.random.default_rng(0), (512,)))
    body = '[data]\nnpz = "d.npz"\n[model.feeds.state]\nzeros = true\nshape = [2, 1, 16]\n[budgets]\np95_ms = 1000\n'
    proc = run_cli("check", str(vad), "--contract", str(_contract(tmp_path / "c.toml", body + "[model.feeds.sr]\nvalue = 16000\n")), *QUICK)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_cli("check", str(vad), "--contract", str(_contract(tmp_path / "c.toml", body)), *QUICK)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "'sr'" in proc.stderr and "[model.feeds" in proc.stderr


@pytest.mark.slow
def test_init_drafts_a_contract_from_the_model_that_check_runs_with(tmp_path):
    conv_model(tmp_path / "neg.onnx", [-1, 3, -1, -1])
    _npz(
        tmp_path / "d.npz",
        **_split(np.random.default_rng(1), (3, 48, 192)),
        x_night=np.zeros((4, 3, 48, 192), np.float32),
        y_night=np.zeros(4, int),
    )
    proc = run_cli("init", "drafted.toml", "--model", "neg.onnx", "--data", "d.npz", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "drafted.toml").read_text()
    contract = load_contract(tmp_path / "drafted.toml")
    assert contract.model.inputs["x"].shape == ["batch", 3, "x_dim2", "x_dim3"]
    assert contract.budget_shapes() == {"x": (1, 3, 48, 192)} and contract.budgets.p95_ms is not None
    assert set(contract.slices) == {"nominal", "night"} and "PROPOSAL" in text and "headroom" in text
    proc = run_cli("check", "neg.onnx", "--contract", "drafted.toml", *QUICK, cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    plain = run_cli("init", "plain.toml", cwd=tmp_path)
    assert plain.returncode == 0 and "224" in (tmp_path / "plain.toml").read_text()


def test_init_drafts_feeds_even_when_zeros_make_the_quick_run_fail(tmp_path, monkeypatch):
    """A shape input fed zeros cannot run (Reshape to [0, 0]): the draft still proposes a [model.feeds]
    entry for it, says the quick run failed, and keeps the runtime's message to one comment line."""
    from edgeproof.contract._draft import draft_contract, draft_text

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], allowzero=1)],  # zeros are a real size 0, not "copy"
        "reshape",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    _npz(tmp_path / "d.npz", **_split(np.random.default_rng(0), (8,)))
    monkeypatch.chdir(tmp_path)
    draft = draft_contract(tmp_path / "m.onnx", tmp_path / "c.toml", data="d.npz")
    assert draft.record is None and draft.why_no_record
    text = draft_text(draft)
    assert "[model.feeds.shape]" in text and "shape = [2]" in text
    assert "the quick run fed zeros to 'shape' and did not run" in text
    comment = next(line for line in text.splitlines() if line.startswith("# no figures to propose budgets from"))
    assert len(comment) <= 300
