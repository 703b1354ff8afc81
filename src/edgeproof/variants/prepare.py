"""Make a float model safe to quantize: opset ≥ 13, weights as initializers, ORT pre-processing.

Each step that changed something, or was skipped, is written down so the recipe records it.
The prepared model is cached per source sha256, and its node names are the ones that
``nodes_to_exclude`` and the mixed-precision ranking refer to.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import numpy_helper, version_converter
from onnxruntime.quantization import quant_pre_process

from edgeproof.errors import ModelError, first_line
from edgeproof.model import Model, as_model, opset_version, sha256_file
from edgeproof.records import write_atomic

# Per-channel QDQ needs the axis attribute of (De)QuantizeLinear, which arrived in opset 13.
MIN_QUANT_OPSET = 13
PREPARED_DIR = "prepared"


@dataclass(frozen=True)
class Prepared:
    """A float model ready for the quantizer, with what was done to it."""

    path: Path
    sha256: str
    source_sha256: str
    steps: tuple[str, ...]


def upgrade_opset(model: onnx.ModelProto, where: str) -> tuple[onnx.ModelProto, list[str]]:
    """Convert a model below opset 13 to opset 13."""
    opset = opset_version(model)
    if opset >= MIN_QUANT_OPSET:
        return model, []
    try:
        converted = version_converter.convert_version(model, MIN_QUANT_OPSET)
    except Exception as exc:  # the converter raises bare RuntimeErrors from C++
        raise ModelError(f"{where}: cannot convert opset {opset} to {MIN_QUANT_OPSET} for quantization ({first_line(exc)})") from None
    return converted, [f"opset {opset} converted to {MIN_QUANT_OPSET} (per-channel QDQ needs >= 13)"]


def constants_to_initializers(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Move tensors held in top-level Constant nodes into initializers, where the quantizer finds weights."""
    moved = 0
    kept = []
    for node in model.graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None and len(node.attribute) == 1:
            tensor = numpy_helper.from_array(numpy_helper.to_array(value.t), name=node.output[0])
            model.graph.initializer.append(tensor)
            moved += 1
        else:
            kept.append(node)
    if not moved:
        return model, []
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model, [f"{moved} Constant nodes moved to initializers"]


def _pre_process(src: Path, dst: Path) -> list[str]:
    """Run ORT's quant_pre_process; fall back to skipping symbolic shapes, then to nothing."""
    try:
        quant_pre_process(str(src), str(dst))
        return ["quant_pre_process"]
    except ImportError:
        first = "symbolic shape inference skipped (sympy is not installed)"
    except Exception as exc:  # symbolic shape inference asserts on some exported graphs
        first = f"symbolic shape inference failed ({first_line(exc)})"
    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return [first, "quant_pre_process with skip_symbolic_shape=True"]
    except Exception as exc:  # same untyped failures; quantizing the unprocessed model still works
        dst.write_bytes(src.read_bytes())
        return [first, f"quant_pre_process failed ({first_line(exc)}); quantizing the unprocessed model"]


def prepare_for_quantization(model: Model | str | Path, cache_dir: str | Path) -> Prepared:
    """The prepared float model for ``model`` (loaded, or a path), built once per source sha256 under ``cache_dir``."""
    model = as_model(model)
    source_sha = model.sha256
    out_dir = Path(cache_dir) / PREPARED_DIR / source_sha[:24]
    out_model, out_steps = out_dir / "model.onnx", out_dir / "steps.json"
    if out_model.is_file() and out_steps.is_file():
        return Prepared(out_model, sha256_file(out_model), source_sha, tuple(json.loads(out_steps.read_text())))
    proto, steps = upgrade_opset(model.proto_copy(), str(model.path))
    proto, moved = constants_to_initializers(proto)
    steps += moved
    with tempfile.TemporaryDirectory(prefix="edgeproof-prep-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(proto, str(src))
        steps += _pre_process(src, dst)
        write_atomic(out_model, dst.read_bytes())
    write_atomic(out_steps, json.dumps(steps))
    return Prepared(out_model, sha256_file(out_model), source_sha, tuple(steps))
