"""Typed records passed between stages: JSON-serialisable, schema-versioned, provenance on every figure."""

from __future__ import annotations

import json
import math
import os
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeproof.errors import RecordError

RUN_SCHEMA = "edgeproof.run/1"
VERDICT_SCHEMA = "edgeproof.verdict/1"

# How close a stored summary must be to the one recomputed from its raw samples.
_SUMMARY_RTOL = 1e-6


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Figure(_Record):
    """A number with its unit and where it came from.

    ``value`` is None when the figure is unavailable; ``provenance`` then starts with
    ``unavailable:`` and says why. Otherwise it is ``measured:<meter>``,
    ``simulated:<board>@<profile version>`` or ``estimated:<model>``.
    """

    value: float | None
    unit: str
    provenance: str
    interval: tuple[float, float] | None = None

    @property
    def available(self) -> bool:
        return self.value is not None

    @classmethod
    def measured(cls, value: float, unit: str, meter: str, interval: tuple[float, float] | None = None) -> Figure:
        return cls(value=value, unit=unit, provenance=f"measured:{meter}", interval=interval)

    @classmethod
    def simulated(cls, value: float, unit: str, profile: str, interval: tuple[float, float] | None = None) -> Figure:
        return cls(value=value, unit=unit, provenance=f"simulated:{profile}", interval=interval)

    @classmethod
    def estimated(cls, value: float, unit: str, model: str) -> Figure:
        return cls(value=value, unit=unit, provenance=f"estimated:{model}")

    @classmethod
    def unavailable(cls, unit: str, why: str) -> Figure:
        return cls(value=None, unit=unit, provenance=f"unavailable:{why}")

    @model_validator(mode="after")
    def _check(self) -> Figure:
        kind = self.provenance.split(":", 1)[0]
        if kind not in ("measured", "simulated", "estimated", "unavailable"):
            raise ValueError(f"provenance must start with measured:/simulated:/estimated:/unavailable:, got {self.provenance!r}")
        if (self.value is None) != (kind == "unavailable"):
            raise ValueError("a figure is unavailable exactly when its value is missing")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(f"figure value must be finite, got {self.value}")
        return self

    def label(self, digits: int = 3) -> str:
        """Human text: ``1.23 ms (measured:perf_counter_ns)`` or ``unavailable (no meter)``."""
        if self.value is None:
            return f"unavailable ({self.provenance.split(':', 1)[1]})"
        return f"{self.value:.{digits}g} {self.unit} ({self.provenance})"


class Interval(_Record):
    low: float
    high: float
    level: float = 0.95


class LatencyStats(_Record):
    """Latency summary over all timed samples of all sessions; intervals span sessions (see measure.stats)."""

    n_samples: int
    n_sessions: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    ci: dict[str, Interval]
    ci_method: str
    warnings: list[str] = Field(default_factory=list)


class SessionSamples(_Record):
    """Raw timings of one fresh ONNX Runtime session (or one simulated session)."""

    warmup_ms: list[float]
    samples_ms: list[float]
    started_at: str


class ScenarioResult(_Record):
    """What the scenario did, beyond the per-inference latency samples."""

    name: Literal["single-stream", "periodic", "server", "offline"]
    engine: Literal["builtin", "loadgen", "simulator"] = "builtin"
    rate_hz: float | None = None
    deadline_ms: float | None = None
    deadline_miss_rate: float | None = None
    queueing_delay_p50_ms: float | None = None
    queueing_delay_p95_ms: float | None = None
    throughput_ips: float | None = None
    batch_size: int = 1
    loadgen: dict[str, Any] | None = None


class NodeRecord(_Record):
    name: str
    op_type: str
    provider: str
    time_us: float | None = None
    flops: float | None = None


class Placement(_Record):
    """Where each node ran. Fractions are of nodes, FLOPs and time placed on the CPU fallback."""

    nodes: list[NodeRecord]
    primary_provider: str
    fallback_node_frac: float
    fallback_flop_frac: float | None
    fallback_time_frac: float | None
    provenance: str


class ModelRef(_Record):
    path: str
    name: str
    sha256: str
    size_bytes: int
    io: dict[str, list] | None = None  # interface: inputs/outputs as [name, dtype, dims]


class TargetRef(_Record):
    id: str
    kind: Literal["host", "simulated", "remote"]
    profile_version: str | None = None
    power_mode: str | None = None
    firmware: dict[str, Any] | None = None


class RuntimeSettings(_Record):
    provider: str = "CPUExecutionProvider"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"


class EnvFingerprint(_Record):
    hostname: str
    os: str
    cpu_model: str
    cpu_cores: int
    ram_gib: float
    python: str
    onnxruntime: str
    onnx: str
    providers: list[str]
    edgeproof: str
    governor: str | None = None
    extra: dict[str, str] = Field(default_factory=dict)


class FitnessCheck(_Record):
    name: str
    ok: bool
    value: str
    detail: str = ""


class HostFitness(_Record):
    fit: bool
    checks: list[FitnessCheck]


class SliceMetrics(_Record):
    slice_id: str
    n: int
    accuracy: float
    reference_accuracy: float
    drop_pp: float
    agreement: float
    mean_confidence: float
    confidence_shift: float
    # nominal slice's mean confidence minus this slice's (same model); None on nominal or without one
    confidence_drop: float | None = None


