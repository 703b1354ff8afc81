"""Per-slice metrics of a model variant against its float reference, one metric per judged output.

A metric scores each row (``top1``/``topk:K``: 1 when right; ``mse``/``mae``: the row's error;
``cosine``: the row's cosine similarity to its target; ``file.py:fn``: whatever the user's
function returns per row, or one number for the slice) and the slice's value is their mean.
Per-row scores are kept on the Evaluation so a gate can test a paired difference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.data.feeds import Inputs, declared_of_session, row_feeds
from edgeproof.data.pipeline import Pipeline, call_user, load_function, topk
from edgeproof.data.slices import Slice
from edgeproof.errors import DataError, ModelError
from edgeproof.measure.session import open_session, run_checked
from edgeproof.model import Model, as_model
from edgeproof.records import Evaluation, OutputMetrics, PolicyOutcome, RuntimeSettings, SliceMetrics

Metric = Callable[[np.ndarray, np.ndarray], float]
# Evaluation wants throughput, not the single-thread setting latency is measured under; 0 = all cores.
EVAL_SETTINGS = RuntimeSettings(intra_op_threads=0)
# Rows summing to 1 within this are taken as probabilities already, not logits.
_PROB_SUM_TOL = 1e-3
# Built-in metrics and whether a higher value is better.
BUILTIN_METRICS = {"top1": True, "mse": False, "mae": False, "cosine": True}
# Two continuous outputs "agree" on a row when they are this close (relative, with a small absolute floor).
_AGREE_RTOL, _AGREE_ATOL = 1e-2, 1e-3


def top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose highest-scoring class is the label."""
    return float(np.mean(predictions_of(outputs) == labels))


def predictions_of(outputs: np.ndarray) -> np.ndarray:
    """Class index per row: the row itself when outputs are already class indices (an argmax
    postprocess), else argmax over everything after the batch axis."""
    if outputs.ndim == 1 and np.issubdtype(outputs.dtype, np.integer):
        return outputs
    return outputs.reshape(len(outputs), -1).argmax(axis=1)


def is_class_scores(outputs: np.ndarray) -> bool:
    """Float scores over several classes per row (what a confidence means something for)."""
    return np.issubdtype(outputs.dtype, np.floating) and outputs.ndim >= 2 and int(np.prod(outputs.shape[1:])) > 1


def confidences_of(outputs: np.ndarray) -> np.ndarray:
    """Top-class probability per row; outputs that are not already probabilities get a softmax."""
    scores = outputs.reshape(len(outputs), -1).astype(np.float64)
    is_prob = scores.min() >= 0.0 and np.allclose(scores.sum(axis=1), 1.0, atol=_PROB_SUM_TOL)
    if not is_prob:
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
    return scores.max(axis=1)


@dataclass(frozen=True)
class OutputMetric:
    """How one output is judged: its name (None: the model's first output), the metric, which way
    is better, and the label key it reads (None: the output's own name, else the dataset's ``y``)."""

    output: str | None = None
    name: str = "top1"
    higher_is_better: bool = True
    labels: str | None = None
    fn: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    @property
    def correctness(self) -> bool:
        """Per-row scores are right (1) / wrong (0): a paired test on them is McNemar's."""
        return self.name == "top1" or self.name.startswith("topk:")


def parse_topk(name: str) -> int | None:
    """K of ``topk:K``, or None when ``name`` is not a top-k metric."""
    head, _, k = name.partition(":")
    if head != "topk":
        return None
    if not k.isdigit() or int(k) < 1:
        raise DataError(f"metric {name!r}: write topk:K with K a positive integer, e.g. topk:5")
    return int(k)


def output_metric(
    name: str, output: str | None = None, higher_is_better: bool | None = None, labels: str | None = None, base_dir: Path | None = None
) -> OutputMetric:
    """An OutputMetric from a contract's words: a built-in name, ``topk:K`` or ``file.py:fn`` (loaded
    from ``base_dir``; ``higher_is_better`` must then be said)."""
    if name in BUILTIN_METRICS or parse_topk(name) is not None:
        natural = BUILTIN_METRICS.get(name, True)
        if higher_is_better is not None and higher_is_better != natural:
            raise DataError(f"metric {name!r}: {'higher' if natural else 'lower'} is better; higher_is_better cannot change that")
        return OutputMetric(output, name, natural, labels)
    file, sep, func = name.rpartition(":")
    if not (sep and file.endswith(".py") and func.isidentifier()):
        known = ", ".join([*BUILTIN_METRICS, "topk:K", "file.py:fn"])
        raise DataError(f"metric {name!r}: unknown; expected one of {known}")
    if higher_is_better is None:
        raise DataError(f"metric {name!r} is a function: say which way is better with higher_is_better = true or false")
    return OutputMetric(output, name, higher_is_better, labels, load_function(name, base_dir or Path.cwd(), "metric"))


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1).astype(np.float64)


