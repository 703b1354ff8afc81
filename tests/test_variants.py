"""Variants: fp16, INT8 dynamic / static, the variant cache, mixed precision and per-node speed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh
from pydantic import ValidationError

from edgeproof.data import SliceSpec, TransformSpec, calibration_set, make_dataset, make_part, make_slices
from edgeproof.errors import DataError, ModelError
from edgeproof.evaluate import SliceEvaluator, evaluate, reference_outputs, worst_drop_pp
from edgeproof.variants import (
    ExcludedNode,
    Recipe,
    build_variant,
    candidate_nodes,
    compare_node_speed,
    keep_slow_nodes_float,
    mixed_precision,
    prepare_for_quantization,
)
from edgeproof.variants.speed import _graph, attribute

SIDE = 16
HALF = SIDE // 2


def tiny_cnn(path: Path, outlier: float = 0.0, opset: int = 17, constant_weights: bool = False) -> Path:
    """Conv(1->4, 3x3) -> Relu -> Conv(4->4, 1x1) -> Relu -> Flatten -> Gemm(4 classes), weights by hand.

    Channel 0 of conv1 blurs the image; the head sums blurred brightness per quadrant, so the
    class is the quadrant holding the bright blob. Channel 3 of conv1 is dead (bias -1 after
    Relu), so ``outlier`` weights on it leave the float output untouched but stretch conv2's
    per-tensor INT8 weight scale until every useful weight rounds to zero.
    """
    w1 = np.zeros((4, 1, 3, 3), np.float32)
    w1[0, 0] = 1.0 / 9.0
    w1[1, 0, 1, 1] = 1.0
    w1[2, 0] = -1.0 / 8.0
    w1[2, 0, 1, 1] = 1.0
    b1 = np.array([0.0, 0.0, 0.0, -1.0], np.float32)
    w2 = np.zeros((4, 4, 1, 1), np.float32)
    w2[0, 0], w2[0, 1], w2[1, 1], w2[2, 2], w2[3, 0] = 0.5, 0.1, 0.5, 0.3, 0.2
    w2[:, 3] = outlier
    head = np.zeros((4 * SIDE * SIDE, 4), np.float32)
    for k, (row, col) in enumerate([(0, 0), (0, HALF), (HALF, 0), (HALF, HALF)]):
        mask = np.zeros((4, SIDE, SIDE), np.float32)
        mask[0, row : row + HALF, col : col + HALF] = 1.0 / (HALF * HALF)
        head[:, k] = mask.reshape(-1)
    tensors = {"w1": w1, "b1": b1, "w2": w2, "b2": np.zeros(4, np.float32), "wh": head, "bh": np.zeros(4, np.float32)}
    nodes = [
        oh.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        oh.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        oh.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        oh.make_node("Flatten", ["r2"], ["flat"], name="flatten"),
        oh.make_node("Gemm", ["flat", "wh", "bh"], ["logits"], name="head"),
    ]
    if constant_weights:
        nodes = [oh.make_node("Constant", [], [k], value=nh.from_array(v, k)) for k, v in tensors.items()] + nodes
        initializers = []
    else:
        initializers = [nh.from_array(v, k) for k, v in tensors.items()]
    graph = oh.make_graph(
        nodes,
        "tiny",
        [oh.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, SIDE, SIDE])],
        [oh.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        initializers,
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Dim noisy images with one bright 4x4 blob; the label is the quadrant that holds it."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.3, (n, 1, SIDE, SIDE)).astype(np.float32)
    y = rng.integers(0, 4, n)
    for i in range(n):
        row = (y[i] // 2) * HALF + rng.integers(0, HALF - 3)
        col = (y[i] % 2) * HALF + rng.integers(0, HALF - 3)
        x[i, 0, row : row + 4, col : col + 4] = rng.uniform(0.7, 1.0)
    return x, y.astype(np.int64)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("variants")
    ds = make_dataset(
        "blobs",
        {
            "calibration": make_part("calibration", *blobs(64, 1), "blobs"),
            "test": make_part("test", *blobs(160, 2), "blobs"),
        },
    )
    specs = [
        SliceSpec(name="clean", kind="nominal", max_drop_pp=5.0),
        SliceSpec(
            name="noise",
            kind="stress",
            transforms=[TransformSpec(name="gaussian_noise", severity=0.3)],
            max_drop_pp=5.0,
        ),
        SliceSpec(name="occluded", kind="tail", transforms=[TransformSpec(name="occlusion", severity=0.3)], max_drop_pp=5.0),
    ]
    slices = make_slices(ds, specs)
    model = tiny_cnn(tmp / "tiny.onnx")
    return {
        "tmp": tmp,
        "ds": ds,
        "specs": specs,
        "slices": slices,
        "model": model,
        "reference": reference_outputs(model, slices),
        "calibration": calibration_set(ds, specs),
        "cache": tmp / "cache",
    }


def run(path: str | Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def op_types(path: str | Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_float_reference_solves_the_task(task):
    for s in task["slices"]:
        assert np.mean(task["reference"].outputs[s.name].argmax(1) == s.y) >= 0.95


def test_fp16_keeps_float32_io_and_runs(task):
    v = build_variant(task["model"], Recipe(precision="fp16"), cache_dir=task["cache"])
    sess = ort.InferenceSession(v.path, providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(float)" and sess.get_outputs()[0].type == "tensor(float)"
    assert any(t.data_type == TensorProto.FLOAT16 for t in onnx.load(v.path).graph.initializer)
    x = task["slices"][0].x
    np.testing.assert_allclose(run(v.path, x), run(task["model"], x), atol=2e-2)


def test_static_int8_runs_and_stays_near_float(task):
    v = build_variant(task["model"], Recipe(precision="int8-static"), task["calibration"], task["cache"])
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types(v.path)
    r = v.recipe
    assert (r.format, r.calibrator, r.activation_type, r.weight_type) == ("QDQ", "minmax", "U8", "S8")
    assert r.calibration_kinds == ("nominal",) and r.calibration_id == task["calibration"].id and r.calibration_rows == 64
    assert r.source_sha256 and "quant_pre_process" in r.steps
    assert r.steps[-1] == f"onnxruntime {ort.__version__} quantize_static"
    ev = evaluate(v.path, task["reference"], task["slices"], task["ds"].id)
    assert worst_drop_pp(ev) <= 2.0
    assert min(m.agreement for m in ev.slices.values()) >= 0.97


@pytest.mark.parametrize(
    ("recipe", "expected_op"),
    [
        (Recipe(precision="int8-static", format="QOperator", calibrator="entropy"), "QLinearConv"),
        (
            Recipe(precision="int8-static", per_channel=True, calibrator="percentile", activation_type="S8"),
            "DequantizeLinear",
        ),
        (Recipe(precision="int8-dynamic"), "ConvInteger"),
    ],
)
def test_other_int8_recipes_run(task, recipe, expected_op):
    v = build_variant(task["model"], recipe, task["calibration"], task["cache"])
    assert expected_op in op_types(v.path)
    ev = evaluate(v.path, task["reference"], task["slices"], task["ds"].id)
    assert worst_drop_pp(ev) <= 5.0


def test_calibration_on_all_kinds_is_recorded_and_changes_the_artifact(task):
    mixed = calibration_set(task["ds"], task["specs"], kinds=("nominal", "stress", "tail"))
    nominal_only = build_variant(task["model"], Recipe(precision="int8-static"), task["calibration"], task["cache"])
    all_kinds = build_variant(task["model"], Recipe(precision="int8-static"), mixed, task["cache"])
    assert all_kinds.recipe.calibration_kinds == ("nominal", "stress", "tail")
    assert all_kinds.recipe.calibration_id == mixed.id != nominal_only.recipe.calibration_id
    assert all_kinds.path != nominal_only.path


def test_second_identical_request_is_a_cache_hit(task, tmp_path):
    recipe = Recipe(precision="int8-static", per_channel=True)
    first = build_variant(task["model"], recipe, task["calibration"], tmp_path)
    mtime_ns = Path(first.path).stat().st_mtime_ns
    second = build_variant(task["model"], recipe, task["calibration"], tmp_path)
    assert not first.cache_hit and second.cache_hit
    assert second.path == first.path and second.sha256 == first.sha256 and second.recipe == first.recipe
    assert Path(second.path).stat().st_mtime_ns == mtime_ns, "a cache hit must not rewrite the artifact"
    Path(first.path).write_bytes(b"corrupted")
    rebuilt = build_variant(task["model"], recipe, task["calibration"], tmp_path)
    assert not rebuilt.cache_hit and rebuilt.sha256 == first.sha256


def test_excluding_a_node_the_model_lacks_is_refused(task):
    recipe = Recipe(precision="int8-static").with_excluded([ExcludedNode(name="conv9", reason="user")])
    with pytest.raises(ModelError, match="excluded node 'conv9' is not in the graph"):
        build_variant(task["model"], recipe, task["calibration"], task["cache"])


def test_static_int8_without_calibration_is_a_data_error(task):
    with pytest.raises(DataError, match="needs a calibration set"):
        build_variant(task["model"], Recipe(precision="int8-static"), None, task["cache"])


def test_recipe_refuses_contradictions_and_keys_on_the_request():
    with pytest.raises(ValidationError):
        Recipe(precision="int8-static", activation_type="S8", weight_type="U8")
    with pytest.raises(ValidationError):
        Recipe(precision="int8-dynamic", calibrator="entropy")
    with pytest.raises(ValidationError):
        Recipe(precision="fp16", per_channel=True)
    base = Recipe(precision="int8-static")
    assert base.cache_key() == base.model_copy(update={"steps": ("anything",)}).cache_key()
    assert base.cache_key() != Recipe(precision="int8-static", per_channel=True).cache_key()
    assert base.cache_key() != base.model_copy(update={"source_sha256": "x"}).cache_key()
    assert base.cache_key() != base.with_excluded([ExcludedNode(name="conv2", reason="accuracy")]).cache_key()


def test_opset_11_model_gets_per_channel_qdq_that_loads(task, tmp_path):
    old = tiny_cnn(tmp_path / "old.onnx", opset=11)
    v = build_variant(old, Recipe(precision="int8-static", per_channel=True), task["calibration"], tmp_path / "cache")
    assert any("opset 11 converted to 13" in step for step in v.recipe.steps)
    assert run(v.path, task["slices"][0].x[:4]).shape == (4, 4)


def test_weights_in_constant_nodes_are_quantized(task, tmp_path):
    model = tiny_cnn(tmp_path / "const.onnx", constant_weights=True)
    v = build_variant(model, Recipe(precision="int8-static"), task["calibration"], tmp_path / "cache")
    assert any("6 Constant nodes moved to initializers" in step for step in v.recipe.steps)
    quantized_weights = [t for t in onnx.load(v.path).graph.initializer if t.data_type == TensorProto.INT8]
    assert len(quantized_weights) >= 3


def test_missing_sympy_falls_back_and_says_so(task, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime.tools.symbolic_shape_infer", None)  # what an absent sympy looks like
    prepared = prepare_for_quantization(task["model"], tmp_path)
    assert prepared.steps[0] == "symbolic shape inference skipped (sympy is not installed)"
    assert prepared.steps[1] == "quant_pre_process with skip_symbolic_shape=True"
    assert {n.name for n in onnx.load(str(prepared.path)).graph.node} >= {"conv1", "conv2", "head"}


def test_mixed_precision_keeps_the_sensitive_layer_in_float(task, tmp_path):
    model = tiny_cnn(tmp_path / "outlier.onnx", outlier=200.0)
    reference = reference_outputs(model, task["slices"])
    recipe = Recipe(precision="int8-static")
    cache = tmp_path / "cache"
    full = build_variant(model, recipe, task["calibration"], cache)
    full_worst = worst_drop_pp(evaluate(full.path, reference, task["slices"], task["ds"].id))
    assert full_worst > 30.0, "per-tensor INT8 must wreck the outlier layer for this test to mean anything"

    judge = SliceEvaluator(tuple(task["slices"]), reference, task["ds"].id)
    result = mixed_precision(model, recipe, judge, task["calibration"], cache_dir=cache)
    assert result.floors_met, result.reason
    assert result.ranking[0].name == "conv2"
    assert [(n.name, n.reason) for n in result.variant.recipe.excluded_nodes] == [("conv2", "accuracy")]
    assert worst_drop_pp(result.evaluation) < full_worst
    assert worst_drop_pp(result.evaluation) <= 5.0
    assert "1 node(s) in float: conv2" in result.reason


def test_mixed_precision_stops_when_latency_budget_breaks(task, tmp_path):
    model = tiny_cnn(tmp_path / "outlier.onnx", outlier=200.0)
    judge = SliceEvaluator.for_reference(model, task["slices"], task["ds"].id)
    asked: list[int] = []

    def only_fully_quantized_is_fast_enough(variant) -> bool:
        asked.append(len(variant.recipe.excluded_nodes))
        return not variant.recipe.excluded_nodes

    result = mixed_precision(
        model,
        Recipe(precision="int8-static"),
        judge,
        task["calibration"],
        latency_ok=only_fully_quantized_is_fast_enough,
        cache_dir=tmp_path / "cache",
    )
    assert not result.floors_met
    assert result.reason.startswith("stopped: keeping conv2 in float as well breaks the latency budget")
    assert result.variant.recipe.excluded_nodes == ()
    assert asked == [0, 1]


def test_mixed_precision_does_nothing_when_floors_already_hold(task):
    result = mixed_precision(
        task["model"],
        Recipe(precision="int8-static"),
        SliceEvaluator(tuple(task["slices"]), task["reference"], task["ds"].id),
        task["calibration"],
        cache_dir=task["cache"],
    )
    assert result.floors_met and result.variant.recipe.excluded_nodes == () and result.ranking == []


@pytest.mark.parametrize("precision", ["int8-static", "int8-dynamic", "fp16"])
def test_candidates_skip_layout_ops(task, precision):
    names = [name for name, _ in candidate_nodes(task["model"], Recipe(precision=precision), task["cache"])]
    assert names == ["conv1", "conv2", "head"]


def test_dynamic_int8_can_keep_a_gemm_in_float(task):
    recipe = Recipe(precision="int8-dynamic").with_excluded([ExcludedNode(name="head", reason="user")])
    v = build_variant(task["model"], recipe, cache_dir=task["cache"])
    ops = {n.name: n.op_type for n in onnx.load(v.path).graph.node}
    assert ops.get("head_MatMul") == "MatMul" and "MatMulInteger" not in ops.values()
    assert "ConvInteger" in ops.values()


def test_profiler_kernels_are_attributed_to_float_nodes(task):
    graph = _graph(prepare_for_quantization(task["model"], task["cache"]).path)
    assert attribute("conv2_token_4", "QLinearConv", graph) == "conv2"
    assert attribute("conv1_quant", "ConvInteger", graph) == "conv1"
    assert attribute("conv1_quant_scales_mul", "Mul", graph) == "conv1"
    assert attribute("head_MatMul_quant", "MatMulInteger", graph) == "head"
    assert attribute("r1_QuantizeLinear", "DynamicQuantizeLinear", graph) == "conv2", "a Q node serves its consumer"
    assert attribute("r1_nchwc", "Conv", graph) == "conv1", "a fused Conv+Relu kernel belongs to the Conv"
    assert attribute("c2_output_quantized_cast", "Cast", graph) == "conv2"
    assert attribute("ReorderOutput", "ReorderOutput", graph) is None


def test_slow_quantized_nodes_are_kept_float_for_speed(task):
    dynamic = build_variant(task["model"], Recipe(precision="int8-dynamic"), cache_dir=task["cache"])
    comparison = compare_node_speed(prepare_for_quantization(task["model"], task["cache"]).path, dynamic.path, task["slices"][0].x)
    assert comparison.provenance == "measured:onnxruntime-profiler"
    convs = {n.name: n for n in comparison.nodes if n.op_type == "Conv"}
    assert set(convs) == {"conv1", "conv2"} and all(n.quantized and n.float_us > 0 and n.quant_us > 0 for n in convs.values())

    faster, _ = keep_slow_nodes_float(task["model"], dynamic, task["slices"][0].x, cache_dir=task["cache"])
    kept = {n.name: n for n in faster.recipe.excluded_nodes}
    # ConvInteger + DynamicQuantizeLinear is several times slower than a float Conv on x86 (NOTES.md).
    assert kept, "dynamic INT8 convolutions should profile slower than float"
    assert all(n.reason == "speed" and "us quantized vs" in n.note for n in kept.values())
    assert faster.recipe.precision == "int8-dynamic" and faster.sha256 != dynamic.sha256
