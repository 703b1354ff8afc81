"""Per-node cost analysis: MACs/FLOPs by formula, bytes moved, Constant-node weights, QDQ precision."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import DIGITS_MODEL, make_matmul_model, run_cli
from edgeproof.analysis import analyze
from edgeproof.errors import ModelError


def _conv_model(path=None, unnamed: bool = False) -> onnx.ModelProto:
    """x[1,2,8,8] → Conv(2→4, 3x3, pad 1, bias) → Relu → MaxPool 2x2 → Flatten → Gemm(64→3)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(4, np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((3, 64)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(3, np.float32), "fc_b"),
    ]
    names = ["", "", "", "", ""] if unnamed else ["conv", "relu", "pool", "flat", "fc"]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name=names[0], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"], name=names[1]),
        helper.make_node("MaxPool", ["r"], ["p"], name=names[2], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name=names[3]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name=names[4], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if path is not None:
        onnx.save(model, path)
    return model


def test_conv_gemm_flops_and_bytes_follow_the_formulas():
    cost = analyze(_conv_model())
    conv, relu, pool, fc = cost.nodes["conv"], cost.nodes["relu"], cost.nodes["pool"], cost.nodes["fc"]
    # out 1x4x8x8, each output reads 2 channels x 3x3 → 256 x 18 MACs; FLOPs add the bias per output.
    assert conv.macs == 256 * 18
    assert conv.flops == 2 * 256 * 18 + 256
    assert conv.weight_bytes == (4 * 2 * 9 + 4) * 4
    assert conv.activation_read_bytes == 2 * 64 * 4
    assert conv.activation_write_bytes == 256 * 4
    assert relu.flops == 256 and relu.macs == 0
    assert pool.flops == 64 * 4  # 64 outputs, each a max over 2x2
    assert fc.macs == 3 * 64 and fc.flops == 2 * 3 * 64 + 3
    assert cost.nodes["flat"].flops == 0
    assert cost.total_flops == sum(n.flops for n in cost.nodes.values())
    assert cost.weight_bytes == (72 + 4 + 192 + 3) * 4
    assert conv.intensity == pytest.approx(conv.flops / (conv.weight_bytes + 512 + 1024))
    assert list(cost.nodes) == ["conv", "relu", "pool", "flat", "fc"]  # topological, keyed by name


def test_unnamed_nodes_get_unique_keys():
    cost = analyze(_conv_model(unnamed=True))
    assert len(cost.nodes) == 5
    assert [n.op_type for n in cost.nodes.values()] == ["Conv", "Relu", "MaxPool", "Flatten", "Gemm"]


def test_constant_node_weights_count_like_initializers(tmp_path):
    as_init = analyze(make_matmul_model(tmp_path / "init.onnx"))
    as_const = analyze(make_matmul_model(tmp_path / "const.onnx", constant_weights=True))
    assert as_const.weight_bytes == as_init.weight_bytes == 16 * 8 * 4
    matmul = next(n for n in as_const.nodes.values() if n.op_type == "MatMul")
    assert matmul.weight_bytes == 16 * 8 * 4
    assert matmul.macs == 16 * 8
    # the Constant node itself runs nothing
    assert next(n for n in as_const.nodes.values() if n.op_type == "Constant").folded


def test_symbolic_batch_is_taken_as_one_and_said(tmp_path):
    cost = analyze(make_matmul_model(tmp_path / "m.onnx", symbolic=("batch",)))
    assert any("batch" in a and "taken as 1" in a for a in cost.assumptions)
    assert cost.tensor_bytes["x"] == 16 * 4


def test_qdq_region_runs_in_int8_and_weights_count_stored_size():
    """DequantizeLinear → Conv → QuantizeLinear: the Conv is int8; its weights are the int8 bytes."""
    rng = np.random.default_rng(1)
    w_q = rng.integers(-127, 127, (4, 2, 3, 3), dtype=np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "zp"),
        numpy_helper.from_array(w_q, "w_q"),
        numpy_helper.from_array(np.array(0.01, np.float32), "w_s"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["w"], name="dq_w"),
        helper.make_node("Conv", ["xd", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "s", "zp"], ["cq"], name="q_out"),
        helper.make_node("DequantizeLinear", ["cq", "s", "zp"], ["y"], name="dq_out"),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    cost = analyze(model)
    assert cost.nodes["conv"].precision == "int8"
    assert cost.nodes["conv"].dtype == "float32"
    assert cost.nodes["dq_w"].folded and cost.nodes["dq_w"].flops == 0
    assert cost.nodes["conv"].weight_bytes == w_q.nbytes + 4  # int8 weights + their scale
    assert cost.nodes["q_in"].precision == "int8" and not cost.nodes["q_in"].folded


def test_digits_model_costs():
    cost = analyze(DIGITS_MODEL)
    convs = [n for n in cost.nodes.values() if n.op_type == "Conv"]
    assert len(convs) == 4
    params = sum(int(np.prod(t.dims)) for t in onnx.load(DIGITS_MODEL).graph.initializer)
    assert cost.weight_bytes == params * 4
    first = convs[0]
    assert first.macs == first.weight_shape[0] * 32 * 32 * int(np.prod(first.weight_shape[1:]))
    assert cost.intensity > 1.0


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        analyze(tmp_path / "absent.onnx")


@pytest.mark.slow
def test_cli_inspect_prints_per_node_costs_and_writes_json(tmp_path):
    out = tmp_path / "cost.json"
    r = run_cli("inspect", str(DIGITS_MODEL), "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "/conv1/conv/Conv" in r.stdout and "arithmetic intensity" in r.stdout
    doc = json.loads(out.read_text())
    convs = [n for n in doc["nodes"] if n["op_type"] == "Conv"]
    assert len(convs) == 4 and all(n["macs"] > 0 and n["weight_bytes"] > 0 for n in convs)
    assert doc["totals"]["flops"] == sum(n["flops"] for n in doc["nodes"])
    assert doc["provenance"].startswith("estimated:")
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    r = run_cli("inspect", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("name", "build", "macs_m", "params_m"),
    [
        # Published counts: Howard et al. 2017 Table 1 (569 M, 4.2 M); Sandler et al. 2018 (300 M, 3.4 M);
        # torchvision's ResNet-18 model card (1.81 GFLOPS as MACs, 11.7 M).
        ("mobilenet_v1", "mobilenet_v1", 569, 4.2),
        ("mobilenet_v2", "mobilenet_v2", 300, 3.5),
        ("resnet18", "resnet18", 1814, 11.7),
    ],
)
def test_reference_networks_match_their_published_mac_and_parameter_counts(name, build, macs_m, params_m):
    from edgeproof.simulate.reference import BUILDERS

    model = BUILDERS[build]()
    cost = analyze(model)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer) / 1e6
    assert cost.total_macs / 1e6 == pytest.approx(macs_m, rel=0.01)
    assert params == pytest.approx(params_m, rel=0.03)
    assert not cost.unknown_cost_nodes
