"""Run a contract-driven search: build and evaluate variants, measure every candidate, judge, pick or explain."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgeproof import history
from edgeproof.accuracy import reference_model
from edgeproof.contract import Contract, evaluate
from edgeproof.data import CalibrationSet, Dataset, Slice, SliceSpec, calibration_set, check_fits_model, load_dataset, make_slices
from edgeproof.errors import DataError, ModelError
from edgeproof.evaluate import SliceEvaluator, worst_drop_pp
from edgeproof.figures import figures_of, worst_slice
from edgeproof.measure.runner import ProfileOptions
from edgeproof.model import Model, as_model, resolve_inputs, synthetic_feeds
from edgeproof.records import Evaluation, RunRecord, RuntimeSettings, VariantRef, load_record, save_record, write_atomic
from edgeproof.search._explain import decide_target, explain_infeasible
from edgeproof.search._measure import SearchRunners, board_modes
from edgeproof.search._records import Candidate, SearchResult, Selection, Skipped, TargetOutcome, VariantInfo
from edgeproof.search._select import DEFAULT_REL_TOL, choose, off_front_note, pareto_front, usable_axes
from edgeproof.search._space import RunPoint, allowed, board_points, host_points, order_candidates, plan_variants, variant_name
from edgeproof.variants import ExcludedNode, Recipe, Variant, build_variant, keep_slow_nodes_float, mixed_precision

Progress = Callable[[str, float], None]
# Share of the progress bar spent building and evaluating variants; the rest is measurement.
_BUILD_SHARE = 0.3


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
    cache_dir: Path | None = None
    provider: str = "CPUExecutionProvider"
    catalog_dirs: tuple[str, ...] = ()


@dataclass
class BuiltVariant:
    """A variant in the search, its evaluation (once per variant) and where it came from."""

    variant: Variant
    origin: str
    evaluation: Evaluation | None
    failing: dict[str, tuple[float, float]] = field(default_factory=dict)
    note: str = ""

    @property
    def name(self) -> str:
        return variant_name(self.variant.recipe)


@dataclass
class SearchOutcome:
    """The result record plus what it refers to: each candidate's RunRecord and the variants."""

    result: SearchResult
    records: dict[str, RunRecord]
    variants: list[BuiltVariant]


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
    dataset = load_dataset(entry, base, extra_parts=[s.part for s in specs])
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


def _probe_rows(model: Model, data: tuple[Dataset, list[Slice]] | None) -> np.ndarray:
    """Rows the per-node speed profile runs on: real evaluation rows, else one synthetic input."""
    if data is not None:
        return data[1][0].x[:1]
    feeds = synthetic_feeds(resolve_inputs(model.proto))
    return next(iter(feeds.values()))


