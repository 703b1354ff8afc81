"""The race: time every candidate briefly, prune on evidence, give the survivors the full treatment, stop when the pick is decided."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edgeproof import history
from edgeproof.contract import Contract, evaluate
from edgeproof.errors import ModelError
from edgeproof.evaluate import SliceEvaluator
from edgeproof.figures import figures_of, worst_slice
from edgeproof.records import Evaluation, RunRecord, RuntimeSettings, VariantRef
from edgeproof.search._measure import SearchRunners
from edgeproof.search._race import Prune, certain_breaks, promise, prune, still_needed
from edgeproof.search._records import Candidate, RaceSummary, Skipped, Stage
from edgeproof.search._space import RunPoint, allowed, variant_name
from edgeproof.variants import Variant

Progress = Callable[[str, float], None]
_NEXT: dict[Stage | None, Stage] = {None: "screened", "screened": "timed", "timed": "full", "full": "full"}
# Seconds a stage is assumed to cost before the search has timed one (for the --time-budget estimate).
_FALLBACK_COST_S: dict[Stage, float] = {"screened": 1.0, "timed": 3.0, "full": 8.0}


@dataclass
class BuiltVariant:
    """A variant in the search, where it came from, and its evaluation per graph optimisation level
    (made on first need: a variant pruned on speed is never evaluated)."""

    variant: Variant
    origin: str
    note: str = ""
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    failing: dict[str, tuple[float, float]] = field(default_factory=dict)  # floors broken at "all"

    @property
    def name(self) -> str:
        return variant_name(self.variant.recipe)

    @property
    def evaluation(self) -> Evaluation | None:
        """The evaluation at graph optimisation ``all`` (else at the first level evaluated)."""
        return self.evaluations.get("all") or next(iter(self.evaluations.values()), None)


class Variants:
    """The variants of one search, deduplicated by content hash, each evaluated once per graph
    optimisation level it runs at (at ``basic`` ONNX Runtime runs QDQ unfused, with other numbers)."""

    def __init__(self, judge: SliceEvaluator | None):
        self.judge = judge
        self.items: list[BuiltVariant] = []

    def add(self, variant: Variant, origin: str, note: str = "", evaluation: Evaluation | None = None) -> BuiltVariant | None:
        """Add a variant; None when one with the same content is already in (the first one stays)."""
        if any(b.variant.sha256 == variant.sha256 for b in self.items):
            return None
        built = BuiltVariant(variant, origin, note)
        if evaluation is not None:
            self._keep(built, "all", evaluation)
        self.items.append(built)
        return built

    def evaluate(self, built: BuiltVariant, opt_level: str = "all") -> Evaluation | None:
        """``built``'s evaluation at ``opt_level`` (None without data), evaluated on first need."""
        if self.judge is None:
            return None
        if opt_level not in built.evaluations:
            settings = RuntimeSettings(intra_op_threads=0, graph_optimization_level=opt_level)
            self._keep(built, opt_level, self.judge(built.variant.path, settings))
        return built.evaluations[opt_level]

    def _keep(self, built: BuiltVariant, opt_level: str, evaluation: Evaluation) -> None:
        built.evaluations[opt_level] = evaluation
        if opt_level == "all" and self.judge is not None:
            built.failing = self.judge.failures(evaluation)


def record_for(record: RunRecord, built: BuiltVariant, evaluation: Evaluation | None) -> RunRecord:
    """The runner's record with the variant it measured and the evaluation at its settings."""
    variant = built.variant
    ref = VariantRef(name=built.name, sha256=variant.sha256, recipe=variant.recipe, origin=built.origin, cache_hit=variant.cache_hit)
    return record.model_copy(update={"variant": ref, "evaluation": evaluation})


def candidate_of(
    cid: str, built: BuiltVariant, point: RunPoint, record: RunRecord, contract: Contract, allow_unverified: bool, stage: Stage
) -> Candidate:
    """One judged candidate: the record's figures, the contract's verdict, eligibility, stage."""
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
        stage=stage,
        samples=record.latency.n_samples,
    )


@dataclass
class Entry:
    """One (variant, run point) in the race and how far it got."""

    id: str
    built: BuiltVariant
    point: RunPoint
    stage: Stage | None = None
    record: RunRecord | None = None
    candidate: Candidate | None = None
    failed: str = ""

    @property
    def label(self) -> str:
        return f"{self.built.name} [{self.point.label}]"


