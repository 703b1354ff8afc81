"""The budget contract as typed, validated pydantic models; a quantity's unit comes from its field name."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from edgeproof.contract import _fields as f
from edgeproof.contract import _units as u
from edgeproof.data.pipeline import PipelineSpec

SLICE_KINDS = ("nominal", "stress", "tail")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
DTYPES = ("float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "uint16", "int32", "int64", "bool")
ESCALATION_OPTIONS = (
    "better-quantization",
    "mixed-precision",
    "smaller-backbone",
    "pruning",
    "different-accelerator",
    "power-mode",
    "firmware-update",
    "runtime-update",
    "relax-budget",
    "waiver",
)
# Metrics a soft preference may rank by; all are "lower is better". accuracy_drop_pp is the worst slice's drop.
METRICS = (
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "peak_rss_mib",
    "load_time_ms",
    "model_size_mib",
    "energy_mj_per_inference",
    "sustained_w",
    "temperature_c",
    "cpu_fallback_frac",
    "accuracy_drop_pp",
)


class _Section(BaseModel):
    """Strict: no coercion between TOML types, unknown keys refused, quantities converted by name."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _quantity(cls, value: object, info: ValidationInfo) -> object:
        dim = u.dimension_for(info.field_name or "")
        if dim is None or value is None:
            return value
        return u.parse_quantity(value, dim)


class ContractInfo(_Section):
    """``[contract]``: who owns this contract and which targets it is meant for."""

    name: f.Text | None = None
    owner: f.Text | None = None
    description: str = ""
    targets: Annotated[list[f.Name], AfterValidator(f.unique)] = Field(default_factory=list)


class InputSpec(_Section):
    """``[model.inputs.<name>]``: an accepted input; a dimension is a positive size or a symbolic name."""

    shape: list[Annotated[int, AfterValidator(f.positive)] | f.Name]
    dtype: Annotated[str, f.one_of(DTYPES)]


class FeedSpec(_Section):
    """``[model.feeds.<name>]``: what every run feeds an input the data does not hold (a recurrent
    state, a sample rate): ``value = ...`` (a number or nested array) or ``zeros = true``, at
    ``shape`` (default: the value's own shape); the dtype is the model's."""

    value: float | int | list[Any] | None = None
    zeros: bool = False
    shape: list[Annotated[int, AfterValidator(f.non_negative)]] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FeedSpec:
        if (self.value is None) == (not self.zeros):
            raise ValueError("give exactly one of value = ... or zeros = true")
        if self.zeros and self.shape is None:
            raise ValueError("zeros = true needs its shape, e.g. shape = [2, 1, 128]")
        if self.value is not None:
            self.array()
        return self

    def array(self) -> Any:
        """The value as a numpy array of ``shape`` (dtype cast to the model's input when fed)."""
        import numpy as np

        if self.zeros:
            return np.zeros(self.shape or [])
        try:
            value = np.asarray(self.value)
        except ValueError:
            raise ValueError("value must be a number or a rectangular array of numbers") from None
        if value.dtype.kind not in "biuf":
            raise ValueError(f"value must be numbers, got {value.dtype}")
        if self.shape is None:
            return value
        try:
            return np.broadcast_to(value, self.shape).copy()
        except ValueError:
            raise ValueError(f"value of shape {list(value.shape)} does not fit shape {self.shape}") from None


class ModelSection(_Section):
    """``[model]``: the model file (relative to the contract), supported precisions, accepted inputs,
    and what to feed inputs the data does not hold."""

    path: f.Text | None = None
    precisions: Annotated[list[Annotated[str, f.one_of(PRECISIONS)]], AfterValidator(f.unique)] = Field(default_factory=lambda: ["fp32"])
    inputs: dict[f.Name, InputSpec] = Field(default_factory=dict)
    feeds: dict[f.Name, FeedSpec] = Field(default_factory=dict)


class BudgetOverride(_Section):
    """``[budgets.<target>]``: the budgets one target judges by instead of ``[budgets]``, clause by clause."""

    scenario: Annotated[str, AfterValidator(f.scenario)] | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    jitter_ms: float | None = None  # p99 - p50 of latency
    deadline_miss_frac: float | None = None  # periodic/server scenarios: share of requests past their deadline
    peak_rss_mib: float | None = None
    load_time_ms: float | None = None
    model_size_mib: float | None = None
    energy_mj_per_inference: float | None = None
    sustained_w: float | None = None
    temperature_c: float | None = None
    cpu_fallback_frac: float | None = None


BUDGET_SCOPES = ("model", "pipeline")


