"""Shared fixtures: the bundled digits model, tiny ONNX models built in place, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
DIGITS_MODEL = ROOT / "examples" / "digits" / "model.onnx"
DIGITS_CONTRACT = ROOT / "examples" / "digits" / "edgeproof.toml"


@pytest.fixture(autouse=True)
def _isolated_history(tmp_path, monkeypatch):
    """Every test writes its run history into its own folder, never the developer's .edgeproof/."""
    monkeypatch.setenv("EDGEPROOF_HOME", str(tmp_path / ".edgeproof"))


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess, as a user would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "edgeproof.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
    )


def make_matmul_model(path: Path, symbolic: tuple[str, ...] = ("batch",), opset: int = 17, constant_weights: bool = False) -> Path:
    """A tiny MLP (MatMul + Relu) with symbolic leading dims; weights as initializers or Constant nodes."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    dims = list(symbolic) + [16]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(symbolic) + [8])
    nodes = []
    inits = []
    if constant_weights:
        nodes.append(helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w_value")))
    else:
        inits.append(numpy_helper.from_array(w, "w"))
    nodes += [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def make_qdq_chain(path: Path, middle: str) -> Path:
    """An INT8 QDQ model: conv → ``middle`` → conv, 16 channels at 16×16, every op wrapped in DQ/Q."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q0"], name="quant_in")]
    cur = "q0"
    for i, op in enumerate(["Conv", middle, "Conv"]):
        nodes.append(helper.make_node("DequantizeLinear", [cur, "s", "zp"], [f"d{i}"], name=f"dq{i}"))
        inputs = [f"d{i}"]
        if op == "Conv":
            inits += [
                numpy_helper.from_array(rng.integers(-100, 100, (16, 16, 3, 3), dtype=np.int8), f"w{i}"),
                numpy_helper.from_array(np.array(0.01, np.float32), f"ws{i}"),
            ]
            nodes.append(helper.make_node("DequantizeLinear", [f"w{i}", f"ws{i}"], [f"wd{i}"], name=f"dqw{i}"))
            inputs.append(f"wd{i}")
        attrs = {"pads": [1, 1, 1, 1]} if op == "Conv" else {}
        nodes.append(helper.make_node(op, inputs, [f"o{i}"], name=f"{op.lower()}{i}", **attrs))
        nodes.append(helper.make_node("QuantizeLinear", [f"o{i}", "s", "zp"], [f"q{i + 1}"], name=f"q{i + 1}"))
        cur = f"q{i + 1}"
    nodes.append(helper.make_node("DequantizeLinear", [cur, "s", "zp"], ["y"], name="dequant_out"))
    graph = helper.make_graph(
        nodes, "qdq-chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
