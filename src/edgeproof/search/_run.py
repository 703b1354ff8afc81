"""Run a contract-driven search: build variants, race the candidates, confirm the pick interleaved, or explain."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgeproof import history
from edgeproof.accuracy import contract_evaluator, contract_pipeline, with_pipeline
from edgeproof.contract import Contract
from edgeproof.data import CalibrationSet, Dataset, Slice, SliceSpec, calibration_set, check_fits_model, load_dataset, make_slices
from edgeproof.data.feeds import Inputs, declared_of_model, row_feeds
from edgeproof.errors import DataError, ModelError
from edgeproof.evaluate import worst_drop_pp
from edgeproof.measure.runner import ProfileOptions, feeds_for_contract, input_feeds
from edgeproof.measure.stages import stage_options
from edgeproof.model import Model, as_model
from edgeproof.records import RunRecord, RuntimeSettings, load_record, save_record, write_atomic
from edgeproof.search._confirm import Confirmed, confirm
from edgeproof.search._explain import decide_target, explain_infeasible
from edgeproof.search._measure import SCREEN_SAMPLES, SearchRunners, board_modes
from edgeproof.search._race import binding_metric, bounds
from edgeproof.search._racing import BuiltVariant, Clock, Race, Variants
from edgeproof.search._records import Candidate, Phase, SearchResult, Selection, Skipped, TargetOutcome, VariantInfo
from edgeproof.search._select import DEFAULT_REL_TOL, choose, off_front_note, pareto_front, usable_axes
from edgeproof.search._space import RunPoint, board_points, host_points, order_candidates, plan_variants, variant_name
from edgeproof.variants import ExcludedNode, Recipe, Variant, build_variant, keep_slow_nodes_float, mixed_precision
from edgeproof.variants.fp16 import Fp16Refused

Progress = Callable[[str, float], None]


def default_cache_dir() -> Path:
    """Variants live beside the history: ``$EDGEPROOF_HOME/variants`` (default ``.edgeproof/variants``)."""
    return Path(os.environ.get("EDGEPROOF_HOME", history.DEFAULT_DIR)) / "variants"


def default_threads() -> tuple[int, ...]:
    """1 and 2 intra-op threads, capped at this host's cores."""
    return tuple(sorted({1, min(2, os.cpu_count() or 1)}))


@dataclass
class SearchOptions:
    """The candidate space and how hard to measure each candidate."""

    threads: tuple[int, ...] = field(default_factory=default_threads)
    opt_levels: tuple[str, ...] = ("all", "basic")
    targets: tuple[str, ...] = ("host",)
    power_modes: tuple[str, ...] | None = None
    sessions: int = 3
    samples: int = 200
    cold_start_repeats: int = 2
    max_candidates: int | None = None
    time_budget_s: float = 240.0
    rel_tol: float = DEFAULT_REL_TOL
    allow_unverified: bool = False
    data: str | None = None
    # --shape NAME=dims and --inputs FILE.npz, as `profile` takes them
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    inputs_npz: str | None = None
    cache_dir: Path | None = None
    provider: str = "CPUExecutionProvider"
    catalog_dirs: tuple[str, ...] = ()
    # False: the exhaustive search (every candidate measured in full one after another, variants
    # derived from every INT8 base), which the racing search is benchmarked against
    racing: bool = True
    # confirm the pick against fp32 and close runners-up, interleaved, before reporting it
    confirm: bool = True


@dataclass
class SearchOutcome:
    """The result record plus what it refers to: each candidate's RunRecord and the variants."""

    result: SearchResult
    records: dict[str, RunRecord]
    variants: list[BuiltVariant]
    # the interleaved confirmation runs, by name (``confirm-<pick>-vs-<rival>-a``/``-b``)
    confirm_records: dict[str, RunRecord] = field(default_factory=dict)


