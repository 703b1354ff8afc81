"""One inference as a timeline: per-kernel roofline time, segment launches and copies across the link."""

from __future__ import annotations

from dataclasses import dataclass

from edgeproof.simulate.hostprofile import HostProfile, kernel_features
from edgeproof.simulate.kernels import Kernel, KernelGraph
from edgeproof.simulate.partition import ACCEL, CPU, HOST, Partition
from edgeproof.simulate.point import OperatingPoint
from edgeproof.targets.spec import Target

_MIB = 2**20


@dataclass(frozen=True)
class Phase:
    """A stretch of one inference on one unit: a kernel (cpu/accel), a copy (link) or a launch (cpu)."""

    kind: str
    device: str
    name: str
    start_us: float
    duration_us: float
    compute_us: float = 0.0
    memory_us: float = 0.0
    overhead_us: float = 0.0

    @property
    def bound(self) -> str:
        """What limits the phase: compute, memory or fixed overhead."""
        if self.kind != "kernel":
            return "transfer" if self.kind == "copy" else "overhead"
        if self.overhead_us >= max(self.compute_us, self.memory_us):
            return "overhead"
        return "compute" if self.compute_us >= self.memory_us else "memory"


@dataclass(frozen=True)
class Timeline:
    phases: tuple[Phase, ...]
    weights_spilled: bool = False

    @property
    def total_us(self) -> float:
        return sum(p.duration_us for p in self.phases)

    def busy_us(self, device: str) -> float:
        return sum(p.duration_us for p in self.phases if p.device == device)

    def kernel_us(self) -> dict[str, float]:
        return {p.name: p.duration_us for p in self.phases if p.kind == "kernel"}


def streamed_weights(graph: KernelGraph, partition: Partition, target: Target) -> dict[str, int]:
    """Bytes of each accelerator kernel's weights that do not fit the on-chip weight cache.

    The compiler fills the cache with weights in execution order (the Edge TPU compiler caches
    the first layers' parameters); what comes after is streamed again every inference.
    """
    acc = target.accelerator
    if acc is None or acc.weight_cache_mib is None:
        return {}
    room = acc.weight_cache_mib * _MIB
    streamed: dict[str, int] = {}
    for k in graph.kernels:
        if partition.placed[k.name].device != ACCEL or not k.weight_bytes:
            continue
        cached = min(k.weight_bytes, max(room, 0.0))
        room -= k.weight_bytes
        if k.weight_bytes > cached:
            streamed[k.name] = int(k.weight_bytes - cached)
    return streamed


def weights_spill(graph: KernelGraph, partition: Partition, target: Target) -> bool:
    """True when part of the accelerator's weights exceeds its on-chip cache and streams each inference."""
    return bool(streamed_weights(graph, partition, target))


def board_kernel_phase(
    kernel: Kernel,
    graph: KernelGraph,
    partition: Partition,
    target: Target,
    op: OperatingPoint,
    start_us: float,
    streamed_bytes: int = 0,
) -> Phase:
    """Roofline time of one kernel at its class's efficiency: max(FLOPs at the reached share of
    peak, bytes at the reached share of bandwidth; an accelerator's on-chip activation bandwidth
    is its spec's), plus a per-kernel overhead that scales
    inversely with the clock of the unit that issues it. On an accelerator, weights beyond the
    on-chip cache (``streamed_bytes``) come over the spill path, one transfer per kernel."""
    placed = partition.placed[kernel.name]
    act_bytes = graph.bytes_in(kernel) + graph.bytes_out(kernel)
    if placed.device == CPU:
        cpu = target.cpu
        eff = cpu.efficiency_for(kernel.board_class, placed.precision)
        gops = cpu.peak_gops(placed.precision, op.cpu_clock_ghz, op.threads) * eff
        compute = kernel.flops / (gops * 1e3)
        memory = (act_bytes + kernel.weight_bytes) / (op.memory_bandwidth_gbs * eff * 1e3)
        overhead = cpu.op_overhead_us * cpu.max_clock_ghz / op.cpu_clock_ghz
    else:
        acc = target.accelerator
        assert acc is not None and op.accel_clock_mhz is not None
        eff = acc.efficiency_for(kernel.board_class, placed.precision)
        tops = acc.peak_tops[placed.precision] * eff * (op.accel_clock_mhz / acc.clock_mhz) * op.accel_units_frac
        compute = kernel.flops / (tops * 1e6)
        memory = act_bytes / (acc.activation_bandwidth_gbs * 1e3) + (kernel.weight_bytes - streamed_bytes) / (
            acc.weight_bandwidth_gbs * 1e3
        )
        overhead = acc.kernel_overhead_us * acc.clock_mhz / op.accel_clock_mhz
        if streamed_bytes:
            assert acc.weight_spill_bandwidth_gbs is not None
            memory += streamed_bytes / (acc.weight_spill_bandwidth_gbs * 1e3)
            overhead += acc.transfer_latency_us
    return Phase("kernel", placed.device, kernel.name, start_us, max(compute, memory) + overhead, compute, memory, overhead)