class Budgets(BudgetOverride):
    """``[budgets]``: hard budgets, every one an upper bound; latency is judged under ``scenario``.

    A ``[budgets.<target>]`` sub-table (a target id, or a prefix naming one board) overrides them
    for that target; the loader moves such tables into ``per_target``.
    """

    scenario: Annotated[str, AfterValidator(f.scenario)] = "single-stream"
    # what the latency budgets time: the model's session run alone, or [pipeline] pre + model + post
    scope: Annotated[str, f.one_of(BUDGET_SCOPES)] = "model"
    # the one shape per input latency is judged at, fixing its free dims (default: the first data row's)
    shape: dict[f.Name, list[Annotated[int, AfterValidator(f.positive)]]] = Field(default_factory=dict)
    per_target: dict[f.Name, BudgetOverride] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _sub_tables(cls, data: Any) -> Any:
        # [budgets.<target>] arrives as a table inside [budgets]; keep the scalar budgets apart from it
        if not isinstance(data, dict) or "per_target" in data:
            return data
        tables = {k: v for k, v in data.items() if isinstance(v, dict) and k not in cls.model_fields}
        if not tables:
            return data
        return {**{k: v for k, v in data.items() if k not in tables}, "per_target": tables}


class Preferences(_Section):
    """``[preferences]``: soft objectives among candidates that meet every hard budget, most important first."""

    minimize: Annotated[list[Annotated[str, f.one_of(METRICS)]], AfterValidator(f.unique)] = Field(default_factory=list)


class DataSection(_Section):
    """``[data]``: the dataset, as ``file.py:function`` or an ``.npz`` file, relative to the contract file."""

    name: f.Text | None = None
    entry: f.Text | None = None
    npz: f.Text | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DataSection:
        if (self.entry is None) == (self.npz is None):
            raise ValueError("give exactly one of entry = 'file.py:function' or npz = 'file.npz'")
        if self.entry is not None:
            file, sep, func = self.entry.rpartition(":")
            if not (sep and file.endswith(".py") and func.isidentifier()):
                raise ValueError(f"entry {self.entry!r} must look like 'dataset.py:load'")
        if self.npz is not None and not self.npz.endswith(".npz"):
            raise ValueError(f"npz {self.npz!r} must name a .npz file")
        return self


class TransformEntry(_Section):
    """One corruption applied to a slice: a transform name and its severity (see ``edgeproof.data.transforms``)."""

    name: f.Name
    severity: Annotated[float, AfterValidator(f.positive)]


# Built-in metrics and whether higher is better; ``topk:K`` is higher-is-better, ``file.py:fn`` says so itself.
BUILTIN_METRICS = {"top1": True, "mse": False, "mae": False, "cosine": True}
FLOOR_UNITS = ("max_drop_pp", "max_increase", "max_increase_pct")


def metric_name(value: str) -> str:
    """A metric as the contract may name it: a built-in, ``topk:K`` or ``file.py:function``."""
    head, sep, tail = value.rpartition(":")
    if value in BUILTIN_METRICS or (head == "topk" and tail.isdigit() and int(tail) > 0):
        return value
    if sep and head.endswith(".py") and tail.isidentifier():
        return value
    raise ValueError(f"unknown metric {value!r}; expected one of {', '.join(BUILTIN_METRICS)}, topk:K or 'file.py:function'")


class OutputEvaluation(_Section):
    """``[evaluation.outputs.<output>]``: how one model output is judged. ``labels`` names the label
    array (``y_<part>__<labels>``; default the output's name, and the data's ``y`` for the first
    output); a ``file.py:fn`` metric must say ``higher_is_better``."""

    metric: Annotated[str, AfterValidator(metric_name)] = "top1"
    labels: f.Name | None = None
    higher_is_better: bool | None = None

    @model_validator(mode="after")
    def _direction(self) -> OutputEvaluation:
        builtin = BUILTIN_METRICS.get(self.metric, True if self.metric.startswith("topk:") else None)
        if builtin is None and self.higher_is_better is None:
            raise ValueError(f"metric {self.metric!r} is a function: say higher_is_better = true or false")
        if builtin is not None and self.higher_is_better is not None and self.higher_is_better != builtin:
            raise ValueError(f"metric {self.metric!r}: {'higher' if builtin else 'lower'} is better; higher_is_better cannot change that")
        return self

    @property
    def better_high(self) -> bool:
        return self.higher_is_better if self.higher_is_better is not None else BUILTIN_METRICS.get(self.metric, True)