def _speed_variant(
    model: Model, base: Variant, x: np.ndarray, calibration: CalibrationSet | None, cache_dir: Path
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


class _Variants:
    """The variants of one search, deduplicated by content hash, each evaluated once."""

    def __init__(self, judge: SliceEvaluator | None):
        self.judge = judge
        self.items: list[BuiltVariant] = []

    def add(self, variant: Variant, origin: str, note: str = "", evaluation: Evaluation | None = None) -> None:
        if any(b.variant.sha256 == variant.sha256 for b in self.items):
            return
        if evaluation is None and self.judge is not None:
            evaluation = self.judge(variant.path)
        failing = self.judge.failures(evaluation) if self.judge is not None and evaluation is not None else {}
        self.items.append(BuiltVariant(variant, origin, evaluation, failing, note))


def _build_all(
    model: Model,
    contract: Contract,
    data: tuple[Dataset, list[Slice]] | None,
    judge: SliceEvaluator | None,
    cache_dir: Path,
    report: Progress,
    out_of_time: Callable[[], bool],
    runners: SearchRunners,
    guard_point: RunPoint,
) -> tuple[list[BuiltVariant], list[str], list[str]]:
    """Planned variants, then per-node speed and mixed-precision variants derived from the INT8 ones.

    A variant that cannot be built (other than fp32, the baseline) becomes a note, not the end of
    the search. Returns the variants, the notes, and the escalation options the search exercised.
    """
    specs = [s.spec for s in data[1]] if data is not None else None
    plan, notes = plan_variants(contract.model.precisions, specs)
    calibrations: dict[tuple, CalibrationSet] = {}
    variants = _Variants(judge)
    for i, planned in enumerate(plan):
        report(f"building {variant_name(planned.recipe)}", _BUILD_SHARE * 0.5 * i / len(plan))
        kinds = planned.calibration_kinds
        if kinds and kinds not in calibrations:
            assert data is not None and specs is not None
            calibrations[kinds] = calibration_set(data[0], specs, kinds)
        try:
            variants.add(build_variant(model, planned.recipe, calibrations.get(kinds), cache_dir), "plan")
        except ModelError as exc:
            if planned.recipe.precision == "fp32":
                raise
            notes.append(f"{variant_name(planned.recipe)} not built: {exc}")
    tried = ["better-quantization"] if sum(p.recipe.precision.startswith("int8") for p in plan) > 1 else []
    int8 = [b for b in variants.items if b.variant.recipe.precision.startswith("int8")]
    x = _probe_rows(model, data)
    guard = latency_guard(contract, runners, guard_point, x)
    for i, base in enumerate(int8):
        if out_of_time():
            notes.append("time budget spent before every derived variant was built")
            break
        report(f"per-node speed and mixed precision from {base.name}", _BUILD_SHARE * (0.5 + 0.5 * i / len(int8)))
        try:
            if _derive(model, base, variants, x, _calibration_of(base.variant.recipe, calibrations), cache_dir, guard):
                tried = [*dict.fromkeys([*tried, "mixed-precision"])]
        except ModelError as exc:
            notes.append(f"variants derived from {base.name} not built: {exc}")
    return variants.items, notes, tried


def latency_guard(
    contract: Contract, runners: SearchRunners, point: RunPoint, x: np.ndarray, samples: int = 200, warmup: int = 30
) -> Callable[[Variant], bool] | None:
    """What mixed precision asks before keeping one more node in float: does the variant still meet
    the contract's p95/p99 budgets? One fresh session under the contract's scenario, on the target's
    runner at the search's first run point (a simulated board is judged by its simulator), fed a real
    row where the model has one input. A screening run (no cold start, no node profile); the full
    measurement of the survivor comes later in the search. None when the contract sets no latency
    budget. An energy budget cannot be checked here without a meter, so only latency stops the
    float-keeping."""
    budgets = contract.budgets
    limits = {"p95_ms": budgets.p95_ms, "p99_ms": budgets.p99_ms}
    limits = {k: v for k, v in limits.items() if v is not None}
    if not limits:
        return None
    options = ProfileOptions(
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
    )  # type: ignore[arg-type]

    def ok(variant: Variant) -> bool:
        runner = runners.runner(point.target, None if point.on_host else point.power_mode)
        prepared = runner.prepare(variant.path, options)
        if len(prepared.specs) == 1:
            prepared = replace(prepared, feeds=[{prepared.specs[0].name: np.ascontiguousarray(x[:1])}])
        record = runner.run(prepared, settings, options)
        return all(getattr(record.latency, key) <= limit for key, limit in limits.items())

    return ok


def _derive(
    model: Model,
    base: BuiltVariant,
    variants: _Variants,
    x: np.ndarray,
    calib: CalibrationSet | None,
    cache_dir: Path,
    latency_ok: Callable[[Variant], bool] | None = None,
) -> bool:
    """Add ``base``'s per-node speed variant and, when it breaks a slice floor, its mixed-precision
    variant (each node kept in float must leave the variant within the latency budget). Returns
    whether mixed precision ran."""
    speed, note = _speed_variant(model, base.variant, x, calib, cache_dir)
    if speed is not None:
        variants.add(speed, "speed", note)
    if not base.failing or variants.judge is None:
        return False
    mixed = mixed_precision(model, base.variant.recipe, variants.judge, calib, latency_ok=latency_ok, cache_dir=cache_dir)
    if mixed.variant.sha256 != base.variant.sha256:
        variants.add(mixed.variant, "mixed", mixed.reason, mixed.evaluation)
    else:
        base.note = f"mixed precision: {mixed.reason}"
    return True


def _calibration_of(recipe: Recipe, calibrations: dict[tuple, CalibrationSet]) -> CalibrationSet | None:
    if recipe.precision != "int8-static":
        return None
    return calibrations[tuple(recipe.calibration_kinds)]


def _record_for(record: RunRecord, built: BuiltVariant) -> RunRecord:
    variant = built.variant
    ref = VariantRef(name=built.name, sha256=variant.sha256, recipe=variant.recipe, origin=built.origin, cache_hit=variant.cache_hit)
    return record.model_copy(update={"variant": ref, "evaluation": built.evaluation})


def _candidate(cid: str, built: BuiltVariant, point: RunPoint, record: RunRecord, contract: Contract, allow_unverified: bool) -> Candidate:
    verdict = evaluate(contract, record, allow_unverified=allow_unverified)
    precision = built.variant.recipe.precision
    eligible = allowed(precision, contract.model.precisions)
    return Candidate(
        id=cid,
        variant=built.name,
        variant_sha256=built.variant.sha256,
        variant_path=built.variant.path,
        precision=precision,
        cache_hit=built.variant.cache_hit,
        target=point.target,
        power_mode=record.target.power_mode if not point.on_host else None,
        threads=point.threads if point.on_host else record.settings.intra_op_threads,
        opt_level=point.opt_level,
        kind=record.kind,
        run_id=record.run_id,
        figures=figures_of(record),
        worst_slice=worst_slice(record)[0],
        feasible=verdict.passed,
        eligible=eligible,
        ineligible_reason="" if eligible else f"{precision} is not in [model] precisions ({', '.join(contract.model.precisions)})",
        verdict=verdict,
    )


def _outcome(
    target: str,
    group: list[Candidate],
    contract: Contract,
    tried: list[str],
    options: SearchOptions,
    skipped: list[Skipped],
    elapsed_s: float,
) -> TargetOutcome:
    rel_tol = options.rel_tol
    not_measured = [s for s in skipped if s.target == target]
    axes, axis_notes = usable_axes(group)
    front = pareto_front(group, axes)
    for cand in group:
        cand.pareto = cand.id in front
    if not group:
        empty = Selection(chosen=None, considered=[], steps=[], rel_tolerance=rel_tol, notes=["no candidate was measured on this target"])
        outcome, because = decide_target(target, group, None, not_measured, options.time_budget_s, elapsed_s)
        return TargetOutcome(
            target=target,
            outcome=outcome,
            undecided_because=because,
            candidates=[],
            pareto_axes=axes,
            pareto=[],
            pareto_notes=axis_notes,
            selection=empty,
        )
    selection = choose(group, contract.preferences.minimize, rel_tol)
    if selection.chosen is not None:
        note = off_front_note(next(c for c in group if c.id == selection.chosen), group, axes, selection)
        selection.notes += [note] if note else []
    explanation = None
    if selection.chosen is None:
        modes = {c.power_mode for c in group if c.power_mode}
        explanation = explain_infeasible(target, group, contract, [*tried, *(["power-mode"] if len(modes) > 1 else [])], rel_tol)
    outcome, because = decide_target(target, group, selection.chosen, not_measured, options.time_budget_s, elapsed_s)
    return TargetOutcome(
        target=target,
        outcome=outcome,
        undecided_because=because,
        candidates=[c.id for c in group],
        pareto_axes=axes,
        pareto=front,
        pareto_notes=axis_notes,
        selection=selection,
        explanation=explanation,
    )


def search_runners(contract: Contract, options: SearchOptions) -> SearchRunners:
    """The runners one search measures with (opened as each target is first used)."""
    return SearchRunners(
        scenario=contract.scenario,
        provider=options.provider,
        sessions=options.sessions,
        samples=options.samples,
        cold_start_repeats=options.cold_start_repeats,
        catalog_dirs=options.catalog_dirs,
    )


def _measure_all(
    built: list[BuiltVariant],
    points: list[RunPoint],
    order: list[tuple[int, int]],
    contract: Contract,
    options: SearchOptions,
    report: Progress,
    out_of_time: Callable[[], bool],
    runners: SearchRunners,
) -> tuple[list[Candidate], dict[str, RunRecord], list[Skipped]]:
    """Measure (or simulate) each (variant, point) in ``order`` until the cap or the time budget; judge each."""
    candidates: list[Candidate] = []
    records: dict[str, RunRecord] = {}
    skipped: list[Skipped] = []
    step = (1 - _BUILD_SHARE) / max(len(order), 1)
    for n, (vi, pi) in enumerate(order):
        cid, item, point = f"c{n + 1:02d}", built[vi], points[pi]
        label = f"{item.name} [{point.label}]"
        if options.max_candidates is not None and len(candidates) >= options.max_candidates:
            skipped.append(Skipped(id=cid, name=label, target=point.target, reason=f"beyond --max-candidates {options.max_candidates}"))
            continue
        if out_of_time():
            skipped.append(Skipped(id=cid, name=label, target=point.target, reason=f"time budget {options.time_budget_s:g} s spent"))
            continue
        start = _BUILD_SHARE + step * n

        def sub_progress(message: str, fraction: float, prefix: str = f"{cid} {label}", start: float = start) -> None:
            report(f"{prefix}: {message}", start + step * fraction)

        try:
            record = _record_for(runners.measure(item.variant.path, point, sub_progress), item)
        except ModelError as exc:
            skipped.append(Skipped(id=cid, name=label, target=point.target, reason=f"could not run: {exc}"))
            continue
        history.append(record)
        records[cid] = record
        candidates.append(_candidate(cid, item, point, record, contract, options.allow_unverified))
    return candidates, records, skipped


def optimize(
    model: Model | str | Path, contract: Contract, options: SearchOptions | None = None, progress: Progress | None = None
) -> SearchOutcome:
    """Search variants × runtime settings × targets for the candidate the contract prefers.

    Every candidate is measured (host) or simulated (board), judged against the contract and
    appended to the run history. Per target, the result holds the Pareto front, the pick and,
    when no candidate meets every hard clause, the explanation.
    """
    options = options or SearchOptions()
    report = progress or (lambda message, fraction: None)
    started = time.monotonic()
    model = as_model(model)
    cache_dir = options.cache_dir or default_cache_dir()
    points = _points(options)
    report("loading data", 0.0)
    data = search_data(contract, model, options.data)
    judge = None
    if data is not None:
        dataset, slices = data
        judge = SliceEvaluator.for_reference(reference_model(contract, model), slices, dataset.id, metric_name="top1")

    def out_of_time() -> bool:
        return time.monotonic() - started > options.time_budget_s

    with search_runners(contract, options) as runners:
        built, notes, tried = _build_all(model, contract, data, judge, cache_dir, report, out_of_time, runners, points[0])
        order = order_candidates(len(built), len(points))
        candidates, records, skipped = _measure_all(built, points, order, contract, options, report, out_of_time, runners)

    elapsed_s = time.monotonic() - started
    outcomes = [
        _outcome(t, [c for c in candidates if c.target == t], contract, tried, options, skipped, elapsed_s) for t in options.targets
    ]
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
            "variants": len(built),
            "candidates_total": len(order),
            "measurement": {
                "sessions": options.sessions,
                "samples_per_session": options.samples,
                "cold_start_repeats": options.cold_start_repeats,
                "scenario": contract.scenario,
            },
            "rel_tolerance": options.rel_tol,
            "cache_dir": str(cache_dir),
            "escalation_options_tried": tried,
        },
        variants=[_variant_info(b) for b in built],
        candidates=candidates,
        skipped=skipped,
        outcomes=outcomes,
        notes=notes,
        elapsed_s=time.monotonic() - started,
    )
    report("done", 1.0)
    return SearchOutcome(result=result, records=records, variants=built)


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
    """Write each candidate's RunRecord, the chosen variants' ONNX and search.json under ``out_dir``.

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