@dataclass
class Clock:
    """The search's one time budget, builds included; ``reserve_s`` is kept for confirming the pick."""

    budget_s: float
    reserve_s: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def out(self, keep_reserve: bool = True) -> bool:
        return self.elapsed_s > self.budget_s - (self.reserve_s if keep_reserve else 0.0)


class Race:
    """Every candidate of one search: screened, pruned, timed and measured in full, in order of promise.

    With ``racing`` False nothing is pruned or screened: every candidate is measured in full, one
    after another (the exhaustive search the racing one is checked against).
    """

    def __init__(
        self,
        contract: Contract,
        runners: SearchRunners,
        variants: Variants,
        clock: Clock,
        rel_tol: float,
        allow_unverified: bool,
        max_candidates: int | None,
        racing: bool = True,
        report: Progress | None = None,
    ):
        self.contract = contract
        self.runners = runners
        self.variants = variants
        self.clock = clock
        self.rel_tol = rel_tol
        self.allow_unverified = allow_unverified
        self.max_candidates = max_candidates
        self.racing = racing
        self.report = report or (lambda message, fraction: None)
        self.entries: list[Entry] = []
        self.skipped: list[Skipped] = []
        self.costs: dict[Stage, list[float]] = {"screened": [], "timed": [], "full": []}
        self.measurements = 0

    # ------------------------------------------------------------------ entries

    def add(self, built: BuiltVariant, point: RunPoint) -> Entry | None:
        """A new candidate (None beyond --max-candidates, which is then noted as skipped)."""
        cid = f"c{len(self.entries) + len(self._capped()) + 1:02d}"
        if self.max_candidates is not None and len(self.entries) >= self.max_candidates:
            self.skipped.append(
                Skipped(
                    id=cid,
                    name=f"{built.name} [{point.label}]",
                    target=point.target,
                    reason=f"beyond --max-candidates {self.max_candidates}",
                )
            )
            return None
        entry = Entry(cid, built, point)
        self.entries.append(entry)
        return entry

    def _capped(self) -> list[Skipped]:
        return [s for s in self.skipped if "max-candidates" in s.reason]

    def candidates(self, target: str | None = None) -> list[Candidate]:
        return [e.candidate for e in self.entries if e.candidate is not None and (target is None or e.point.target == target)]

    def entry(self, cid: str) -> Entry:
        return next(e for e in self.entries if e.id == cid)

    @property
    def evaluated(self) -> bool:
        return self.variants.judge is not None

    # ------------------------------------------------------------------ measuring

    def measure(self, entry: Entry, stage: Stage) -> bool:
        """Measure ``entry`` at ``stage`` (evaluating it with the full treatment); False when it cannot run."""
        started = time.monotonic()
        self.report(f"{entry.id} {entry.label}: {stage}", 0.0)
        try:
            record = self.runners.measure(entry.built.variant.path, entry.point, lambda m, f: None, stage)
            evaluation = None
            if stage == "full":
                evaluation = self.variants.evaluate(entry.built, entry.point.opt_level or "all")
        except ModelError as exc:
            entry.failed = str(exc)
            self.skipped.append(Skipped(id=entry.id, name=entry.label, target=entry.point.target, reason=f"could not run: {exc}"))
            return False
        record = record_for(record, entry.built, evaluation)
        entry.record, entry.stage = record, stage
        entry.candidate = candidate_of(entry.id, entry.built, entry.point, record, self.contract, self.allow_unverified, stage)
        if stage == "full":
            history.append(record)
        self.costs[stage].append(time.monotonic() - started)
        self.measurements += 1
        return True

    def screen(self, entries: Sequence[Entry] | None = None) -> None:
        """Time every new candidate briefly (in full right away when not racing)."""
        for entry in entries if entries is not None else self.entries:
            if entry.stage is not None or entry.failed:
                continue
            if self.clock.out():
                return
            self.measure(entry, "screened" if self.racing else "full")

    def pruned(self, target: str) -> dict[str, Prune]:
        if not self.racing:
            return {}
        return prune(self.candidates(target), self.contract.preferences.minimize, self.rel_tol, self.evaluated)

    def _undecidable(self, cands: Sequence[Candidate]) -> bool:
        """A candidate measured in full lacks data no measurement on this target gives (energy
        without a meter): every other one would lack it too, so more measuring decides nothing."""
        for cand in cands:
            if cand.stage != "full" or not cand.eligible or cand.verdict.outcome != "undecided":
                continue
            open_ = [r for r in cand.verdict.clauses if r.status == "unverified"]
            if open_ and all(r.provenance.startswith("unavailable:") and not r.clause.startswith(("slices.", "model.")) for r in open_):
                return True
        return False

    def next_step(self, target: str) -> tuple[Entry, Stage] | None:
        """What to measure next on ``target``, most promising first; None when the pick is decided."""
        cands = self.candidates(target)
        if self._undecidable(cands):
            return None
        pruned = self.pruned(target)
        alive = [c for c in cands if c.id not in pruned]
        metric = None
        if self.racing:
            from edgeproof.search._race import binding_metric

            metric = binding_metric(cands, self.contract.preferences.minimize, self.evaluated)
        order = sorted(alive, key=lambda c: promise(c, metric))
        screened = [c for c in order if c.stage == "screened"]
        if screened:
            return self.entry(screened[0].id), "timed"
        if not self.racing:
            waiting = [c for c in order if c.stage != "full"]
            return (self.entry(waiting[0].id), "full") if waiting else None
        pool = [c for c in order if c.eligible and (c.stage != "full" or c.feasible)]
        need = still_needed(pool, self.contract.preferences.minimize, self.rel_tol, self.evaluated)
        if not need:
            return None
        first = next(c for c in order if c.id in need)
        return self.entry(first.id), "full"

    def run(self, targets: Sequence[str], on_step: Callable[[], None] | None = None) -> bool:
        """Race until every target's pick is decided (True) or the time budget is spent (False)."""
        while True:
            step = next((s for s in (self.next_step(t) for t in targets) if s is not None), None)
            if step is None:
                return True
            if self.clock.out():
                return False
            entry, stage = step
            if not self.measure(entry, stage):
                entry.candidate = None
            if on_step is not None:
                on_step()

    # ------------------------------------------------------------------ results

    def finish(self, targets: Sequence[str]) -> None:
        """Mark pruned candidates with their reason and note those the budget left unmeasured."""
        for target in targets:
            pruned = self.pruned(target)
            for cand in self.candidates(target):
                kind, why = pruned.get(cand.id, ("", ""))
                cand.pruned, cand.pruned_kind = why, kind  # type: ignore[assignment]
        for entry in self.entries:
            if entry.failed:
                continue
            if entry.stage is None:
                self.skipped.append(Skipped(id=entry.id, name=entry.label, target=entry.point.target, reason=self._spent()))

    def _spent(self) -> str:
        return f"time budget {self.clock.budget_s:g} s spent"

    def open_candidates(self, target: str) -> list[Candidate]:
        """Candidates on ``target`` not pruned and not measured in full: what an unfinished race leaves open."""
        pruned = self.pruned(target)
        return [c for c in self.candidates(target) if c.id not in pruned and c.stage != "full"]

    def needed_s(self, unbuilt: int = 0) -> float:
        """Seconds a rerun would need to finish: time so far plus each open candidate's remaining
        stages and each unbuilt variant, at the mean cost per stage seen so far."""

        def cost(stage: Stage) -> float:
            seen = self.costs[stage]
            return sum(seen) / len(seen) if seen else _FALLBACK_COST_S[stage]

        remaining = 0.0
        for entry in self.entries:
            if entry.failed or entry.stage == "full":
                continue
            cand = entry.candidate
            if cand is not None and cand.pruned:
                continue
            stage: Stage | None = entry.stage
            while stage != "full":
                stage = _NEXT[stage]
                remaining += cost(stage)
        remaining += unbuilt * cost("timed")
        return math.ceil(self.clock.elapsed_s + remaining + self.clock.reserve_s)

    def summary(self, target: str, metric: str | None) -> RaceSummary:
        cands = self.candidates(target)
        entries = [e for e in self.entries if e.point.target == target]
        return RaceSummary(
            raced=len(cands),
            pruned_slower=sum(c.pruned_kind == "slower" for c in cands),
            pruned_budget=sum(c.pruned_kind == "budget" for c in cands),
            timed=sum(c.stage in ("timed", "full") for c in cands),
            measured_full=sum(c.stage == "full" for c in cands),
            not_reached=sum(e.stage is None and not e.failed for e in entries),
            binding_metric=metric,
            drift={} if not self.racing else {"screened": 0.15, "timed": 0.05, "full": 0.05},
        )

    def evidence(self, target: str) -> list[Candidate]:
        """Candidates on ``target`` judged on evidence: measured in full, or breaking a hard budget with certainty."""
        return [c for c in self.candidates(target) if c.stage == "full" or certain_breaks(c)]
