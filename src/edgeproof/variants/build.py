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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from importlib.metadata import version
from pathlib import Path

import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from edgeproof.data.feeds import RowFeeds, declared_of_model, row_feeds
from edgeproof.data.slices import CalibrationSet
from edgeproof.errors import DataError, ModelError, RecordError, first_line
from edgeproof.model import Model, as_model, graph_of, sha256_file
from edgeproof.records import load_record, save_record, write_atomic
from edgeproof.variants.fp16 import Feeds, write_fp16
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


class _FeedsReader(CalibrationDataReader):
    """Feeds calibration rows to the quantizer, every model input of each run (``RowFeeds``)."""

    def __init__(self, feeder: RowFeeds):
        self._runs = (feeds for _, feeds in feeder.runs())

    def get_next(self) -> dict | None:
        return next(self._runs, None)


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


def _quantize_static(prepared: Prepared, recipe: Recipe, calibration: CalibrationSet, out: Path, cache_dir: Path) -> None:
    excluded = [n.name for n in recipe.excluded_nodes]
    # Calibration ranges do not depend on which nodes are excluded, so they are computed once per
    # (prepared model, calibration data, calibrator) and shared by every mixed-precision step.
    ranges_key = hashlib.sha256(f"{prepared.sha256}:{calibration.id}:{recipe.calibrator}".encode()).hexdigest()[:24]
    ranges_path = cache_dir / "calibration" / f"{ranges_key}.json"
    ranges_path.parent.mkdir(parents=True, exist_ok=True)
    # Every run the same size: the histogram calibrators (entropy, percentile) stack all runs of a
    # tensor into one array.
    feeder = row_feeds(declared_of_model(prepared.path), calibration.inputs, CALIBRATION_BATCH, even=True, what=f"{prepared.path}")
    quantize_static(
        str(prepared.path),
        str(out),
        _FeedsReader(feeder),
        quant_format=_FORMATS[str(recipe.format)],
        per_channel=recipe.per_channel,
        activation_type=_QUANT_TYPES[str(recipe.activation_type)],
        weight_type=_QUANT_TYPES[str(recipe.weight_type)],
        nodes_to_exclude=excluded or None,
        calibrate_method=_CALIBRATORS[str(recipe.calibrator)],
        calibration_cache_path=str(ranges_path),
    )


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


def _produce(
    model: Model, recipe: Recipe, calibration: CalibrationSet | None, out: Path, cache_dir: Path, probe: Sequence[Feeds] | None = None
) -> tuple[str, ...]:
    """Write the variant's model to ``out``; return the steps taken, with the tool versions that took them."""
    if recipe.precision == "fp32":
        shutil.copyfile(model.path, out)
        return ()
    if recipe.precision == "fp16":
        _check_excluded(model.proto, model.path, recipe)
        return write_fp16(model, recipe, out, probe)
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
    if not recipe.excluded_nodes and not _quantized_ops(graph_of(out).graph):
        raise ModelError(f"{model.path}: {tool} quantized no node; the variant would be the float model under an INT8 name")
    return (*prepared.steps, f"onnxruntime {version('onnxruntime')} {tool}")


# The ops whose weights ONNX Runtime's quantizers quantize; a graph with none outside subgraphs gets nothing.
_WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "Attention", "EinSum"})
_SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan"})


def _subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield attr.g
            yield from attr.graphs


def _quantized_ops(graph: onnx.GraphProto) -> int:
    """Quantized kernels (QDQ pairs, QLinear*/QGemm, *Integer, dynamic quantization) in the graph and its subgraphs."""
    here = sum(1 for n in graph.node if "Quantize" in n.op_type or "Integer" in n.op_type or n.op_type.startswith(("QLinear", "QGemm")))
    return here + sum(_quantized_ops(g) for g in _subgraphs(graph))


def _weighted_ops(graph: onnx.GraphProto) -> int:
    return sum(1 for n in graph.node if n.op_type in _WEIGHTED_OPS) + sum(_weighted_ops(g) for g in _subgraphs(graph))


def _check_quantizable(model: onnx.ModelProto, where: Path) -> None:
    """Refuse a model whose weighted ops all sit inside If/Loop/Scan subgraphs: onnxruntime's
    quantizers do not enter subgraphs, so they would leave it float (or fail collecting ranges)."""
    top = {n.op_type for n in model.graph.node}
    if top & _WEIGHTED_OPS or not top & _SUBGRAPH_OPS:
        return
    inside = sum(_weighted_ops(g) for g in _subgraphs(model.graph))
    if inside:
        shown = ", ".join(sorted(top & _SUBGRAPH_OPS))
        raise ModelError(
            f"{where}: its {inside} weighted nodes (Conv, MatMul, ...) all sit inside {shown} subgraphs, which "
            "onnxruntime's quantizers leave in float; no INT8 variant can be made from it as it is"
        )


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
    probe: Sequence[Feeds] | None = None,
) -> Variant:
    """Make (or reuse from the cache) the variant of ``model`` (loaded, or a path) that ``recipe`` describes.

    Static INT8 needs ``calibration`` (see ``edgeproof.data.calibration_set``); its kinds and ID
    go into the recipe. An fp16 conversion is checked against fp32 on ``probe`` (feeds; default
    synthetic ones) and refused with ``Fp16Refused`` when it breaks the model (``variants.fp16``).
    The returned Variant says whether the artifact came from the cache.
    """
    model, cache_dir = as_model(model), Path(cache_dir)
    full = _resolve(model, recipe, calibration if recipe.precision == "int8-static" else None)
    if full.precision.startswith("int8"):  # before the cache: an older build may have cached a float "INT8"
        _check_quantizable(model.proto, model.path)
    folder = cache_dir / full.cache_key()[:24]
    hit = _cached(folder)
    if hit is not None:
        return hit
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeproof-variant-", dir=folder) as tmp:
        staged = Path(tmp) / "model.onnx"
        try:
            steps = _produce(model, full, calibration, staged, cache_dir, probe)
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
