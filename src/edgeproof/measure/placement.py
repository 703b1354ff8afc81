"""Per-node time and execution-provider placement from ONNX Runtime's own profiler."""

from __future__ import annotations

import json
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

from edgeproof.measure.session import open_session
from edgeproof.records import NodeRecord, Placement, RuntimeSettings

_KERNEL_SUFFIX = "_kernel_time"


def parse_profile(trace: list[dict]) -> list[NodeRecord]:
    """Median time per run of each executed node, with the provider that ran it.

    The median, not the mean: the first run after session creation pays one-off allocations that
    can make a 3 µs kernel look like 80 µs."""
    durations: dict[str, list[float]] = defaultdict(list)
    meta: dict[str, tuple[str, str]] = {}
    written: dict[str, float] = {}
    for ev in trace:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith(_KERNEL_SUFFIX):
            continue
        name = ev["name"][: -len(_KERNEL_SUFFIX)]
        args = ev.get("args", {})
        durations[name].append(float(ev.get("dur", 0.0)))
        meta[name] = (args.get("op_name", "?"), args.get("provider", "?"))
        if "output_size" in args:
            written[name] = float(args["output_size"])
    return [
        NodeRecord(
            name=name, op_type=meta[name][0], provider=meta[name][1], time_us=float(statistics.median(d)), output_bytes=written.get(name)
        )
        for name, d in durations.items()
    ]


def placement_of(nodes: list[NodeRecord], primary: str, flops: dict[str, float] | None = None) -> Placement:
    """Fractions of nodes, FLOPs and time that ran outside the primary provider (the CPU fallback)."""
    if flops:
        nodes = [n.model_copy(update={"flops": flops.get(n.name)}) for n in nodes]
    fallback = [n for n in nodes if n.provider != primary]
    total_time = sum(n.time_us or 0.0 for n in nodes)
    # ONNX Runtime renames fused nodes, so FLOPs are known only for nodes that kept their graph name;
    # a share over a subset would mislead, so the FLOP share exists only when every node is known
    all_known = bool(nodes) and all(n.flops is not None for n in nodes)
    total_flops = sum(n.flops or 0.0 for n in nodes) if all_known else 0.0
    return Placement(
        nodes=nodes,
        primary_provider=primary,
        fallback_node_frac=len(fallback) / len(nodes) if nodes else 0.0,
        fallback_flop_frac=(sum(n.flops or 0.0 for n in fallback) / total_flops) if total_flops else None,
        fallback_time_frac=(sum(n.time_us or 0.0 for n in fallback) / total_time) if total_time else None,
        provenance="measured:onnxruntime-profiler",
    )


def profile_nodes(model_path: str | Path, settings: RuntimeSettings, feeds: dict, runs: int = 20) -> list[NodeRecord]:
    """Run a separate profiling session (profiling slows inference, so never on timed runs)."""
    with tempfile.TemporaryDirectory(prefix="edgeproof-prof-") as tmp:
        sess = open_session(model_path, settings, profile_prefix=str(Path(tmp) / "ort"))
        for _ in range(runs + 1):
            sess.run(None, feeds)
        trace_path = sess.end_profiling()
        trace = json.loads(Path(trace_path).read_text())
    return parse_profile(trace)
