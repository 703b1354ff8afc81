"""Memory residency (weights, live activations, runtime) and load time from model bytes and storage."""

from __future__ import annotations

from dataclasses import dataclass

from edgeproof.simulate.kernels import KernelGraph
from edgeproof.simulate.partition import ACCEL, Partition
from edgeproof.targets.spec import Target

MIB = 2**20


def peak_live_bytes(graph: KernelGraph, only: set[str] | None = None) -> int:
    """Largest sum of activation tensors alive at once while kernels run in order.

    A tensor lives from the kernel that writes it (graph inputs: from the start) to the last
    kernel that reads it (graph outputs: to the end). With ``only``, the peak is taken over the
    steps of those kernels (e.g. the accelerator's, for its on-chip arena).
    """
    last_use: dict[str, int] = {}
    first: dict[str, int] = {t: 0 for t in graph.graph_inputs}
    end = len(graph.kernels) - 1
    for i, k in enumerate(graph.kernels):
        for t in k.inputs:
            last_use[t] = i
        for t in k.outputs:
            first.setdefault(t, i)
    for t in graph.graph_outputs:
        last_use[t] = end
    peak = 0
    for i, k in enumerate(graph.kernels):
        if only is not None and k.name not in only:
            continue
        live = sum(graph.tensor_bytes.get(t, 0) for t, start in first.items() if start <= i <= last_use.get(t, start))
        peak = max(peak, live)
    return peak


@dataclass(frozen=True)
class Residency:
    weights_mib: float
    activations_peak_mib: float
    runtime_mib: float
    accel_arena_mib: float | None
    resident_mib: float
    fits_ram: bool
    fits_accel: bool

    def warnings(self, target: Target) -> list[str]:
        out = []
        if not self.fits_ram:
            out.append(f"resident memory {self.resident_mib:.1f} MiB exceeds {target.id}'s {target.memory.ram_mib:g} MiB RAM")
        if not self.fits_accel and target.accelerator is not None:
            out.append(
                f"accelerator activations {self.accel_arena_mib:.2f} MiB exceed {target.accelerator.name}'s "
                f"{target.accelerator.activation_memory_mib:g} MiB; the model does not run as compiled"
            )
        return out


def residency(graph: KernelGraph, partition: Partition, target: Target) -> Residency:
    """RAM held while the model runs: runtime + weights (unless read in place from flash) + peak activations."""
    weights = graph.weight_bytes / MIB
    acts = peak_live_bytes(graph) / MIB
    on_accel = {n for n, p in partition.placed.items() if p.device == ACCEL}
    arena = peak_live_bytes(graph, on_accel) / MIB if on_accel else None
    resident = target.memory.runtime_overhead_mib + acts + (0.0 if target.memory.weights_in_place else weights)
    acc = target.accelerator
    fits_accel = acc is None or acc.activation_memory_mib is None or arena is None or arena <= acc.activation_memory_mib
    return Residency(weights, acts, target.memory.runtime_overhead_mib, arena, resident, resident <= target.memory.ram_mib, fits_accel)


def load_time_ms(model_bytes: int, graph: KernelGraph, partition: Partition, target: Target) -> dict[str, float]:
    """Time from process start to a ready model: runtime init, reading the file from storage
    (skipped when weights execute in place) and uploading a discrete accelerator's weights."""
    mem = target.memory
    read_ms = 0.0 if mem.weights_in_place else model_bytes / (mem.storage_read_mbs * 1e6) * 1e3
    upload_ms = 0.0
    acc = target.accelerator
    if acc is not None and acc.kind == "discrete":
        on_accel = sum(k.weight_bytes for k in graph.kernels if partition.placed[k.name].device == ACCEL)
        if on_accel:
            upload_ms = on_accel / (acc.transfer_bandwidth_gbs * 1e9) * 1e3 + acc.transfer_latency_us / 1e3
    return {
        "runtime_init_ms": mem.runtime_init_ms,
        "storage_read_ms": read_ms,
        "accelerator_upload_ms": upload_ms,
        "total_ms": mem.runtime_init_ms + read_ms + upload_ms,
        "boot_s": target.boot_s,
    }
