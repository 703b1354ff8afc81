"""Typed records passed between stages: JSON-serialisable, schema-versioned, provenance on every figure."""

from __future__ import annotations

import json
import math
import os
import tempfile
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeproof.errors import RecordError
from edgeproof.measure.stats import LatencyStats, summarize
from edgeproof.outcome import Outcome
from edgeproof.recipe import Recipe

RUN_SCHEMA = "edgeproof.run/2"
RUN_SCHEMA_V1 = "edgeproof.run/1"
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


class SessionSamples(_Record):
    """Raw timings of one fresh ONNX Runtime session (or one simulated session)."""

    warmup_ms: list[float]
    samples_ms: list[float]
    started_at: str


class ScenarioResult(_Record):
    """What the scenario did, beyond the per-inference latency samples."""

    name: Literal["single-stream", "periodic", "server", "offline"]
    engine: Literal["builtin", "loadgen", "simulator", "field"] = "builtin"
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
    # bytes the node wrote per run (ONNX Runtime's output_size), where the profile says
    output_bytes: float | None = None


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
    kind: Literal["host", "simulated", "remote", "field"]
    profile_version: str | None = None
    power_mode: str | None = None
    firmware: dict[str, Any] | None = None
    # a device's catalog board (boards.toml, else the agent's --board): the contract judges it by [budgets.<board>]
    board: str | None = None


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


class OutputMetrics(_Record):
    """One output judged on one slice by its contract metric, against the float reference.

    A higher-is-better metric (top1, topk:K, cosine, a user score) has ``drop_pp`` = (reference −
    value)·100; a lower-is-better one (mse, mae, a user error) has ``increase`` = value − reference and
    ``increase_pct`` relative to the reference (None when the reference's error is 0 and this one is not)."""

    metric: str
    higher_is_better: bool
    value: float
    reference_value: float
    drop_pp: float | None = None
    increase: float | None = None
    increase_pct: float | None = None
    agreement: float


class PolicyOutcome(_Record):
    """A confidence policy on one slice: below ``min_confidence`` the float reference answers instead."""

    min_confidence: float
    fallback: str  # what answered below the threshold ("float reference <sha256 prefix>")
    fallback_rate: float
    accuracy: float  # top-1 with the policy (the slice's accuracy is without it)


class SliceMetrics(_Record):
    """A slice's headline figures (the first judged output: ``accuracy`` is its metric's value and
    ``drop_pp`` its worsening, in points for a rate or percent for an error), and every judged output."""

    slice_id: str
    n: int
    accuracy: float
    reference_accuracy: float
    drop_pp: float
    agreement: float
    # top-class probability: only for an output of class scores (None for a regression head)
    mean_confidence: float | None
    confidence_shift: float | None
    # nominal slice's mean confidence minus this slice's (same model); None on nominal or without one
    confidence_drop: float | None = None
    outputs: dict[str, OutputMetrics] = Field(default_factory=dict)
    # the contract's [evaluation.policy] on this slice (top-1 classifiers only)
    policy: PolicyOutcome | None = None


class Evaluation(_Record):
    dataset_id: str
    reference_sha256: str
    # what the slices were judged by: "top1", or "output:metric, ..." for several outputs
    metric: str = "top1"
    # output -> metric name, and output -> whether higher is better (empty in records before them)
    outputs: dict[str, str] = Field(default_factory=dict)
    higher_is_better: dict[str, bool] = Field(default_factory=dict)
    slices: dict[str, SliceMetrics]
    # per-slice predictions (class indices) kept so a gate can test paired differences
    predictions: dict[str, list[int]] = Field(default_factory=dict)
    labels: dict[str, list[int]] = Field(default_factory=dict)
    # slice -> output -> per-row metric scores (correct 0/1, a row's error, ...) for paired gate tests
    scores: dict[str, dict[str, list[float]]] = Field(default_factory=dict)


class HostFitness(_Record):
    fit: bool
    checks: list[FitnessCheck]
    # when the checks ran, where not just before this run (a search checks once, at its start)
    checked: str | None = None


class ColdStart(_Record):
    """One cold start in a fresh process: import, session creation, first inference and memory."""

    import_ms: float
    session_ms: float
    first_inference_ms: float
    load_time_ms: float
    rss_before_session_mib: float
    peak_rss_mib: float


