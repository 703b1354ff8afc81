"""OTLP/HTTP metrics (what ``telemetry.export_otlp`` sends) back into segment rows, one window per resource.

The exporter puts a window's labels, ``edgeproof.boot_id``, ``edgeproof.window.seq`` and
``edgeproof.schema`` on each resource; counters arrive as sums, gauges as gauges, histograms bucket by
bucket, and a sketch as ``<name>.count`` plus ``<name>.quantile`` gauges. The rows rebuilt here are the
segment schema's, so they are validated, refused and deduplicated by the same code as a segment file.
OTLP carries no mergeable sketch: a sketch metric comes back with its count, no sum or sketch, and its
exported quantiles are kept as ``<name>.quantile`` metrics (attribute ``quantile``) beside it.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pyarrow as pa

from edgeproof.errors import DataError
from edgeproof.telemetry._schema import LABEL_NAMES, METRICS
from edgeproof.telemetry._segments import ARROW_SCHEMA

_SKETCHES = {name for name, spec in METRICS.items() if spec.aggregation == "sketch"}


def decode_request(body: bytes, content_type: str, content_encoding: str) -> Any:
    """An ``ExportMetricsServiceRequest`` from an OTLP/HTTP body (protobuf or JSON, plain, gzip or deflate); DataError if it is not one."""
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    encoding = content_encoding.strip().lower()
    try:
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding not in ("", "identity"):
            raise DataError(f"content encoding {encoding!r} is not supported (gzip, deflate or none)")
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"body does not decompress as {encoding}: {exc}") from None
    request = ExportMetricsServiceRequest()
    try:
        if content_type.split(";")[0].strip().lower() == "application/json":
            json_format.Parse(body.decode("utf-8"), request)
        else:
            request.ParseFromString(body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise DataError(
            f"not an OTLP ExportMetricsServiceRequest: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    return request


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind in ("string_value", "int_value", "double_value", "bool_value") else None


def _attributes(pairs: Any) -> dict[str, str]:
    return {kv.key: str(_any_value(kv.value)) for kv in pairs}


def _number(point: Any) -> float:
    return float(point.as_int if point.WhichOneof("value") == "as_int" else point.as_double)


def _metric(name: str, attributes: dict[str, str], **fields: Any) -> dict[str, Any]:
    return {"name": name, "attributes": list(attributes.items()), **fields}


def _window_metrics(metrics: Any) -> tuple[list[dict[str, Any]], int | None, int | None]:
    """(segment metric rows, window start ns, window end ns) of one resource's metrics."""
    out: list[dict[str, Any]] = []
    t0: int | None = None
    t1: int | None = None
    for metric in metrics:
        kind = metric.WhichOneof("data")
        points = list(getattr(metric, kind).data_points) if kind in ("sum", "gauge", "histogram") else []
        for p in points:
            if p.start_time_unix_nano:  # the exporter's encoder drops a gauge's start time; sums and histograms keep it
                t0 = p.start_time_unix_nano if t0 is None else min(t0, p.start_time_unix_nano)
            t1 = p.time_unix_nano if t1 is None else max(t1, p.time_unix_nano)
            attrs = _attributes(p.attributes)
            base = metric.name.removesuffix(".count")
            if kind == "sum" and metric.name.endswith(".count") and base in _SKETCHES:
                out.append(_metric(base, attrs, count=int(_number(p))))
            elif kind in ("sum", "gauge"):
                out.append(_metric(metric.name, attrs, value=_number(p)))
            elif kind == "histogram":
                out.append(
                    _metric(
                        metric.name,
                        attrs,
                        count=int(p.count),
                        sum=float(p.sum) if p.HasField("sum") else None,
                        min=float(p.min) if p.HasField("min") else None,
                        max=float(p.max) if p.HasField("max") else None,
                        bounds=list(p.explicit_bounds),
                        bucket_counts=[int(c) for c in p.bucket_counts],
                    )
                )
    return out, t0, t1


def windows_table(request: Any) -> dict[str, pa.Table]:
    """Segment rows of the windows in ``request``, one table per schema version the resources name.

    A resource that is not an edgeproof window (no boot id or sequence number, no data point to date it)
    makes the whole request a DataError: the exporter never sends one, so the body is not ours.
    """
    by_schema: dict[str, list[dict[str, Any]]] = {}
    for i, resource_metrics in enumerate(request.resource_metrics):
        attrs = {kv.key: _any_value(kv.value) for kv in resource_metrics.resource.attributes}
        boot_id, seq = attrs.get("edgeproof.boot_id"), attrs.get("edgeproof.window.seq")
        if not isinstance(boot_id, str) or not boot_id or not isinstance(seq, int) or isinstance(seq, bool):
            raise DataError(f"resource {i}: lacks edgeproof.boot_id or an integer edgeproof.window.seq (not an edgeproof window)")
        metrics = [m for scope in resource_metrics.scope_metrics for m in scope.metrics]
        rows, t0, t1 = _window_metrics(metrics)
        if t0 is None or t1 is None:
            raise DataError(f"resource {i} (boot {boot_id}, window {seq}): no data point with a start and end time, so no window time")
        labels = {name: str(attrs[name]) if attrs.get(name) is not None else "" for name in LABEL_NAMES}
        by_schema.setdefault(str(attrs.get("edgeproof.schema") or ""), []).append(
            {
                "kind": "window",
                "device_id": labels["device_id"],
                "boot_id": boot_id,
                "seq": seq,
                "start_unix_ns": t0,
                "end_unix_ns": t1,
                "labels": labels,
                "metrics": rows,
            }
        )
    if not by_schema:
        raise DataError("the request holds no resource metrics")
    return {
        version: pa.Table.from_pylist(rows, schema=ARROW_SCHEMA.with_metadata({"schema": version})) for version, rows in by_schema.items()
    }