def search_data(contract: Contract, model: Model | str | Path, data_entry: str | None) -> tuple[Dataset, list[Slice]] | None:
    """The dataset and slices to evaluate on: ``--data`` (relative to the working folder) or the contract's [data].

    Without either, there is no accuracy to judge: None, unless a slice has a floor (then a DataError).
    A dataset without slices in the contract is evaluated as one nominal slice.
    """
    specs = contract.slice_specs()
    if data_entry is not None:
        entry, base = data_entry, Path.cwd()
    elif contract.data_entry is not None:
        entry, base = contract.data_entry, contract.base_dir
    else:
        floors = [s.name for s in specs if s.max_drop_pp is not None]
        if floors:
            raise DataError(
                f"{contract.path}: slice {floors[0]!r} has an accuracy floor but the contract names no [data]; add [data] or pass --data"
            )
        return None
    specs = specs or [SliceSpec(name="nominal", kind="nominal")]
    dataset = with_pipeline(
        load_dataset(entry, base, extra_parts=[s.part for s in specs]), contract_pipeline(contract), contract.feed_arrays()
    )
    check_fits_model(dataset, model)
    return dataset, make_slices(dataset, specs)


def _points(options: SearchOptions) -> list[RunPoint]:
    points: list[RunPoint] = []
    for target in options.targets:
        if target == "host":
            points += host_points(options.threads, options.opt_levels)
        else:
            points += board_points(target, board_modes(target, options.power_modes, options.catalog_dirs))
    return points


def _probe_rows(model: Model, data: tuple[Dataset, list[Slice]] | None, runners: SearchRunners) -> Inputs:
    """What the per-node speed profile runs on (every input): real evaluation rows, else what the
    candidates are fed (the user's arrays, or synthetic at the declared shapes)."""
    if data is not None:
        return data[1][0].inputs
    _, feeds = input_feeds(model, runners.options())
    return Inputs.one_run(feeds[0])


def _speed_variant(
    model: Model, base: Variant, x: Inputs, calibration: CalibrationSet | None, cache_dir: Path
) -> tuple[Variant | None, str]:
    """``base`` with its slower-than-float quantized nodes kept float, or None when none is slower.

    The per-node decision is profiled once per base variant and kept under ``cache_dir/speed``:
    re-profiling a noisy host could flip a borderline node and defeat the variant cache.
    """
    decision = cache_dir / "speed" / f"{base.sha256[:24]}.json"
    nodes: list[ExcludedNode] | None = None
    variant: Variant | None = None
    if decision.is_file():
        try:
            nodes = [ExcludedNode.model_validate(n) for n in json.loads(decision.read_text())["excluded"]]
        except (ValueError, KeyError, TypeError):
            nodes = None
    if nodes is None:
        variant, comparison = keep_slow_nodes_float(model, base, x, calibration, cache_dir)
        nodes = [n for n in variant.recipe.excluded_nodes if n.reason == "speed" and n not in base.recipe.excluded_nodes]
        payload = {
            "variant_sha256": base.sha256,
            "excluded": [n.model_dump(mode="json") for n in nodes],
            "provenance": comparison.provenance,
            "runs": comparison.runs,
            "nodes": [
                {"name": n.name, "op_type": n.op_type, "float_us": n.float_us, "quant_us": n.quant_us, "quantized": n.quantized}
                for n in comparison.nodes
            ],
        }
        write_atomic(decision, json.dumps(payload, indent=2))
    if not nodes:
        return None, "no quantized node is slower than its float form"
    if variant is None:
        variant = build_variant(model, base.recipe.with_excluded(nodes), calibration, cache_dir)
    return variant, f"kept float for speed: {', '.join(n.name for n in nodes)}"


