"""Model loading and input resolution: messy real-world models give clear errors or run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import DIGITS_MODEL, make_matmul_model, run_cli
from edgeproof.errors import DataError, ModelError
from edgeproof.model import (
    Model,
    as_model,
    feeds_from_npz,
    load_model,
    load_proto,
    parse_shape_overrides,
    resolve_inputs,
    sha256_file,
    synthetic_feeds,
)


def test_truncated_model_is_a_model_error(tmp_path):
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(DIGITS_MODEL.read_bytes()[:5000])
    with pytest.raises(ModelError, match="truncated.onnx"):
        load_model(bad)


def test_text_file_named_onnx(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is not a model\n")
    with pytest.raises(ModelError, match="not an ONNX model"):
        load_model(bad)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        load_model(tmp_path / "nope.onnx")


@pytest.mark.parametrize(
    "make_bad, expect",
    [
        (lambda p: p.write_bytes(DIGITS_MODEL.read_bytes()[:5000]), "truncated"),
        (lambda p: p.write_text("hello"), "not an ONNX model"),
        (lambda p: None, "no such file"),
    ],
)
def test_cli_bad_model_one_line_exit_2(tmp_path, make_bad, expect):
    path = tmp_path / "m.onnx"
    make_bad(path)
    out = tmp_path / "r.json"
    proc = run_cli("profile", str(path), "--json", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert expect in lines[0] or "not an ONNX model" in lines[0]
    assert not out.exists()


def test_cli_optimize_on_a_bad_model_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(DIGITS_MODEL.read_bytes()[:5000])
    proc = run_cli(
        "optimize",
        str(bad),
        "--contract",
        str(DIGITS_MODEL.parent / "edgeproof.toml"),
        "--out",
        str(tmp_path / "out"),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "m.onnx: not an ONNX model" in lines[0]
    assert not (tmp_path / "out").exists()


def test_model_loads_once_with_its_hash_interface_and_external_weights(tmp_path):
    path = make_matmul_model(tmp_path / "m.onnx")
    proto = onnx.load(path)
    onnx.save(
        proto, tmp_path / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True, location="ext.weights", size_threshold=0
    )
    model = Model.load(tmp_path / "ext.onnx")
    assert model.sha256 == sha256_file(tmp_path / "ext.onnx") and model.size_bytes == (tmp_path / "ext.onnx").stat().st_size
    assert model.ref.name == "ext" and model.ref.sha256 == model.sha256
    assert model.ref.io == {"inputs": [["x", "float32", ["batch", 16]]], "outputs": [["y", "float32", ["batch", 8]]]}
    assert model.opset == 17 and as_model(model) is model
    # the weights come in with the model; the graph alone leaves them on disk
    [weights] = model.proto.graph.initializer
    assert len(weights.raw_data) == 16 * 8 * 4
    [graph_only] = load_proto(tmp_path / "ext.onnx", external_data=False).graph.initializer
    assert not graph_only.raw_data and graph_only.data_location == onnx.TensorProto.EXTERNAL


def test_missing_external_weights_are_one_model_error(tmp_path):
    proto = onnx.load(make_matmul_model(tmp_path / "m.onnx"))
    onnx.save(proto, tmp_path / "ext.onnx", save_as_external_data=True, location="ext.weights", size_threshold=0)
    (tmp_path / "ext.weights").unlink()
    with pytest.raises(ModelError, match=r"ext\.onnx: external weights cannot be read"):
        Model.load(tmp_path / "ext.onnx")


def test_symbolic_batch_defaults_to_one_and_other_dims_need_shape(tmp_path):
    model = load_model(make_matmul_model(tmp_path / "m.onnx", symbolic=("batch", "seq")))
    with pytest.raises(DataError, match="seq.*--shape x="):
        resolve_inputs(model)
    specs = resolve_inputs(model, parse_shape_overrides(["x=2,5,16"]))
    assert specs[0].shape == (2, 5, 16)
    with pytest.raises(DataError, match="unknown input"):
        resolve_inputs(model, parse_shape_overrides(["nope=1,2"]))
    with pytest.raises(DataError, match="fixed at 16"):
        resolve_inputs(model, parse_shape_overrides(["x=1,5,15"]))


def test_bad_shape_syntax():
    with pytest.raises(DataError, match="NAME=D1"):
        parse_shape_overrides(["x=1,a"])


def test_constant_node_weights_and_old_opset_run(tmp_path):
    path = make_matmul_model(tmp_path / "m.onnx", opset=9, constant_weights=True)
    model = load_model(path)
    specs = resolve_inputs(model)
    assert specs[0].shape == (1, 16)
    import onnxruntime as ort

    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, synthetic_feeds(specs))
    assert out[0].shape == (1, 8)


def _multi_input_model(path):
    """Float + int64 index + bool mask inputs: integer inputs must hold valid values."""
    table = helper.make_tensor("table", TensorProto.FLOAT, [10, 4], np.arange(40, dtype=np.float32).tolist())
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"]),
        helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["emb", "maskf"], ["m"]),
        helper.make_node("Add", ["m", "x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "multi",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", 1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_npz_inputs_feed_real_samples(tmp_path):
    path = _multi_input_model(tmp_path / "multi.onnx")
    model = load_model(path)
    npz = tmp_path / "in.npz"
    np.savez(npz, x=np.ones((3, 1, 4), np.float32), ids=np.array([[1], [2], [9]]), mask=np.ones((3, 1, 1), bool))
    specs, feeds = feeds_from_npz(npz, model)
    assert len(feeds) == 3 and feeds[2]["ids"].tolist() == [9]
    assert [s.shape for s in specs] == [(1, 4), (1,), (1, 1)]
    np.savez(npz, x=np.ones((1, 4), np.float32))
    with pytest.raises(DataError, match="no array for input 'ids'"):
        feeds_from_npz(npz, model)
    np.savez(npz, x=np.ones((2, 7), np.float32), ids=np.array([1]), mask=np.ones((1, 1), bool))
    with pytest.raises(DataError, match="'x' dim 1 is fixed at 4"):
        feeds_from_npz(npz, model)