class PolicySection(_Section):
    """``[evaluation.policy]``: below ``min_confidence`` (top-1 probability of the first output) the
    device's fallback answers. In the lab the fallback is the contract's float reference model, so each
    slice reports how often the policy falls back and the top-1 accuracy with it (``check``, ``optimize``)."""

    min_confidence: float = Field(gt=0.0, lt=1.0)


class EvaluationSection(_Section):
    """``[evaluation]``: the metric per model output (``[evaluation.outputs.<name>]``), first = headline;
    without it, top-1 on the model's first output."""

    outputs: dict[str, OutputEvaluation] = Field(default_factory=dict)
    # ``[evaluation.policy]``: the device's confidence policy (edgeproof.telemetry.FallbackPolicy), judged here
    policy: PolicySection | None = None


class OutputFloor(_Section):
    """``[slices.<name>.outputs.<output>]``: a floor on one more output, in its metric's unit."""

    max_drop_pp: float | None = None
    max_increase: float | None = None
    max_increase_pct: float | None = None


class SliceSection(_Section):
    """``[slices.<name>]``: a nominal, stress or tail slice and its floor vs the float reference.

    ``part`` is the dataset part the slice reads; ``seed`` seeds its random transforms. The floor is
    on the first judged output: ``max_drop_pp`` for a higher-is-better metric (top1), ``max_increase``
    or ``max_increase_pct`` for an error (mse, mae); ``outputs`` holds floors on other outputs.
    """

    kind: Annotated[str, f.one_of(SLICE_KINDS)]
    description: str = ""
    part: f.Name = "test"
    transforms: list[TransformEntry] = Field(default_factory=list)
    seed: Annotated[int, AfterValidator(f.non_negative)] = 0
    max_drop_pp: float | None = None
    max_increase: float | None = None
    max_increase_pct: float | None = None
    outputs: dict[str, OutputFloor] = Field(default_factory=dict)

    def floors(self) -> list[tuple[str | None, str, float]]:
        """(output or None for the first, unit, limit) of every floor set, ``max_drop_pp`` on the first included."""
        own: list[tuple[str | None, str, float]] = [(None, k, getattr(self, k)) for k in FLOOR_UNITS if getattr(self, k) is not None]
        own += [(out, unit, getattr(fl, unit)) for out, fl in self.outputs.items() for unit in FLOOR_UNITS if getattr(fl, unit) is not None]
        return own


class EscalationStep(_Section):
    """``[[escalation]]``: who acts next when a budget is missed, and what they may change."""

    owner: f.Text
    options: Annotated[list[Annotated[str, f.one_of(ESCALATION_OPTIONS)]], AfterValidator(f.unique)]
    note: str = ""

    @field_validator("options")
    @classmethod
    def _some(cls, options: list[str]) -> list[str]:
        if not options:
            raise ValueError("an escalation step needs at least one option")
        return options


class Waiver(_Section):
    """``[[waivers]]``: a named clause excused until ``expires`` (inclusive), optionally for one target only."""

    clause: f.Text
    owner: f.Text
    reason: f.Text
    expires: Annotated[date | None, BeforeValidator(f.as_date)] = None
    target: f.Name | None = None

    @model_validator(mode="after")
    def _has_expiry(self) -> Waiver:
        if self.expires is None:
            raise ValueError("waiver has no expiry; add expires = YYYY-MM-DD (a waiver is never permanent)")
        return self

    def active_on(self, day: date) -> bool:
        """True while ``day`` is on or before the expiry date."""
        assert self.expires is not None
        return day <= self.expires

    def covers(self, target_id: str) -> bool:
        """True when the waiver applies to ``target_id`` (an unscoped waiver applies to every target)."""
        return self.target is None or self.target == target_id


class Rollback(_Section):
    """``[rollback]``: fleet signals that stop a staged rollout and roll it back."""

    max_p95_regression_pct: float | None = None  # cohort p95 vs control cohort
    max_fallback_frac: float | None = None  # inferences that ran on the CPU fallback
    max_crash_frac: float | None = None  # inference sessions that ended in a crash
    max_energy_drift_pct: float | None = None  # cohort energy per inference vs baseline
    window_h: float | None = None  # how long a stage is watched before it may widen
    min_devices: Annotated[int, AfterValidator(f.positive)] | None = None
    # Fleet alarms (edgeproof fleet alarms), each against the concurrent control cohort of the same stratum.
    max_occupancy_drop_pct: float | None = None  # accelerator occupancy, relative drop vs control
    max_confidence_drop_pp: float | None = None  # mean top-1 confidence, drop vs control in points
    max_throttle_per_device_hour: float | None = None  # thermal throttle changes per device-hour above control
    max_silent_frac: float | None = None  # devices that stopped reporting, share above control
    max_gap_h: float | None = None  # a device silent this long before the window's end has stopped reporting
    false_alarm_frac: float | None = None  # family-wise false-alarm rate over strata x alarms x looks


