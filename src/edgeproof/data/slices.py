"""Slices: named views of a dataset (nominal as is, stress and tail via transforms), with IDs.

A slice reads one dataset part (``test`` unless it names another, e.g. real night-time captures)
and applies its transforms in order with ``numpy.random.default_rng(seed)``, so the same spec on
the same data always gives the same arrays and the same ID.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeproof.data.dataset import CALIBRATION, EVALUATION, Dataset, Part
from edgeproof.data.feeds import Inputs
from edgeproof.data.ids import content_id
from edgeproof.data.transforms import TRANSFORMS_VERSION, apply_transform, check_transform
from edgeproof.errors import DataError
from edgeproof.recipe import SliceKind

if TYPE_CHECKING:
    from edgeproof.data.pipeline import Pipeline

SLICE_KINDS: tuple[SliceKind, ...] = ("nominal", "stress", "tail")


class TransformSpec(BaseModel):
    """One transform by name with its severity in [0, 1] (see ``edgeproof.data.transforms``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    severity: float


FloorUnit = Literal["max_drop_pp", "max_increase", "max_increase_pct"]


class Floor(BaseModel):
    """A floor on one output's worsening vs the float reference, in the unit its metric allows:
    ``max_drop_pp`` for a higher-is-better metric, ``max_increase`` (the metric's own unit) or
    ``max_increase_pct`` (relative to the reference) for an error. ``output`` None: the first judged output."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    output: str | None = None
    unit: FloorUnit
    limit: float


class SliceSpec(BaseModel):
    """What a contract says about one slice: its kind, how to make it, and its accuracy floor.

    ``max_drop_pp`` is the largest accuracy drop vs the float reference, in percentage points,
    the slice tolerates (None: reported, not judged); ``floors`` are the other floors (an error
    metric's increase, a second output's). ``part`` is the dataset part it reads.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    kind: SliceKind
    transforms: tuple[TransformSpec, ...] = ()
    seed: int = 0
    part: str = EVALUATION
    max_drop_pp: float | None = None
    floors: tuple[Floor, ...] = ()

    def recipe(self) -> dict:
        """The JSON recipe that goes into the slice ID."""
        return {
            "kind": self.kind,
            "transforms": [[t.name, t.severity] for t in self.transforms],
            "seed": self.seed,
            "part": self.part,
            "transforms_version": TRANSFORMS_VERSION,
        }


@dataclass(frozen=True)
class Slice:
    """A materialised slice: its spec, arrays and content ID. ``x`` is what the model's data input
    is fed (the raw rows, transformed, after the dataset's pipeline if it has one; ``x_input`` its
    name, None: the model's one unnamed input); ``more`` the part's other inputs by name, row for
    row; ``feeds`` the contract's fixed values; ``labels`` the per-output labels."""

    spec: SliceSpec
    x: np.ndarray
    y: np.ndarray
    id: str
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    x_input: str | None = None
    more: dict[str, np.ndarray] = field(default_factory=dict)
    feeds: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> SliceKind:
        return self.spec.kind

    @property
    def inputs(self) -> Inputs:
        """Everything the model is fed on this slice (see ``edgeproof.data.feeds``)."""
        return Inputs({self.x_input or "": self.x, **self.more}, self.feeds)


def check_slice_specs(specs: Sequence[SliceSpec]) -> None:
    """Raise DataError for an inconsistent set of slice specs (before any data is touched)."""
    names = [s.name for s in specs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DataError(f"slice {duplicated[0]!r} is defined more than once")
    for spec in specs:
        where = f"slice {spec.name!r}"
        if spec.kind == "nominal" and spec.transforms:
            raise DataError(f"{where}: a nominal slice takes no transforms (make it a stress or tail slice)")
        if spec.kind != "nominal" and not spec.transforms and spec.part == EVALUATION:
            raise DataError(f"{where}: a {spec.kind} slice needs transforms or a data part of its own")
        if spec.part == CALIBRATION:
            raise DataError(f"{where}: slices cannot read the calibration part (it must stay disjoint from evaluation)")
        if spec.max_drop_pp is not None and spec.max_drop_pp < 0:
            raise DataError(f"{where}: max_drop_pp must be >= 0, got {spec.max_drop_pp}")
        for floor in spec.floors:
            if floor.limit < 0:
                raise DataError(f"{where}: {floor.unit} must be >= 0, got {floor.limit}")
        for t in spec.transforms:
            check_transform(t.name, t.severity, where)


def transformed(x: np.ndarray, spec: SliceSpec, pipeline: Pipeline | None = None) -> np.ndarray:
    """Apply a spec's transforms in order with one Generator seeded by ``spec.seed``. With a
    pipeline, ``x`` is raw sensor data of any numeric dtype: the transforms act on it as NCHW
    float images in [0, 1] (per its ``raw_layout`` and ``raw_range``; integer data without a
    ``raw_range`` spans its dtype, so ``uint8`` 0..255 is 0..1) and the result is raw data of
    ``x``'s dtype again (integers rounded and clipped)."""
    if not spec.transforms:
        return x
    rng = np.random.default_rng(spec.seed)
    out = pipeline.raw_to_unit(x) if pipeline is not None else x
    for t in spec.transforms:
        out = apply_transform(out, t.name, t.severity, rng, f"slice {spec.name!r}")
    return pipeline.unit_to_raw(out, x.dtype if x.dtype.kind in "iu" else np.float32) if pipeline is not None else out


def model_rows(raw: np.ndarray, pipeline: Pipeline | None) -> np.ndarray:
    """What the model is fed for raw rows: the pipeline's preprocessing, or the rows themselves."""
    return raw if pipeline is None else pipeline.preprocess(raw)


def part_model_rows(part: Part, pipeline: Pipeline | None, max_rows: int | None = None) -> dict[str, np.ndarray]:
    """A part's rows by input name as the model is fed them (``Part.rows()``, the raw ``x``
    preprocessed by ``pipeline``), at most ``max_rows``."""
    rows = {k: v[:max_rows] for k, v in part.rows().items()}
    key = part.x_input or ""
    rows[key] = model_rows(rows[key], pipeline)
    return rows


def _pipeline_recipe(pipeline: Pipeline | None) -> dict:
    return {} if pipeline is None else {"pipeline": pipeline.sha256}


def _input_arrays(more: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """What an ID covers beyond ``x``: the other inputs' rows and the fixed feeds (none: no entry,
    so a one-input slice keeps the ID it always had)."""
    return [*((f"x__{k}", v) for k, v in sorted(more.items())), *((f"feed__{k}", np.asarray(v)) for k, v in sorted(feeds.items()))]


def make_slice(dataset: Dataset, spec: SliceSpec) -> Slice:
    """Materialise one slice of ``dataset`` (transforms on the raw rows, then the dataset's
    pipeline, if any; the part's other inputs and the dataset's feeds as they are); a part the
    data lacks is a DataError."""
    check_slice_specs([spec])
    part = dataset.part(spec.part, f"slice {spec.name!r}")
    pipeline = dataset.pipeline
    x = model_rows(transformed(part.x, spec, pipeline), pipeline)
    arrays = [("x", x), ("y", part.y), *((f"y__{k}", v) for k, v in sorted(part.labels.items()))]
    arrays += _input_arrays(part.more, dataset.feeds)
    recipe = {"source": part.id, **spec.recipe(), **_pipeline_recipe(pipeline)}
    return Slice(
        spec=spec,
        x=x,
        y=part.y,
        id=content_id(arrays, recipe),
        labels=dict(part.labels),
        x_input=part.x_input,
        more=dict(part.more),
        feeds=dict(dataset.feeds),
    )


def make_slices(dataset: Dataset, specs: Sequence[SliceSpec]) -> list[Slice]:
    """Materialise every slice, checking the specs as a set first."""
    check_slice_specs(specs)
    return [make_slice(dataset, spec) for spec in specs]


@dataclass(frozen=True)
class CalibrationSet:
    """Inputs static quantization calibrates on, which slice kinds they came from, and their ID.
    ``x`` feeds the data's input (``x_input``), ``more`` the others row for row, ``feeds`` the
    contract's fixed values (as on a ``Slice``)."""

    x: np.ndarray
    kinds: tuple[SliceKind, ...]
    id: str
    x_input: str | None = None
    more: dict[str, np.ndarray] = field(default_factory=dict)
    feeds: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def inputs(self) -> Inputs:
        """Everything the model is fed while calibrating (see ``edgeproof.data.feeds``)."""
        return Inputs({self.x_input or "": self.x, **self.more}, self.feeds)


def calibration_set(
    dataset: Dataset, specs: Sequence[SliceSpec], kinds: Iterable[SliceKind] = ("nominal",), max_rows: int | None = None
) -> CalibrationSet:
    """Calibration inputs drawn from the calibration part, shaped like the wanted slice kinds (raw
    rows transformed, then preprocessed by the dataset's pipeline, if it has one).

    With kinds beyond nominal, the calibration rows are dealt round-robin to "as is" (if nominal
    is wanted) and to each transform-based stress/tail slice, whose transforms are applied to
    its share; the size stays that of the calibration part (or ``max_rows``). Slices reading a
    part of their own contribute nothing: their rows are evaluation data.
    """
    wanted = tuple(dict.fromkeys(kinds))
    unknown = [k for k in wanted if k not in SLICE_KINDS]
    if unknown or not wanted:
        raise DataError(f"calibration kinds {list(wanted)}: each must be one of {', '.join(SLICE_KINDS)}")
    check_slice_specs(specs)
    x = dataset.calibration.x[:max_rows] if max_rows else dataset.calibration.x
    recipes: list[SliceSpec | None] = [None] if "nominal" in wanted else []
    recipes += [s for s in specs if s.kind in wanted and s.kind != "nominal" and s.transforms]
    if not recipes:
        raise DataError(f"calibration kinds {list(wanted)}: no slice of those kinds has transforms to apply")
    out = x.copy()
    for k, spec in enumerate(recipes):
        rows = np.arange(k, len(x), len(recipes))
        if spec is not None and len(rows):
            out[rows] = transformed(x[rows], spec, dataset.pipeline)
    out = model_rows(out, dataset.pipeline)
    more = {k: v[: len(x)] for k, v in dataset.calibration.more.items()}
    recipe = {
        "source": dataset.calibration.id,
        "kinds": list(wanted),
        "max_rows": max_rows,
        "recipes": [None if s is None else s.recipe() for s in recipes],
        **_pipeline_recipe(dataset.pipeline),
    }
    return CalibrationSet(
        x=out,
        kinds=wanted,
        id=content_id([("x", out), *_input_arrays(more, dataset.feeds)], recipe),
        x_input=dataset.calibration.x_input,
        more=more,
        feeds=dict(dataset.feeds),
    )
