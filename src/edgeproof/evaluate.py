"""Per-slice accuracy, agreement and confidence of a model variant against its float reference."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeproof.data.slices import Slice
from edgeproof.errors import DataError, ModelError
from edgeproof.measure.session import open_session, run_checked
from edgeproof.model import Model, as_model
from edgeproof.records import Evaluation, RuntimeSettings, SliceMetrics

Metric = Callable[[np.ndarray, np.ndarray], float]
# Evaluation wants throughput, not the single-thread setting latency is measured under; 0 = all cores.
EVAL_SETTINGS = RuntimeSettings(intra_op_threads=0)
# Rows summing to 1 within this are taken as probabilities already, not logits.
_PROB_SUM_TOL = 1e-3


def top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose highest-scoring class is the label."""
    return float(np.mean(predictions_of(outputs) == labels))


def predictions_of(outputs: np.ndarray) -> np.ndarray:
    """Class index per row: argmax over everything after the batch axis."""
    return outputs.reshape(len(outputs), -1).argmax(axis=1)


def confidences_of(outputs: np.ndarray) -> np.ndarray:
    """Top-class probability per row; outputs that are not already probabilities get a softmax."""
    scores = outputs.reshape(len(outputs), -1).astype(np.float64)
    is_prob = scores.min() >= 0.0 and np.allclose(scores.sum(axis=1), 1.0, atol=_PROB_SUM_TOL)
    if not is_prob:
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
    return scores.max(axis=1)


def infer(model_path: str | Path, x: np.ndarray, batch_size: int = 64, settings: RuntimeSettings = EVAL_SETTINGS) -> np.ndarray:
    """First output of the model for every row of ``x``, run in batches.

    A symbolic batch axis is fed ``batch_size`` rows at a time; a fixed batch of b rows is fed
    exactly b rows per run, the last run padded with copies of the final row (and trimmed).
    """
    sess = open_session(model_path, settings)
    meta = sess.get_inputs()[0]
    fixed_batch = meta.shape[0] if meta.shape and isinstance(meta.shape[0], int) and meta.shape[0] > 0 else None
    step = fixed_batch or batch_size
    dtype = np.float16 if meta.type == "tensor(float16)" else np.float32
    chunks = []
    for start in range(0, len(x), step):
        batch = x[start : start + step].astype(dtype, copy=False)
        n = len(batch)
        if fixed_batch and n < fixed_batch:
            batch = np.concatenate([batch, np.repeat(batch[-1:], fixed_batch - n, axis=0)])
        out = run_checked(sess, {meta.name: batch}, f"{model_path}")[0]
        chunks.append(np.asarray(out)[:n])
    return np.concatenate(chunks).astype(np.float32)


@dataclass(frozen=True)
class Reference:
    """The float reference's outputs on each slice, computed once and compared against many variants."""

    sha256: str
    outputs: dict[str, np.ndarray]


def reference_outputs(model: Model | str | Path, slices: Sequence[Slice], batch_size: int = 64) -> Reference:
    """Run the float reference (loaded, or a path) on every slice."""
    model = as_model(model)
    return Reference(sha256=model.sha256, outputs={s.name: infer(model.path, s.x, batch_size) for s in slices})


def compare(
    outputs: dict[str, np.ndarray],
    reference: Reference,
    slices: Sequence[Slice],
    dataset_id: str,
    metric: Metric | None = None,
    metric_name: str = "top1",
) -> Evaluation:
    """Per-slice metrics of ``outputs`` against the reference's (pure: no inference here).

    ``metric(outputs, labels) -> float`` replaces top-1 accuracy when given; ``drop_pp`` is
    ``(reference - candidate) * 100`` of that metric.
    """
    score = metric or top1
    confidence = {s.name: float(confidences_of(outputs[s.name]).mean()) for s in slices}
    nominal = next((s.name for s in slices if s.kind == "nominal"), None)
    metrics: dict[str, SliceMetrics] = {}
    for s in slices:
        if s.name not in outputs or s.name not in reference.outputs:
            raise DataError(f"slice {s.name!r}: no outputs to evaluate (candidate or reference missing it)")
        out, ref = outputs[s.name], reference.outputs[s.name]
        if out.shape != ref.shape:
            raise ModelError(f"slice {s.name!r}: variant outputs {list(out.shape)} but the reference outputs {list(ref.shape)}")
        accuracy, ref_accuracy = float(score(out, s.y)), float(score(ref, s.y))
        metrics[s.name] = SliceMetrics(
            slice_id=s.id,
            n=len(s.y),
            accuracy=accuracy,
            reference_accuracy=ref_accuracy,
            drop_pp=(ref_accuracy - accuracy) * 100.0,
            agreement=float(np.mean(predictions_of(out) == predictions_of(ref))),
            mean_confidence=confidence[s.name],
            confidence_shift=confidence[s.name] - float(confidences_of(ref).mean()),
            confidence_drop=None if nominal is None or s.name == nominal else confidence[nominal] - confidence[s.name],
        )
    return Evaluation(
        dataset_id=dataset_id,
        reference_sha256=reference.sha256,
        metric=metric_name if metric is not None else "top1",
        slices=metrics,
        predictions={s.name: predictions_of(outputs[s.name]).tolist() for s in slices},
        labels={s.name: s.y.tolist() for s in slices},
    )


def evaluate(
    model_path: str | Path,
    reference: Reference,
    slices: Sequence[Slice],
    dataset_id: str,
    metric: Metric | None = None,
    metric_name: str = "user",
    batch_size: int = 64,
) -> Evaluation:
    """Run ``model_path`` on every slice and compare it with the float reference."""
    outputs = {s.name: infer(model_path, s.x, batch_size) for s in slices}
    return compare(outputs, reference, slices, dataset_id, metric, metric_name)


def floor_failures(evaluation: Evaluation, slices: Sequence[Slice]) -> dict[str, tuple[float, float]]:
    """Slices whose drop exceeds their ``max_drop_pp``: name -> (drop_pp, max_drop_pp)."""
    return {
        s.name: (evaluation.slices[s.name].drop_pp, s.spec.max_drop_pp)
        for s in slices
        if s.spec.max_drop_pp is not None and evaluation.slices[s.name].drop_pp > s.spec.max_drop_pp
    }


def worst_drop_pp(evaluation: Evaluation) -> float:
    """The largest accuracy drop over all slices, in percentage points."""
    return max(m.drop_pp for m in evaluation.slices.values())


@dataclass(frozen=True)
class SliceEvaluator:
    """Judges any variant on fixed slices against one float reference (what search and mixed precision call)."""

    slices: tuple[Slice, ...]
    reference: Reference
    dataset_id: str
    metric: Metric | None = None
    metric_name: str = "user"

    @classmethod
    def for_reference(
        cls,
        reference: Model | str | Path,
        slices: Sequence[Slice],
        dataset_id: str,
        metric: Metric | None = None,
        metric_name: str = "user",
    ) -> SliceEvaluator:
        """Run the float reference once on every slice and keep its outputs."""
        return cls(tuple(slices), reference_outputs(reference, slices), dataset_id, metric, metric_name)

    def __call__(self, model_path: str | Path) -> Evaluation:
        return evaluate(model_path, self.reference, self.slices, self.dataset_id, self.metric, self.metric_name)

    def failures(self, evaluation: Evaluation) -> dict[str, tuple[float, float]]:
        """Slices over their floor: name -> (drop_pp, max_drop_pp)."""
        return floor_failures(evaluation, self.slices)
