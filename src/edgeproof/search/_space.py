"""The candidate space: which variants to build for a contract's precisions, and the runtime points to run them at."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgeproof.data.slices import SliceKind, SliceSpec
from edgeproof.variants import Recipe

# Contract precision names -> the variant precisions that realise them.
_REALISES = {"fp32": ("fp32",), "fp16": ("fp16",), "int8": ("int8-dynamic", "int8-static")}
NOMINAL: tuple[SliceKind, ...] = ("nominal",)


@dataclass(frozen=True)
class PlannedVariant:
    """A recipe to build and, for static INT8, which slice kinds its calibration rows look like."""

    recipe: Recipe
    calibration_kinds: tuple[SliceKind, ...] = ()


@dataclass(frozen=True)
class RunPoint:
    """Where and how a variant runs: the host with threads and graph optimisation, or a board in a power mode."""

    target: str
    power_mode: str | None = None
    threads: int | None = None
    opt_level: str | None = None

    @property
    def on_host(self) -> bool:
        return self.target == "host"

    @property
    def label(self) -> str:
        """``host t1 all`` or ``jetson-orin-nano-8gb @15W``."""
        if self.on_host:
            return f"host t{self.threads} {self.opt_level}"
        return f"{self.target} @{self.power_mode}"


def allowed(precision: str, contract_precisions: Sequence[str]) -> bool:
    """True when a variant precision (``int8-static``) is one the contract lists (``int8``)."""
    return any(precision in _REALISES.get(p, ()) for p in contract_precisions)


def broad_calibration_kinds(specs: Sequence[SliceSpec]) -> tuple[SliceKind, ...]:
    """nominal plus every stress/tail kind that some transform-based slice provides."""
    extra: list[SliceKind] = [k for k in ("stress", "tail") if any(s.kind == k and s.transforms for s in specs)]
    return (*NOMINAL, *extra)


def plan_variants(contract_precisions: Sequence[str], specs: Sequence[SliceSpec] | None) -> tuple[list[PlannedVariant], list[str]]:
    """The variants a search builds, fp32 first, and notes on what it cannot build.

    fp32 is always built: it is the speed baseline even when the contract does not list it (it
    is then measured but not eligible). Static INT8 needs calibration data (``specs`` is None
    without data); it covers QDQ vs QOperator, per-tensor vs per-channel, U8 vs S8 activations
    and MinMax vs Percentile calibration. The per-node speed and mixed-precision variants derive
    from these later.
    """
    notes = [f"precision {p!r} is listed but edgeproof builds no {p} variant" for p in contract_precisions if p not in _REALISES]
    plan = [PlannedVariant(Recipe(precision="fp32"))]
    if "fp16" in contract_precisions:
        plan.append(PlannedVariant(Recipe(precision="fp16")))
    if "int8" not in contract_precisions:
        return plan, notes
    plan.append(PlannedVariant(Recipe(precision="int8-dynamic")))
    if specs is None:
        notes.append("static INT8 skipped: no calibration data (the contract names no [data]; pass --data)")
        return plan, notes
    plan += [
        PlannedVariant(Recipe(precision="int8-static", format="QDQ", per_channel=True), NOMINAL),
        PlannedVariant(Recipe(precision="int8-static", format="QDQ", per_channel=False), NOMINAL),
        PlannedVariant(Recipe(precision="int8-static", format="QOperator", per_channel=True), NOMINAL),
        # signed activations take other kernels (and suit accelerators that want symmetric int8)
        PlannedVariant(Recipe(precision="int8-static", format="QDQ", per_channel=True, activation_type="S8"), NOMINAL),
        # percentile ranges clip outliers that would waste MinMax's int8 steps
        PlannedVariant(Recipe(precision="int8-static", format="QDQ", per_channel=True, calibrator="percentile"), NOMINAL),
    ]
    broad = broad_calibration_kinds(specs)
    if broad != NOMINAL:
        plan.append(PlannedVariant(Recipe(precision="int8-static", format="QDQ", per_channel=True), broad))
    else:
        notes.append("no stress or tail slice with transforms: calibration on nominal only")
    return plan, notes


def variant_name(recipe: Recipe) -> str:
    """Human name: the recipe label, the calibration kinds beyond nominal, and why nodes stayed float."""
    name = recipe.label()
    if recipe.calibration_kinds and tuple(recipe.calibration_kinds) != NOMINAL:
        name += f" cal:{'+'.join(recipe.calibration_kinds)}"
    reasons = sorted({n.reason for n in recipe.excluded_nodes})
    if reasons:
        name += f" ({'/'.join(reasons)})"
    return name


def host_points(threads: Sequence[int], opt_levels: Sequence[str]) -> list[RunPoint]:
    """Every (threads × graph optimisation level) on the host."""
    return [RunPoint("host", threads=t, opt_level=o) for t in threads for o in opt_levels]


def board_points(target_id: str, modes: Sequence[str]) -> list[RunPoint]:
    """One point per power mode of a simulated board (threads come from the mode's cores)."""
    return [RunPoint(target_id, power_mode=m) for m in modes]


def order_candidates(n_variants: int, n_points: int) -> list[tuple[int, int]]:
    """(variant index, point index) pairs, each variant's first point before any variant's second.

    With --max-candidates or a time budget cutting the list short, every variant still gets
    measured at the first point rather than the first variants at every point.
    """
    return [(v, p) for p in range(n_points) for v in range(n_variants)]