class Regression(_Section):
    """``[regression]``: how much slower or hungrier than the baseline a release may get before the gate fails."""

    p50_pct: float = 3.0
    p95_pct: float = 10.0
    p99_pct: float = 10.0
    energy_pct: float = 5.0
    peak_rss_pct: float = 10.0
    # Drift across releases: the candidate against the lineage's anchor release, measured interleaved
    # in the same gate run (unset: not judged).
    cumulative_p50_pct: float | None = None
    cumulative_p95_pct: float | None = None
    cumulative_energy_pct: float | None = None

    def cumulative_clauses(self) -> dict[str, float]:
        """The cumulative limits that are set, as ``cumulative_p50`` etc. -> percent."""
        names = ("cumulative_p50", "cumulative_p95", "cumulative_energy")
        return {name: getattr(self, f"{name}_pct") for name in names if getattr(self, f"{name}_pct") is not None}


class ContractBody(_Section):
    """Everything a contract file may hold; each section is optional but at least one hard budget is required."""

    contract: ContractInfo = Field(default_factory=ContractInfo)
    model: ModelSection = Field(default_factory=ModelSection)
    budgets: Budgets = Field(default_factory=Budgets)
    preferences: Preferences = Field(default_factory=Preferences)
    data: DataSection | None = None
    slices: dict[f.Name, SliceSection] = Field(default_factory=dict)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    pipeline: PipelineSpec | None = None
    escalation: list[EscalationStep] = Field(default_factory=list)
    waivers: list[Waiver] = Field(default_factory=list)
    rollback: Rollback = Field(default_factory=Rollback)
    regression: Regression = Field(default_factory=Regression)


class HardClause(BaseModel):
    """A hard budget as the verdict names it: ``budgets.p95_ms``, ``slices.<name>.max_drop_pp`` or
    ``model.inputs`` (the model accepts every input the contract declares). ``source`` is the table
    the budget was read from (``[budgets]`` or ``[budgets.<target>]``)."""

    model_config = ConfigDict(frozen=True)

    id: str
    budget: float
    unit: str
    source: str = ""


def target_key_matches(key: str, target_id: str) -> bool:
    """Whether a ``[budgets.<key>]`` table is for ``target_id``: the same id, or a prefix of it at a
    word boundary (the board-id rule of ``edgeproof.targets.get_target``)."""
    return target_id == key or target_id.startswith(f"{key}-")


