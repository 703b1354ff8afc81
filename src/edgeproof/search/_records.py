"""Search records: one measured candidate, the selection trail, the infeasibility explanation, the whole result."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeproof.outcome import Outcome, overall
from edgeproof.records import Figure, ModelRef, Verdict

SEARCH_SCHEMA = "edgeproof.search/1"
# How far the race took a candidate: one short session, fresh-session timing, or the full treatment
# (fresh-session timing, cold start in fresh processes, per-node placement).
Stage = Literal["screened", "timed", "full"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Candidate(_Record):
    """One (variant × runtime settings × target × power mode) that was measured or simulated, and judged.

    ``figures`` holds every metric a preference may rank by (``edgeproof.contract.METRICS``), each
    with its provenance; ``feasible`` is the contract verdict (waivers count); ``eligible`` says
    whether the contract's ``[model] precisions`` allow shipping it.
    """

    id: str
    variant: str
    variant_sha256: str
    variant_path: str
    precision: str
    cache_hit: bool
    target: str
    power_mode: str | None = None
    threads: int | None = None
    opt_level: str | None = None
    kind: str = "measured"
    run_id: str
    record_path: str | None = None
    figures: dict[str, Figure]
    worst_slice: str | None = None
    feasible: bool
    eligible: bool = True
    ineligible_reason: str = ""
    verdict: Verdict
    pareto: bool = False
    stage: Stage = "full"
    samples: int = 0  # latency samples the figures rest on (0 in results written before it was kept)
    pruned: str = ""  # why the race stopped measuring it ("" when it was not pruned)
    pruned_kind: Literal["", "slower", "budget"] = ""

    @property
    def measured_in_full(self) -> bool:
        return self.stage == "full"

    @property
    def settings_label(self) -> str:
        """``t1 all`` on the host, ``@15W`` on a board."""
        parts = []
        if self.threads is not None:
            parts.append(f"t{self.threads}")
        if self.opt_level is not None:
            parts.append(self.opt_level)
        if self.power_mode is not None:
            parts.append(f"@{self.power_mode}")
        return " ".join(parts)

    @property
    def name(self) -> str:
        return f"{self.variant} [{self.settings_label}]" if self.settings_label else self.variant

    def value(self, metric: str) -> float | None:
        figure = self.figures.get(metric)
        return None if figure is None else figure.value

    def failing(self) -> list[str]:
        """Hard clauses this candidate does not meet: failing, or without data unless unverified is allowed."""
        blocking = ("fail",) if self.verdict.allow_unverified else ("fail", "unverified")
        return [c.clause for c in self.verdict.clauses if c.status in blocking]


class SelectionStep(_Record):
    """One metric of the lexicographic pick: who stayed within the tolerance of the best, or why it was skipped."""

    metric: str
    source: str  # "preference" (the contract's order) or "tie-break"
    used: bool
    best: float | None = None
    tolerance: float | None = None
    kept: list[str] = Field(default_factory=list)
    dropped: list[str] = Field(default_factory=list)
    note: str = ""


class Fp32Comparison(_Record):
    """The chosen candidate against the fastest fp32 candidate on the same target.

    ``method`` says what the ratios rest on: ``interleaved, N session pairs`` (the evidence, with
    95% intervals) or the candidates' one-after-another measurements (screening only).
    """

    fp32_candidate: str
    p50_ratio: float  # chosen p50 / fp32 p50 (below 1 is faster)
    p95_ratio: float
    slower: bool
    why: str = ""
    method: str = "one-after-another measurements"
    p50_interval: tuple[float, float] | None = None
    p95_interval: tuple[float, float] | None = None


class RatioInterval(_Record):
    """A latency ratio with its 95% interval."""

    ratio: float
    low: float
    high: float


class Confirmation(_Record):
    """The pick against one rival, measured interleaved in fresh session pairs on the pick's target.

    Ratios are pick / rival (below 1: the pick is faster). ``winner`` is whoever the contract's
    preference order favours on this evidence (None: a tie on every metric compared); ``decided_by``
    says on which metric and how.
    """

    pick: str
    rival: str
    role: Literal["fp32", "runner-up"]
    p50: RatioInterval
    p95: RatioInterval
    pairs: int
    method: str
    winner: str | None
    decided_by: str
    note: str = ""


class Phase(_Record):
    """One phase of the search, as its progress line said it: what it did, with counts and elapsed time."""

    name: str
    elapsed_s: float
    line: str


class RaceSummary(_Record):
    """How the race spent its time on one target: raced briefly, pruned (and why), measured in full."""

    raced: int
    pruned_slower: int
    pruned_budget: int
    timed: int
    measured_full: int
    not_reached: int = 0
    binding_metric: str | None = None
    drift: dict[str, float] = Field(default_factory=dict)

    @property
    def pruned(self) -> int:
        return self.pruned_slower + self.pruned_budget


class Selection(_Record):
    """How the contract picked among feasible, eligible candidates (``chosen`` None when there were none)."""

    chosen: str | None
    considered: list[str]
    steps: list[SelectionStep]
    rel_tolerance: float
    notes: list[str] = Field(default_factory=list)
    vs_fp32: Fp32Comparison | None = None


class ClauseBest(_Record):
    """The best any candidate reached on one hard clause."""

    clause: str
    budget: float
    unit: str
    best_value: float | None
    best_candidate: str | None
    met_by: int
    of: int
    note: str = ""


class EscalationAdvice(_Record):
    """The contract's escalation step that applies to the binding clause."""

    owner: str
    options: list[str]
    tried_by_search: list[str] = Field(default_factory=list)
    note: str = ""


