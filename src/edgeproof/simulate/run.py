"""simulate_run: a model on a board (or the calibrated host) as a RunRecord of kind "simulated"."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

from edgeproof.analysis import ModelCost, analyze
from edgeproof.errors import ModelError, TargetError
from edgeproof.measure.placement import placement_of
from edgeproof.measure.stats import LatencyStats, summarize
from edgeproof.model import Model, as_model
from edgeproof.records import (
    BoundaryRow,
    FallbackKernel,
    Figure,
    HostProfileRef,
    JitterModel,
    LoadBreakdown,
    MemoryResidency,
    NodeRecord,
    OperatingPointRecord,
    Partitions,
    RampUp,
    RunRecord,
    RuntimeSettings,
    ScenarioResult,
    SegmentRow,
    SessionSamples,
    Simulation,
    SoakTrace,
    TargetRef,
    TimelinePhase,
)
from edgeproof.records import ModelCost as ModelCostRecord
from edgeproof.simulate.hostprofile import HostProfile, calibration_drift, host_profile
from edgeproof.simulate.jitter import sample_sessions
from edgeproof.simulate.kernels import ITEMSIZE, KernelGraph, as_precision, build_kernels
from edgeproof.simulate.memory import load_time_ms, residency
from edgeproof.simulate.partition import ACCEL, CPU, Partition, partition
from edgeproof.simulate.point import OperatingPoint, operating_point
from edgeproof.simulate.power import PowerTrace, idle_w, power_trace
from edgeproof.simulate.thermal import LoadPoint, SoakResult, idle_equilibrium_c, soak
from edgeproof.simulate.timing import Timeline, board_timeline, host_timeline
from edgeproof.targets.catalog import get_target
from edgeproof.targets.firmware import FirmwareProfile, resolve_firmware
from edgeproof.targets.host import HOST_ID, fingerprint, host_load
from edgeproof.targets.spec import JitterSpec, Target

DEFAULT_SOAK_S = 600.0
FALLBACK_PROVIDER = "CPU (fallback)"
# Above this share of MACs resting on stand-in costs, figures are estimated:, not simulated:.
ESTIMATED_ABOVE_SHARE = 0.05
# A profile never validated against published figures still gets an interval: this wide.
UNVALIDATED_INTERVAL_REL = 1.0

Progress = Callable[[str, float], None]


def simulate_run(
    model_path: Model | str | Path,
    target_id: str,
    power_mode: str | None = None,
    firmware: FirmwareProfile | str | Path | None = None,
    precision: str | None = None,
    threads: int | None = None,
    soak_s: float | None = None,
    ambient_c: float | None = None,
    rate_hz: float | None = None,
    sessions: int = 5,
    samples_per_session: int = 200,
    seed: int = 0,
    catalog_dirs: Iterable[str | Path] = (),
    host_profile_path: str | Path | None = None,
    progress: Progress | None = None,
) -> RunRecord:
    """Simulate ``model_path`` on a catalog board (or ``"host"``) and return a RunRecord.

    power_mode: a mode of the board (default: the firmware's boot mode, else the board's default).
    firmware: a FirmwareProfile or TOML path (default: the board's stock profile).
    precision: run the model's float kernels as if converted to fp16/int8/int16 (what-if).
    threads: CPU threads for CPU kernels (default: every online core; host: 1).
    soak_s / ambient_c / rate_hz: the thermal soak (default 600 s at the board's reference ambient,
        back to back); when soak_s is given the latency samples follow the soak over time.
    sessions / samples_per_session / seed: the simulated samples (jitter model, seeded).

    Every figure is labelled ``simulated:<board>@<profile version>``, or ``estimated:...`` when more
    than ESTIMATED_ABOVE_SHARE of the MACs rest on stand-in costs (shape inference failed).
    """
    model = as_model(model_path)
    path = model.path
    if sessions < 1 or samples_per_session < 1:
        raise TargetError(f"sessions ({sessions}) and samples_per_session ({samples_per_session}) must be at least 1")
    if precision is not None and precision not in ITEMSIZE:
        raise TargetError(f"precision {precision!r}: use one of {', '.join(ITEMSIZE)}")
    if rate_hz is not None and rate_hz <= 0:
        raise TargetError(f"rate {rate_hz} Hz must be positive")
    if soak_s is not None and soak_s <= 0:
        raise TargetError(f"soak duration {soak_s} s must be positive")
    cost = analyze(model.proto, simplify=True)
    graph = build_kernels(cost)
    if precision is not None:
        graph = as_precision(graph, precision, cost)
    if not graph.kernels:
        raise ModelError(f"{path}: nothing to simulate (every node folds to a constant)")
    if target_id == HOST_ID:
        profile = host_profile(host_profile_path, progress)
        return _host_record(model, cost, graph, profile, threads or 1, sessions, samples_per_session, seed, precision)
    target = get_target(target_id, catalog_dirs)
    fw = resolve_firmware(target, firmware)
    op = operating_point(target, fw, power_mode, threads)
    return _board_record(model, cost, graph, target, fw, op, soak_s, ambient_c, rate_hz, sessions, samples_per_session, seed, precision)


def profile_label(target: Target, fw: FirmwareProfile) -> str:
    """``<board>@<catalog version>/fw-<firmware version>``: what a simulated figure's provenance names."""
    return f"{target.id}@{target.version}/fw-{fw.version}"


def board_state(graph: KernelGraph, target: Target, op: OperatingPoint) -> tuple[Partition, Timeline]:
    """Partition and one inference's timeline at an operating point."""
    part = partition(graph, target)
    return part, board_timeline(graph, part, target, op)


def _board_record(
    model: Model,
    cost: ModelCost,
    graph: KernelGraph,
    target: Target,
    fw: FirmwareProfile,
    op: OperatingPoint,
    soak_s: float | None,
    ambient_c: float | None,
    rate_hz: float | None,
    sessions: int,
    samples: int,
    seed: int,
    precision: str | None,
) -> RunRecord:
    label = profile_label(target, fw)
    part, timeline = board_state(graph, target, op)
    ambient = target.thermal.ambient_c if ambient_c is None else ambient_c
    cache: dict[float, LoadPoint] = {}

    def load_at(factor: float) -> LoadPoint:
        if factor not in cache:
            tl = board_timeline(graph, part, target, op.throttled(factor))
            cache[factor] = LoadPoint(tl.total_us / 1e3, power_trace(tl, target, op.throttled(factor), ambient).dynamic_energy_j)
        return cache[factor]

    def idle_at(temp_c: float) -> float:
        return idle_w(target, op, temp_c)

    soak_result = soak(load_at, idle_at, target.thermal, fw.governor, soak_s or DEFAULT_SOAK_S, ambient, rate_hz)
    start_c = idle_equilibrium_c(idle_at, ambient, target.thermal)
    trace = power_trace(timeline, target, op, start_c)
    latency_ms = timeline.total_us / 1e3

    if soak_s is not None:
        bases = _soak_bases(soak_result, sessions, samples)
    else:
        bases = [[latency_ms] * samples for _ in range(sessions)]
    session_samples = sample_sessions(bases, target.jitter, seed)

    res = residency(graph, part, target)
    load = load_time_ms(model.size_bytes, graph, part, target)
    worst_ms = max(max(max(s) for s in session_samples), max(soak_result.latency_ms))
    warnings = _cost_warnings(cost) + res.warnings(target) + _operating_warnings(op, fw, worst_ms)
    provenance = figure_provenance(cost, label)
    interval_rel = latency_interval_rel(cost, target)
    first_inference_mj = trace.energy_j * 1e3
    one_core_w = idle_at(start_c) + target.power_modes[op.power_mode].cpu_dynamic_w / op.cpu_cores
    soak_record = SoakTrace(
        **soak_result.to_dict(),
        idle_w_at_ambient=idle_at(start_c),
        idle_w_at_end=idle_at(soak_result.temperature_c[-1]),
        ramp_up=RampUp(
            time_ms=load["total_ms"] + latency_ms,
            # W x ms = mJ: one core busy while loading, then the first inference
            energy_mj=one_core_w * load["total_ms"] + first_inference_mj,
            includes="runtime init + model read + accelerator upload + first inference (boot excluded)",
        ),
        requested=soak_s is not None,
    )

    def sim(value: float, unit: str) -> Figure:
        return Figure(value=value, unit=unit, provenance=provenance)

    return RunRecord(
        kind="simulated",
        model=model.ref,
        target=TargetRef(
            id=target.id,
            kind="simulated",
            profile_version=f"{target.version}/fw-{fw.version}",
            power_mode=op.power_mode,
            firmware=fw.model_dump(),
        ),
        settings=RuntimeSettings(provider=target.accelerator.name if target.accelerator else "CPU", intra_op_threads=op.threads),
        scenario=_scenario(rate_hz, session_samples),
        sessions=[SessionSamples(warmup_ms=[], samples_ms=s, started_at=f"simulated session {i}") for i, s in enumerate(session_samples)],
        latency=_summarize_simulated(session_samples),
        latency_provenance=provenance,
        load_time_ms=sim(load["total_ms"], "ms"),
        peak_rss_mib=sim(res.resident_mib, "MiB"),
        model_size_mib=Figure.measured(model.size_bytes / 2**20, "MiB", "file-size"),
        energy_mj_per_inference=sim(first_inference_mj, "mJ"),
        sustained_w=sim(soak_result.sustained_w, "W"),
        temperature_c=sim(soak_result.peak_c, "°C"),
        placement=_placement(graph, cost, part, timeline, target, provenance),
        env=fingerprint(),
        simulation=Simulation(
            profile=label,
            target_name=target.name,
            precision_override=precision,
            operating_point=OperatingPointRecord(**asdict(op)),
            latency_model_ms=latency_ms,
            partitions=partitions_summary(graph, part, timeline, target),
            timeline=_timeline_rows(timeline, trace),
            soak=soak_record,
            memory=MemoryResidency(**asdict(res)),
            load=LoadBreakdown(**load),
            jitter=JitterModel(**target.jitter.model_dump(), seed=seed),
            model_cost=_model_cost(cost),
            assumptions=cost.simplified + cost.assumptions,
            latency_interval_rel=interval_rel,
            latency_interval_basis=interval_basis(target, interval_rel),
        ),
        warnings=warnings,
    )


def is_estimated(cost: ModelCost) -> bool:
    """True when too much of the model rests on stand-in costs for a simulated figure."""
    return cost.unknown_macs_share > ESTIMATED_ABOVE_SHARE


def figure_provenance(cost: ModelCost, label: str) -> str:
    """``simulated:<label>``, or ``estimated:<label> ...`` when stand-in costs carry the model."""
    if is_estimated(cost):
        return f"estimated:{label} with stand-in costs for {cost.unknown_macs_share:.0%} of MACs"
    return f"simulated:{label}"


def _cost_warnings(cost: ModelCost) -> list[str]:
    warning = cost.uncertainty_warning()
    if warning is None:
        return []
    if is_estimated(cost):
        warning += (
            f"; above {ESTIMATED_ABOVE_SHARE:.0%}, so the figures are estimated (wide interval) and a clause on them stays unverified"
        )
    return [warning]


def latency_interval_rel(cost: ModelCost, target: Target) -> float:
    """Relative half-width of a simulated latency's interval: the profile's validation error against
    published figures (wide when never validated), doubled when stand-in costs carry the model."""
    rel = target.validation.interval_rel if target.validation is not None else UNVALIDATED_INTERVAL_REL
    return widened(rel, cost)


def widened(rel: float, cost: ModelCost) -> float:
    """A profile's interval, doubled (and one more) when stand-in costs carry the model."""
    return 2 * rel + 1 if is_estimated(cost) else rel


def host_interval(profile: HostProfile, cost: ModelCost) -> tuple[float, str]:
    """A host-simulated latency's interval: the host profile's largest error in its last check against
    measurement (``simulate --validate-host``), wide when it was never checked."""
    check = profile.validation
    rel = widened(check.max_abs_error if check is not None else UNVALIDATED_INTERVAL_REL, cost)
    if check is None:
        basis = f"±{rel:.0%}: host@{profile.version} was never checked against measurement (edgeproof simulate --validate-host)"
    else:
        basis = check.interval_basis(profile.version)
    return rel, basis


def interval_basis(target: Target, rel: float) -> str:
    """Where a simulated latency's interval comes from, in words."""
    if target.validation is None:
        return f"±{rel:.0%}: {target.id}@{target.version} was never validated against published figures"
    v = target.validation
    return (
        f"±{rel:.0%}: 90% of {target.id}@{target.version}'s held-out and leave-one-model-out predictions "
        f"of published figures fell within it ({v.source}, {v.rows} rows)"
    )


def latency_interval_ms(record: RunRecord, key: str) -> tuple[float, float] | None:
    """The profile-error interval of a simulated quantile (``p50_ms`` ...), or None without one."""
    sim = record.simulation
    if sim is None or sim.latency_interval_rel is None:
        return None
    value = getattr(record.latency, key)
    return value / (1 + sim.latency_interval_rel), value * (1 + sim.latency_interval_rel)


def _model_cost(cost: ModelCost) -> ModelCostRecord:
    return ModelCostRecord(
        flops=cost.total_flops, macs=cost.total_macs, weight_bytes=cost.weight_bytes, intensity_flop_per_byte=cost.intensity
    )


def _host_record(
    model: Model,
    cost: ModelCost,
    graph: KernelGraph,
    profile: HostProfile,
    threads: int,
    sessions: int,
    samples: int,
    seed: int,
    precision: str | None,
) -> RunRecord:
    label = f"host@{profile.version}"
    provenance = figure_provenance(cost, label)
    timeline, notes = host_timeline(graph, profile, threads)
    interval_rel, basis = host_interval(profile, cost)
    latency_ms = timeline.total_us / 1e3
    jitter = JitterSpec(sigma=profile.jitter_cv, session_sigma=profile.jitter_cv, spike_prob=0.0, spike_ms=0.0)
    session_samples = sample_sessions([[latency_ms] * samples for _ in range(sessions)], jitter, seed)
    part = Partition(placed={}, segments=(), boundaries=())
    nodes = _node_records(graph, cost, {k.name: "CPUExecutionProvider" for k in graph.kernels}, timeline)
    no_power = "the host profile models time only; measure energy with `edgeproof profile` and a meter"
    return RunRecord(
        kind="simulated",
        model=model.ref,
        target=TargetRef(id=HOST_ID, kind="simulated", profile_version=profile.version),
        settings=RuntimeSettings(intra_op_threads=threads),
        scenario=_scenario(None, session_samples),
        sessions=[SessionSamples(warmup_ms=[], samples_ms=s, started_at=f"simulated session {i}") for i, s in enumerate(session_samples)],
        latency=_summarize_simulated(session_samples),
        latency_provenance=provenance,
        load_time_ms=Figure.unavailable("ms", "the host profile does not model load time; `edgeproof profile` measures it"),
        peak_rss_mib=Figure.unavailable("MiB", "the host profile does not model memory; `edgeproof profile` measures it"),
        model_size_mib=Figure.measured(model.size_bytes / 2**20, "MiB", "file-size"),
        energy_mj_per_inference=Figure.unavailable("mJ", no_power),
        sustained_w=Figure.unavailable("W", no_power),
        temperature_c=Figure.unavailable("°C", no_power),
        placement=placement_of(nodes, "CPUExecutionProvider").model_copy(update={"provenance": provenance}),
        env=fingerprint(),
        simulation=Simulation(
            profile=label,
            precision_override=precision,
            latency_model_ms=latency_ms,
            host_profile=HostProfileRef(
                created_at=profile.created_at, cpu_model=profile.fingerprint.cpu_model, onnxruntime=profile.fingerprint.onnxruntime
            ),
            timeline=_timeline_rows(timeline, None),
            partitions=partitions_summary(graph, part, timeline, None),
            jitter=JitterModel(**jitter.model_dump(), seed=seed),
            model_cost=_model_cost(cost),
            assumptions=cost.simplified + cost.assumptions,
            latency_interval_rel=interval_rel,
            latency_interval_basis=basis,
        ),
        warnings=_cost_warnings(cost) + notes + calibration_drift(profile, host_load()),
    )


def _summarize_simulated(session_samples: list[list[float]]) -> LatencyStats:
    """Statistics of simulated samples, without the noisy-machine warnings: here the spread is the
    documented jitter model's."""
    return summarize(session_samples, warn=False)


def _operating_warnings(op: OperatingPoint, fw: FirmwareProfile, worst_ms: float) -> list[str]:
    out = []
    if op.cap_factor < 1.0:
        out.append(f"power mode {op.power_mode!r} caps power: clocks run at {op.cap_factor:.0%} of the mode's")
    if fw.watchdog_timeout_ms is not None and worst_ms > fw.watchdog_timeout_ms:
        out.append(f"an inference takes up to {worst_ms:.1f} ms, beyond the {fw.watchdog_timeout_ms:g} ms watchdog: the board would reset")
    return out


def _soak_bases(result: SoakResult, sessions: int, samples: int) -> list[list[float]]:
    """Each session covers an equal slice of the soak; its samples follow the latency over that slice."""
    n = len(result.latency_ms)
    bases = []
    for s in range(sessions):
        lo, hi = s * n // sessions, max(s * n // sessions + 1, (s + 1) * n // sessions)
        window = result.latency_ms[lo:hi]
        bases.append([window[i * len(window) // samples] for i in range(samples)])
    return bases


def _scenario(rate_hz: float | None, session_samples: list[list[float]]) -> ScenarioResult:
    if rate_hz is None:
        return ScenarioResult(name="single-stream", engine="simulator")
    deadline = 1000.0 / rate_hz
    flat = [v for s in session_samples for v in s]
    return ScenarioResult(
        name="periodic",
        engine="simulator",
        rate_hz=rate_hz,
        deadline_ms=deadline,
        deadline_miss_rate=sum(v > deadline for v in flat) / len(flat),
    )


def _node_records(graph: KernelGraph, cost: ModelCost, provider_of: dict[str, str], timeline: Timeline) -> list[NodeRecord]:
    """One record per executed ONNX node; a kernel's time goes to its primary node, fused nodes get 0."""
    times = timeline.kernel_us()
    records = []
    for k in graph.kernels:
        for node in k.nodes:
            records.append(
                NodeRecord(
                    name=node,
                    op_type=cost.nodes[node].op_type,
                    provider=provider_of[k.name],
                    time_us=times.get(k.name, 0.0) if node == k.name else 0.0,
                    flops=float(cost.nodes[node].flops),
                )
            )
    return records


def _placement(graph: KernelGraph, cost: ModelCost, part: Partition, timeline: Timeline, target: Target, provenance: str):
    primary = target.accelerator.name if target.accelerator else f"CPU ({target.cpu.name})"
    provider_of = {
        name: (primary if p.device == ACCEL or target.accelerator is None else FALLBACK_PROVIDER) for name, p in part.placed.items()
    }
    nodes = _node_records(graph, cost, provider_of, timeline)
    return placement_of(nodes, primary).model_copy(update={"provenance": provenance})


def partitions_summary(graph: KernelGraph, part: Partition, timeline: Timeline, target: Target | None) -> Partitions:
    """Fragmentation: segments with their nodes, copies across each boundary, and why kernels fell back."""
    times = timeline.kernel_us()
    by_name = {k.name: k for k in graph.kernels}
    copy_us = {p.name: p.duration_us for p in timeline.phases if p.kind == "copy"}
    groups = [(s.index, s.device, list(s.kernels)) for s in part.segments] if part.segments else [(0, CPU, [k.name for k in graph.kernels])]
    seg_rows = [
        SegmentRow(
            index=index,
            device=device,
            kernels=kernels,
            nodes=sum(len(by_name[n].nodes) for n in kernels),
            time_ms=sum(times.get(n, 0.0) for n in kernels) / 1e3,
            flops=sum(by_name[n].flops for n in kernels),
        )
        for index, device, kernels in groups
    ]
    boundaries = []
    for b in part.boundaries:
        key = f"copy seg{b.src if b.src >= 0 else '-host'}->seg{b.dst if b.dst >= 0 else '-host'}"
        boundaries.append(BoundaryRow(src=b.src, dst=b.dst, tensors=list(b.tensors), bytes=b.bytes, time_ms=copy_us.get(key, 0.0) / 1e3))
    fallback = [
        FallbackKernel(kernel=name, op_type=by_name[name].op_type, precision=p.precision, reason=p.reason)
        for name, p in part.placed.items()
        if p.device == CPU and target is not None and target.accelerator is not None
    ]
    return Partitions(
        accelerator=target.accelerator.name if target is not None and target.accelerator else None,
        segment_count=len(seg_rows),
        accelerator_nodes=sum(r.nodes for r in seg_rows if r.device == ACCEL),
        cpu_nodes=sum(r.nodes for r in seg_rows if r.device == CPU),
        bytes_copied=part.bytes_copied,
        copy_ms=sum(b.time_ms for b in boundaries),
        segments=seg_rows,
        boundaries=boundaries,
        fallback=fallback,
    )


def _timeline_rows(timeline: Timeline, trace: PowerTrace | None) -> list[TimelinePhase]:
    watts = [w for _, _, w in trace.segments] if trace is not None else [None] * len(timeline.phases)
    return [
        TimelinePhase(kind=p.kind, device=p.device, name=p.name, start_us=p.start_us, duration_us=p.duration_us, bound=p.bound, power_w=w)
        for p, w in zip(timeline.phases, watts)
    ]
