"""Place kernels on the accelerator or the CPU fallback, cut the graph into segments, find the copies."""

from __future__ import annotations

from dataclasses import dataclass

from edgeproof.simulate.kernels import KernelGraph
from edgeproof.targets.spec import Target

ACCEL = "accel"
CPU = "cpu"
HOST = -1  # segment index standing for host memory (graph inputs and outputs)


@dataclass(frozen=True)
class Placed:
    """Where one kernel runs and in which precision; ``reason`` says why a kernel fell back."""

    device: str
    precision: str
    reason: str = ""


@dataclass(frozen=True)
class Segment:
    index: int
    device: str
    kernels: tuple[str, ...]


@dataclass(frozen=True)
class Boundary:
    """Tensors copied from one segment (or host memory) to another across the accelerator link."""

    src: int
    dst: int
    tensors: tuple[str, ...]
    bytes: int


@dataclass(frozen=True)
class Partition:
    placed: dict[str, Placed]
    segments: tuple[Segment, ...]
    boundaries: tuple[Boundary, ...]

    @property
    def fallback_kernels(self) -> list[str]:
        return [name for name, p in self.placed.items() if p.device == CPU]

    @property
    def bytes_copied(self) -> int:
        return sum(b.bytes for b in self.boundaries)


def place(graph: KernelGraph, target: Target) -> dict[str, Placed]:
    """Each kernel on the accelerator where it supports the op at the kernel's precision (or a
    promoted one), else on the CPU. With a single-segment compiler everything after the first
    fallback also runs on the CPU."""
    acc = target.accelerator
    placed: dict[str, Placed] = {}
    fell_back = False
    for k in graph.kernels:
        if acc is None:
            placed[k.name] = Placed(CPU, k.precision)
            continue
        run = acc.run_precision(k.op_type, k.precision)
        if run is not None and not (acc.single_segment and fell_back):
            placed[k.name] = Placed(ACCEL, run)
            continue
        if run is None:
            supported = sorted(acc.ops)
            reason = (
                f"{acc.name} has no {k.precision} support (it runs {', '.join(supported)})"
                if k.precision not in acc.ops
                else f"{k.op_type} is not supported at {k.precision} on {acc.name}"
            )
            fell_back = True
        else:
            reason = f"after the first fallback: {acc.name}'s compiler maps one subgraph only"
        placed[k.name] = Placed(CPU, k.precision, reason)
    return placed


def partition(graph: KernelGraph, target: Target) -> Partition:
    """Placement, maximal runs of kernels on one device (segments), and the copies between them."""
    return split(graph, place(graph, target), linked=target.accelerator is not None)


def split(graph: KernelGraph, placed: dict[str, Placed], linked: bool) -> Partition:
    """Segments and boundary copies for a given placement (``linked``: there is an accelerator
    link to copy over; a CPU-only board copies nothing)."""
    segments: list[Segment] = []
    seg_of: dict[str, int] = {}
    for k in graph.kernels:
        device = placed[k.name].device
        if not segments or segments[-1].device != device:
            segments.append(Segment(len(segments), device, ()))
        last = segments[-1]
        segments[-1] = Segment(last.index, device, last.kernels + (k.name,))
        seg_of[k.name] = last.index
    boundaries = _boundaries(graph, placed, seg_of, segments) if linked else []
    return Partition(placed=placed, segments=tuple(segments), boundaries=tuple(boundaries))


def _boundaries(graph: KernelGraph, placed: dict[str, Placed], seg_of: dict[str, int], segments: list[Segment]) -> list[Boundary]:
    """A tensor crosses the link once per device that reads it without having produced it; it is
    copied to the first segment there that needs it. Graph inputs start in host memory and graph
    outputs must end there."""
    producer_seg = {t: seg_of[k.name] for k in graph.kernels for t in k.outputs}
    device_of = {s.index: s.device for s in segments}
    device_of[HOST] = CPU
    crossings: dict[tuple[int, int], list[str]] = {}
    copied: set[tuple[str, str]] = set()  # (tensor, device) already holding a copy
    for k in graph.kernels:
        dst = seg_of[k.name]
        for t in k.inputs:
            src = producer_seg.get(t, HOST)
            if device_of[src] != device_of[dst] and (t, device_of[dst]) not in copied:
                copied.add((t, device_of[dst]))
                crossings.setdefault((src, dst), []).append(t)
    for t in graph.graph_outputs:
        src = producer_seg.get(t, HOST)
        if device_of[src] != CPU and (t, CPU) not in copied:
            crossings.setdefault((src, HOST), []).append(t)
    return [
        Boundary(src, dst, tuple(ts), sum(graph.tensor_bytes.get(t, 0) for t in ts))
        for (src, dst), ts in sorted(crossings.items(), key=lambda item: (item[0][1] if item[0][1] != HOST else 1 << 30, item[0][0]))
    ]