class Explanation(_Record):
    """Why no candidate meets the contract on a target: best per clause, the binding clause, who acts next."""

    target: str
    clauses: list[ClauseBest]
    binding_clause: str
    why: str
    closest_candidate: str | None
    closest_fails: list[str]
    escalation: EscalationAdvice | None
    escalation_note: str = ""
    notes: list[str] = Field(default_factory=list)


class TargetOutcome(_Record):
    """Pareto front, choice and (when nothing fits) the explanation for one target.

    ``outcome`` is pass when a candidate was chosen; undecided when no candidate was measured, or
    one that could still meet the contract lacks data (``undecided_because`` says what would decide
    it); else fail: every measured candidate fails on evidence. Results written before ``outcome``
    existed load with it derived from the choice.
    """

    target: str
    outcome: Outcome
    undecided_because: list[str] = Field(default_factory=list)
    candidates: list[str]
    pareto_axes: list[str]
    pareto: list[str]
    pareto_notes: list[str] = Field(default_factory=list)
    selection: Selection
    explanation: Explanation | None = None
    chosen_artifact: str | None = None  # file name of the chosen variant's ONNX copy in the output folder
    race: RaceSummary | None = None
    confirmations: list[Confirmation] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _outcome_of_an_older_result(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "outcome" in data:
            return data
        selection = data.get("selection")
        chosen = selection.get("chosen") if isinstance(selection, dict) else getattr(selection, "chosen", None)
        return {**data, "outcome": "pass" if chosen is not None else ("fail" if data.get("candidates") else "undecided")}

    @model_validator(mode="after")
    def _pass_is_a_choice(self) -> TargetOutcome:
        if (self.outcome == "pass") != (self.selection.chosen is not None):
            raise ValueError(f"outcome is {self.outcome!r} but the chosen candidate is {self.selection.chosen!r}")
        return self

    @property
    def feasible(self) -> bool:
        return self.selection.chosen is not None


class Skipped(_Record):
    """A candidate the search did not measure, and why (``target`` is absent in results written before it was kept)."""

    id: str
    name: str
    reason: str
    target: str | None = None


class VariantInfo(_Record):
    """A variant the search built (or took from the cache), with how it came about."""

    name: str
    sha256: str
    path: str
    precision: str
    cache_hit: bool
    origin: str  # "plan", "speed" (slow nodes kept float) or "mixed" (sensitive nodes kept float)
    recipe: dict[str, Any]
    evaluation_worst_drop_pp: float | None = None
    floors_failing: list[str] = Field(default_factory=list)
    note: str = ""


class SearchResult(_Record):
    """Everything one ``edgeproof optimize`` found: candidates, fronts, the pick per target, the explanation."""

    schema_version: str = SEARCH_SCHEMA
    search_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    model: ModelRef
    contract_path: str
    contract_sha256: str
    data: dict[str, Any] | None
    space: dict[str, Any]
    variants: list[VariantInfo]
    candidates: list[Candidate]
    skipped: list[Skipped] = Field(default_factory=list)
    outcomes: list[TargetOutcome]
    notes: list[str] = Field(default_factory=list)
    elapsed_s: float
    phases: list[Phase] = Field(default_factory=list)

    @property
    def feasible(self) -> bool:
        return all(o.feasible for o in self.outcomes)

    @property
    def outcome(self) -> Outcome:
        """Over every target: fail if any fails on evidence, else undecided if any is, else pass."""
        return overall(o.outcome for o in self.outcomes)

    def candidate(self, candidate_id: str) -> Candidate:
        return next(c for c in self.candidates if c.id == candidate_id)
