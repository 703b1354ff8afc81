"""The field schema ``edgeproof.telemetry/1``: labels, metric names with their aggregation, windows and events."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "edgeproof.telemetry/1"
SCHEMA_FILE = Path(__file__).with_name("telemetry-1.schema.json")

LABEL_NAMES = (
    "device_id",
    "model_sha256",
    "bom_id",
    "firmware_version",
    "accelerator",
    "power_mode",
    "chip_revision",
    "region",
    "cohort",
)

# How a window combines what it saw: a mergeable sketch, a histogram on fixed bounds, the last value
# of a gauge, or the sum of a counter. The fleet merges windows with the same rule.
AGGREGATIONS = ("sketch", "histogram", "gauge", "counter")


@dataclass(frozen=True)
class MetricSpec:
    """One metric of the schema: its name (OpenTelemetry semantic-convention names where they exist), unit and aggregation."""

    name: str
    unit: str
    aggregation: str
    description: str


def _spec(name: str, unit: str, aggregation: str, description: str) -> tuple[str, MetricSpec]:
    return name, MetricSpec(name, unit, aggregation, description)


METRICS: dict[str, MetricSpec] = dict(
    [
        _spec("edgeproof.inference.duration", "s", "sketch", "wall time of one inference call, recorder to recorder"),
        _spec("edgeproof.inference.count", "{inference}", "counter", "inferences finished in the window"),
        _spec("edgeproof.inference.errors", "{error}", "counter", "inference calls that raised"),
        _spec("edgeproof.inference.in_flight", "{request}", "gauge", "requests inside the runtime at the last sample"),
        _spec("edgeproof.inference.in_flight.max", "{request}", "gauge", "most requests inside the runtime at once"),
        _spec("edgeproof.inference.confidence", "1", "histogram", "top-1 probability of sampled inferences"),
        _spec("edgeproof.inference.confidence.margin", "1", "histogram", "top-1 minus top-2 probability of sampled inferences"),
        _spec("edgeproof.inference.confidence.entropy", "nat", "sketch", "entropy of the output distribution of sampled inferences"),
        _spec("edgeproof.input.brightness", "1", "sketch", "mean pixel value of sampled image inputs, scaled to 0..1"),
        _spec("edgeproof.input.contrast", "1", "sketch", "pixel standard deviation of sampled image inputs, scaled to 0..1"),
        _spec("edgeproof.input.noise", "1", "sketch", "high-frequency noise estimate of sampled image inputs, scaled to 0..1"),
        _spec("edgeproof.input.clipped_fraction", "1", "sketch", "share of pixels at the range limits in sampled image inputs"),
        _spec("edgeproof.input.statistic", "1", "sketch", "a user hook's statistic of sampled inputs (attribute statistic)"),
        _spec("edgeproof.fallback.policy", "{inference}", "counter", "inferences where the confidence policy ran the fallback"),
        _spec(
            "edgeproof.fallback.provider.nodes", "{node}", "gauge", "graph nodes the runtime placed on the CPU instead of the accelerator"
        ),
        _spec(
            "edgeproof.fallback.provider.inferences", "{inference}", "counter", "inferences that ran with some nodes on the CPU fallback"
        ),
        _spec("edgeproof.path.count", "{call}", "counter", "executions of a named code path (attribute path)"),
        _spec("edgeproof.telemetry.records.refused", "{record}", "counter", "records not written: the disk headroom refused them"),
        _spec("edgeproof.telemetry.confidence.cost", "ns", "counter", "time spent computing confidence (its own cost, off the hot path)"),
        _spec("edgeproof.telemetry.confidence.samples", "{inference}", "counter", "inferences whose confidence was computed"),
        _spec("edgeproof.telemetry.input_quality.cost", "ns", "counter", "time spent computing input quality (its own cost)"),
        _spec("edgeproof.telemetry.input_quality.samples", "{inference}", "counter", "inferences whose input quality was computed"),
        _spec("process.memory.usage", "By", "gauge", "resident set size of the recording process"),
        _spec("edgeproof.memory.pressure.some.avg10", "%", "gauge", "PSI memory some avg10 (absent without /proc/pressure)"),
        _spec("edgeproof.cpu.pressure.some.avg10", "%", "gauge", "PSI cpu some avg10 (absent without /proc/pressure)"),
        _spec("hw.power", "W", "gauge", "board power over the last sampler period (absent without a meter)"),
        _spec("hw.energy", "J", "counter", "board energy over the window (absent without a meter)"),
        _spec("hw.temperature", "Cel", "gauge", "hottest readable temperature sensor (absent without one)"),
    ]
)

EVENT_TYPES = (
    "telemetry_enabled",
    "model_load",
    "model_swap",
    "provider_placement",
    "policy_fallback_activated",
    "thermal_throttle_changed",
    "power_mode_changed",
    "firmware_changed",
    "runtime_error",
    "session_recreated",
)

# Fixed bounds of the confidence histograms, so every device's windows merge bucket by bucket.
PROBABILITY_BOUNDS = tuple(round(0.1 * i, 1) for i in range(1, 10))


@dataclass(frozen=True)
class Labels:
    """The same labels on every window and event of a device; empty means "not known on this device"."""

    device_id: str
    model_sha256: str = ""
    bom_id: str = ""
    firmware_version: str = ""
    accelerator: str = ""
    power_mode: str = ""
    chip_revision: str = ""
    region: str = ""
    cohort: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Labels:
        return cls(**{f.name: str(data.get(f.name) or "") for f in fields(cls)})


@dataclass
class MetricValue:
    """One metric's aggregate over a window.

    ``counter``: ``value`` is the sum. ``gauge``: ``value`` is the last reading. ``sketch``: ``sketch``
    holds a serialized DDSketch (protobuf) and ``count``/``sum``/``min``/``max`` its summary.
    ``histogram``: ``bounds`` and ``bucket_counts`` (one more count than bounds), with ``count``/``sum``.
    ``attributes`` name the series within the metric (e.g. ``{"path": "cache_hit"}``).
    """

    name: str
    value: float | None = None
    count: int = 0
    sum: float = 0.0
    min: float | None = None
    max: float | None = None
    sketch: bytes | None = None
    bounds: list[float] | None = None
    bucket_counts: list[int] | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> MetricSpec:
        return METRICS[self.name]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "unit": self.spec.unit, "aggregation": self.spec.aggregation}
        if self.spec.aggregation in ("counter", "gauge"):
            out["value"] = self.value
        else:
            out.update(count=self.count, sum=self.sum, min=self.min, max=self.max)
        if self.sketch is not None:
            out["sketch_b64"] = _b64(self.sketch)
        if self.bounds is not None:
            out.update(bounds=list(self.bounds), bucket_counts=list(self.bucket_counts or []))
        if self.attributes:
            out["attributes"] = dict(self.attributes)
        return out


@dataclass
class Window:
    """Aggregates of one device over ``[start_unix_ns, end_unix_ns)``; ``seq`` counts records within one boot."""

    labels: Labels
    boot_id: str
    seq: int
    start_unix_ns: int
    end_unix_ns: int
    metrics: list[MetricValue]
    # Only on devices drawn for raw sampling: per-inference latency and confidence, never inputs.
    raw_latency_ns: list[int] | None = None
    raw_confidence: list[float] | None = None

    kind = "window"

    def metric(self, name: str, **attributes: str) -> MetricValue | None:
        """The metric ``name`` (with exactly these attributes), or None when the window lacks it."""
        return next((m for m in self.metrics if m.name == name and m.attributes == attributes), None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "kind": "window",
            **_header(self.labels, self.boot_id, self.seq),
            "start_unix_ns": self.start_unix_ns,
            "end_unix_ns": self.end_unix_ns,
            "metrics": [m.to_dict() for m in self.metrics],
        }
        if self.raw_latency_ns is not None:
            out["raw_latency_ns"] = list(self.raw_latency_ns)
            out["raw_confidence"] = list(self.raw_confidence or [])
        return out


@dataclass
class Event:
    """One thing that happened on the device (see ``EVENT_TYPES``), with what is known about it."""

    labels: Labels
    boot_id: str
    seq: int
    time_unix_ns: int
    type: str
    attributes: dict[str, Any] = field(default_factory=dict)

    kind = "event"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "kind": "event",
            **_header(self.labels, self.boot_id, self.seq),
            "time_unix_ns": self.time_unix_ns,
            "type": self.type,
            "attributes": json.loads(json.dumps(self.attributes, default=str)),
        }


Record = Window | Event


def _header(labels: Labels, boot_id: str, seq: int) -> dict[str, Any]:
    return {"device_id": labels.device_id, "boot_id": boot_id, "seq": seq, "labels": labels.to_dict()}


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def load_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``edgeproof.telemetry/1`` records (``Window.to_dict()`` / ``Event.to_dict()``)."""
    return json.loads(SCHEMA_FILE.read_text())
