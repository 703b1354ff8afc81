"""Mixed precision: keep the nodes whose quantization hurts most in float, found cheaply.

Ranking is a proxy, not a full evaluation per node: the float graph and the fully quantized variant
both run on a handful of rows with every candidate node's output exposed, and each node is scored by
the noise its quantization *adds*: the noise-to-signal ratio of its output minus the worst of its
inputs' (as accuracy-aware PTQ tools rank layers by SQNR). That costs two inferences, where
evaluating every slice once per node cost seconds per node on a 224² model (see NOTES).

The ranked list is then confirmed with full evaluations by galloping bisection: keep the top 1, 2,
4, … nodes in float until every slice floor (``max_drop_pp``) holds, then bisect between the last
count that failed and the first that held, so finding k nodes costs about 2·log2(k) evaluations.
Each extra float node can cost latency, so the caller's ``latency_ok(variant)`` is asked about the
variant found before it is accepted; when it says no, the result says so.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry, QLinearOpsRegistry

from edgeproof.data.feeds import Inputs, declared_of_session, row_feeds
from edgeproof.data.slices import CalibrationSet
from edgeproof.errors import DataError
from edgeproof.evaluate import SliceEvaluator, worst_drop_pp
from edgeproof.measure.session import open_session
from edgeproof.model import Model, as_model, graph_of
from edgeproof.records import Evaluation, RuntimeSettings
from edgeproof.variants.build import DEFAULT_CACHE_DIR, build_variant
from edgeproof.variants.prepare import prepare_for_quantization
from edgeproof.variants.recipe import ExcludedNode, Recipe, Variant

LatencyOk = Callable[[Variant], bool]
# Ops that only move, select or clamp values: keeping them in float saves no accuracy worth ranking.
_LAYOUT_OPS = frozenset(
    "Reshape Transpose Squeeze Unsqueeze Flatten Slice Split Gather GatherElements Concat Pad MaxPool "
    "Relu Clip Resize TopK Where ArgMax Identity Shape Expand Cast".split()
)


# Rows the sensitivity proxy runs on: enough to average out one odd image, few enough to cost nothing.
PROXY_ROWS = 8
# The proxy runs quantized graphs unfused (Q -> DQ -> float op), so every node's output is a float
# tensor that can be compared with the float graph's.
_PROXY_SETTINGS = RuntimeSettings(intra_op_threads=0, graph_optimization_level="basic")
_EXPOSABLE = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16}


@dataclass(frozen=True)
class NodeSensitivity:
    """How much noise quantizing one node adds (its output's noise-to-signal ratio minus its inputs').

    ``added_nsr`` is None when the quantized graph hides the node's output (fused or renamed); such
    nodes rank last.
    """

    name: str
    op_type: str
    output_nsr: float | None
    added_nsr: float | None

    @property
    def output_sqnr_db(self) -> float | None:
        if self.output_nsr is None:
            return None
        return float("inf") if self.output_nsr <= 0 else float(-10.0 * np.log10(self.output_nsr))


@dataclass(frozen=True)
class MixedStep:
    """One greedy step: the nodes in float, the variant, and what was judged."""

    float_nodes: tuple[str, ...]
    variant_sha256: str
    latency_ok: bool | None
    worst_drop_pp: float | None
    failing: dict[str, tuple[float, float]]


@dataclass(frozen=True)
class MixedResult:
    """The chosen variant, its evaluation, whether every floor holds, and why the search stopped."""

    variant: Variant
    evaluation: Evaluation
    floors_met: bool
    reason: str
    ranking: list[NodeSensitivity]
    steps: list[MixedStep]


def candidate_nodes(model: Model | str | Path, recipe: Recipe, cache_dir: str | Path = DEFAULT_CACHE_DIR) -> list[tuple[str, str]]:
    """(name, op_type) of nodes the recipe's quantizer would touch and that do arithmetic."""
    if recipe.precision == "fp32":
        return []
    if recipe.precision == "fp16":
        graph = graph_of(model).graph
        supported: set[str] | None = None
    else:
        graph = graph_of(prepare_for_quantization(model, cache_dir).path).graph
        if recipe.precision == "int8-dynamic":
            # quantize_dynamic rewrites Gemm as MatMul + Add, and quantizes the MatMul.
            supported = set(IntegerOpsRegistry) | {"Gemm"}
        else:
            supported = set(QDQRegistry) | set(QLinearOpsRegistry) if recipe.format == "QDQ" else set(QLinearOpsRegistry)
    excluded = {n.name for n in recipe.excluded_nodes}
    return [
        (n.name, n.op_type)
        for n in graph.node
        if n.name and n.name not in excluded and n.op_type not in _LAYOUT_OPS and (supported is None or n.op_type in supported)
    ]


