"""Per-node speed of a quantized variant vs its float model, from ONNX Runtime's profiler.

INT8 is not automatically faster on a CPU: a dynamically quantized Conv becomes ConvInteger
plus DynamicQuantizeLinear, often several times slower than the float kernel. This module
profiles both models, attributes every executed kernel back to a node of the float graph, and
names the nodes whose quantized form costs more than their float form, so they can be kept
in float (``ExcludedNode(reason="speed")``).

Attribution follows the names ONNX Runtime and its quantizer give to the nodes they create:
``<node>_token_<k>`` (fused), ``<tensor>_QuantizeLinear`` (charged to the node consuming the
tensor), ``<tensor>_nchwc`` and similar (charged to the node producing it, walking up through
activations fused into it), ``<node>_quant*`` (QOperator / dynamic: the longest prefix that is
a node). Kernels matching none of
these (layout Transposes, NCHWc reorders) are reported as unattributed time.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edgeproof.data.feeds import Inputs, declared_of_model, row_feeds
from edgeproof.data.slices import CalibrationSet
from edgeproof.measure.session import open_session
from edgeproof.model import Model, as_model, graph_of
from edgeproof.records import NodeRecord, RuntimeSettings
from edgeproof.variants.build import DEFAULT_CACHE_DIR, build_variant
from edgeproof.variants.prepare import prepare_for_quantization
from edgeproof.variants.recipe import ExcludedNode, Variant

PROVENANCE = "measured:onnxruntime-profiler"
_FUSED = re.compile(r"_token_\d+$")
_TENSOR_SUFFIX = re.compile(r"^(?P<tensor>.+)_(?P<kind>QuantizeLinear|DequantizeLinear|output_quantized_cast|bias_add|nchwc)$")
_QUANTIZED_KERNEL = re.compile(r"QLinear|Integer|Quantize|QGemm|QAttention")
_MAX_FUSION_DEPTH = 4
_KERNEL_SUFFIX = "_kernel_time"


@dataclass(frozen=True)
class _Graph:
    nodes: dict[str, onnx.NodeProto]
    producer: dict[str, str]
    consumers: dict[str, list[str]]


def _graph(model_path: Model | str | Path) -> _Graph:
    model = graph_of(model_path)
    nodes = {n.name: n for n in model.graph.node if n.name}
    producer = {out: n.name for n in nodes.values() for out in n.output}
    consumers: dict[str, list[str]] = defaultdict(list)
    for n in nodes.values():
        for inp in n.input:
            consumers[inp].append(n.name)
    return _Graph(nodes, producer, dict(consumers))


def _fused_into(graph: _Graph, node: str, op_type: str) -> str:
    """Walk up from ``node`` to the node of ``op_type`` its kernel was fused from (Conv <- Relu)."""
    current = node
    for _ in range(_MAX_FUSION_DEPTH):
        if graph.nodes[current].op_type == op_type:
            return current
        inputs = [graph.producer[i] for i in graph.nodes[current].input if i in graph.producer]
        if not inputs:
            break
        current = inputs[0]
    return node


def attribute(kernel: str, op_type: str, graph: _Graph) -> str | None:
    """The float-graph node a profiled kernel belongs to, or None when no rule applies."""
    base = _FUSED.sub("", kernel)
    if base in graph.nodes:
        return base
    tensor = _TENSOR_SUFFIX.match(base)
    if tensor and (tensor["tensor"] in graph.producer or tensor["tensor"] in graph.consumers):
        name = tensor["tensor"]
        if tensor["kind"] in ("QuantizeLinear", "DequantizeLinear") and graph.consumers.get(name):
            return graph.consumers[name][0]
        if name in graph.producer:
            return _fused_into(graph, graph.producer[name], op_type)
    # Quantizers name what they make "<node>_quant", "<node>_quant_scales_mul", "<Gemm>_MatMul_quant":
    # the longest "_"-separated prefix that is a node is the node it replaced.
    parts = base.split("_")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = "_".join(parts[:cut])
        if prefix in graph.nodes:
            return prefix
    return None


@dataclass(frozen=True)
class NodeSpeed:
    """Median per-inference time of one float-graph node in both models, in microseconds."""

    name: str
    op_type: str
    float_us: float
    quant_us: float
    quantized: bool

    @property
    def ratio(self) -> float:
        return self.quant_us / self.float_us if self.float_us > 0 else float("inf")


@dataclass(frozen=True)
class SpeedComparison:
    """Per-node times of a float model and its quantized variant, with what could not be attributed."""

    nodes: list[NodeSpeed]
    float_unattributed_us: float
    quant_unattributed_us: float
    runs: int
    provenance: str = PROVENANCE
    notes: list[str] = field(default_factory=list)

    def slow_nodes(self, margin: float = 0.2, min_extra_us: float = 2.0) -> list[NodeSpeed]:
        """Quantized nodes slower than float by more than ``margin`` (fraction) and ``min_extra_us``."""
        return [
            n for n in self.nodes if n.quantized and n.quant_us > n.float_us * (1.0 + margin) and n.quant_us - n.float_us > min_extra_us
        ]


def profile_median_us(model_path: str | Path, settings: RuntimeSettings, feeds: dict, runs: int) -> list[NodeRecord]:
    """Median per-inference time of each executed kernel over ``runs`` profiled runs.

    The first run is a warm-up and is dropped: it pays for weight pre-packing and buffer
    allocation, and one such run moves a mean by several times for a microsecond-scale kernel.
    """
    durations: dict[str, list[float]] = defaultdict(list)
    op_types: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="edgeproof-speed-") as tmp:
        sess = open_session(model_path, settings, profile_prefix=str(Path(tmp) / "ort"))
        for _ in range(runs + 1):
            sess.run(None, feeds)
        trace = json.loads(Path(sess.end_profiling()).read_text())
    for event in trace:
        name = str(event.get("name", ""))
        if event.get("cat") == "Node" and name.endswith(_KERNEL_SUFFIX):
            kernel = name[: -len(_KERNEL_SUFFIX)]
            durations[kernel].append(float(event.get("dur", 0.0)))
            op_types[kernel] = event.get("args", {}).get("op_name", "?")
    return [
        NodeRecord(name=k, op_type=op_types[k], provider=settings.provider, time_us=float(np.median(d[1:] or d)))
        for k, d in durations.items()
    ]


def _per_node(records: list[NodeRecord], graph: _Graph) -> tuple[dict[str, float], dict[str, bool], float]:
    times: dict[str, float] = defaultdict(float)
    quantized: dict[str, bool] = defaultdict(bool)
    unattributed = 0.0
    for rec in records:
        node = attribute(rec.name, rec.op_type, graph)
        if node is None:
            unattributed += rec.time_us or 0.0
            continue
        times[node] += rec.time_us or 0.0
        quantized[node] |= bool(_QUANTIZED_KERNEL.search(rec.op_type))
    return dict(times), dict(quantized), unattributed


def compare_node_speed(
    float_path: str | Path,
    variant_path: str | Path,
    x: np.ndarray | Inputs,
    runs: int = 50,
    settings: RuntimeSettings | None = None,
) -> SpeedComparison:
    """Profile both models on the first row of ``x`` (batch 1, the edge case) and compare per node.
    ``x`` is the rows of the model's one data input, or ``Inputs`` with every input (rows by name
    and fixed feeds, e.g. ``Slice.inputs``; ``Inputs.one_run`` for one run's feed dict).

    ``float_path`` must be the graph the variant was quantized from (for INT8 variants, the
    prepared model: ``prepare_for_quantization(...).path``), so node names line up.
    """
    settings = settings or RuntimeSettings()
    loaded = as_model(float_path)
    feeds = row_feeds(declared_of_model(loaded), Inputs.of(x), batch_size=1, what=f"{float_path}").feeds(0, 1)
    graph = _graph(loaded)
    float_t, _, float_rest = _per_node(profile_median_us(float_path, settings, feeds, runs), graph)
    quant_t, quantized, quant_rest = _per_node(profile_median_us(variant_path, settings, feeds, runs), graph)
    nodes = [
        NodeSpeed(name, graph.nodes[name].op_type, float_t.get(name, 0.0), quant_t.get(name, 0.0), quantized.get(name, False))
        for name in graph.nodes
        if name in float_t or name in quant_t
    ]
    return SpeedComparison(nodes=nodes, float_unattributed_us=float_rest, quant_unattributed_us=quant_rest, runs=runs)


def speed_exclusions(comparison: SpeedComparison, margin: float = 0.2, min_extra_us: float = 2.0) -> list[ExcludedNode]:
    """ExcludedNode(reason="speed") for every node whose quantized kernel is slower than float."""
    return [
        ExcludedNode(
            name=n.name,
            reason="speed",
            note=f"{n.op_type}: {n.quant_us:.1f} us quantized vs {n.float_us:.1f} us float ({comparison.provenance})",
        )
        for n in comparison.slow_nodes(margin, min_extra_us)
    ]


def keep_slow_nodes_float(
    model: Model | str | Path,
    variant: Variant,
    x: np.ndarray | Inputs,
    calibration: CalibrationSet | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    runs: int = 50,
    margin: float = 0.2,
) -> tuple[Variant, SpeedComparison]:
    """Rebuild an INT8 ``variant`` with its slower-than-float nodes kept in float (reason "speed").

    Returns the variant unchanged when no node is slower; the comparison says what was measured.
    """
    model = as_model(model)
    prepared = prepare_for_quantization(model, cache_dir)
    comparison = compare_node_speed(prepared.path, variant.path, x, runs)
    slow = speed_exclusions(comparison, margin)
    if not slow:
        return variant, comparison
    return build_variant(model, variant.recipe.with_excluded(slow), calibration, cache_dir), comparison
