"""Profile a model on this host: fresh sessions, a scenario, energy and temperature, cold start, placement."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np

from edgeproof.data.dataset import input_rows
from edgeproof.errors import HostUnfitError
from edgeproof.measure import energy, thermal
from edgeproof.measure.coldstart import measure_cold_start
from edgeproof.measure.doctor import check_host
from edgeproof.measure.loadgen import run_loadgen
from edgeproof.measure.placement import placement_of, profile_nodes
from edgeproof.measure.reference import probe, probe_blocks, reference_run
from edgeproof.measure.scenarios import Scenario, back_to_back, paced, parse_scenario
from edgeproof.measure.session import open_session, run_checked
from edgeproof.measure.stages import copies_from_nodes, time_stages
from edgeproof.measure.stats import relative_half_width, summarize
from edgeproof.model import (
    InputSpec,
    Model,
    as_model,
    assemble_feeds,
    feeds_from_npz,
    graph_inputs,
    is_free,
    resolve_inputs,
    rows_as_stack,
    synthetic_feeds,
)
from edgeproof.records import (
    ColdStart,
    Figure,
    HostFitness,
    InterleaveLayout,
    ModelRef,
    ReferenceProbe,
    ReferenceRun,
    RunRecord,
    RuntimeSettings,
    ScenarioResult,
    SessionSamples,
)
from edgeproof.targets.host import fingerprint, host_target

Progress = Callable[[str, float], None]

TIMER = "perf_counter_ns"


@dataclass
class ProfileOptions:
    """How to measure. Sessions are the unit of repetition: intervals are computed over them."""

    scenario: str = "single-stream"
    deadline_ms: float | None = None
    engine: str = "builtin"
    min_sessions: int = 3
    max_sessions: int = 8
    samples_per_session: int = 300
    warmup: int = 30
    target_rel_ci: float = 0.05
    time_budget_s: float = 60.0
    # what to feed (see ``input_feeds``): declared shapes, the user's arrays, data rows by input
    # name ("" = the data's unnamed input), constant feeds by input name
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    inputs_npz: str | None = None
    rows: dict[str, np.ndarray] | None = None
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    max_rows: int = 64
    offline_batch: int = 8
    # the contract's pipeline (edgeproof.data.pipeline.Pipeline) and raw rows to time it end to end
    # by stage (``edgeproof.measure.stages``); None: the session alone is timed
    pipeline: Any = None
    pipeline_rows: np.ndarray | None = None
    stage_samples: int = 200
    cold_start_repeats: int = 3
    profile_nodes: bool = True
    check_fitness: bool = True
    strict: bool = False
    seed: int = 0
    # time the fixed reference workload interleaved with the model after each session (single-stream,
    # builtin engine; edgeproof.measure.reference), so stored records can later be gated against
    # each other with the host's drift cancelled
    reference: bool = False


def _node_flops(model) -> dict[str, float] | None:
    """Per-node FLOPs from the model analysis, when that module is available and understands the graph."""
    try:
        from edgeproof.analysis import analyze
    except ImportError:
        return None
    try:
        cost = analyze(model)
    except Exception:  # analysis is best effort for the FLOP share; placement by nodes and time stands without it
        return None
    return {name: node.flops for name, node in cost.nodes.items()}


def _samples_for(scenario: Scenario, options: ProfileOptions, est_ms: float) -> int:
    per_session_s = options.time_budget_s / max(options.min_sessions, 1) * 0.8
    if scenario.rate_hz:
        cap = int(per_session_s * scenario.rate_hz)
    else:
        cap = int(per_session_s * 1000.0 / max(est_ms, 1e-3))
    return max(20, min(options.samples_per_session, cap))


@dataclass
class Prepared:
    """A model ready to time: loaded once, inputs resolved, feeds built."""

    model: Model
    scenario: Scenario
    specs: list
    feeds: list
    batch: int
    # the --inputs file the feeds came from, if any
    inputs_npz: str | None = None
    # one run's inputs at batch 1 (what a cold start feeds its fresh process)
    sample: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.model.path

    @property
    def ref(self) -> ModelRef:
        return self.model.ref


def input_feeds(model: Model, options: ProfileOptions) -> tuple[list[InputSpec], list[dict[str, np.ndarray]]]:
    """What each run feeds the model, at batch 1: the user's arrays (``inputs_npz``), else the
    data's rows (``rows``, at most ``max_rows``), else synthetic inputs at the model's and the
    declared ``shapes``; ``feeds`` gives inputs none of these hold. Given arrays fix every free dim."""
    proto, constants = model.proto, options.feeds
    if options.inputs_npz:
        return feeds_from_npz(options.inputs_npz, proto, constants, options.shapes)
    if options.rows:
        by_name = {vi.name: vi for vi in graph_inputs(proto)}
        named = input_rows(options.rows, model, constants)
        stacks = {name: rows_as_stack(rows[: options.max_rows], by_name[name]) for name, rows in named.items()}
        hint = (
            "; the data holds inputs "
            + str(sorted(named))
            + ": add 'x_<part>__<input>' arrays, or give it in the contract as [model.feeds.NAME]"
        )
        return assemble_feeds(proto, stacks, constants, options.shapes, where="data", missing_hint=hint)
    shapes = {name: tuple(np.shape(value)) for name, value in constants.items()} | options.shapes
    specs = resolve_inputs(proto, shapes, batch=1)
    feeds = synthetic_feeds(specs, options.seed)
    for spec in specs:
        if spec.name in constants:
            feeds[spec.name] = np.broadcast_to(np.asarray(constants[spec.name]), spec.shape).astype(spec.dtype)
    return specs, [feeds]


def feeds_for_contract(options: ProfileOptions, contract: Any, dataset: Any = None, load: bool = True) -> ProfileOptions:
    """``options`` fed as a contract says: its ``[model.feeds]`` and ``[budgets] shape`` (what the
    options already name wins) and, unless the user gave arrays, the rows of the data's test part
    (``dataset`` when already loaded; with ``load``, the contract's ``[data]`` read here)."""
    from edgeproof.data.dataset import EVALUATION, load_dataset

    shapes = contract.budget_shapes() | options.shapes
    feeds = contract.feed_arrays() | options.feeds
    rows = options.rows
    if rows is None and not options.inputs_npz:
        if dataset is None and load and contract.data_entry is not None:
            dataset = load_dataset(contract.data_entry, contract.base_dir)
        if dataset is not None:
            from edgeproof.accuracy import contract_pipeline
            from edgeproof.data.slices import part_model_rows

            pipeline = dataset.pipeline if dataset.pipeline is not None else contract_pipeline(contract)
            rows = part_model_rows(dataset.parts[EVALUATION], pipeline, options.max_rows)
    return replace(options, shapes=shapes, feeds=feeds, rows=rows)


def _offline_batch(model: Model, feeds: list[dict[str, np.ndarray]], batch: int) -> tuple[list[dict[str, np.ndarray]], int]:
    """Feeds stacked ``batch`` samples deep along every input whose leading dim is free (the rest,
    such as a state or a scalar, fed as they are); a model with a fixed leading dim keeps it."""
    batched = [vi.name for vi in graph_inputs(model.proto) if vi.type.tensor_type.shape.dim and is_free(vi.type.tensor_type.shape.dim[0])]
    if not batched or batch <= 1:
        return feeds, 1
    out = []
    k = len(feeds)
    for start in range(0, max(k, batch), batch):
        idx = [(start + j) % k for j in range(batch)]
        out.append({name: np.concatenate([feeds[i][name] for i in idx]) if name in batched else value for name, value in feeds[0].items()})
    return out, batch


def prepare(model: Model | str | Path, options: ProfileOptions) -> Prepared:
    """Check the model (loaded once; a path is loaded here) and build its feeds (``input_feeds``)."""
    scenario = parse_scenario(options.scenario, options.deadline_ms)
    model = as_model(model)
    specs, feeds = input_feeds(model, options)
    sample = feeds[0]
    batch = 1
    if scenario.name == "offline":
        feeds, batch = _offline_batch(model, feeds, options.offline_batch)
    return Prepared(model, scenario, specs, feeds, batch, options.inputs_npz, sample)


def host_fitness(strict: bool = False) -> HostFitness:
    """This host's fitness for measuring now; with ``strict``, an unfit host is refused (HostUnfitError)."""
    fitness = check_host(thermal.max_temperature_c()).model_copy(update={"checked": now_iso()})
    if strict and not fitness.fit:
        bad = "; ".join(f"{c.name}: {c.value}" for c in fitness.checks if not c.ok)
        raise HostUnfitError(f"host is unfit for measuring ({bad}); run without --strict to measure anyway")
    return fitness


@dataclass
class EnergyTally:
    """Joules and seconds summed over the timed windows of one arm; None meter means unavailable."""

    meter: energy.EnergyMeter | None
    joules: float = 0.0
    seconds: float = 0.0

    def begin(self, name: str) -> None:
        if self.meter is not None:
            self.meter.begin_window(name)

    def end(self, name: str) -> None:
        if self.meter is not None:
            win = self.meter.end_window(name)
            self.joules += win.energy_j
            self.seconds += win.duration_s

    def figures(self, inferences: int) -> tuple[Figure, Figure]:
        if self.meter is None:
            why = energy.why_unavailable()
            return Figure.unavailable("mJ", why), Figure.unavailable("W", why)
        return (
            Figure.measured(self.joules / inferences * 1000.0, "mJ", self.meter.name),
            Figure.measured(self.joules / self.seconds, "W", self.meter.name),
        )


def finish_record(
    prep: Prepared,
    settings: RuntimeSettings,
    options: ProfileOptions,
    sessions: list[SessionSamples],
    scenario: ScenarioResult,
    tally: EnergyTally,
    peak_temp_c: float | None,
    fitness: HostFitness | None,
    report: Progress,
    interleave: InterleaveLayout | None = None,
    reference: ReferenceRun | None = None,
) -> RunRecord:
    """Add cold start, peak RSS and placement to timed sessions and assemble the RunRecord."""
    latency = summarize([s.samples_ms for s in sessions])
    cold: list[ColdStart] = []
    if options.cold_start_repeats > 0:
        report("cold start in a fresh process", 0.92)
        with tempfile.TemporaryDirectory(prefix="edgeproof-feeds-") as tmp:
            # the fresh process is fed what the timed runs are fed (data rows, the contract's feeds)
            sample_npz = str(Path(tmp) / "sample.npz") if prep.sample else None
            if sample_npz:
                np.savez(sample_npz, **cast(dict[str, Any], prep.sample))
            cold = measure_cold_start(prep.path, settings, prep.specs, sample_npz, repeats=options.cold_start_repeats)
    placement, copies = None, None
    if options.profile_nodes:
        report("per-node profile", 0.96)
        nodes = profile_nodes(prep.path, settings, prep.feeds[0])
        placement = placement_of(nodes, settings.provider, _node_flops(prep.model.proto))
        copies = copies_from_nodes(nodes, settings.provider)
    stages = None
    if options.pipeline is not None and options.pipeline_rows is not None:
        report("pipeline stages", 0.98)
        rows = options.pipeline_rows
        stages = time_stages(str(prep.path), settings, options.pipeline, rows, prep.sample, options.stage_samples)
    # a sample is one run call, which is a batch of prep.batch inferences offline
    energy_fig, watts_fig = tally.figures(prep.batch * sum(len(s.samples_ms) for s in sessions))
    temp_fig = (
        Figure.measured(peak_temp_c, "°C", "thermal-sensors-peak")
        if peak_temp_c is not None
        else Figure.unavailable("°C", "no temperature sensor readable on this host")
    )
    return RunRecord(
        kind="measured",
        model=prep.ref,
        target=host_target(),
        settings=settings,
        scenario=scenario,
        sessions=sessions,
        latency=latency,
        latency_provenance=f"measured:{TIMER}" + (" via mlperf-loadgen" if scenario.engine == "loadgen" else ""),
        load_time_ms=cold_start_figure(cold, "load_time_ms", "ms", "fresh-process:session+first-inference", statistics.median),
        peak_rss_mib=cold_start_figure(cold, "peak_rss_mib", "MiB", "fresh-process:VmHWM", max),
        model_size_mib=Figure.measured(prep.ref.size_bytes / 2**20, "MiB", "file-size"),
        energy_mj_per_inference=energy_fig,
        sustained_w=watts_fig,
        temperature_c=temp_fig,
        placement=placement,
        env=fingerprint(),
        fitness=fitness,
        cold_start=cold,
        inputs={s.name: list(s.shape) for s in prep.specs},
        interleave=interleave,
        stages=stages,
        copies=copies,
        reference=reference,
    )


def cold_start_figure(cold: list[ColdStart], key: str, unit: str, meter: str, pick: Callable[[list[float]], float]) -> Figure:
    """A cold-start figure over the fresh processes (``pick`` of them, with their range), or
    unavailable when the run skipped cold starts (a screening run)."""
    if not cold:
        return Figure.unavailable(unit, "not measured: this run skipped cold starts (a screening run)")
    values = [getattr(c, key) for c in cold]
    return Figure.measured(pick(values), unit, meter, (min(values), max(values)))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def profile_model(
    model_path: Model | str | Path,
    settings: RuntimeSettings | None = None,
    options: ProfileOptions | None = None,
    progress: Progress | None = None,
) -> RunRecord:
    """Measure a model on this host and return its RunRecord (raw samples kept): a host runner
    opened, used once and closed (``edgeproof.runners``)."""
    from edgeproof.runners import HostRunner

    options = options or ProfileOptions()
    with HostRunner(check_fitness=options.check_fitness, strict=options.strict) as runner:
        return runner.run(runner.prepare(model_path, options), settings or RuntimeSettings(), options, progress)


def measure_prepared(
    prep: Prepared,
    settings: RuntimeSettings,
    options: ProfileOptions,
    meter: energy.EnergyMeter | None,
    fitness: HostFitness | None,
    report: Progress,
) -> RunRecord:
    """Time fresh sessions of a prepared model under its scenario until the p95 interval is narrow
    enough (or the session cap or time budget is reached), then add cold start and placement."""
    scenario, feeds, model_path = prep.scenario, prep.feeds, prep.path
    sessions: list[SessionSamples] = []
    probes: list[ReferenceProbe] = []
    probe_block = 0
    with_reference = options.reference and scenario.name == "single-stream" and options.engine != "loadgen"
    queueing: list[float] = []
    loadgen_summaries: list[dict] = []
    started = time.monotonic()
    with thermal.ThermalSampler() as temps:
        tally = EnergyTally(meter)
        while True:
            idx = len(sessions)
            report(f"session {idx + 1}", min(0.9, idx / max(options.min_sessions, 1) * 0.7))
            sess = open_session(model_path, settings)
            run_checked(sess, feeds[0], str(model_path))
            run = sess.run
            warm = back_to_back(run, feeds, options.warmup)
            est_ms = float(np.median(warm[len(warm) // 2 :])) if warm else 1.0
            n = _samples_for(scenario, options, est_ms)
            tally.begin(f"session-{idx}")
            if options.engine == "loadgen":
                samples, summary = run_loadgen(
                    run, feeds, scenario, min_queries=n, min_duration_ms=int(n * est_ms), expected_latency_ms=est_ms
                )
                loadgen_summaries.append(summary)
            elif scenario.rate_hz:
                res = paced(run, feeds, n, scenario.rate_hz, scenario.poisson, seed=options.seed + idx)
                samples = res.latency_ms
                queueing.extend(res.queueing_ms)
            else:
                samples = back_to_back(run, feeds, n)
            tally.end(f"session-{idx}")
            if with_reference:
                probe_block = probe_block or probe_blocks(est_ms)
                probes.append(probe(run, feeds, probe_block, settings))
            sessions.append(SessionSamples(warmup_ms=warm, samples_ms=samples, started_at=now_iso()))
            del sess
            done = len(sessions)
            if done >= options.max_sessions:
                break
            if done >= options.min_sessions:
                if relative_half_width(summarize([s.samples_ms for s in sessions]), "p95") <= options.target_rel_ci:
                    break
                if time.monotonic() - started > options.time_budget_s:
                    break
        peak_temp = temps.peak_c

    scen = ScenarioResult(
        name=scenario.name,
        engine="loadgen" if options.engine == "loadgen" else "builtin",
        rate_hz=scenario.rate_hz,
        deadline_ms=scenario.deadline_ms,
        batch_size=prep.batch,
    )
    all_ms = [x for s in sessions for x in s.samples_ms]
    if scenario.rate_hz and options.engine != "loadgen":
        scen.deadline_miss_rate = float(np.mean(np.array(all_ms) > scenario.deadline_ms))
        scen.queueing_delay_p50_ms = float(np.quantile(queueing, 0.5))
        scen.queueing_delay_p95_ms = float(np.quantile(queueing, 0.95))
    if scenario.name == "offline":
        scen.throughput_ips = prep.batch * len(all_ms) / (sum(all_ms) / 1000.0)
    if loadgen_summaries:
        valid = all(s.get("result") == "VALID" for s in loadgen_summaries)
        scen.loadgen = {"sessions": loadgen_summaries, "result": "VALID" if valid else "INVALID"}
    reference = reference_run(probes, probe_block) if with_reference else None
    record = finish_record(prep, settings, options, sessions, scen, tally, peak_temp, fitness, report, reference=reference)
    if len(sessions) >= options.min_sessions and time.monotonic() - started > options.time_budget_s:
        if relative_half_width(record.latency, "p95") > options.target_rel_ci:
            record.latency.warnings.append(
                f"time budget {options.time_budget_s:g}s reached before the p95 interval narrowed to ±{options.target_rel_ci:.0%}"
            )
    return record