def _disagreement(evaluation: Evaluation) -> float:
    return sum(1.0 - m.agreement for m in evaluation.slices.values()) / len(evaluation.slices)


def _failures_text(failing: dict[str, tuple[float, float]]) -> str:
    return ", ".join(f"{name} (drop {drop:.1f} pp > {floor:g})" for name, (drop, floor) in failing.items())


def _exposed(graph: onnx.ModelProto, names: list[str], out: Path) -> list[str]:
    """Save ``graph`` with those of ``names`` it computes as float tensors added as outputs; return them."""
    model = onnx.ModelProto()
    model.CopyFrom(graph)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference gives up on some contrib ops; the types it found still help
        inferred = model
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*inferred.graph.value_info, *inferred.graph.output]}
    produced = {o for n in model.graph.node for o in n.output}
    present = {o.name for o in model.graph.output}
    kept = [t for t in names if t in produced and types.get(t) in _EXPOSABLE]
    model.graph.output.extend([onnx.helper.make_tensor_value_info(t, types[t], None) for t in kept if t not in present])
    onnx.save(model, str(out))
    return kept


def _as_consumed(graph: onnx.ModelProto, names: list[str]) -> dict[str, str]:
    """Where the quantized graph holds each float tensor as its consumers see it: the output of the
    QuantizeLinear -> DequantizeLinear pair a QDQ quantizer puts after it (which also stands in for a
    Relu the quantizer folded into the quantization), else the tensor itself."""
    by_input: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.graph.node:
        for i in n.input[:1]:
            by_input.setdefault(i, []).append(n)
    seen = {}
    for t in names:
        q = next((n for n in by_input.get(t, []) if n.op_type == "QuantizeLinear"), None)
        dq = next((n for n in by_input.get(q.output[0], []) if n.op_type == "DequantizeLinear"), None) if q is not None else None
        seen[t] = dq.output[0] if dq is not None else t
    return seen


def _activations(path: Path, names: list[str], x: Inputs, workdir: Path) -> dict[str, np.ndarray]:
    """The float values of ``names`` (those the graph computes), as their consumers see them, for rows ``x``."""
    exposed_path = workdir / f"exposed-{len(list(workdir.iterdir()))}.onnx"
    graph = graph_of(path)
    alias = _as_consumed(graph, names)
    kept_aliases = _exposed(graph, sorted(set(alias.values())), exposed_path)
    kept = [t for t in names if alias[t] in kept_aliases]
    sess = open_session(exposed_path, _PROXY_SETTINGS)
    wanted = sorted({alias[t] for t in kept})
    # every input fed (edgeproof.data.feeds); rows that take several runs are joined, flattened
    runs = [sess.run(wanted, feeds) for _, feeds in row_feeds(declared_of_session(sess), x, PROXY_ROWS).runs()]
    by_alias = {name: np.concatenate([np.asarray(r[i], dtype=np.float64).ravel() for r in runs]) for i, name in enumerate(wanted)}
    return {t: by_alias[alias[t]] for t in kept}


