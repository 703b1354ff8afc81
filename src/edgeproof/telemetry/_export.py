"""Exporters of finished windows: OTLP over HTTP through opentelemetry-sdk, and a prometheus-client scrape endpoint.

Both send the figures a window holds on disk, not a second aggregation: counters as sums over the
window, gauges as their last value, histograms bucket by bucket, and sketches as p50/p95/p99 plus
their count and sum (neither protocol carries a DDSketch; the segments keep the mergeable form).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from edgeproof.telemetry._aggregate import quantile, sketch_of
from edgeproof.telemetry._schema import SCHEMA_VERSION, MetricValue, Window

EXPORTED_QUANTILES = (0.5, 0.95, 0.99)


def window_quantiles(metric: MetricValue) -> dict[float, float]:
    """The exported quantiles of a ``sketch`` metric (empty when it saw nothing)."""
    sketch = sketch_of(metric)
    values = {q: quantile(sketch, q) for q in EXPORTED_QUANTILES}
    return {q: v for q, v in values.items() if v is not None}


def _resource_attributes(window: Window) -> dict[str, Any]:
    attrs: dict[str, Any] = {k: v for k, v in window.labels.to_dict().items() if v}
    attrs.update({"edgeproof.boot_id": window.boot_id, "edgeproof.window.seq": window.seq, "edgeproof.schema": SCHEMA_VERSION})
    return attrs


def metrics_data(windows: Sequence[Window]) -> Any:
    """OpenTelemetry ``MetricsData`` for ``windows``: one resource per window (labels, boot id, sequence number)."""
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        Gauge,
        Histogram,
        HistogramDataPoint,
        Metric,
        MetricsData,
        NumberDataPoint,
        ResourceMetrics,
        ScopeMetrics,
        Sum,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    scope = InstrumentationScope("edgeproof.telemetry", schema_url="")
    resources = []
    for w in windows:
        t0, t1 = w.start_unix_ns, w.end_unix_ns
        out: list[Metric] = []
        for m in w.metrics:
            spec, attrs = m.spec, dict(m.attributes)
            data: Any
            if spec.aggregation == "counter" and m.value is not None:
                point = NumberDataPoint(attributes=attrs, start_time_unix_nano=t0, time_unix_nano=t1, value=m.value)
                data = Sum(data_points=[point], aggregation_temporality=AggregationTemporality.DELTA, is_monotonic=True)
            elif spec.aggregation == "gauge" and m.value is not None:
                data = Gauge(data_points=[NumberDataPoint(attributes=attrs, start_time_unix_nano=t0, time_unix_nano=t1, value=m.value)])
            elif spec.aggregation == "histogram" and m.bounds is not None and m.bucket_counts is not None:
                bucket_point = HistogramDataPoint(
                    attributes=attrs,
                    start_time_unix_nano=t0,
                    time_unix_nano=t1,
                    count=m.count,
                    sum=m.sum,
                    bucket_counts=list(m.bucket_counts),
                    explicit_bounds=list(m.bounds),
                    min=m.min if m.min is not None else 0.0,
                    max=m.max if m.max is not None else 0.0,
                )
                data = Histogram(data_points=[bucket_point], aggregation_temporality=AggregationTemporality.DELTA)
            elif spec.aggregation == "sketch":
                points = [
                    NumberDataPoint(attributes={**attrs, "quantile": str(q)}, start_time_unix_nano=t0, time_unix_nano=t1, value=v)
                    for q, v in window_quantiles(m).items()
                ]
                if points:
                    out.append(
                        Metric(name=f"{m.name}.quantile", description=spec.description, unit=spec.unit, data=Gauge(data_points=points))
                    )
                count = NumberDataPoint(attributes=attrs, start_time_unix_nano=t0, time_unix_nano=t1, value=m.count)
                out.append(
                    Metric(
                        name=f"{m.name}.count",
                        description=spec.description,
                        unit="1",
                        data=Sum(data_points=[count], aggregation_temporality=AggregationTemporality.DELTA, is_monotonic=True),
                    )
                )
                continue
            else:
                continue
            out.append(Metric(name=m.name, description=spec.description, unit=spec.unit, data=data))
        resources.append(
            ResourceMetrics(resource=Resource.create(_resource_attributes(w)), scope_metrics=[ScopeMetrics(scope, out, "")], schema_url="")
        )
    return MetricsData(resource_metrics=resources)


def export_otlp(windows: Sequence[Window], endpoint: str, timeout_s: float = 10.0) -> bool:
    """Send ``windows`` to an OTLP/HTTP receiver (``http://host:4318/v1/metrics``); True when it accepted them."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import MetricExportResult

    exporter = OTLPMetricExporter(endpoint=endpoint, timeout=timeout_s)
    try:
        return bool(exporter.export(metrics_data(windows)) == MetricExportResult.SUCCESS)
    finally:
        exporter.shutdown()


def prometheus_name(metric_name: str, unit: str) -> str:
    """``edgeproof.inference.duration`` in s → ``edgeproof_inference_duration_seconds`` (Prometheus naming)."""
    suffix = {"s": "_seconds", "By": "_bytes", "W": "_watts", "J": "_joules", "Cel": "_celsius", "ns": "_nanoseconds", "%": "_percent"}.get(
        unit, ""
    )
    base = metric_name.replace(".", "_")
    return base if base.endswith(suffix) else base + suffix


class TelemetryCollector:
    """A prometheus-client collector serving the newest window(s) that ``latest()`` returns, labelled like the windows."""

    def __init__(self, latest: Callable[[], Iterable[Window]]) -> None:
        self.latest = latest

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        families: dict[str, Any] = {}

        def family(kind: Any, name: str, doc: str, labels: list[str]) -> Any:
            if name not in families:
                families[name] = kind(name, doc, labels=labels)
            return families[name]

        for w in self.latest():
            base_labels = {**{k: v for k, v in w.labels.to_dict().items()}, "boot_id": w.boot_id}
            for m in w.metrics:
                spec = m.spec
                labels = {**base_labels, **m.attributes}
                names, values = list(labels), list(labels.values())
                pname = prometheus_name(m.name, spec.unit)
                if spec.aggregation == "counter" and m.value is not None:
                    family(CounterMetricFamily, pname, spec.description, names).add_metric(values, m.value)
                elif spec.aggregation == "gauge" and m.value is not None:
                    family(GaugeMetricFamily, pname, spec.description, names).add_metric(values, m.value)
                elif spec.aggregation == "histogram" and m.bounds is not None and m.bucket_counts is not None:
                    cumulative, running = [], 0
                    for bound, n in zip([*m.bounds, float("inf")], m.bucket_counts):
                        running += n
                        cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
                    family(HistogramMetricFamily, pname, spec.description, names).add_metric(values, cumulative, sum_value=m.sum)
                elif spec.aggregation == "sketch":
                    quantiles = family(GaugeMetricFamily, f"{pname}_quantile", spec.description, [*names, "quantile"])
                    for q, v in window_quantiles(m).items():
                        quantiles.add_metric([*values, str(q)], v)
                    family(CounterMetricFamily, f"{pname}_observations", spec.description, names).add_metric(values, m.count)
        yield from families.values()


def serve_prometheus(latest: Callable[[], Iterable[Window]], port: int, addr: str = "127.0.0.1") -> tuple[Any, Any]:
    """Start a scrape endpoint on ``addr:port`` (port 0 picks one); returns (server, thread) — ``server.shutdown()`` stops it."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(TelemetryCollector(latest))
    return start_http_server(port, addr=addr, registry=registry)