class InterleaveLayout(_Record):
    """How an interleaved A/B run was laid out, so a gate can pair the two arms' blocks."""

    arm: Literal["A", "B"]
    block_size: int
    blocks: int
    pairs: int
    seed: int
    partner_run_id: str | None = None


class ReferenceProbe(_Record):
    """One session's probe: the model (still in its session) and the reference workload (a fresh
    session of its own) timed in alternating blocks, ``blocks`` of each, laid out block after block."""

    model_ms: list[float]
    reference_ms: list[float]


class ReferenceRun(_Record):
    """A fixed reference workload timed interleaved with the model after each of its sessions (same
    runtime settings), so two runs made apart compare as model/reference and the host's drift between
    them cancels (``edgeproof.measure.reference``). The model's own figures come from its sessions
    alone; the probes only serve that comparison."""

    workload: str  # the workload's name and version; runs are normalised only by the same one
    sha256: str
    blocks: int
    model_block: int  # model inferences per block
    reference_block: int  # reference inferences per block
    probes: list[ReferenceProbe]

    @model_validator(mode="after")
    def _probes_match_layout(self) -> ReferenceRun:
        for i, p in enumerate(self.probes):
            if len(p.model_ms) != self.blocks * self.model_block or len(p.reference_ms) != self.blocks * self.reference_block:
                raise ValueError(
                    f"probes.{i}: {len(p.model_ms)} model and {len(p.reference_ms)} reference samples do not fill "
                    f"{self.blocks} blocks of {self.model_block} and {self.reference_block}"
                )
            if min(p.model_ms + p.reference_ms, default=1.0) <= 0:
                raise ValueError(f"probes.{i}: a timing is not positive")
        return self


class VariantRef(_Record):
    """The variant a run measured: its recipe, content hash and, inside a search, where it came from."""

    name: str
    sha256: str
    recipe: Recipe
    origin: str | None = None  # plan | speed | mixed
    cache_hit: bool | None = None


class OperatingPointRecord(_Record):
    """Effective clocks of a simulated board after firmware caps, power cap and governor."""

    power_mode: str
    cpu_clock_ghz: float
    cpu_cores: int
    threads: int
    accel_clock_mhz: float | None
    accel_units_frac: float
    memory_bandwidth_gbs: float
    cap_factor: float = 1.0
    throttle_factor: float = 1.0


class SegmentRow(_Record):
    """A run of consecutive kernels on one device."""

    index: int
    device: str
    kernels: list[str]
    nodes: int
    time_ms: float
    flops: float


class BoundaryRow(_Record):
    """A copy between two segments (-1: the host side)."""

    src: int
    dst: int
    tensors: list[str]
    bytes: float
    time_ms: float


class FallbackKernel(_Record):
    """A kernel the accelerator could not run, and why."""

    kernel: str
    op_type: str
    precision: str | None
    reason: str


class Partitions(_Record):
    """Fragmentation of a simulated graph: segments, the copies between them and the kernels that fell back."""

    accelerator: str | None
    segment_count: int
    accelerator_nodes: int
    cpu_nodes: int
    bytes_copied: float
    copy_ms: float
    segments: list[SegmentRow]
    boundaries: list[BoundaryRow]
    fallback: list[FallbackKernel]


class TimelinePhase(_Record):
    """One phase (kernel or copy) of a simulated inference."""

    kind: str
    device: str
    name: str
    start_us: float
    duration_us: float
    bound: str | None = None
    power_w: float | None = None


class ThrottleEvent(_Record):
    t_s: float
    event: str
    level: int | float | str | None = None
    temperature_c: float


class RampUp(_Record):
    """Time and energy from process start to the first inference."""

    time_ms: float
    energy_mj: float
    includes: str


class SoakTrace(_Record):
    """A simulated thermal soak: traces over time, throttle events, and what they did to latency."""

    duration_s: float
    step_s: float
    ambient_c: float
    rate_hz: float | None
    t_s: list[float]
    temperature_c: list[float]
    power_w: list[float]
    latency_ms: list[float]
    clock_factor: list[float]
    throughput_ips: list[float]
    throttle_events: list[ThrottleEvent]
    first_trip_s: float | None
    throttled_s: float
    peak_temperature_c: float
    sustained_w: float
    mean_latency_before_trip_ms: float | None
    mean_latency_after_trip_ms: float | None
    idle_w_at_ambient: float
    idle_w_at_end: float
    ramp_up: RampUp
    requested: bool