def row_scores(metric: OutputMetric, outputs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray | None, float]:
    """(per-row scores or None, the slice's value) of one output against its labels."""
    n = len(outputs)
    if len(labels) != n:
        raise DataError(f"metric {metric.name!r}: {n} outputs but {len(labels)} labels")
    k = parse_topk(metric.name)
    if metric.name == "top1":
        per_row = (predictions_of(outputs) == labels.reshape(n, -1)[:, 0]).astype(np.float64)
    elif k is not None:
        ranked = outputs if outputs.ndim == 2 and np.issubdtype(outputs.dtype, np.integer) else topk(outputs, k)
        per_row = (ranked[:, :k] == labels.reshape(n, -1)[:, :1]).any(axis=1).astype(np.float64)
    elif metric.fn is not None:
        result = call_user(metric.fn, f"metric {metric.name!r}", outputs, labels)
        try:
            scores = np.asarray(result, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"metric {metric.name!r} returned {type(result).__name__}, not a number or per-row numbers") from None
        if not np.isfinite(scores).all():
            raise DataError(f"metric {metric.name!r} returned NaN or infinity")
        if scores.ndim == 0:
            return None, float(scores)
        if scores.shape != (n,):
            raise DataError(f"metric {metric.name!r} returned shape {list(scores.shape)}; give one number or one per row ({n})")
        per_row = scores
    else:
        out, lab = _rows(outputs), _rows(labels)
        if out.shape != lab.shape:
            raise DataError(f"metric {metric.name!r}: outputs have {out.shape[1]} values per row, labels {lab.shape[1]}")
        if metric.name == "mse":
            per_row = ((out - lab) ** 2).mean(axis=1)
        elif metric.name == "mae":
            per_row = np.abs(out - lab).mean(axis=1)
        else:
            norms = np.linalg.norm(out, axis=1) * np.linalg.norm(lab, axis=1)
            per_row = np.where(norms > 0, (out * lab).sum(axis=1) / np.maximum(norms, 1e-30), 0.0)
    return per_row, float(per_row.mean())


def infer_outputs(
    model_path: str | Path, x: np.ndarray | Inputs, batch_size: int = 64, settings: RuntimeSettings = EVAL_SETTINGS
) -> dict[str, np.ndarray]:
    """Every output of the model, by name, for every row of ``x``: an array (the rows of the
    model's one data input) or ``Inputs`` (rows by input name, and fixed feeds such as a state or
    a sample rate), fed as ``edgeproof.data.feeds`` says: ``batch_size`` rows per run where rows
    can share a run, a fixed batch padded and trimmed, rows with a fixed state one per run.
    """
    sess = open_session(model_path, settings)
    names = [o.name for o in sess.get_outputs()]
    feeder = row_feeds(declared_of_session(sess), Inputs.of(x), batch_size, what=str(model_path))
    chunks: list[list[np.ndarray]] = []
    for n, feeds in feeder.runs():
        outs = [np.asarray(o) for o in run_checked(sess, feeds, f"{model_path}")]
        # a run of one whole row gives that row's outputs; a batched run one output row per data row
        # (a scalar output speaks for every row of its run)
        chunks.append([o[None] if feeder.stacked else (np.repeat(o[None], n, axis=0) if o.ndim == 0 else o[:n]) for o in outs])
    out = {}
    for i, name in enumerate(names):
        joined = np.concatenate([c[i] for c in chunks])
        out[name] = joined.astype(np.float32) if np.issubdtype(joined.dtype, np.floating) else joined
    return out


def infer(model_path: str | Path, x: np.ndarray | Inputs, batch_size: int = 64, settings: RuntimeSettings = EVAL_SETTINGS) -> np.ndarray:
    """First output of the model for every row of ``x`` (see ``infer_outputs``)."""
    return next(iter(infer_outputs(model_path, x, batch_size, settings).values()))


