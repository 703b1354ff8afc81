"""Compatibility matrix: per board and precision, what falls back to the CPU and what fragmentation costs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edgeproof.analysis import analyze
from edgeproof.errors import TargetError
from edgeproof.model import Model
from edgeproof.simulate.kernels import ITEMSIZE, KernelGraph, as_precision, build_kernels
from edgeproof.simulate.partition import ACCEL, CPU, Partition, Placed, partition, split
from edgeproof.simulate.point import operating_point
from edgeproof.simulate.timing import board_timeline
from edgeproof.targets.catalog import get_target, load_catalog
from edgeproof.targets.firmware import default_firmware
from edgeproof.targets.spec import Target

NATIVE = "native"


@dataclass
class CompatRow:
    """One board at one precision. ``precision`` "native" is the model as it is; others are what-if
    conversions of its float kernels. Times are simulated at the board's default power mode."""

    target: str
    precision: str
    accelerator: str | None
    profile: str
    kernels: int
    accelerator_kernels: int
    fallback_ops: dict[str, int] = field(default_factory=dict)
    fallback_reasons: list[str] = field(default_factory=list)
    partitions: int = 1
    bytes_copied: int = 0
    copy_ms: float = 0.0
    latency_ms: float = 0.0
    ideal_latency_ms: float | None = None

    @property
    def fragmentation_ms(self) -> float | None:
        """Simulated latency minus the latency of the unfragmented placement (see ``unfragmented``);
        None when nothing can run on the accelerator."""
        return None if self.ideal_latency_ms is None else self.latency_ms - self.ideal_latency_ms

    def to_dict(self) -> dict:
        return {**self.__dict__, "fragmentation_ms": self.fragmentation_ms}


def unfragmented(graph: KernelGraph, target: Target) -> Partition | None:
    """The same model without fragmentation: every kernel between the first and the last one the
    accelerator supports runs on it (as if the unsupported ones in between were supported, and
    ignoring a single-segment compiler's cut); kernels before and after stay on the host CPU.
    None when the accelerator supports none of the kernels."""
    acc = target.accelerator
    if acc is None:
        return None
    runs = [acc.run_precision(k.op_type, k.precision) for k in graph.kernels]
    supported = [i for i, r in enumerate(runs) if r is not None]
    if not supported:
        return None
    first, last = supported[0], supported[-1]
    fallback_precision = next(iter(acc.peak_tops))
    placed = {}
    for i, k in enumerate(graph.kernels):
        if first <= i <= last:
            placed[k.name] = Placed(ACCEL, runs[i] or (k.precision if k.precision in acc.peak_tops else fallback_precision))
        else:
            placed[k.name] = Placed(CPU, k.precision)
    return split(graph, placed, linked=True)


def _row(graph: KernelGraph, target: Target, precision: str) -> CompatRow:
    fw = default_firmware(target)
    op = operating_point(target, fw)
    part = partition(graph, target)
    timeline = board_timeline(graph, part, target, op)
    by_name = {k.name: k for k in graph.kernels}
    fallback = part.fallback_kernels if target.accelerator is not None else []
    acc = target.accelerator
    ideal_part = unfragmented(graph, target)
    ideal = None if ideal_part is None else board_timeline(graph, ideal_part, target, op).total_us / 1e3
    reasons = list(dict.fromkeys(part.placed[n].reason for n in fallback if part.placed[n].reason))
    return CompatRow(
        target=target.id,
        precision=precision,
        accelerator=acc.name if acc else None,
        profile=f"{target.id}@{target.version}/fw-{fw.version}",
        kernels=len(graph.kernels),
        accelerator_kernels=len(graph.kernels) - len(fallback) if acc else 0,
        fallback_ops=dict(Counter(by_name[n].op_type for n in fallback)),
        fallback_reasons=reasons,
        partitions=len(part.segments),
        bytes_copied=part.bytes_copied,
        copy_ms=sum(p.duration_us for p in timeline.phases if p.kind == "copy") / 1e3,
        latency_ms=timeline.total_us / 1e3,
        ideal_latency_ms=ideal,
    )


def compat_matrix(
    model: Model | str | Path,
    targets: Iterable[str] | None = None,
    precisions: Iterable[str] | None = None,
    catalog_dirs: Iterable[str | Path] = (),
) -> list[CompatRow]:
    """Rows for each board (default: the whole catalog) and precision.

    Default precisions per board: the model as it is ("native") and, for a board with an
    accelerator, each precision it supports as a what-if conversion of the model's float kernels.
    """
    wanted_all = list(precisions) if precisions is not None else None
    bad = [p for p in wanted_all or [] if p != NATIVE and p not in ITEMSIZE]
    if bad:
        raise TargetError(f"precision(s) {bad}: use native or one of {', '.join(ITEMSIZE)}")
    cost = analyze(model, simplify=True)
    native = build_kernels(cost)
    boards = load_catalog(catalog_dirs) if targets is None else {t: get_target(t, catalog_dirs) for t in targets}
    rows = []
    for target in boards.values():
        wanted = wanted_all if wanted_all is not None else [NATIVE, *(sorted(target.accelerator.ops) if target.accelerator else [])]
        for precision in wanted:
            graph = native if precision == NATIVE else as_precision(native, precision, cost)
            rows.append(_row(graph, target, precision))
    return rows
