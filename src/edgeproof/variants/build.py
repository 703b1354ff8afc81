"""Build a variant (fp32, fp16, dynamic or static INT8) from a recipe, reusing cached artifacts.

The cache lives under ``cache_dir`` (default ``.edgeproof/variants``), one folder per
``Recipe.cache_key()``, i.e. per (source model sha256, recipe, calibration data ID). A folder
holds ``model.onnx`` and ``variant.json``; a folder whose model no longer matches its recorded
sha256 is rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxconverter_common import float16
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from edgeproof.data.dataset import model_input
from edgeproof.data.slices import CalibrationSet
from edgeproof.errors import DataError, ModelError, RecordError, first_line
from edgeproof.model import Model, as_model, graph_of, sha256_file
from edgeproof.records import load_record, save_record, write_atomic
from edgeproof.variants.prepare import Prepared, prepare_for_quantization
from edgeproof.variants.recipe import Recipe, Variant

DEFAULT_CACHE_DIR = Path(".edgeproof/variants")
CALIBRATION_BATCH = 16
_QUANT_TYPES = {"U8": QuantType.QUInt8, "S8": QuantType.QInt8}
_CALIBRATORS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
_FORMATS = {"QDQ": QuantFormat.QDQ, "QOperator": QuantFormat.QOperator}


class _ArrayReader(CalibrationDataReader):
    """Feeds calibration rows to the quantizer: ``batch`` rows at a time (1 for a fixed batch-1 model)."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int):
        self._batches = iter([{input_name: x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    # The quantizer logs a warning per unsupported node and prints calibration progress to stdout;
    # the recipe already records what matters, and stdout may be a report or JSON stream.
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _calibration_batch(model_path: Path, batch: int | str, n_rows: int) -> int:
    """Rows per calibration run: the model's fixed ``batch``, else the largest divisor of ``n_rows`` up to 16.

    Every batch must have the same shape: the histogram calibrators (entropy, percentile)
    stack all batches of a tensor into one array.
    """
    if isinstance(batch, int):
        if n_rows % batch:
            raise DataError(f"{model_path}: fixed batch {batch} does not divide the {n_rows} calibration rows")
        return batch
    return max(d for d in range(1, CALIBRATION_BATCH + 1) if n_rows % d == 0)


def _quantize_static(prepared: Prepared, recipe: Recipe, calibration: CalibrationSet, out: Path, cache_dir: Path) -> None:
    excluded = [n.name for n in recipe.excluded_nodes]
    # Calibration ranges do not depend on which nodes are excluded, so they are computed once per
    # (prepared model, calibration data, calibrator) and shared by every mixed-precision step.
    ranges_key = hashlib.sha256(f"{prepared.sha256}:{calibration.id}:{recipe.calibrator}".encode()).hexdigest()[:24]
    ranges_path = cache_dir / "calibration" / f"{ranges_key}.json"
    ranges_path.parent.mkdir(parents=True, exist_ok=True)
    name, dims = model_input(prepared.path)
    quantize_static(
        str(prepared.path),
        str(out),
        _ArrayReader(name, calibration.x, _calibration_batch(prepared.path, dims[0], calibration.n)),
        quant_format=_FORMATS[str(recipe.format)],
        per_channel=recipe.per_channel,
        activation_type=_QUANT_TYPES[str(recipe.activation_type)],
        weight_type=_QUANT_TYPES[str(recipe.weight_type)],
        nodes_to_exclude=excluded or None,
        calibrate_method=_CALIBRATORS[str(recipe.calibrator)],
        calibration_cache_path=str(ranges_path),
    )


# convert_float_to_float16's defaults: smaller non-zero magnitudes are flushed up to this, larger clipped down to that
_FP16_MIN_POSITIVE = 1e-7
_FP16_MAX_FINITE = 1e4


def _write_fp16(source: Model, recipe: Recipe, out: Path) -> str | None:
    """Convert to fp16; the converter's per-tensor "will be truncated" warnings become one line
    (returned) counting the weights it changed, instead of raw warnings with paths into the venv."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # keep_io_types: callers keep feeding float32 and reading float32, as with the reference.
        converted = float16.convert_float_to_float16(
            source.proto_copy(), keep_io_types=True, node_block_list=[n.name for n in recipe.excluded_nodes] or None
        )
    truncated = False
    for w in caught:
        if "will be truncated" in str(w.message):
            truncated = True
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    onnx.save(converted, str(out))
    return fp16_truncation_note(source.proto) if truncated else None


def fp16_truncation_note(model: onnx.ModelProto) -> str | None:
    """How many float weights (initializers and Constant nodes) fall outside what the fp16
    conversion keeps: non-zero magnitudes under 1e-7 are flushed to ±1e-7, over 1e4 clipped to ±1e4."""
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    tiny = huge = 0
    for t in tensors:
        if t.data_type != onnx.TensorProto.FLOAT:
            continue
        mag = np.abs(numpy_helper.to_array(t))
        tiny += int(np.count_nonzero((mag > 0) & (mag < _FP16_MIN_POSITIVE)))
        huge += int(np.count_nonzero(mag > _FP16_MAX_FINITE))
    said = []
    if tiny:
        said.append(f"{tiny} weight{'s' if tiny != 1 else ''} under fp16's range {'were' if tiny != 1 else 'was'} flushed to ±1e-7")
    if huge:
        said.append(f"{huge} weight{'s' if huge != 1 else ''} over 1e4 {'were' if huge != 1 else 'was'} clipped to ±1e4")
    return "fp16: " + "; ".join(said) if said else None


def _check_excluded(graph: onnx.ModelProto, graph_path: Path, recipe: Recipe) -> None:
    """Refuse exclusions naming no node: the quantizer would silently quantize everything."""
    names = {n.name for n in graph.graph.node}
    missing = [n.name for n in recipe.excluded_nodes if n.name not in names]
    if missing:
        raise ModelError(f"{graph_path}: excluded node {missing[0]!r} is not in the graph being converted")


def _dynamic_exclusions(graph: onnx.ModelProto, recipe: Recipe) -> list[str]:
    """Names for quantize_dynamic's nodes_to_exclude: it rewrites a Gemm as ``<name>_MatMul`` + Add
    before matching names, so a Gemm is excluded under that name too."""
    gemms = {n.name for n in graph.graph.node if n.op_type == "Gemm"}
    names = [n.name for n in recipe.excluded_nodes]
    return names + [f"{name}_MatMul" for name in names if name in gemms]


def _produce(model: Model, recipe: Recipe, calibration: CalibrationSet | None, out: Path, cache_dir: Path) -> tuple[str, ...]:
    """Write the variant's model to ``out``; return the steps taken, with the tool versions that took them."""
    if recipe.precision == "fp32":
        shutil.copyfile(model.path, out)
        return ()
    if recipe.precision == "fp16":
        _check_excluded(model.proto, model.path, recipe)
        note = _write_fp16(model, recipe, out)
        step = f"onnxconverter-common {version('onnxconverter-common')} convert_float_to_float16(keep_io_types=True)"
        return (step, note) if note else (step,)
    prepared = prepare_for_quantization(model, cache_dir)
    prepared_graph = graph_of(prepared.path)
    _check_excluded(prepared_graph, prepared.path, recipe)
    with _quiet_quantizer():
        if recipe.precision == "int8-dynamic":
            quantize_dynamic(
                str(prepared.path),
                str(out),
                per_channel=recipe.per_channel,
                weight_type=_QUANT_TYPES[str(recipe.weight_type)],
                nodes_to_exclude=_dynamic_exclusions(prepared_graph, recipe) or None,
            )
            tool = "quantize_dynamic"
        else:
            assert calibration is not None  # checked by the caller
            _quantize_static(prepared, recipe, calibration, out, cache_dir)
            tool = "quantize_static"
    return (*prepared.steps, f"onnxruntime {version('onnxruntime')} {tool}")


def _resolve(model: Model, recipe: Recipe, calibration: CalibrationSet | None) -> Recipe:
    """The full recipe: the request plus source hash and calibration provenance."""
    update: dict = {"source_sha256": model.sha256}
    if recipe.precision == "int8-static":
        if calibration is None:
            raise DataError(f"{recipe.label()}: static INT8 needs a calibration set")
        if calibration.n == 0:
            raise DataError(f"{recipe.label()}: the calibration set is empty")
        update |= {
            "calibration_kinds": calibration.kinds,
            "calibration_id": calibration.id,
            "calibration_rows": calibration.n,
        }
    return recipe.model_copy(update=update)


def _cached(folder: Path) -> Variant | None:
    model, record = folder / "model.onnx", folder / "variant.json"
    if not (model.is_file() and record.is_file()):
        return None
    try:
        stored: Variant = load_record(record, Variant)
    except RecordError:
        return None
    if sha256_file(model) != stored.sha256:
        return None
    return stored.model_copy(update={"path": str(model), "cache_hit": True})


def build_variant(
    model: Model | str | Path,
    recipe: Recipe,
    calibration: CalibrationSet | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
) -> Variant:
    """Make (or reuse from the cache) the variant of ``model`` (loaded, or a path) that ``recipe`` describes.

    Static INT8 needs ``calibration`` (see ``edgeproof.data.calibration_set``); its kinds and ID
    go into the recipe. The returned Variant says whether the artifact came from the cache.
    """
    model, cache_dir = as_model(model), Path(cache_dir)
    full = _resolve(model, recipe, calibration if recipe.precision == "int8-static" else None)
    folder = cache_dir / full.cache_key()[:24]
    hit = _cached(folder)
    if hit is not None:
        return hit
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeproof-variant-", dir=folder) as tmp:
        staged = Path(tmp) / "model.onnx"
        try:
            steps = _produce(model, full, calibration, staged, cache_dir)
        except (ModelError, DataError):
            raise
        except Exception as exc:  # quantizers and converters raise untyped errors
            raise ModelError(f"{model.path}: building {full.label()} failed ({type(exc).__name__}: {first_line(exc)})") from None
        final = write_atomic(folder / "model.onnx", staged.read_bytes())
    variant = Variant(
        path=str(final),
        sha256=sha256_file(final),
        size_bytes=final.stat().st_size,
        recipe=full.model_copy(update={"steps": steps}),
    )
    save_record(variant, folder / "variant.json")
    return variant