def _judged_outputs(
    model_path: str | Path, x: np.ndarray | Inputs, pipeline: Pipeline | None, batch_size: int, settings: RuntimeSettings = EVAL_SETTINGS
) -> dict[str, np.ndarray]:
    outputs = infer_outputs(model_path, x, batch_size, settings)
    return pipeline.postprocess(outputs) if pipeline is not None else outputs


@dataclass(frozen=True)
class Reference:
    """The float reference's outputs on each slice, computed once and compared against many variants.

    ``outputs`` holds each slice's first output (what a single-output caller compares);
    ``all_outputs`` every output by name, after the pipeline's postprocessing."""

    sha256: str
    outputs: dict[str, np.ndarray]
    all_outputs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def reference_outputs(
    model: Model | str | Path, slices: Sequence[Slice], batch_size: int = 64, pipeline: Pipeline | None = None
) -> Reference:
    """Run the float reference (loaded, or a path) on every slice."""
    model = as_model(model)
    every = {s.name: _judged_outputs(model.path, s.inputs, pipeline, batch_size) for s in slices}
    return Reference(sha256=model.sha256, outputs={k: next(iter(v.values())) for k, v in every.items()}, all_outputs=every)


def labels_for(metric: OutputMetric, output: str, primary: bool, s: Slice) -> np.ndarray:
    """The labels an output is judged against: ``y_<part>__<key>`` (key: the metric's ``labels`` or the
    output's name), else the part's ``y`` for the first judged output."""
    key = metric.labels or output
    if key in s.labels:
        return s.labels[key]
    if primary and metric.labels is None:
        return s.y
    raise DataError(f"slice {s.name!r}: no labels {key!r} for output {output!r} (add y_{s.spec.part}__{key} to the data)")