def board_timeline(graph: KernelGraph, partition: Partition, target: Target, op: OperatingPoint) -> Timeline:
    """Segments run one after another; before each, the tensors it needs from the other device are
    copied over the link, and an accelerator segment pays one launch; outputs return to the host."""
    streamed = streamed_weights(graph, partition, target)
    by_name = {k.name: k for k in graph.kernels}
    acc = target.accelerator
    phases: list[Phase] = []
    clock = 0.0

    def add(phase: Phase) -> None:
        nonlocal clock
        phases.append(phase)
        clock += phase.duration_us

    def copies_into(dst: int) -> None:
        assert acc is not None
        for b in partition.boundaries:
            if b.dst == dst:
                us = b.bytes / (acc.transfer_bandwidth_gbs * 1e3) + acc.transfer_latency_us
                label = f"copy seg{b.src if b.src != HOST else '-host'}->seg{b.dst if b.dst != HOST else '-host'}"
                add(Phase("copy", "link", label, clock, us, memory_us=us))

    for seg in partition.segments:
        if acc is not None:
            copies_into(seg.index)
        if seg.device == ACCEL:
            assert acc is not None
            launch = acc.launch_overhead_us * target.cpu.max_clock_ghz / op.cpu_clock_ghz
            add(Phase("launch", CPU, f"launch seg{seg.index}", clock, launch, overhead_us=launch))
        for name in seg.kernels:
            add(board_kernel_phase(by_name[name], graph, partition, target, op, clock, streamed.get(name, 0)))
    if acc is not None:
        copies_into(HOST)
    return Timeline(tuple(phases), weights_spilled=bool(streamed))


def host_timeline(graph: KernelGraph, profile: HostProfile, threads: int) -> tuple[Timeline, list[str]]:
    """The host profile's prediction: session overhead plus each kernel's calibrated cost.

    Returns the timeline and notes on stand-in cost models used for uncalibrated classes.
    """
    precision = _dominant_precision(graph)
    base = profile.base(precision, threads)
    phases = [Phase("launch", CPU, "session.run overhead", 0.0, base, overhead_us=base)]
    clock = base
    notes: list[str] = []
    for k in graph.kernels:
        cost, note = profile.cost(k.op_class, k.precision, threads)
        if note and note not in notes:
            notes.append(note)
        us = max(cost(kernel_features(k, graph)), 0.0)
        phases.append(Phase("kernel", CPU, k.name, clock, us, overhead_us=cost.intercept_us, compute_us=us - cost.intercept_us))
        clock += us
    return Timeline(tuple(phases)), notes


def _dominant_precision(graph: KernelGraph) -> str:
    flops: dict[str, int] = {}
    for k in graph.kernels:
        flops[k.precision] = flops.get(k.precision, 0) + k.flops
    return max(flops, key=lambda p: flops[p]) if flops else "fp32"
