"""OTLP/HTTP and Prometheus receive the same figures the segment files hold (receivers started here, on loopback)."""

from __future__ import annotations

import http.server
import threading
import urllib.request

import numpy as np
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from edgeproof.telemetry import Labels, Recorder, TelemetryConfig, export_otlp, read_segments, serve_prometheus, window_quantiles


@pytest.fixture
def window(tmp_path):
    rec = Recorder(
        TelemetryConfig(directory=tmp_path / "t", labels=Labels(device_id="cam-7", cohort="canary"), sample_every=1, min_free_bytes=0),
        read_power=False,
    )
    rec.enable(start_thread=False)
    infer = rec.wrap(lambda x: np.array([[x, 1 - x]]))
    for p in np.linspace(0.5, 1.0, 25):
        infer(float(p))
    rec.count("cache_hit")
    rec.close()
    return next(w for w in read_segments(tmp_path / "t").windows if w.metric("edgeproof.inference.count").value)


def test_otlp_receiver_gets_the_window_figures(window):
    received: list[ExportMetricsServiceRequest] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportMetricsServiceRequest()
            request.ParseFromString(body)
            received.append(request)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert export_otlp([window], f"http://127.0.0.1:{server.server_port}/v1/metrics")
    finally:
        server.shutdown()
    (resource,) = received[0].resource_metrics
    attrs = {kv.key: kv.value for kv in resource.resource.attributes}
    assert attrs["device_id"].string_value == "cam-7" and attrs["edgeproof.window.seq"].int_value == window.seq
    metrics = {m.name: m for m in resource.scope_metrics[0].metrics}
    assert metrics["edgeproof.inference.count"].sum.data_points[0].as_double == window.metric("edgeproof.inference.count").value
    quantiles = {
        p.attributes[0].value.string_value: p.as_double for p in metrics["edgeproof.inference.duration.quantile"].gauge.data_points
    }
    assert quantiles == {str(q): v for q, v in window_quantiles(window.metric("edgeproof.inference.duration")).items()}
    hist = metrics["edgeproof.inference.confidence"].histogram.data_points[0]
    assert list(hist.bucket_counts) == window.metric("edgeproof.inference.confidence").bucket_counts
    paths = metrics["edgeproof.path.count"].sum.data_points[0]
    assert paths.attributes[0].value.string_value == "cache_hit" and paths.as_double == 1


def test_prometheus_scrape_gets_the_window_figures(window):
    server, thread = serve_prometheus(lambda: [window], port=0)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
        thread.join()
    samples = {
        (s.name, s.labels.get("quantile", s.labels.get("le", ""))): s for f in text_string_to_metric_families(text) for s in f.samples
    }
    assert samples[("edgeproof_inference_count_total", "")].value == window.metric("edgeproof.inference.count").value
    assert samples[("edgeproof_inference_count_total", "")].labels["device_id"] == "cam-7"
    for q, v in window_quantiles(window.metric("edgeproof.inference.duration")).items():
        assert samples[("edgeproof_inference_duration_seconds_quantile", str(q))].value == pytest.approx(v, rel=1e-12)
    confidence = window.metric("edgeproof.inference.confidence")
    assert samples[("edgeproof_inference_confidence_count", "")].value == confidence.count
    assert samples[("edgeproof_inference_confidence_bucket", "+Inf")].value == sum(confidence.bucket_counts)