class MemoryResidency(_Record):
    """RAM a simulated board holds while the model runs."""

    weights_mib: float
    activations_peak_mib: float
    runtime_mib: float
    accel_arena_mib: float | None
    resident_mib: float
    fits_ram: bool
    fits_accel: bool


class LoadBreakdown(_Record):
    """Simulated time from process start to a ready model."""

    runtime_init_ms: float
    storage_read_ms: float
    accelerator_upload_ms: float
    total_ms: float
    boot_s: float | None = None


class JitterModel(_Record):
    """The latency noise model the simulated samples were drawn from."""

    sigma: float
    session_sigma: float
    spike_prob: float
    spike_ms: float
    seed: int


class ModelCost(_Record):
    flops: float
    macs: float
    weight_bytes: float
    intensity_flop_per_byte: float | None


class HostProfileRef(_Record):
    """Which calibration of this host a host simulation used."""

    created_at: str
    cpu_model: str
    onnxruntime: str


class Simulation(_Record):
    """What the board simulator modelled to produce a simulated run."""

    profile: str  # board@version/fw-version, or host@version
    target_name: str | None = None
    precision_override: str | None = None
    operating_point: OperatingPointRecord | None = None
    latency_model_ms: float
    partitions: Partitions
    timeline: list[TimelinePhase]
    soak: SoakTrace | None = None
    memory: MemoryResidency | None = None
    load: LoadBreakdown | None = None
    jitter: JitterModel
    model_cost: ModelCost
    assumptions: list[str] = Field(default_factory=list)
    host_profile: HostProfileRef | None = None
    # The board profile's error against published figures: a simulated quantile q lies, at that
    # validation's coverage, within [q/(1+rel), q*(1+rel)]. Shown beside the point; clauses judge the point.
    latency_interval_rel: float | None = None
    latency_interval_basis: str = ""


class StageTiming(_Record):
    """One stage of an end-to-end inference (pre, copy_in, model, copy_out, post, or the total):
    its per-inference time and its share of the mean end-to-end time."""

    name: str
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    share: float
    provenance: str


class Copies(_Record):
    """Host↔device copies of one inference: count, bytes and time. Measured from ONNX Runtime's
    profile (MemcpyToHost / MemcpyFromHost nodes) or simulated (a board's partition boundaries)."""

    count: int
    bytes: float | None
    time_ms: float | None
    provenance: str


class Stages(_Record):
    """End-to-end timing by stage with the contract's pipeline: ``stages`` in order plus ``total``
    (pre + copy in + model + copy out + post per inference, timed together on one fresh session).
    ``unavailable`` says why there is no timing (a simulated board cannot run a Python step)."""

    pipeline_sha256: str | None = None
    pipeline: str = ""
    n: int = 0
    stages: list[StageTiming] = Field(default_factory=list)
    total: StageTiming | None = None
    unavailable: str | None = None

    def stage(self, name: str) -> StageTiming | None:
        return next((s for s in self.stages if s.name == name), None)


class RunRecord(_Record):
    """One measurement or simulation of (variant, target, runtime settings, power mode).

    Version 2 holds in typed fields what version 1 kept in ``extras``; ``load_record`` still reads
    version 1 files (see ``upgrade_run_v1``)."""

    schema_version: str = RUN_SCHEMA
    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    # field: built from a cohort's telemetry windows (sketches and counts, no raw samples; edgeproof.field)
    kind: Literal["measured", "simulated", "field"]
    model: ModelRef
    variant: VariantRef | None = None
    target: TargetRef
    settings: RuntimeSettings
    scenario: ScenarioResult
    # the shape fed to each input (free dims resolved)
    inputs: dict[str, list[int]] = Field(default_factory=dict)
    sessions: list[SessionSamples]
    latency: LatencyStats
    latency_provenance: str
    load_time_ms: Figure
    peak_rss_mib: Figure
    model_size_mib: Figure
    energy_mj_per_inference: Figure
    sustained_w: Figure
    temperature_c: Figure
    cold_start: list[ColdStart] = Field(default_factory=list)
    interleave: InterleaveLayout | None = None
    placement: Placement | None = None
    simulation: Simulation | None = None
    evaluation: Evaluation | None = None
    env: EnvFingerprint
    fitness: HostFitness | None = None
    # what the runner noticed about this run beyond latency statistics (simulator warnings, …)
    warnings: list[str] = Field(default_factory=list)
    # end-to-end timing by pipeline stage (a contract with [pipeline]); None without a pipeline
    stages: Stages | None = None
    # host↔device copies seen in ONNX Runtime's profile (non-CPU providers)
    copies: Copies | None = None
    # the reference workload timed interleaved with the model after each session (single-stream host
    # runs that asked for it); None in older records
    reference: ReferenceRun | None = None

    @model_validator(mode="after")
    def _summary_matches_samples(self) -> RunRecord:
        if self.schema_version != RUN_SCHEMA:
            raise ValueError(f"schema_version {self.schema_version!r} is not {RUN_SCHEMA!r}")
        if self.kind == "field":
            # a field record's summary comes from merged sketches (edgeproof.field); it has no raw samples to check it by
            if self.sessions:
                raise ValueError("a field record holds sketches and counts, not raw session samples")
            return self
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

    @property
    def simulated_profile(self) -> str | None:
        return self.simulation.profile if self.simulation is not None else None