def _build_plan(
    model: Model,
    contract: Contract,
    data: tuple[Dataset, list[Slice]] | None,
    variants: Variants,
    cache_dir: Path,
    clock: Clock,
    phases: _Phases,
    runners: SearchRunners,
) -> tuple[dict[tuple, CalibrationSet], list[str], int]:
    """Build the planned variants (fp32 first) while the budget lasts. A variant that cannot be
    built (other than fp32, the baseline) becomes a note; an fp16 conversion is checked on what the
    candidates are fed, and one that breaks the model is dropped with its own note. Returns the
    calibration sets made, the notes, and how many planned variants the budget left unbuilt."""
    specs = [s.spec for s in data[1]] if data is not None else None
    plan, notes = plan_variants(contract.model.precisions, specs)
    calibrations: dict[tuple, CalibrationSet] = {}
    for i, planned in enumerate(plan):
        if i > 0 and clock.out():
            notes.append(f"time budget spent after building {i} of {len(plan)} planned variants")
            return calibrations, notes, len(plan) - i
        phases.progress(f"building {variant_name(planned.recipe)}", 0.05 + 0.15 * i / len(plan))
        kinds = planned.calibration_kinds
        if kinds and kinds not in calibrations:
            assert data is not None and specs is not None
            calibrations[kinds] = calibration_set(data[0], specs, kinds)
        try:
            probe = input_feeds(model, runners.options())[1] if planned.recipe.precision == "fp16" else None
            variants.add(build_variant(model, planned.recipe, calibrations.get(kinds), cache_dir, probe=probe), "plan")
        except ModelError as exc:
            if planned.recipe.precision == "fp32":
                raise
            notes.append(str(exc) if isinstance(exc, Fp16Refused) else f"{variant_name(planned.recipe)} not built: {exc}")
    return calibrations, notes, 0


def _bases(race: Race, variants: Variants, racing: bool, notes: list[str]) -> list[BuiltVariant]:
    """The INT8 variants worth deriving from, most promising first: with racing, only those that
    can still win on speed. A base whose optimistic p50 is above fp32's pessimistic one on every
    run point it was timed at is already slower than fp32: nothing derived from it is built."""
    int8 = [b for b in variants.items if b.origin == "plan" and b.variant.recipe.precision.startswith("int8")]
    if not racing:
        return int8
    by_variant: dict[str, list[Candidate]] = {}
    for cand in race.candidates():
        by_variant.setdefault(cand.variant_sha256, []).append(cand)
    fp32 = [c for c in race.candidates() if c.precision == "fp32"]
    fp32_high = min((b[1] for b in (bounds(c, "p50_ms") for c in fp32) if b is not None), default=math.inf)
    out = {cid for t in {c.target for c in race.candidates()} for cid, (kind, _) in race.pruned(t).items() if kind == "slower"}
    ranked = []
    for base in int8:
        mine = by_variant.get(base.variant.sha256, [])
        timed = [b for b in (bounds(c, "p50_ms") for c in mine) if b is not None]
        if not timed:
            notes.append(f"nothing derived from {base.name}: it was not timed within the budget")
            continue
        best_low = min(b[0] for b in timed)
        if best_low > fp32_high:
            notes.append(
                f"nothing derived from {base.name}: already slower than fp32 (p50 at least {best_low:.4g} ms vs at most {fp32_high:.4g} ms)"
            )
            continue
        if all(c.id in out for c in mine):
            notes.append(f"nothing derived from {base.name}: clearly slower than another candidate at every run point")
            continue
        ranked.append((best_low, base))
    ranked.sort(key=lambda t: t[0])
    if len(ranked) > SPEED_BASES:
        notes.append(
            f"per-node speed variants from the {SPEED_BASES} most promising INT8 bases only; not from "
            + ", ".join(b.name for _, b in ranked[SPEED_BASES:])
        )
    return [b for _, b in ranked[:SPEED_BASES]]


# With racing, per-node speed variants come from at most this many INT8 bases (most promising first).
SPEED_BASES = 3


