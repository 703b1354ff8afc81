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
