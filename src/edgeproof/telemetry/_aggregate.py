"""Window aggregates: a mergeable DDSketch for distributions, fixed-bound histograms, and their serialized forms."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

import numpy as np
from ddsketch import DDSketch
from ddsketch.pb.proto import DDSketchProto

from edgeproof.telemetry._schema import MetricValue

# 1% relative accuracy: a p95 of 4.00 ms reads back within 3.96–4.04 ms, in a few hundred bytes.
RELATIVE_ACCURACY = 0.01


def new_sketch() -> DDSketch:
    return DDSketch(relative_accuracy=RELATIVE_ACCURACY)


def add_many(sketch: DDSketch, values: np.ndarray) -> None:
    """Add positive ``values`` to ``sketch`` a bucket at a time: one ``add`` per distinct bucket, not per value.

    Each bucket gets its representative value with the bucket's count as weight, so quantiles are
    those of adding one by one; the sketch's own sum, min and max become bucket-accurate (1%), which
    is why windows keep the exact ones beside it.
    """
    values = values[values > 0]
    if values.size == 0:
        return
    mapping = sketch._mapping
    keys = np.ceil(np.log2(values) * mapping._multiplier + mapping._offset).astype(np.int64)
    distinct, counts = np.unique(keys, return_counts=True)
    for key, n in zip(distinct.tolist(), counts.tolist()):
        sketch.add(mapping.value(key), weight=float(n))


def sketch_bytes(sketch: DDSketch) -> bytes:
    return DDSketchProto.to_proto(sketch).SerializeToString()


def sketch_from_bytes(data: bytes) -> DDSketch:
    """The sketch serialized by ``sketch_bytes``; raises ValueError on bytes that are not one."""
    from ddsketch.pb import ddsketch_pb2
    from google.protobuf.message import DecodeError

    proto = ddsketch_pb2.DDSketch()
    try:
        proto.ParseFromString(data)
    except DecodeError as exc:
        raise ValueError(f"not a DDSketch: {exc}") from exc
    return DDSketchProto.from_proto(proto)


def sketch_metric(name: str, sketch: DDSketch, exact: tuple[float, float, float] | None = None, **attributes: str) -> MetricValue:
    """A ``sketch`` metric value carrying the sketch and its count, sum, min and max (``exact`` = (sum, min, max) when known)."""
    n = int(round(sketch.count))
    total, lo, hi = exact if exact is not None else (float(sketch.sum), float(sketch._min), float(sketch._max))
    return MetricValue(
        name=name,
        count=n,
        sum=float(total),
        min=float(lo) if n else None,
        max=float(hi) if n else None,
        sketch=sketch_bytes(sketch),
        attributes=attributes,
    )


def sketch_of(metric: MetricValue) -> DDSketch:
    """The DDSketch a ``sketch`` metric carries (empty when it carries none)."""
    return sketch_from_bytes(metric.sketch) if metric.sketch else new_sketch()


def merged_sketch(metrics: Iterable[MetricValue]) -> DDSketch:
    """One sketch of every window's sketch: the fleet's latency distribution without raw samples."""
    out = new_sketch()
    for metric in metrics:
        if metric.sketch:
            out.merge(sketch_of(metric))
    return out


def quantile(sketch: DDSketch, q: float) -> float | None:
    """The ``q`` quantile (0..1) of a sketch, None when it is empty."""
    value = sketch.get_quantile_value(q) if sketch.count else None
    return None if value is None else float(value)


def histogram_metric(name: str, bounds: Sequence[float], values: Iterable[float], **attributes: str) -> MetricValue:
    """A ``histogram`` metric: counts in ``(-inf, b0], (b0, b1], …, (bn, inf)`` like OpenTelemetry's explicit buckets."""
    counts = [0] * (len(bounds) + 1)
    total, n = 0.0, 0
    lo: float | None = None
    hi: float | None = None
    for v in values:
        counts[bisect.bisect_left(bounds, v)] += 1
        total += v
        n += 1
        lo = v if lo is None or v < lo else lo
        hi = v if hi is None or v > hi else hi
    return MetricValue(name=name, count=n, sum=total, min=lo, max=hi, bounds=list(bounds), bucket_counts=counts, attributes=attributes)


def merged_histogram(metrics: Iterable[MetricValue]) -> tuple[list[float], list[int]]:
    """Bounds and bucket counts summed over windows that share the same bounds."""
    bounds: list[float] = []
    counts: list[int] = []
    for metric in metrics:
        if metric.bounds is None or metric.bucket_counts is None:
            continue
        if not counts:
            bounds, counts = list(metric.bounds), [0] * len(metric.bucket_counts)
        if list(metric.bounds) != bounds:
            raise ValueError(f"{metric.name}: histogram bounds differ between windows ({metric.bounds} vs {bounds})")
        counts = [a + b for a, b in zip(counts, metric.bucket_counts)]
    return bounds, counts


def counter_total(windows: Iterable, name: str) -> float | None:
    """Sum of metric ``name`` over ``windows`` (every series of it), None when no window carries it."""
    values = [m.value for w in windows for m in w.metrics if m.name == name and m.value is not None]
    return float(sum(values)) if values else None