def _derive_all(
    model: Model,
    contract: Contract,
    data: tuple[Dataset, list[Slice]] | None,
    race: Race,
    variants: Variants,
    calibrations: dict[tuple, CalibrationSet],
    cache_dir: Path,
    racing: bool,
    phases: _Phases,
) -> tuple[list[BuiltVariant], list[str], list[str]]:
    """Per-node speed variants from the promising INT8 bases (most promising first) and mixed
    precision for the most promising base that breaks a slice floor (every failing base when not
    racing). Returns the new variants, notes, and the escalation options exercised."""
    notes: list[str] = []
    tried: list[str] = []
    bases = _bases(race, variants, racing, notes)
    if not bases:
        return [], notes, tried
    runners = race.runners
    x = _probe_rows(model, data, runners)
    guard = latency_guard(contract, runners, race.entries[0].point, x) if variants.judge is not None else None
    before = len(variants.items)
    mixed_left = 1 if racing else len(bases)
    for i, base in enumerate(bases):
        if race.clock.out():
            notes.append(f"time budget spent before variants were derived from {len(bases) - i} of {len(bases)} INT8 bases")
            break
        phases.progress(f"per-node speed and mixed precision from {base.name}", 0.35 + 0.15 * i / len(bases))
        try:
            ran = _derive(model, base, variants, x, _calibration_of(base.variant.recipe, calibrations), cache_dir, guard, mixed_left > 0)
        except ModelError as exc:
            notes.append(f"variants derived from {base.name} not built: {exc}")
            continue
        if ran:
            mixed_left -= 1
            tried = ["mixed-precision"]
    return variants.items[before:], notes, tried


def latency_guard(
    contract: Contract, runners: SearchRunners, point: RunPoint, x: np.ndarray | Inputs, samples: int = 200, warmup: int = 30
) -> Callable[[Variant], bool] | None:
    """What mixed precision asks before keeping one more node in float: does the variant still meet
    the contract's p95/p99 budgets? One fresh session under the contract's scenario, on the target's
    runner at the search's first run point (a simulated board is judged by its simulator), fed a real
    row (every input). A screening run (no cold start, no node profile); the full
    measurement of the survivor comes later in the search. None when the contract sets no latency
    budget. An energy budget cannot be checked here without a meter, so only latency stops the
    float-keeping."""
    budgets = contract.budgets
    limits = {"p95_ms": budgets.p95_ms, "p99_ms": budgets.p99_ms}
    limits = {k: v for k, v in limits.items() if v is not None}
    if not limits:
        return None
    options = replace(
        runners.options(),
        scenario=contract.scenario,
        min_sessions=1,
        max_sessions=1,
        samples_per_session=samples,
        warmup=warmup,
        cold_start_repeats=0,
        profile_nodes=False,
    )
    settings = RuntimeSettings(
        provider=runners.provider, intra_op_threads=point.threads or 1, graph_optimization_level=point.opt_level or "all"
    )

    def ok(variant: Variant) -> bool:
        runner = runners.runner(point.target, None if point.on_host else point.power_mode)
        prepared = runner.prepare(variant.path, options)
        prepared = replace(prepared, feeds=[row_feeds(declared_of_model(variant.path), Inputs.of(x), batch_size=1).feeds(0, 1)])
        record = runner.run(prepared, settings, options)
        return all(getattr(record.latency, key) <= limit for key, limit in limits.items())

    return ok


def _derive(
    model: Model,
    base: BuiltVariant,
    variants: Variants,
    x: Inputs,
    calib: CalibrationSet | None,
    cache_dir: Path,
    latency_ok: Callable[[Variant], bool] | None = None,
    mixed: bool = True,
) -> bool:
    """Add ``base``'s per-node speed variant and, with ``mixed`` and when ``base`` breaks a slice
    floor, its mixed-precision variant (each node kept in float must leave the variant within the
    latency budget). Returns whether mixed precision ran."""
    speed, note = _speed_variant(model, base.variant, x, calib, cache_dir)
    if speed is not None:
        variants.add(speed, "speed", note)
    if not mixed or variants.judge is None:
        return False
    variants.evaluate(base)
    if not base.failing:
        base.note = "every slice floor holds fully quantized: no mixed precision needed"
        return False
    result = mixed_precision(model, base.variant.recipe, variants.judge, calib, latency_ok=latency_ok, cache_dir=cache_dir)
    if result.variant.sha256 != base.variant.sha256:
        variants.add(result.variant, "mixed", result.reason, result.evaluation)
    else:
        base.note = f"mixed precision: {result.reason}"
    return True