# Version-1 ``extras`` keys that described a simulation, now fields of ``Simulation``.
_V1_SIMULATION_KEYS = (
    "target_name",
    "precision_override",
    "operating_point",
    "latency_model_ms",
    "partitions",
    "timeline",
    "soak",
    "memory",
    "load",
    "jitter",
    "model_cost",
    "assumptions",
    "host_profile",
)


def _v1_variant(variant: Any) -> Any:
    """The five shapes a version-1 run held its variant in (a search's flat recipe + name, a Variant,
    a bare recipe, either with a ``label``) become one ``VariantRef``."""
    if not isinstance(variant, dict):
        return variant
    recipe_fields = set(Recipe.model_fields)
    recipe = variant.get("recipe")
    if not isinstance(recipe, dict):
        recipe = {k: v for k, v in variant.items() if k in recipe_fields}
    name = variant.get("name") or variant.get("label")
    if not name:
        try:
            name = Recipe.model_validate(recipe).label()
        except ValidationError:
            name = str(recipe.get("precision", "variant"))
    out: dict[str, Any] = {"name": name, "sha256": variant.get("sha256", ""), "recipe": recipe}
    for key in ("origin", "cache_hit"):
        if key in variant:
            out[key] = variant[key]
    return out


def upgrade_run_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """A version-1 run record's JSON as version 2: ``extras`` keys move into their typed fields.

    A key this edgeproof does not know is kept as a warning on the record, not dropped silently."""
    out = {k: v for k, v in raw.items() if k != "extras"}
    out["schema_version"] = RUN_SCHEMA
    extras = dict(raw.get("extras") or {})
    if "variant" in out:
        out["variant"] = _v1_variant(out["variant"])
    warnings = list(extras.pop("warnings", []) or [])
    if "cold_start" in extras:
        out["cold_start"] = extras.pop("cold_start")
    if "inputs" in extras:
        out["inputs"] = extras.pop("inputs")
    if "interleaved" in extras:
        out["interleave"] = extras.pop("interleaved")
    checked = extras.pop("fitness_checked", None)
    if checked is not None and isinstance(out.get("fitness"), dict):
        out["fitness"] = {**out["fitness"], "checked": checked}
    profile = extras.pop("simulated_profile", None)
    if profile is not None:
        sim = {k: extras.pop(k) for k in _V1_SIMULATION_KEYS if k in extras}
        sim["profile"] = profile
        parts = sim.get("partitions")
        if isinstance(parts, dict):
            sim["partitions"] = {
                **parts,
                "boundaries": [
                    {("src" if k == "from" else "dst" if k == "to" else k): v for k, v in b.items()} for b in parts.get("boundaries", [])
                ],
            }
        out["simulation"] = sim
    warnings += [f"version-1 record field extras.{key} is not read by this edgeproof" for key in sorted(extras)]
    if warnings:
        out["warnings"] = warnings
    return out


# Readers of older schema versions: (record class, version on disk) -> converter to the current JSON.
_UPGRADES: dict[tuple[str, str], Any] = {("RunRecord", RUN_SCHEMA_V1): upgrade_run_v1}


