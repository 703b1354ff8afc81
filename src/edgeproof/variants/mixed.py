"""Mixed precision: keep the nodes whose quantization hurts the worst slice most in float.

Sensitivity is measured, not guessed: for each candidate node, the variant with only that node
kept in float is built and evaluated on every slice, and nodes are ranked by the worst-slice
accuracy drop that remains (lower is better; mean disagreement with the reference breaks ties).
Nodes are then kept in float in that order until every slice floor (``max_drop_pp``) holds.
Each extra float node can cost latency, so the caller's ``latency_ok(variant)`` is asked before
a variant is accepted; when it says no, the search stops and says so.

Cost: one quantization and one evaluation per candidate node plus one per greedy step (static
INT8 calibration ranges are computed once and reused; repeated recipes come from the cache).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry, QLinearOpsRegistry

from edgeproof.data.slices import CalibrationSet
from edgeproof.errors import DataError
from edgeproof.evaluate import SliceEvaluator, worst_drop_pp
from edgeproof.model import Model, as_model, graph_of
from edgeproof.records import Evaluation
from edgeproof.variants.build import DEFAULT_CACHE_DIR, build_variant
from edgeproof.variants.prepare import prepare_for_quantization
from edgeproof.variants.recipe import ExcludedNode, Recipe, Variant

LatencyOk = Callable[[Variant], bool]
# Ops that only move, select or clamp values: keeping them in float saves no accuracy worth ranking.
_LAYOUT_OPS = frozenset(
    "Reshape Transpose Squeeze Unsqueeze Flatten Slice Split Gather GatherElements Concat Pad MaxPool "
    "Relu Clip Resize TopK Where ArgMax Identity Shape Expand Cast".split()
)


@dataclass(frozen=True)
class NodeSensitivity:
    """What keeping one node in float (all else quantized) leaves of the damage."""

    name: str
    op_type: str
    worst_drop_pp: float
    disagreement: float
    gain_pp: float


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


def rank_nodes(
    model: Model | str | Path,
    recipe: Recipe,
    judge: SliceEvaluator,
    calibration: CalibrationSet | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
) -> list[NodeSensitivity]:
    """Rank candidate nodes by how much keeping each alone in float repairs the worst slice."""
    model = as_model(model)
    base_worst = worst_drop_pp(judge(build_variant(model, recipe, calibration, cache_dir).path))
    ranking = []
    for name, op_type in candidate_nodes(model, recipe, cache_dir):
        one_float = recipe.with_excluded([ExcludedNode(name=name, reason="accuracy")])
        ev = judge(build_variant(model, one_float, calibration, cache_dir).path)
        worst = worst_drop_pp(ev)
        ranking.append(NodeSensitivity(name, op_type, worst, _disagreement(ev), base_worst - worst))
    return sorted(ranking, key=lambda s: (s.worst_drop_pp, s.disagreement))


def mixed_precision(
    model: Model | str | Path,
    recipe: Recipe,
    judge: SliceEvaluator,
    calibration: CalibrationSet | None = None,
    latency_ok: LatencyOk | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    max_float_nodes: int | None = None,
) -> MixedResult:
    """Keep the most harmful nodes in float until every slice's ``max_drop_pp`` holds.

    ``latency_ok(variant)`` (e.g. a measured p95 against the contract's budget) is asked about
    every variant before it is accepted; the search stops, and says so, at the first variant it
    rejects, returning the last accepted one. Nodes kept here carry reason "accuracy"; nodes the
    recipe already excludes (e.g. for speed) stay excluded.
    """
    if not any(s.spec.max_drop_pp is not None for s in judge.slices):
        raise DataError("mixed precision needs at least one slice with a max_drop_pp floor")

    def step_for(variant: Variant, float_nodes: tuple[str, ...]) -> tuple[MixedStep, Evaluation | None]:
        ok = latency_ok(variant) if latency_ok is not None else None
        if ok is False:
            return MixedStep(float_nodes, variant.sha256, ok, None, {}), None
        ev = judge(variant.path)
        return MixedStep(float_nodes, variant.sha256, ok, worst_drop_pp(ev), judge.failures(ev)), ev

    model = as_model(model)
    best = build_variant(model, recipe, calibration, cache_dir)
    step, best_ev = step_for(best, ())
    steps = [step]
    if best_ev is None:
        ev = judge(best.path)
        return MixedResult(best, ev, not judge.failures(ev), "the fully quantized variant already breaks the latency budget", [], steps)
    if not step.failing:
        return MixedResult(best, best_ev, True, "every slice floor holds with all nodes quantized", [], steps)

    ranking = rank_nodes(model, recipe, judge, calibration, cache_dir)
    kept: list[str] = []
    failing = step.failing
    for sensitivity in ranking:
        if max_float_nodes is not None and len(kept) >= max_float_nodes:
            reason = f"stopped at max_float_nodes={max_float_nodes}; over their floor: {_failures_text(failing)}"
            return MixedResult(best, best_ev, False, reason, ranking, steps)
        trial_nodes = (*kept, sensitivity.name)
        trial_recipe = recipe.with_excluded([ExcludedNode(name=n, reason="accuracy") for n in trial_nodes])
        trial = build_variant(model, trial_recipe, calibration, cache_dir)
        step, trial_ev = step_for(trial, trial_nodes)
        steps.append(step)
        if trial_ev is None:
            reason = (
                f"stopped: keeping {sensitivity.name} in float as well breaks the latency budget; "
                f"over their floor: {_failures_text(failing)}"
            )
            return MixedResult(best, best_ev, False, reason, ranking, steps)
        kept, best, best_ev, failing = list(trial_nodes), trial, trial_ev, step.failing
        if not failing:
            return MixedResult(
                best,
                best_ev,
                True,
                f"every slice floor holds with {len(kept)} node(s) in float: {', '.join(kept)}",
                ranking,
                steps,
            )
    reason = f"floors unmet with all {len(ranking)} candidate nodes in float; over their floor: {_failures_text(failing)}"
    return MixedResult(best, best_ev, False, reason, ranking, steps)