def _calibration_of(recipe: Recipe, calibrations: dict[tuple, CalibrationSet]) -> CalibrationSet | None:
    if recipe.precision != "int8-static":
        return None
    return calibrations[tuple(recipe.calibration_kinds)]


def _outcome(
    target: str,
    race: Race,
    contract: Contract,
    tried: list[str],
    options: SearchOptions,
    finished: bool,
    unbuilt: int,
) -> tuple[TargetOutcome, Confirmed | None]:
    """Pareto front and pick among the candidates measured in full, confirmed interleaved; else
    the explanation (on evidence: measured in full, or a hard budget broken with certainty), or
    what is left undecided."""
    rel_tol = options.rel_tol
    every = race.candidates(target)
    full = [c for c in every if c.stage == "full"]
    evidence = race.evidence(target)
    open_ = race.open_candidates(target)
    metric = binding_metric(full or every, contract.preferences.minimize, race.evaluated)
    summary = race.summary(target, metric)
    not_measured = [s for s in race.skipped if s.target == target]
    if not finished:
        not_measured += [
            Skipped(
                id=c.id,
                name=c.name,
                target=target,
                reason=f"time budget {options.time_budget_s:g} s spent before it was measured in full ({c.stage})",
            )
            for c in open_
        ]
    axes, axis_notes = usable_axes(full)
    front = pareto_front(full, axes) if full else []
    for cand in every:
        cand.pareto = cand.id in front
    selection = (
        choose(full, contract.preferences.minimize, rel_tol)
        if full
        else Selection(
            chosen=None, considered=[], steps=[], rel_tolerance=rel_tol, notes=["no candidate was measured in full on this target"]
        )
    )
    confirmed = None
    if selection.chosen is not None and options.confirm:
        confirmed = confirm(race, target, selection)
        if confirmed.chosen != selection.chosen:
            selection.notes.append(
                f"{selection.chosen} was ranked first on one-after-another measurements; "
                f"interleaved confirmation made {confirmed.chosen} the pick"
            )
            selection.chosen = confirmed.chosen
            full = [c for c in race.candidates(target) if c.stage == "full"]
            front = pareto_front(full, axes)
            for cand in race.candidates(target):
                cand.pareto = cand.id in front
        selection.notes += confirmed.notes
        if confirmed.vs_fp32 is not None:
            selection.vs_fp32 = confirmed.vs_fp32
    if selection.chosen is not None:
        picked = race.entry(selection.chosen).candidate
        assert picked is not None
        note = off_front_note(picked, full, axes, selection)
        selection.notes += [note] if note else []
    explanation = None
    # infeasible is said from evidence only: with candidates left open, the target is undecided
    judged = evidence if selection.chosen is None and not (open_ and not finished) else []
    if selection.chosen is None and judged:
        modes = {c.power_mode for c in judged if c.power_mode}
        explanation = explain_infeasible(target, judged, contract, [*tried, *(["power-mode"] if len(modes) > 1 else [])], rel_tol)
    needed = race.needed_s(unbuilt) if not finished or unbuilt else None
    outcome, because = decide_target(target, judged, selection.chosen, not_measured, options.time_budget_s, race.clock.elapsed_s, needed)
    if selection.chosen is None and not judged and evidence:
        names = ", ".join(f"{c.id} {c.name}" for c in open_[:3]) + (f" and {len(open_) - 3} more" if len(open_) > 3 else "")
        because = [
            f"{len(evidence)} candidate(s) on {target} fail the contract on evidence, but the time budget ({options.time_budget_s:g} s) "
            f"ran out before {len(open_)} that might meet it were measured in full ({names}); rerun with --time-budget "
            f"{math.ceil(needed or race.clock.elapsed_s)} or more to finish"
        ]
    return (
        TargetOutcome(
            target=target,
            outcome=outcome,
            undecided_because=because,
            candidates=[c.id for c in every],
            pareto_axes=axes,
            pareto=front,
            pareto_notes=axis_notes,
            selection=selection,
            explanation=explanation,
            race=summary,
            confirmations=confirmed.confirmations if confirmed is not None else [],
        ),
        confirmed,
    )