def _as_named(outputs: np.ndarray | Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    if isinstance(outputs, np.ndarray):
        return {names[0] if names else "output": outputs}
    return dict(outputs)


def _agreement(out: np.ndarray, ref: np.ndarray, metric: OutputMetric) -> float:
    if metric.correctness or (out.ndim == 1 and np.issubdtype(out.dtype, np.integer)):
        return float(np.mean(predictions_of(out) == predictions_of(ref)))
    close = np.isclose(_rows(out), _rows(ref), rtol=_AGREE_RTOL, atol=_AGREE_ATOL).all(axis=1)
    return float(close.mean())


def _output_metrics(metric: OutputMetric, output: str, value: float, ref_value: float, agreement: float) -> OutputMetrics:
    if metric.higher_is_better:
        return OutputMetrics(
            metric=metric.name,
            higher_is_better=True,
            value=value,
            reference_value=ref_value,
            drop_pp=(ref_value - value) * 100.0,
            agreement=agreement,
        )
    increase = value - ref_value
    pct = 100.0 * increase / abs(ref_value) if ref_value != 0 else (0.0 if increase == 0 else None)
    return OutputMetrics(
        metric=metric.name,
        higher_is_better=False,
        value=value,
        reference_value=ref_value,
        increase=increase,
        increase_pct=pct,
        agreement=agreement,
    )


def worsening_of(m: OutputMetrics) -> float:
    """How much worse than the reference, as one number for ranking: the drop in points for a
    higher-is-better metric, the relative increase in percent for an error (100 from a zero error)."""
    if m.higher_is_better:
        return m.drop_pp or 0.0
    if m.increase_pct is not None:
        return m.increase_pct
    return 100.0 if (m.increase or 0.0) > 0 else 0.0


def metric_label(metrics: Sequence[OutputMetric], names: Sequence[str]) -> str:
    """What an Evaluation calls its metric: ``top1`` for one unnamed top-1, else ``output:metric, …``."""
    if len(metrics) == 1 and metrics[0].output is None:
        return metrics[0].name
    return ", ".join(f"{m.output or (names[0] if names else 'output')}:{m.name}" for m in metrics)


def compare(
    outputs: Mapping[str, np.ndarray | Mapping[str, np.ndarray]],
    reference: Reference,
    slices: Sequence[Slice],
    dataset_id: str,
    metric: Metric | None = None,
    metric_name: str = "top1",
    metrics: Sequence[OutputMetric] | None = None,
    policy: float | None = None,
) -> Evaluation:
    """Per-slice metrics of ``outputs`` against the reference's (pure: no inference here).

    ``policy`` is a confidence threshold: where the first output (class scores, integer labels) is
    less sure than that, the reference answers instead; each slice then says how often, and its
    top-1 accuracy with the policy.

    ``metrics`` says how each output is judged (default: top-1 on the first output); the first is
    the slice's headline (``accuracy``/``drop_pp``). ``metric(outputs, labels) -> float`` is the
    older form: one higher-is-better number for the first output, named ``metric_name``.
    """
    if metrics is None:
        metrics = [OutputMetric(fn=metric, name=metric_name)] if metric is not None else [OutputMetric()]
    nominal = next((s.name for s in slices if s.kind == "nominal"), None)
    per_slice: dict[str, SliceMetrics] = {}
    scores: dict[str, dict[str, list[float]]] = {}
    predictions: dict[str, list[int]] = {}
    labels: dict[str, list[int]] = {}
    confidence: dict[str, float | None] = {}
    outcomes: dict[str, PolicyOutcome] = {}
    names: list[str] = []
    for s in slices:
        if s.name not in outputs or s.name not in reference.outputs:
            raise DataError(f"slice {s.name!r}: no outputs to evaluate (candidate or reference missing it)")
        ref_all = reference.all_outputs.get(s.name) or {"output": reference.outputs[s.name]}
        names = list(ref_all)
        cand_all = _as_named(outputs[s.name], names)
        judged: dict[str, OutputMetrics] = {}
        for i, m in enumerate(metrics):
            name = m.output or names[0]
            if name not in cand_all or name not in ref_all:
                raise DataError(f"evaluation: no output {name!r} to judge by {m.name} (outputs: {', '.join(ref_all)})")
            out, ref = cand_all[name], ref_all[name]
            if out.shape != ref.shape:
                raise ModelError(f"slice {s.name!r}: variant output {name!r} is {list(out.shape)} but the reference's is {list(ref.shape)}")
            y = labels_for(m, name, i == 0, s)
            if metric is not None and m.fn is metric:  # the older whole-slice callable: one number per slice
                value, ref_value, rows = float(call_user(m.fn, f"metric {m.name!r}", out, y)), float(m.fn(ref, y)), None
            else:
                rows, value = row_scores(m, out, y)
                _, ref_value = row_scores(m, ref, y)
            judged[name] = _output_metrics(m, name, value, ref_value, _agreement(out, ref, m))
            if rows is not None:
                scores.setdefault(s.name, {})[name] = rows.tolist()
            if i == 0 and (m.correctness or (metric is not None and m.fn is metric)) and y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
                predictions[s.name] = predictions_of(out).tolist()
                labels[s.name] = y.tolist()
            if i == 0 and policy is not None and is_class_scores(out) and y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
                outcomes[s.name] = policy_outcome(out, ref, y, policy, reference.sha256)
            if i == 0:
                confidence[s.name] = float(confidences_of(out).mean()) if is_class_scores(out) else None
                ref_conf = float(confidences_of(ref).mean()) if is_class_scores(ref) else None
        first = judged[metrics[0].output or names[0]]
        conf = confidence[s.name]
        per_slice[s.name] = SliceMetrics(
            slice_id=s.id,
            n=len(s.y),
            accuracy=first.value,
            reference_accuracy=first.reference_value,
            drop_pp=worsening_of(first),
            agreement=first.agreement,
            mean_confidence=conf,
            confidence_shift=None if conf is None or ref_conf is None else conf - ref_conf,
            outputs=judged,
            policy=outcomes.get(s.name),
        )
    for s in slices:
        conf, base = confidence[s.name], confidence.get(nominal) if nominal else None
        if nominal is not None and s.name != nominal and conf is not None and base is not None:
            per_slice[s.name] = per_slice[s.name].model_copy(update={"confidence_drop": base - conf})
    return Evaluation(
        dataset_id=dataset_id,
        reference_sha256=reference.sha256,
        metric=metric_label(metrics, names),
        outputs={m.output or names[0]: m.name for m in metrics},
        higher_is_better={m.output or names[0]: m.higher_is_better for m in metrics},
        slices=per_slice,
        predictions=predictions,
        labels=labels,
        scores=scores,
    )


def policy_outcome(out: np.ndarray, ref: np.ndarray, y: np.ndarray, threshold: float, reference_sha256: str) -> PolicyOutcome:
    """The policy on one slice: rows under ``threshold`` take the reference's class."""
    low = confidences_of(out) < threshold
    chosen = np.where(low, predictions_of(ref), predictions_of(out))
    return PolicyOutcome(
        min_confidence=threshold,
        fallback=f"float reference {reference_sha256[:12]}",
        fallback_rate=float(low.mean()) if len(low) else 0.0,
        accuracy=float((chosen == y).mean()) if len(y) else 0.0,
    )


def evaluate(
    model_path: str | Path,
    reference: Reference,
    slices: Sequence[Slice],
    dataset_id: str,
    metric: Metric | None = None,
    metric_name: str = "user",
    batch_size: int = 64,
    metrics: Sequence[OutputMetric] | None = None,
    pipeline: Pipeline | None = None,
    settings: RuntimeSettings = EVAL_SETTINGS,
    policy: float | None = None,
) -> Evaluation:
    """Run ``model_path`` on every slice (postprocessed by ``pipeline``) and compare it with the float
    reference. ``settings`` matter for INT8: at graph optimisation ``basic`` ONNX Runtime runs QDQ as
    dequantize -> float op -> quantize, which gives other numbers than the fused kernels of ``all``."""
    outputs = {s.name: _judged_outputs(model_path, s.inputs, pipeline, batch_size, settings) for s in slices}
    return compare(outputs, reference, slices, dataset_id, metric, metric_name, metrics, policy)


def floor_failures(evaluation: Evaluation, slices: Sequence[Slice]) -> dict[str, tuple[float, float]]:
    """Floors a variant breaks: ``slice`` (the headline ``max_drop_pp``) or ``slice:floor-id`` for
    the others (``slice:ink.max_increase``) -> (observed, limit)."""
    out: dict[str, tuple[float, float]] = {}
    for s in slices:
        m = evaluation.slices[s.name]
        if s.spec.max_drop_pp is not None and m.drop_pp > s.spec.max_drop_pp:
            out[s.name] = (m.drop_pp, s.spec.max_drop_pp)
        for floor in s.spec.floors:
            observed = floor_value(evaluation, s.name, floor.output, floor.unit)
            if observed is not None and observed > floor.limit:
                out[f"{s.name}:{floor.output or 'first'}.{floor.unit}"] = (observed, floor.limit)
    return out


def floor_value(evaluation: Evaluation, slice_name: str, output: str | None, unit: str) -> float | None:
    """An output's worsening on a slice in a floor's unit (``max_drop_pp``, ``max_increase``,
    ``max_increase_pct``); None when the evaluation lacks it (an older record, another metric)."""
    m = evaluation.slices[slice_name]
    key = output or next(iter(evaluation.outputs), None)
    om = m.outputs.get(key) if key is not None else None
    if om is None:
        return m.drop_pp if unit == "max_drop_pp" else None
    return {"max_drop_pp": om.drop_pp, "max_increase": om.increase, "max_increase_pct": om.increase_pct}[unit]


def worst_drop_pp(evaluation: Evaluation) -> float:
    """The largest headline drop over all slices (points, or percent for an error metric)."""
    return max(m.drop_pp for m in evaluation.slices.values())


@dataclass(frozen=True)
class SliceEvaluator:
    """Judges any variant on fixed slices against one float reference (what search and mixed precision call)."""

    slices: tuple[Slice, ...]
    reference: Reference
    dataset_id: str
    metric: Metric | None = None
    metric_name: str = "user"
    metrics: tuple[OutputMetric, ...] | None = None
    pipeline: Pipeline | None = None
    policy: float | None = None

    @classmethod
    def for_reference(
        cls,
        reference: Model | str | Path,
        slices: Sequence[Slice],
        dataset_id: str,
        metric: Metric | None = None,
        metric_name: str = "user",
        metrics: Sequence[OutputMetric] | None = None,
        pipeline: Pipeline | None = None,
        policy: float | None = None,
    ) -> SliceEvaluator:
        """Run the float reference once on every slice and keep its outputs."""
        ref = reference_outputs(reference, slices, pipeline=pipeline)
        return cls(tuple(slices), ref, dataset_id, metric, metric_name, tuple(metrics) if metrics else None, pipeline, policy)

    def __call__(self, model_path: str | Path, settings: RuntimeSettings = EVAL_SETTINGS) -> Evaluation:
        return evaluate(
            model_path,
            self.reference,
            self.slices,
            self.dataset_id,
            self.metric,
            self.metric_name,
            metrics=self.metrics,
            pipeline=self.pipeline,
            settings=settings,
            policy=self.policy,
        )

    def failures(self, evaluation: Evaluation) -> dict[str, tuple[float, float]]:
        """Floors over their limit: name -> (observed, limit)."""
        return floor_failures(evaluation, self.slices)