class Evaluation(_Record):
    dataset_id: str
    reference_sha256: str
    metric: str = "top1"
    slices: dict[str, SliceMetrics]
    # per-slice predictions (class indices) kept so a gate can test paired differences
    predictions: dict[str, list[int]] = Field(default_factory=dict)
    labels: dict[str, list[int]] = Field(default_factory=dict)


class RunRecord(_Record):
    """One measurement or simulation of (variant, target, runtime settings, power mode)."""

    schema_version: str = RUN_SCHEMA
    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    kind: Literal["measured", "simulated"]
    model: ModelRef
    variant: dict[str, Any] | None = None
    target: TargetRef
    settings: RuntimeSettings
    scenario: ScenarioResult
    sessions: list[SessionSamples]
    latency: LatencyStats
    latency_provenance: str
    load_time_ms: Figure
    peak_rss_mib: Figure
    model_size_mib: Figure
    energy_mj_per_inference: Figure
    sustained_w: Figure
    temperature_c: Figure
    placement: Placement | None = None
    evaluation: Evaluation | None = None
    env: EnvFingerprint
    fitness: HostFitness | None = None
    extras: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _summary_matches_samples(self) -> RunRecord:
        from edgeproof.measure.stats import summarize

        if self.schema_version != RUN_SCHEMA:
            raise ValueError(f"schema_version {self.schema_version!r} is not {RUN_SCHEMA!r}")
        recomputed = summarize([s.samples_ms for s in self.sessions])
        for key in ("n_samples", "n_sessions", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "min_ms", "max_ms"):
            stored, fresh = getattr(self.latency, key), getattr(recomputed, key)
            if not math.isclose(stored, fresh, rel_tol=_SUMMARY_RTOL, abs_tol=1e-9):
                raise ValueError(f"latency.{key} is {stored} but its raw samples give {fresh}")
        for key, fresh_iv in recomputed.ci.items():
            stored_iv = self.latency.ci.get(key)
            for end in ("low", "high"):
                stored, fresh = (getattr(stored_iv, end), getattr(fresh_iv, end)) if stored_iv else (None, getattr(fresh_iv, end))
                if stored is None or not math.isclose(stored, fresh, rel_tol=_SUMMARY_RTOL, abs_tol=1e-9):
                    raise ValueError(f"latency.ci.{key}.{end} is {stored} but its raw samples give {fresh}")
        return self


M = TypeVar("M", bound=BaseModel)


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes; a missing, folder or unreadable path is one RecordError line."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RecordError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        raise RecordError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def read_json(path: Path) -> Any:
    """Parsed JSON of a file; a missing, unreadable or non-JSON file is one RecordError line."""
    raw = read_bytes(path)
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: not JSON ({exc})") from None


def validated(cls: type[M], data: Any, where: str) -> M:
    """``cls`` from JSON data; a validation failure is one RecordError line: ``where: field: why``."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise RecordError(f"{where}: {field}: {err['msg']}") from None


def load_record(path: str | Path, cls: type[BaseModel] = RunRecord) -> Any:
    """Load a record from JSON, turning every failure into one line naming the file and field."""
    path = Path(path)
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise RecordError(f"{path}: expected a JSON object")
    expected = cls.model_fields.get("schema_version")
    if expected is not None and "schema_version" in raw and raw["schema_version"] != expected.default:
        raise RecordError(
            f"{path}: schema_version {raw['schema_version']!r}, this edgeproof reads {expected.default!r}"
        )
    return validated(cls, raw, str(path))


def load_verdicts(path: str | Path) -> list[Verdict]:
    """Verdicts from a file holding one ``Verdict`` or a gate's output (``{"passed": …, "verdicts": [...]}``)."""
    path = Path(path)
    raw = read_json(path)
    if not (isinstance(raw, dict) and isinstance(raw.get("verdicts"), list)):
        return [load_record(path, Verdict)]
    out = []
    for i, item in enumerate(raw["verdicts"]):
        if not isinstance(item, dict) or item.get("schema_version", VERDICT_SCHEMA) != VERDICT_SCHEMA:
            raise RecordError(f"{path}: verdicts.{i}: not an {VERDICT_SCHEMA} verdict")
        out.append(validated(Verdict, item, f"{path}: verdicts.{i}"))
    if not out:
        raise RecordError(f"{path}: verdicts: empty")
    return out


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write a file so that a crash or error never leaves a partial file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        # mkstemp makes the file 0600; give it the mode an ordinary open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_record(record: BaseModel, path: str | Path) -> Path:
    return write_atomic(path, record.model_dump_json(indent=2))


class ClauseResult(_Record):
    """One contract clause judged against one target's figures."""

    clause: str
    status: Literal["pass", "fail", "unverified", "waived"]
    value: float | None
    budget: float | None
    unit: str
    margin: float | None = None  # budget - value in the clause's unit (negative means over budget)
    interval: tuple[float, float] | None = None  # 95% interval of value, where the clause has one (gate ratios)
    provenance: str
    hard: bool = True
    note: str = ""
    waiver: dict[str, Any] | None = None


class Verdict(_Record):
    """A contract verdict for one target: pass/fail per clause and the clause that binds."""

    schema_version: str = VERDICT_SCHEMA
    target: str
    passed: bool
    clauses: list[ClauseResult]
    binding_clause: str | None = None
    allow_unverified: bool = False
    waivers_applied: list[dict[str, Any]] = Field(default_factory=list)
    waivers_expired: list[dict[str, Any]] = Field(default_factory=list)
    regressions: list[dict[str, Any]] = Field(default_factory=list)
    contract_sha256: str | None = None
