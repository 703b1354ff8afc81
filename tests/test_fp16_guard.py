"""An fp16 conversion that breaks the model never ships: control flow kept in float32, else one note."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgeproof.contract import load_contract
from edgeproof.model import Model
from edgeproof.search import SearchOptions, optimize
from edgeproof.variants import Recipe, build_variant
from edgeproof.variants.fp16 import MAX_REL_RMS, Fp16Refused, check_fp16, convert_fp16

ROW = np.array([[0.5, -1.0, 2.0, 0.25]], np.float32)


def _const(name: str, value: float, shape: tuple[int, ...] = (1, 4)) -> onnx.NodeProto:
    return h.make_node("Constant", [], [name], value=nh.from_array(np.full(shape, value, np.float32), name))


def _branch(name: str, op: str, value: float, extra: str | None) -> onnx.GraphProto:
    """``op(x, value)`` (plus ``extra`` from the outer scope): reads the graph input ``x`` by name, as
    exported recurrent models do, which the converter retypes to fp16 without a Cast."""
    nodes = [_const(f"{name}_k", value), h.make_node(op, ["x", f"{name}_k"], [f"{name}_a"], name=f"{name}_{op.lower()}")]
    out = f"{name}_a"
    if extra is not None:
        nodes.append(h.make_node("Add", [out, extra], [f"{name}_b"], name=f"{name}_add_outer"))
        out = f"{name}_b"
    return h.make_graph(nodes, name, [], [h.make_tensor_value_info(out, T.FLOAT, [1, 4])])


def _save(path: Path, nodes: list, inputs: list, output: str, inits: list | None = None) -> Path:
    graph = h.make_graph(nodes, path.stem, inputs, [h.make_tensor_value_info(output, T.FLOAT, [1, 4])], inits or [])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def if_with_work_around_it(path: Path) -> Path:
    """y = v·3 at the top; an If on sum(v) > 0 whose branches read the input x (nothing at the top
    does) and y from outside; out = branch·0.5."""
    return _save(
        path,
        [
            h.make_node("Mul", ["v", "w"], ["y"], name="pre_mul"),
            h.make_node("ReduceSum", ["v"], ["s"], keepdims=0, name="sum"),
            h.make_node("Constant", [], ["zero"], value=nh.from_array(np.array(0.0, np.float32), "zero")),
            h.make_node("Greater", ["s", "zero"], ["cond"], name="positive"),
            h.make_node("If", ["cond"], ["z"], then_branch=_branch("then", "Add", 0.5, "y"), else_branch=_branch("else", "Mul", 2.0, "y")),
            _const("half", 0.5),
            h.make_node("Mul", ["z", "half"], ["out"], name="post_mul"),
        ],
        [h.make_tensor_value_info("x", T.FLOAT, [1, 4]), h.make_tensor_value_info("v", T.FLOAT, [1, 4])],
        "out",
        [nh.from_array(np.full((1, 4), 3.0, np.float32), "w")],
    )


def everything_inside_an_if(path: Path) -> Path:
    """Like silero-vad: the whole model is the branches of one If on an int64 input."""
    return _save(
        path,
        [
            h.make_node("Constant", [], ["one"], value=nh.from_array(np.array(1, np.int64), "one")),
            h.make_node("Equal", ["flag", "one"], ["cond"], name="is_one"),
            h.make_node(
                "If", ["cond"], ["out"], then_branch=_branch("then", "Add", 0.5, None), else_branch=_branch("else", "Mul", 2.0, None)
            ),
        ],
        [h.make_tensor_value_info("x", T.FLOAT, [1, 4]), h.make_tensor_value_info("flag", T.INT64, [])],
        "out",
    )


def tiny_gain(path: Path) -> Path:
    """x·1e-8: fp16 has no such weight, and the converter flushes it to 1e-7, ten times the gain."""
    nodes = [_const("gain", 1e-8), h.make_node("Mul", ["x", "gain"], ["out"], name="gain_mul")]
    return _save(path, nodes, [h.make_tensor_value_info("x", T.FLOAT, [1, 4])], "out")


def run(path: str | Path, feeds: dict) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_the_plain_conversion_breaks_an_if_reading_a_graph_input(tmp_path):
    """The converter bug the guard exists for (silero-vad's): the session does not even load."""
    model = Model.load(everything_inside_an_if(tmp_path / "m.onnx"))
    converted, _ = convert_fp16(model, [])
    checked = check_fp16(converted, [], [], "none given")
    assert checked.problem is not None and "cannot load" in checked.problem and "If" in checked.problem


def test_control_flow_is_kept_in_float32_when_the_plain_conversion_breaks_it(tmp_path):
    path = if_with_work_around_it(tmp_path / "m.onnx")
    converted, _ = convert_fp16(Model.load(path), [])
    assert check_fp16(converted, [], [], "none given").problem is not None, "the plain conversion must break this model"

    feeds = [{"x": ROW, "v": ROW}, {"x": ROW, "v": -ROW}]  # both branches
    variant = build_variant(path, Recipe(precision="fp16"), cache_dir=tmp_path / "cache", probe=feeds)
    steps = " | ".join(variant.recipe.steps)
    assert "broke the If subgraph" in steps and "converted again with If_4 kept in float32" in steps
    assert "checked against fp32 on 2 feed(s)" in steps
    graph = onnx.load(variant.path).graph
    # the work around the If is fp16, the branches stay float32 and read Casts of the outer fp16 value
    assert next(t for t in graph.initializer if t.name == "w").data_type == T.FLOAT16
    [branch] = [n for n in graph.node if n.op_type == "If"]
    then = next(a.g for a in branch.attribute if a.name == "then_branch")
    assert all(a.t.data_type == T.FLOAT for n in then.node for a in n.attribute if n.op_type == "Constant")
    assert any(n.op_type == "Cast" and n.input[0] == "y" for n in graph.node)
    for feed in feeds:
        np.testing.assert_allclose(run(variant.path, feed), run(path, feed), rtol=1e-2)


def test_a_model_living_inside_one_if_is_refused_with_one_line_and_nothing_cached(tmp_path):
    path = everything_inside_an_if(tmp_path / "m.onnx")
    cache = tmp_path / "cache"
    with pytest.raises(Fp16Refused) as refused:
        build_variant(path, Recipe(precision="fp16"), cache_dir=cache, probe=[{"x": ROW, "flag": np.array(1, np.int64)}])
    message = str(refused.value)
    assert message.startswith("fp16 skipped: the converter broke the model's If subgraph: onnxruntime cannot load it")
    assert "keeping If_2 in float32 leaves no arithmetic in fp16" in message and "\n" not in message
    assert not list(cache.rglob("*.onnx")), "a refused conversion leaves no artifact to reuse"


def test_a_conversion_that_loads_but_computes_another_thing_is_refused_on_synthetic_feeds(tmp_path):
    path = tiny_gain(tmp_path / "m.onnx")
    with pytest.raises(
        Fp16Refused, match=r"^fp16 skipped: the converter broke the model: output 'out' differs from fp32 by [0-9.]+ relative RMS"
    ):
        build_variant(path, Recipe(precision="fp16"), cache_dir=tmp_path / "cache")


def test_a_close_conversion_says_what_it_was_checked_on(tmp_path):
    """Without control flow or overflow the conversion ships, its recipe saying how close it stayed."""
    path = if_with_work_around_it(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    del model.graph.node[1:5]  # drop the If and its condition: out = (v·3)·0.5
    model.graph.node[2].input[0] = "y"
    del model.graph.input[0]
    onnx.save(model, str(path))
    variant = build_variant(path, Recipe(precision="fp16"), cache_dir=tmp_path / "cache", probe=[{"v": ROW}])
    [checked] = [s for s in variant.recipe.steps if s.startswith("checked")]
    assert f"limit {MAX_REL_RMS:g}" in checked and "outputs finite" in checked


CONTRACT = """[model]
path = "m.onnx"
precisions = ["fp32", "fp16"]

[model.feeds.flag]
value = 1

[budgets]
p95_ms = 1000
"""


def test_the_search_drops_a_broken_fp16_with_one_note_and_goes_on(tmp_path):
    everything_inside_an_if(tmp_path / "m.onnx")
    (tmp_path / "edgeproof.toml").write_text(CONTRACT)
    options = SearchOptions(
        threads=(1,), opt_levels=("all",), sessions=1, samples=20, cold_start_repeats=0, confirm=False, cache_dir=tmp_path / "cache"
    )
    result = optimize(tmp_path / "m.onnx", load_contract(tmp_path / "edgeproof.toml"), options).result
    notes = [n for n in result.notes if "fp16" in n]
    assert len(notes) == 1 and notes[0].startswith("fp16 skipped: the converter broke the model's If subgraph")
    assert [v.precision for v in result.variants] == ["fp32"]
    assert result.outcomes[0].selection.chosen is not None