def upgrade(cls: type[BaseModel], raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` in ``cls``'s current schema, converting an older version this edgeproof still reads."""
    convert = _UPGRADES.get((cls.__name__, raw.get("schema_version", "")))
    return convert(raw) if convert is not None else raw


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
    raw = upgrade(cls, raw)
    expected = cls.model_fields.get("schema_version")
    if expected is not None and "schema_version" in raw and raw["schema_version"] != expected.default:
        raise RecordError(f"{path}: schema_version {raw['schema_version']!r}, this edgeproof reads {expected.default!r}")
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


class WaiverUse(_Record):
    """A contract waiver as a verdict lists it: applied to a clause, or expired and so not applied."""

    clause: str
    owner: str
    reason: str
    expires: date
    target: str | None = None  # None: the waiver covers every target

    def sentence(self, expired: bool = False) -> str:
        """``budgets.p95_ms on host, owner X, until 2027-01-31: reason`` (``expired on`` for an expired one)."""
        scope = f"on {self.target}" if self.target else "on every target"
        until = "expired on" if expired else "until"
        return f"{self.clause} {scope}, owner {self.owner}, {until} {self.expires.isoformat()}: {self.reason}"


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
    waiver: WaiverUse | None = None
    budget_from: str | None = None  # the contract table the budget was read from: [budgets] or [budgets.<target>]


class GateRegression(_Record):
    """One gate clause against the baseline, as the verdict sums it up.

    ``ratio`` is the clause's value: candidate / baseline for latency, memory and energy, the new
    fallback node count, or the candidate's accuracy on a slice; ``limit`` is what it is judged against.
    """

    clause: str
    status: Literal["pass", "fail", "unverified", "waived"]
    ratio: float | None
    interval: tuple[float, float] | None = None
    limit: float | None
    note: str = ""

    @classmethod
    def of(cls, result: ClauseResult) -> GateRegression:
        return cls(
            clause=result.clause, status=result.status, ratio=result.value, interval=result.interval, limit=result.budget, note=result.note
        )


def _outcome_of_statuses(statuses: Iterable[str], allow_unverified: bool) -> Outcome:
    seen = set(statuses)
    if "fail" in seen:
        return "fail"
    if "unverified" in seen and not allow_unverified:
        return "undecided"
    return "pass"


def outcome_of(clauses: Iterable[ClauseResult], allow_unverified: bool) -> Outcome:
    """The one rule for a verdict: fail when a clause fails on evidence (a waived one reads ``waived``);
    else undecided when a clause has no data and unverified clauses are not allowed; else pass."""
    return _outcome_of_statuses((c.status for c in clauses), allow_unverified)


class Verdict(_Record):
    """A contract verdict for one target: its outcome, every clause, and the clause that binds.

    ``outcome`` follows ``outcome_of``; when it is ``undecided``, ``undecided_because`` says per
    clause why it has no data and what would decide it. ``passed`` is ``outcome == "pass"``, kept
    for readers of verdicts written before ``outcome`` existed (those load with it derived).
    """

    schema_version: str = VERDICT_SCHEMA
    target: str
    outcome: Outcome
    passed: bool
    clauses: list[ClauseResult]
    binding_clause: str | None = None
    undecided_because: list[str] = Field(default_factory=list)
    allow_unverified: bool = False
    waivers_applied: list[WaiverUse] = Field(default_factory=list)
    waivers_expired: list[WaiverUse] = Field(default_factory=list)
    regressions: list[GateRegression] = Field(default_factory=list)
    contract_sha256: str | None = None
    advice: list[str] = Field(default_factory=list)  # what would make the evidence stronger (e.g. `gate --measure`)
    # record mode (two runs measured apart): how latency was compared, which between-run term, from where
    record_mode: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _outcome_of_an_older_verdict(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "outcome" in data:
            return data
        clauses = data.get("clauses") or []
        statuses = [str(c.get("status") if isinstance(c, dict) else getattr(c, "status", "")) for c in clauses]
        return {**data, "outcome": _outcome_of_statuses(statuses, bool(data.get("allow_unverified", False)))}

    @model_validator(mode="after")
    def _consistent(self) -> Verdict:
        rule = outcome_of(self.clauses, self.allow_unverified)
        if self.outcome != rule:
            raise ValueError(f"outcome is {self.outcome!r} but its clauses give {rule!r}")
        if self.passed != (self.outcome == "pass"):
            raise ValueError(f"passed is {self.passed} but the outcome is {self.outcome!r}")
        return self