class Contract(ContractBody):
    """A loaded contract: its sections plus the file it came from and that file's SHA-256."""

    path: Path
    sha256: str

    def override_for(self, target_id: str | None) -> tuple[str, BudgetOverride] | None:
        """The ``[budgets.<key>]`` table for ``target_id`` and its key, or None (then ``[budgets]`` alone applies)."""
        if target_id is None:
            return None
        for key, table in self.budgets.per_target.items():
            if target_key_matches(key, target_id):
                return key, table
        return None

    def budget_sources(self, target_id: str | None = None) -> dict[str, tuple[object, str]]:
        """Each budget field (scenario included) for ``target_id`` as (value, table it came from):
        the target's ``[budgets.<key>]`` value where it sets one, else ``[budgets]``'s."""
        found = self.override_for(target_id)
        out: dict[str, tuple[object, str]] = {}
        for name in BudgetOverride.model_fields:
            value: object = getattr(self.budgets, name)
            source = "[budgets]"
            if found is not None and getattr(found[1], name) is not None:
                value, source = getattr(found[1], name), f"[budgets.{found[0]}]"
            out[name] = (value, source)
        return out

    def hard_clauses(self, target_id: str | None = None) -> list[HardClause]:
        """Every hard budget that is set for ``target_id`` (``[budgets.<target>]`` over ``[budgets]``,
        clause by clause; ``[budgets]`` alone when None), budgets first (in field order), then slice floors."""
        clauses = []
        for name, (budget, source) in self.budget_sources(target_id).items():
            dim = u.dimension_for(name)
            if dim is not None and budget is not None:
                assert isinstance(budget, float)
                clauses.append(HardClause(id=f"budgets.{name}", budget=budget, unit=dim.canonical, source=source))
        for name, spec in self.slices.items():
            for output, unit, limit in spec.floors():
                clauses.append(
                    HardClause(
                        id=f"slices.{name}.{unit}" if output is None else f"slices.{name}.outputs.{output}.{unit}",
                        budget=limit,
                        unit={"max_drop_pp": u.POINTS.canonical, "max_increase_pct": "%"}.get(unit, self.metric_of(output)),
                        source=f"[slices.{name}]" if output is None else f"[slices.{name}.outputs.{output}]",
                    )
                )
        if self.model.inputs:
            # every declared input must be accepted: zero refused inputs allowed
            clauses.append(HardClause(id="model.inputs", budget=0.0, unit="inputs", source="[model.inputs]"))
        return clauses

    def all_hard_clause_ids(self) -> list[str]:
        """Hard clause ids over ``[budgets]`` and every ``[budgets.<target>]`` table (what a waiver may name)."""
        ids = [c.id for c in self.hard_clauses()]
        for key in self.budgets.per_target:
            ids += [c.id for c in self.hard_clauses(key) if c.id not in ids]
        return ids

    def scenario_for(self, target_id: str | None) -> str:
        """The scenario ``target_id``'s latency budgets are written for (its override's, else ``[budgets]``'s)."""
        value = self.budget_sources(target_id)["scenario"][0]
        assert isinstance(value, str)
        return value

    def regression_clause_ids(self) -> list[str]:
        """The clauses `edgeproof gate` adds against a baseline; a waiver may name any of them."""
        fixed = [f"regression.{m}" for m in ("p50", "p95", "p99", "peak_rss", "energy", "new_fallback_nodes")]
        cumulative = [f"regression.{m}" for m in self.regression.cumulative_clauses()]
        more = list(self.evaluation.outputs)[1:]
        accuracy = [f"regression.accuracy.{name}{'.' + out if out else ''}" for name in self.slices for out in ["", *more]]
        return fixed + cumulative + accuracy

    def feed_arrays(self) -> dict[str, Any]:
        """``[model.feeds]`` as arrays by input name (cast to each input's dtype when fed)."""
        return {name: spec.array() for name, spec in self.model.feeds.items()}

    def budget_shapes(self) -> dict[str, tuple[int, ...]]:
        """``[budgets] shape``: the shape per input latency budgets are judged at."""
        return {name: tuple(dims) for name, dims in self.budgets.shape.items()}

    @property
    def scenario(self) -> str:
        """The scenario the latency budgets are written for (``[budgets] scenario``)."""
        return self.budgets.scenario

    def slice_specs(self) -> list[Any]:
        """The slices as ``edgeproof.data.slices.SliceSpec`` objects, in file order, ready to materialise."""
        from edgeproof.data.slices import Floor, SliceSpec, TransformSpec

        return [
            SliceSpec(
                name=name,
                kind=entry.kind,
                transforms=tuple(TransformSpec(name=t.name, severity=t.severity) for t in entry.transforms),
                seed=entry.seed,
                part=entry.part,
                max_drop_pp=entry.max_drop_pp,
                floors=tuple(
                    Floor(output=output, unit=unit, limit=limit)
                    for output, unit, limit in entry.floors()
                    if (output, unit) != (None, "max_drop_pp")
                ),
            )
            for name, entry in self.slices.items()
        ]

    def metric_of(self, output: str | None) -> str:
        """The metric judging ``output`` (None: the first judged output); top1 without ``[evaluation]``."""
        outs = self.evaluation.outputs
        if output is None:
            return next(iter(outs.values())).metric if outs else "top1"
        return outs[output].metric if output in outs else "top1"

    def higher_is_better(self, output: str | None) -> bool:
        """Which way ``output``'s metric is better (None: the first judged output)."""
        outs = self.evaluation.outputs
        entry = next(iter(outs.values()), None) if output is None else outs.get(output)
        return True if entry is None else entry.better_high

    def resolve(self, relative: str) -> Path:
        """A path written in the contract, resolved against the contract file's folder."""
        return (self.base_dir / relative).resolve()

    @property
    def base_dir(self) -> Path:
        """The folder the contract's relative paths start from."""
        return self.path.parent

    @property
    def data_entry(self) -> str | None:
        """``[data]`` as ``edgeproof.data.dataset.load_dataset`` takes it (with ``base_dir``); None without ``[data]``."""
        if self.data is None:
            return None
        return self.data.entry or self.data.npz

    @property
    def data_file(self) -> Path | None:
        """The dataset's ``.py`` or ``.npz`` file, resolved; None without ``[data]``."""
        entry = self.data_entry
        if entry is None:
            return None
        return self.resolve(entry.rpartition(":")[0] if self.data and self.data.entry else entry)