def _nsr(reference: np.ndarray, other: np.ndarray) -> float:
    """Noise-to-signal power ratio of ``other`` against ``reference`` (0: identical)."""
    if reference.shape != other.shape:
        return float("nan")
    signal = float(np.sum(reference * reference))
    noise = float(np.sum((other - reference) ** 2))
    return noise / signal if signal > 0 else (0.0 if noise == 0 else float("inf"))


# Ops a quantizer or ONNX Runtime fuses into the node before them (Conv + Relu): the node's output
# is then only visible after them.
_FUSED_AFTER = frozenset("Relu Clip LeakyRelu Sigmoid HardSigmoid HardSwish".split())


def _output_chain(tensor: str, consumers: dict[str, list[onnx.NodeProto]], depth: int = 3) -> list[str]:
    """A node's output and, where its only consumer is an activation that may be fused into it, that
    activation's output (and so on): the first of these the quantized graph computes stands for it."""
    chain = [tensor]
    for _ in range(depth):
        after = consumers.get(chain[-1], [])
        if len(after) != 1 or after[0].op_type not in _FUSED_AFTER:
            break
        chain.append(after[0].output[0])
    return chain


def _proxy_recipe(recipe: Recipe) -> Recipe:
    """The recipe whose variant keeps every float tensor visible: QOperator kernels hide them, so a
    QOperator recipe is ranked on its QDQ twin (same tensors, same ranges, same int8 steps)."""
    return recipe.model_copy(update={"format": "QDQ"}) if recipe.precision == "int8-static" and recipe.format == "QOperator" else recipe


