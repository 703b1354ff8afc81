"""On-device telemetry: a sub-microsecond recorder, the ``edgeproof.telemetry/1`` schema, segment files and exporters.

Runs on the device with only the standard library, numpy, pyarrow, ddsketch (and, for export,
opentelemetry-sdk / prometheus-client); the rest of edgeproof is used for power and temperature
when it is installed too. ::

    config = TelemetryConfig(directory=Path("/var/lib/edgeproof/telemetry"), labels=Labels(device_id="cam-0042"))
    with Recorder(config) as rec:
        rec.enable()                      # the user's consent: nothing is collected before
        infer = rec.wrap(model_fn)        # or RecordedSession(rec, "model.onnx")
        infer(x)
"""

from edgeproof.telemetry._aggregate import counter_total, merged_histogram, merged_sketch, quantile, sketch_of
from edgeproof.telemetry._burst import Burst, record_burst
from edgeproof.telemetry._config import PolicySpec, TelemetryConfigError, load_telemetry_config
from edgeproof.telemetry._export import export_otlp, metrics_data, prometheus_name, serve_prometheus, window_quantiles
from edgeproof.telemetry._quality import Confidence, ImageQuality, confidence, image_quality
from edgeproof.telemetry._recorder import FallbackPolicy, Recorder, TelemetryConfig, draws_raw_samples, read_boot_id
from edgeproof.telemetry._schema import (
    EVENT_TYPES,
    LABEL_NAMES,
    METRICS,
    SCHEMA_FILE,
    SCHEMA_VERSION,
    Event,
    Labels,
    MetricSpec,
    MetricValue,
    Record,
    Window,
    load_json_schema,
)
from edgeproof.telemetry._segments import SegmentProblem, SegmentRead, SegmentStore, read_segments, segment_files, segment_folders
from edgeproof.telemetry._session import RecordedSession, load_fallback

__all__ = [
    "Burst",
    "record_burst",
    "EVENT_TYPES",
    "LABEL_NAMES",
    "METRICS",
    "SCHEMA_FILE",
    "SCHEMA_VERSION",
    "Confidence",
    "Event",
    "FallbackPolicy",
    "ImageQuality",
    "Labels",
    "MetricSpec",
    "MetricValue",
    "PolicySpec",
    "Record",
    "RecordedSession",
    "Recorder",
    "SegmentProblem",
    "SegmentRead",
    "SegmentStore",
    "TelemetryConfig",
    "TelemetryConfigError",
    "Window",
    "confidence",
    "counter_total",
    "draws_raw_samples",
    "export_otlp",
    "image_quality",
    "load_fallback",
    "load_json_schema",
    "load_telemetry_config",
    "merged_histogram",
    "merged_sketch",
    "metrics_data",
    "prometheus_name",
    "quantile",
    "read_boot_id",
    "read_segments",
    "segment_files",
    "segment_folders",
    "serve_prometheus",
    "sketch_of",
    "window_quantiles",
]
