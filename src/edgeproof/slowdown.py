"""Inject a known regression inside a model graph: extra input-dependent work whose result is multiplied
by zero, so outputs stay the same while every inference does more. Used to prove the gate detects it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeproof.model import graph_inputs, load_model

_WIDTH = 128


def add_busy_branch(model_path: str | Path, out_path: str | Path, chain: int, width: int = _WIDTH, seed: int = 0) -> Path:
    """Write a copy of the model with ``chain`` extra ``[1,width]x[width,width]`` MatMuls fed by the first
    input. The branch ends in ``0 * ReduceSum(...)`` added to the first output: the same answers, more work.
    Graph optimisers cannot fold it away because it depends on the input."""
    model = load_model(model_path)
    graph = model.graph
    first_in = graph_inputs(model)[0].name
    first_out = graph.output[0].name
    rng = np.random.default_rng(seed)
    p = "edgeproof_busy_"
    inits = [
        numpy_helper.from_array(np.array([1, -1], dtype=np.int64), p + "flat_shape"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), p + "start"),
        numpy_helper.from_array(np.array([width], dtype=np.int64), p + "end"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), p + "axis"),
        numpy_helper.from_array(np.zeros((), dtype=np.float32), p + "zero"),
    ]
    nodes = [
        helper.make_node("Reshape", [first_in, p + "flat_shape"], [p + "flat"], name=p + "reshape"),
        helper.make_node("Slice", [p + "flat", p + "start", p + "end", p + "axis"], [p + "h0"], name=p + "slice"),
    ]
    prev = p + "h0"
    for i in range(chain):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{p}w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"{p}w{i}"], [f"{p}h{i + 1}"], name=f"{p}matmul{i}"))
        prev = f"{p}h{i + 1}"
    renamed = p + "orig_out"
    for node in graph.node:
        node.output[:] = [renamed if o == first_out else o for o in node.output]
    nodes += [
        helper.make_node("ReduceSum", [prev], [p + "sum"], keepdims=0, name=p + "sum"),
        helper.make_node("Mul", [p + "sum", p + "zero"], [p + "nothing"], name=p + "times_zero"),
        helper.make_node("Add", [renamed, p + "nothing"], [first_out], name=p + "add"),
    ]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    onnx.checker.check_model(model)
    out_path = Path(out_path)
    onnx.save(model, out_path)
    return out_path