def rank_nodes(
    model: Model | str | Path,
    recipe: Recipe,
    rows: np.ndarray | Inputs,
    calibration: CalibrationSet | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
) -> list[NodeSensitivity]:
    """Rank the recipe's candidate nodes by the noise their quantization adds, worst first.

    The float graph the quantizer saw and the fully quantized variant run on the first
    ``PROXY_ROWS`` of ``rows``; a node's score is its output's noise-to-signal ratio minus the
    largest of its activation inputs'. Nodes whose output the variant hides rank last.
    """
    model = as_model(model)
    candidates = candidate_nodes(model, recipe, cache_dir)
    if not candidates:
        return []
    float_path = model.path if recipe.precision == "fp16" else prepare_for_quantization(model, cache_dir).path
    float_graph = graph_of(float_path).graph
    nodes = {n.name: n for n in float_graph.node}
    producers = {o for n in float_graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in float_graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {name: _output_chain(nodes[name].output[0], consumers) for name, _ in candidates}
    inputs = {name: [i for i in nodes[name].input if i in producers] for name, _ in candidates}
    tensors = sorted({*(t for chain in outputs.values() for t in chain), *(i for ins in inputs.values() for i in ins)})
    variant = build_variant(model, _proxy_recipe(recipe), calibration, cache_dir)
    x = Inputs.of(rows).head(PROXY_ROWS)
    with tempfile.TemporaryDirectory(prefix="edgeproof-mixed-") as tmp:
        ref = _activations(Path(float_path), tensors, x, Path(tmp))
        quant = _activations(Path(variant.path), tensors, x, Path(tmp))
    nsr = {t: _nsr(ref[t], quant[t]) for t in tensors if t in ref and t in quant}
    ranking = []
    for name, op_type in candidates:
        out = next((nsr[t] for t in outputs[name] if t in nsr), None)
        if out is None or not np.isfinite(out):
            ranking.append(NodeSensitivity(name, op_type, None, None))
            continue
        worst_in = max((nsr[i] for i in inputs[name] if i in nsr and np.isfinite(nsr[i])), default=0.0)
        ranking.append(NodeSensitivity(name, op_type, out, out - worst_in))
    return sorted(ranking, key=lambda s: (s.added_nsr is None, -(s.added_nsr or 0.0), -(s.output_nsr or 0.0)))


def mixed_precision(
    model: Model | str | Path,
    recipe: Recipe,
    judge: SliceEvaluator,
    calibration: CalibrationSet | None = None,
    latency_ok: LatencyOk | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    max_float_nodes: int | None = None,
    rows: np.ndarray | Inputs | None = None,
) -> MixedResult:
    """Keep the fewest top-ranked nodes in float that make every slice's ``max_drop_pp`` hold.

    Nodes are ranked by ``rank_nodes`` on ``rows`` (default: the calibration rows, else the first
    slice's); the count is found by galloping bisection over full evaluations, assuming that
    keeping more of the ranked nodes in float never hurts accuracy. ``latency_ok(variant)`` (e.g. a
    measured p95 against the contract's budget) is asked about the fully quantized variant and
    about the variant found; when it rejects one, the result says so and returns the last variant
    it accepted. Nodes kept here carry reason "accuracy"; nodes the recipe already excludes (e.g.
    for speed) stay excluded.
    """
    if not any(s.spec.max_drop_pp is not None for s in judge.slices):
        raise DataError("mixed precision needs at least one slice with a max_drop_pp floor")
    model = as_model(model)
    best = build_variant(model, recipe, calibration, cache_dir)
    ok = latency_ok(best) if latency_ok is not None else None
    best_ev = judge(best.path)
    base_failing = judge.failures(best_ev)
    steps = [MixedStep((), best.sha256, ok, None if ok is False else worst_drop_pp(best_ev), base_failing)]
    if ok is False:
        return MixedResult(best, best_ev, not base_failing, "the fully quantized variant already breaks the latency budget", [], steps)
    if not base_failing:
        return MixedResult(best, best_ev, True, "every slice floor holds with all nodes quantized", [], steps)

    if rows is None:
        rows = calibration.inputs if calibration is not None else judge.slices[0].inputs
    ranking = rank_nodes(model, recipe, rows, calibration, cache_dir)
    limit = len(ranking) if max_float_nodes is None else min(max_float_nodes, len(ranking))
    tried: dict[int, tuple[Variant, Evaluation, dict[str, tuple[float, float]]]] = {}

    def holds(k: int) -> bool:
        names = tuple(s.name for s in ranking[:k])
        trial = build_variant(model, recipe.with_excluded([ExcludedNode(name=n, reason="accuracy") for n in names]), calibration, cache_dir)
        ev = judge(trial.path)
        failing = judge.failures(ev)
        steps.append(MixedStep(names, trial.sha256, None, worst_drop_pp(ev), failing))
        tried[k] = (trial, ev, failing)
        return not failing

    failed, k = 0, 1
    while k < limit and not holds(k):
        failed, k = k, 2 * k
    if k >= limit:
        k = limit
        if k == 0 or (k not in tried and not holds(k)) or (k in tried and tried[k][2]):
            failing = tried[k][2] if k in tried else base_failing
            what = f"max_float_nodes={max_float_nodes}" if max_float_nodes is not None and limit < len(ranking) else f"all {limit}"
            reason = f"floors unmet with {what} ranked nodes in float; over their floor: {_failures_text(failing)}"
            return MixedResult(best, best_ev, False, reason, ranking, steps)
    while k - failed > 1:
        mid = (k + failed) // 2
        if holds(mid):
            k = mid
        else:
            failed = mid
    trial, ev, _ = tried[k]
    names = [s.name for s in ranking[:k]]
    evaluations = len(steps) - 1
    if latency_ok is not None:
        fast_enough = latency_ok(trial)
        steps[-1] = MixedStep(tuple(names), trial.sha256, fast_enough, steps[-1].worst_drop_pp, steps[-1].failing)
        if not fast_enough:
            reason = (
                f"stopped: keeping {', '.join(names)} in float as well breaks the latency budget; "
                f"over their floor: {_failures_text(base_failing)}"
            )
            return MixedResult(best, best_ev, False, reason, ranking, steps)
    reason = (
        f"every slice floor holds with {k} node(s) in float: {', '.join(names)} "
        f"({evaluations} full evaluations over {len(ranking)} nodes ranked by added quantization noise)"
    )
    return MixedResult(trial, ev, True, reason, ranking, steps)
