"""The budget contract as typed, validated pydantic models; a quantity's unit comes from its field name."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from edgeproof.contract import _fields as f
from edgeproof.contract import _units as u

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


class ModelSection(_Section):
    """``[model]``: the model file (relative to the contract), supported precisions and accepted inputs."""

    path: f.Text | None = None
    precisions: Annotated[list[Annotated[str, f.one_of(PRECISIONS)]], AfterValidator(f.unique)] = Field(default_factory=lambda: ["fp32"])
    inputs: dict[f.Name, InputSpec] = Field(default_factory=dict)


class Budgets(_Section):
    """``[budgets]``: hard budgets, every one an upper bound; latency is judged under ``scenario``."""

    scenario: Annotated[str, AfterValidator(f.scenario)] = "single-stream"
    p95_ms: float | None = None
    p99_ms: float | None = None
    peak_rss_mib: float | None = None
    load_time_ms: float | None = None
    model_size_mib: float | None = None
    energy_mj_per_inference: float | None = None
    sustained_w: float | None = None
    temperature_c: float | None = None
    cpu_fallback_frac: float | None = None


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


class SliceSection(_Section):
    """``[slices.<name>]``: a nominal, stress or tail slice and its accuracy-drop floor vs the float reference.

    ``part`` is the dataset part the slice reads; ``seed`` seeds its random transforms.
    """

    kind: Annotated[str, f.one_of(SLICE_KINDS)]
    description: str = ""
    part: f.Name = "test"
    transforms: list[TransformEntry] = Field(default_factory=list)
    seed: Annotated[int, AfterValidator(f.non_negative)] = 0
    max_drop_pp: float | None = None


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


class Regression(_Section):
    """``[regression]``: how much slower or hungrier than the baseline a release may get before the gate fails."""

    p50_pct: float = 3.0
    p95_pct: float = 10.0
    p99_pct: float = 10.0
    energy_pct: float = 5.0
    peak_rss_pct: float = 10.0


class ContractBody(_Section):
    """Everything a contract file may hold; each section is optional but at least one hard budget is required."""

    contract: ContractInfo = Field(default_factory=ContractInfo)
    model: ModelSection = Field(default_factory=ModelSection)
    budgets: Budgets = Field(default_factory=Budgets)
    preferences: Preferences = Field(default_factory=Preferences)
    data: DataSection | None = None
    slices: dict[f.Name, SliceSection] = Field(default_factory=dict)
    escalation: list[EscalationStep] = Field(default_factory=list)
    waivers: list[Waiver] = Field(default_factory=list)
    rollback: Rollback = Field(default_factory=Rollback)
    regression: Regression = Field(default_factory=Regression)


class HardClause(BaseModel):
    """A hard budget as the verdict names it: ``budgets.p95_ms``, ``slices.<name>.max_drop_pp`` or
    ``model.inputs`` (the model accepts every input the contract declares)."""

    model_config = ConfigDict(frozen=True)

    id: str
    budget: float
    unit: str


class Contract(ContractBody):
    """A loaded contract: its sections plus the file it came from and that file's SHA-256."""

    path: Path
    sha256: str

    def hard_clauses(self) -> list[HardClause]:
        """Every hard budget that is set, budgets first (in field order), then slice floors."""
        clauses = []
        for name in Budgets.model_fields:
            budget = getattr(self.budgets, name)
            dim = u.dimension_for(name)
            if dim is not None and budget is not None:
                clauses.append(HardClause(id=f"budgets.{name}", budget=budget, unit=dim.canonical))
        for name, spec in self.slices.items():
            if spec.max_drop_pp is not None:
                clauses.append(HardClause(id=f"slices.{name}.max_drop_pp", budget=spec.max_drop_pp, unit=u.POINTS.canonical))
        if self.model.inputs:
            # every declared input must be accepted: zero refused inputs allowed
            clauses.append(HardClause(id="model.inputs", budget=0.0, unit="inputs"))
        return clauses

    def regression_clause_ids(self) -> list[str]:
        """The clauses `edgeproof gate` adds against a baseline; a waiver may name any of them."""
        fixed = [f"regression.{m}" for m in ("p50", "p95", "p99", "peak_rss", "energy", "new_fallback_nodes")]
        return fixed + [f"regression.accuracy.{name}" for name in self.slices]

    @property
    def scenario(self) -> str:
        """The scenario the latency budgets are written for (``[budgets] scenario``)."""
        return self.budgets.scenario

    def slice_specs(self) -> list[Any]:
        """The slices as ``edgeproof.data.slices.SliceSpec`` objects, in file order, ready to materialise."""
        from edgeproof.data.slices import SliceSpec, TransformSpec

        return [
            SliceSpec(
                name=name,
                kind=entry.kind,
                transforms=tuple(TransformSpec(name=t.name, severity=t.severity) for t in entry.transforms),
                seed=entry.seed,
                part=entry.part,
                max_drop_pp=entry.max_drop_pp,
            )
            for name, entry in self.slices.items()
        ]

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
