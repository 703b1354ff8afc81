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
OPTIMIZE_QUICK = ["--max-candidates", "1", "--time-budget", "60", "--threads", "1", "--opt-levels", "all", "--samples", "20", "--sessions", "1"]


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