def search_runners(contract: Contract, options: SearchOptions, dataset: Dataset | None = None) -> SearchRunners:
    """The runners one search measures with (opened as each target is first used), feeding what
    the contract and ``options`` say (``--inputs``, else the data's rows; ``[model.feeds]``; shapes)."""
    feeds = feeds_for_contract(ProfileOptions(shapes=options.shapes, inputs_npz=options.inputs_npz), contract, dataset, load=False)
    feeds = stage_options(feeds, contract, dataset)  # a [pipeline] is timed end to end by stage
    return SearchRunners(
        feeds=feeds,
        scenario=contract.scenario,
        provider=options.provider,
        sessions=options.sessions,
        samples=options.samples,
        cold_start_repeats=options.cold_start_repeats,
        catalog_dirs=options.catalog_dirs,
    )


def optimize(
    model: Model | str | Path,
    contract: Contract,
    options: SearchOptions | None = None,
    progress: Progress | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> SearchOutcome:
    """Search variants × runtime settings × targets for the candidate the contract prefers, racing.

    One time budget covers the whole search, spent in order of promise: the planned variants are
    built and every (variant, run point) is timed briefly; per-node speed and mixed-precision
    variants are derived only from INT8 bases that can still win on speed; candidates whose interval
    loses on the contract's binding quantity, or that break a hard budget with certainty, are
    pruned; the survivors are timed in fresh sessions and measured in full until the pick is
    decided; the pick is then confirmed interleaved against fp32 and close runners-up. Candidates
    measured in full are appended to the run history. ``on_phase`` gets one line per phase (counts
    and elapsed time), for logs where a live progress bar does not show.
    """
    options = options or SearchOptions()
    clock = Clock(options.time_budget_s, reserve_s=_CONFIRM_SHARE * options.time_budget_s if options.confirm else 0.0)
    phases = _Phases(clock, progress, on_phase)
    model = as_model(model)
    cache_dir = options.cache_dir or default_cache_dir()
    points = _points(options)
    phases.progress("loading data and the float reference", 0.0)
    data = search_data(contract, model, options.data)
    judge = contract_evaluator(contract, model, data[0], data[1]) if data is not None else None
    variants = Variants(judge)
    phases.done("setup", f"data and reference ready ({len(data[1]) if data else 0} slices)")

    with search_runners(contract, options, data[0] if data is not None else None) as runners:
        race = Race(contract, runners, variants, clock, options.rel_tol, options.allow_unverified, options.max_candidates, options.racing)
        race.report = lambda message, fraction: phases.progress(message, None)
        calibrations, notes, unbuilt = _build_plan(model, contract, data, variants, cache_dir, clock, phases, runners)
        phases.done(
            "build", f"{len(variants.items)} planned variants built ({sum(v.variant.cache_hit for v in variants.items)} from cache)"
        )
        for vi, pi in order_candidates(len(variants.items), len(points)):
            race.add(variants.items[vi], points[pi])
        phases.progress("timing every candidate briefly", 0.2)
        race.screen()
        phases.done("screen", _screen_line(race, options.targets, options.racing))
        derived, derive_notes, tried = _derive_all(model, contract, data, race, variants, calibrations, cache_dir, options.racing, phases)
        notes += derive_notes
        if sum(v.origin == "plan" and v.variant.recipe.precision.startswith("int8") for v in variants.items) > 1:
            tried = ["better-quantization", *tried]
        new = [e for b in derived for e in [race.add(b, p) for p in points] if e is not None]
        race.screen(new)
        phases.done(
            "derive", f"{len(derived)} derived variants built and timed ({', '.join(sorted({b.origin for b in derived})) or 'none'})"
        )
        phases.progress("racing: pruning and measuring the survivors in full", 0.5)
        finished = race.run(options.targets, on_step=lambda: phases.progress(f"racing: {race.measurements} measurements", None))
        race.finish(options.targets)
        phases.done("race", _race_line(race, options.targets, finished))
        outcomes: list[TargetOutcome] = []
        confirm_records: dict[str, RunRecord] = {}
        for target in options.targets:
            phases.progress(f"confirming the pick on {target} interleaved", 0.85)
            outcome, confirmed = _outcome(target, race, contract, tried, options, finished, unbuilt)
            outcomes.append(outcome)
            if confirmed is not None:
                confirm_records |= confirmed.records
        phases.done("confirm", _confirm_line(outcomes))

    entries = [e for e in race.entries if e.candidate is not None and e.record is not None]
    result = SearchResult(
        model=model.ref,
        contract_path=str(contract.path),
        contract_sha256=contract.sha256,
        data=_data_summary(data, options.data or contract.data_entry),
        space={
            "targets": list(options.targets),
            "threads": list(options.threads),
            "opt_levels": list(options.opt_levels),
            "points": [p.__dict__ for p in points],
            "variants": len(variants.items),
            "candidates_total": len(race.entries) + sum("max-candidates" in s.reason for s in race.skipped),
            "search": "racing" if options.racing else "exhaustive",
            "measurement": {
                "sessions": options.sessions,
                "samples_per_session": options.samples,
                "cold_start_repeats": options.cold_start_repeats,
                "screening": {"sessions": 1, "samples_per_session": min(SCREEN_SAMPLES, options.samples), "cold_start_repeats": 0},
                "scenario": contract.scenario,
            },
            "rel_tolerance": options.rel_tol,
            "cache_dir": str(cache_dir),
            "escalation_options_tried": tried,
        },
        variants=[_variant_info(b) for b in variants.items],
        candidates=[e.candidate for e in entries if e.candidate is not None],
        skipped=race.skipped,
        outcomes=outcomes,
        notes=notes,
        elapsed_s=clock.elapsed_s,
        phases=phases.items,
    )
    phases.progress("done", 1.0)
    return SearchOutcome(
        result=result,
        records={e.id: e.record for e in entries if e.record is not None},
        variants=variants.items,
        confirm_records=confirm_records,
    )


# The share of the time budget kept back from racing so the pick can still be confirmed
# interleaved: on a 224² model, 20-odd fresh session pairs against fp32 take half a minute.
_CONFIRM_SHARE = 0.15


class _Phases:
    """Progress: the live callback (message, fraction) and one line per finished phase, with counts
    and elapsed time, kept in the result and given to ``on_phase`` (CI logs have no live bar)."""

    def __init__(self, clock: Clock, progress: Progress | None, on_phase: Callable[[str], None] | None):
        self.clock = clock
        self._progress = progress or (lambda message, fraction: None)
        self._on_phase = on_phase
        self.items: list[Phase] = []
        self._fraction = 0.0

    def progress(self, message: str, fraction: float | None) -> None:
        if fraction is not None:
            self._fraction = fraction
        self._progress(message, self._fraction)

    def done(self, name: str, what: str) -> None:
        line = f"[{self.clock.elapsed_s:6.1f} s] {name}: {what}"
        self.items.append(Phase(name=name, elapsed_s=round(self.clock.elapsed_s, 2), line=line))
        if self._on_phase is not None:
            self._on_phase(line)


def _screen_line(race: Race, targets: Sequence[str], racing: bool) -> str:
    timed = sum(e.stage is not None for e in race.entries)
    how = (
        f"one session of up to {race.runners.options_for('screened').samples_per_session} samples each"
        if racing
        else "in full (exhaustive)"
    )
    left = sum(e.stage is None and not e.failed for e in race.entries)
    pruned = sum(len(race.pruned(t)) for t in targets)
    return (
        f"{timed} of {len(race.entries)} candidates timed {how}"
        + (f", {pruned} clearly out" if racing else "")
        + (f"; {left} not reached" if left else "")
    )


def _race_line(race: Race, targets: Sequence[str], finished: bool) -> str:
    parts = []
    for t in targets:
        cands = race.candidates(t)
        slower = sum(c.pruned_kind == "slower" for c in cands)
        budget = sum(c.pruned_kind == "budget" for c in cands)
        full = sum(c.stage == "full" for c in cands)
        timed = sum(c.stage in ("timed", "full") for c in cands)
        parts.append(
            f"{t}: {len(cands)} raced, {slower + budget} pruned ({slower} slower, {budget} over a hard budget), {timed} timed in fresh sessions, {full} measured in full"
        )
    return "; ".join(parts) + ("" if finished else " — time budget spent before the pick was decided")


def _confirm_line(outcomes: Sequence[TargetOutcome]) -> str:
    parts = []
    for o in outcomes:
        if o.selection.chosen is None:
            parts.append(f"{o.target}: no pick ({o.outcome})")
            continue
        cmp = o.selection.vs_fp32
        vs = ""
        if cmp is not None and cmp.p50_interval is not None:
            vs = f", p50 ×{cmp.p50_ratio:.3f} vs fp32 (95% CI {cmp.p50_interval[0]:.3f}–{cmp.p50_interval[1]:.3f})"
        parts.append(f"{o.target}: {len(o.confirmations)} interleaved comparison(s), pick {o.selection.chosen}{vs}")
    return "; ".join(parts)


def _data_summary(data: tuple[Dataset, list[Slice]] | None, entry: str | None) -> dict | None:
    if data is None:
        return None
    dataset, slices = data
    return {
        "entry": entry,
        **dataset.summary(),
        "slices": [{"name": s.name, "kind": s.kind, "id": s.id, "n": len(s.y), "max_drop_pp": s.spec.max_drop_pp} for s in slices],
    }


def _variant_info(built: BuiltVariant) -> VariantInfo:
    v = built.variant
    return VariantInfo(
        name=built.name,
        sha256=v.sha256,
        path=v.path,
        precision=v.recipe.precision,
        cache_hit=v.cache_hit,
        origin=built.origin,
        recipe=v.recipe.model_dump(mode="json"),
        evaluation_worst_drop_pp=worst_drop_pp(built.evaluation) if built.evaluation is not None else None,
        floors_failing=sorted(built.failing),
        note=built.note,
    )


def write_artifacts(outcome: SearchOutcome, out_dir: str | Path) -> Path:
    """Write each candidate's RunRecord, the interleaved confirmation runs (``runs/confirm-*.json``),
    the chosen variants' ONNX and search.json under ``out_dir``.

    Records of an earlier search in the same folder are removed first, so the folder describes
    one search. Returns the path of search.json.
    """
    out = Path(out_dir)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for old in [*runs.glob("c*.json"), *out.glob("chosen-*.onnx")]:
        old.unlink()
    result = outcome.result
    for cand in result.candidates:
        save_record(outcome.records[cand.id], runs / f"{cand.id}.json")
        cand.record_path = f"runs/{cand.id}.json"
    for name, record in outcome.confirm_records.items():
        save_record(record, runs / f"{name}.json")
    for target in result.outcomes:
        chosen = target.selection.chosen
        if chosen is None:
            continue
        artifact = out / f"chosen-{target.target}.onnx"
        write_atomic(artifact, Path(result.candidate(chosen).variant_path).read_bytes())
        target.chosen_artifact = artifact.name
    return save_record(result, out / "search.json")


def load_search(path: str | Path) -> SearchResult:
    """Read a search.json back (one RecordError line when it is not one)."""
    return load_record(path, SearchResult)
