"""A contract's pipeline on a simulated board: pre, copy in, model, copy out and post per inference.

Where each stage's figure comes from:

- **built-in steps** (resize, crop, pad, scale, normalize, layout, cast; softmax, argmax, top-k): the
  work each does (``data.pipeline.step_work``: bytes read and written, operations per element, a
  resize's taps) is timed as one CPU kernel of the ONNX op doing the same work
  (``simulate.timing.board_kernel_phase``): the board profile's CPU roofline at the operating
  point's clock and memory bandwidth, the op class's efficiency, one dispatch overhead, on **one
  core** at the fp32 rate (a numpy or OpenCV step runs single-threaded in float32);
- **ONNX steps**: costed like any graph, at the shape they are fed: analysed, fused into kernels,
  partitioned onto the board's accelerator or CPU and timed (``simulate.run.board_state``);
- **model, copy in, copy out**: the model's own simulated timeline; the copies are its host→device
  and device→host transfers (zero on a CPU-only board);
- **a ``file.py:fn`` step**: no figure. It runs only where Python does (this host), so the stages are
  unavailable on a board, saying so, and a pipeline-scoped budget stays unverified.

The sizes come from running the pipeline once here on one raw row and the model once here for its
outputs' shapes; only shapes and byte counts are taken from that run, never its time. The board's
jitter model is drawn once per inference (the record's samples): each stage takes the same draw in
proportion to its noise-free time, so the stages add up to the end-to-end time sample for sample.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeproof.analysis import analyze
from edgeproof.data.pipeline import Pipeline, StepWork, Traced, step_work
from edgeproof.measure.session import open_session, run_checked
from edgeproof.measure.stages import stages_unavailable, summarize_stages
from edgeproof.model import Model, graph_inputs
from edgeproof.records import RunRecord, RuntimeSettings, Stages
from edgeproof.simulate.kernels import Kernel, KernelGraph, build_kernels
from edgeproof.simulate.partition import CPU, Partition, Placed, Segment
from edgeproof.simulate.point import OperatingPoint, operating_point
from edgeproof.simulate.run import board_state, figure_provenance, is_estimated, profile_label
from edgeproof.simulate.timing import board_kernel_phase
from edgeproof.targets.catalog import get_target
from edgeproof.targets.firmware import FirmwareProfile, resolve_firmware
from edgeproof.targets.spec import Target

Feeds = dict[str, np.ndarray]
# Built-in steps run on one core, in float32 (numpy's arithmetic here; OpenCV's on a board).
STEP_THREADS = 1
STEP_PRECISION = "fp32"


@dataclass(frozen=True)
class StepCost:
    """One step's simulated time on the board and how it was modelled."""

    stage: str
    label: str
    time_us: float
    model: str
    estimated: bool = False

    def line(self) -> str:
        return f"pipeline {self.stage} step {self.label}: {self.time_us:.1f} µs ({self.model})"


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.2f} MiB"


def builtin_cost(stage: str, work: StepWork, target: Target, op: OperatingPoint) -> StepCost:
    """A built-in step timed as one CPU kernel of the ONNX op doing its work, on ``STEP_THREADS`` core(s)
    (a step with nothing to do costs nothing: no kernel runs)."""
    if not (work.flops or work.bytes_read or work.bytes_written):
        return StepCost(stage, work.label, 0.0, work.basis)
    kernel = Kernel(
        name=work.label, op_type=work.like, precision=STEP_PRECISION, nodes=(work.label,), flops=work.flops, weight_bytes=0,
        inputs=("in",), outputs=("out",),
    )  # fmt: skip
    graph = KernelGraph(
        kernels=(kernel,), tensor_bytes={"in": work.bytes_read, "out": work.bytes_written}, graph_inputs=("in",), graph_outputs=("out",)
    )
    part = Partition(placed={work.label: Placed(CPU, STEP_PRECISION)}, segments=(Segment(0, CPU, (work.label,)),), boundaries=())
    one_core = replace(op, threads=STEP_THREADS)
    phase = board_kernel_phase(kernel, graph, part, target, one_core, 0.0)
    model = (
        f"{_size(work.bytes_read)} read, {_size(work.bytes_written)} written, {work.flops / 1e6:.3g} MFLOP ({work.basis}); "
        f"timed as one {work.like} kernel ({kernel.board_class} class) on {STEP_THREADS} {target.cpu.name} core at "
        f"{op.cpu_clock_ghz:.2f} GHz and {op.memory_bandwidth_gbs:g} GB/s: {phase.bound}-bound"
    )
    return StepCost(stage, work.label, phase.duration_us, model)


def graph_cost(stage: str, traced: Traced, base_dir: Path, target: Target, op: OperatingPoint, label: str) -> StepCost:
    """An ONNX step costed like any graph on the board, at the shapes it was fed."""
    assert traced.step.path is not None
    model = Model.load(base_dir / traced.step.path)
    ordered = list(traced.read.values())
    shapes = {
        vi.name: tuple(traced.read.get(vi.name, ordered[min(i, len(ordered) - 1)]).shape) for i, vi in enumerate(graph_inputs(model.proto))
    }
    cost = analyze(model.with_input_shapes(shapes).proto, simplify=True)
    graph = build_kernels(cost)
    if not graph.kernels:
        return StepCost(stage, traced.step.label(), 0.0, "every node folds to a constant")
    _, timeline = board_state(graph, target, op)
    where = figure_provenance(cost, label)
    said = (
        f"costed as a graph: {len(graph.kernels)} kernels, {cost.total_flops / 1e6:.3g} MFLOP, partitioned and timed on the board ({where})"
    )
    return StepCost(stage, traced.step.label(), timeline.total_us, said, is_estimated(cost))


def _stage_costs(stage: str, traced: list[Traced], pipeline: Pipeline, target: Target, op: OperatingPoint, label: str) -> list[StepCost]:
    costs = []
    for t in traced:
        work = step_work(t)
        costs.append(
            builtin_cost(stage, work, target, op) if work is not None else graph_cost(stage, t, pipeline.base_dir, target, op, label)
        )
    return costs


def _copies_ms(record: RunRecord) -> tuple[float, float]:
    """The model timeline's host→device and device→host copies, in ms (``copy seg-host->…``, ``…->seg-host``)."""
    assert record.simulation is not None
    copy_in = sum(p.duration_us for p in record.simulation.timeline if p.kind == "copy" and p.name.startswith("copy seg-host"))
    copy_out = sum(p.duration_us for p in record.simulation.timeline if p.kind == "copy" and p.name.endswith("->seg-host"))
    return copy_in / 1e3, copy_out / 1e3


def simulate_stages(
    record: RunRecord,
    pipeline: Pipeline,
    raw_rows: np.ndarray | None,
    model_path: str | Path,
    feed: Feeds,
    firmware: FirmwareProfile | str | Path | None = None,
    catalog_dirs: tuple[str, ...] = (),
) -> tuple[Stages, list[str]]:
    """The pipeline's stages on the board ``record`` simulated the model on, and one line per step on
    how it was modelled. ``raw_rows``: raw data to size the steps by (the first row is used);
    ``feed``: one input of the model, run once here for its outputs' shapes."""
    target_id = record.target.id
    if pipeline.python_steps:
        return stages_unavailable(pipeline, target_id), []
    if raw_rows is None or not len(raw_rows):
        why = f"no raw rows to size the pipeline's work on {target_id} by: give the contract a [data] table"
        return Stages(pipeline_sha256=pipeline.sha256, pipeline=pipeline.describe(), unavailable=why), []
    sim = record.simulation
    assert sim is not None and record.kind == "simulated"
    target = get_target(target_id, catalog_dirs)
    fw = resolve_firmware(target, firmware if firmware is not None else _recorded_firmware(record))
    op = operating_point(target, fw, record.target.power_mode, record.settings.intra_op_threads)
    label = profile_label(target, fw)

    sess = open_session(model_path, RuntimeSettings())
    names = [o.name for o in sess.get_outputs()]
    outputs = dict(zip(names, run_checked(sess, feed, f"{model_path} (sizing the postprocessing)"), strict=True))
    pre_traced, post_traced = pipeline.trace(raw_rows[:1], {k: np.asarray(v) for k, v in outputs.items()})
    steps = _stage_costs("pre", pre_traced, pipeline, target, op, label) + _stage_costs("post", post_traced, pipeline, target, op, label)
    pre_ms = sum(s.time_us for s in steps if s.stage == "pre") / 1e3
    post_ms = sum(s.time_us for s in steps if s.stage == "post") / 1e3
    copy_in_ms, copy_out_ms = _copies_ms(record)

    per_stage: dict[str, list[float]] = {name: [] for name in ("pre", "copy_in", "model", "copy_out", "post")}
    for session in record.sessions:
        for sample_ms in session.samples_ms:
            draw = sample_ms / sim.latency_model_ms  # this inference's jitter draw, applied to every stage
            per_stage["pre"].append(pre_ms * draw)
            per_stage["copy_in"].append(copy_in_ms * draw)
            per_stage["model"].append(sample_ms - (copy_in_ms + copy_out_ms) * draw)
            per_stage["copy_out"].append(copy_out_ms * draw)
            per_stage["post"].append(post_ms * draw)

    estimated = any(s.estimated for s in steps) or record.latency_provenance.startswith("estimated:")
    kind = "estimated" if estimated else "simulated"
    steps_from = f"{kind}:{label} (each step's work on the board: built-in steps on its CPU roofline, one core; ONNX steps as graphs)"
    session_from = record.latency_provenance
    provenance = {"pre": steps_from, "post": steps_from, "copy_in": session_from, "model": session_from, "copy_out": session_from}
    stages = summarize_stages(per_stage, pipeline, f"{kind}:{label} (pre + session + post per inference)")
    stages = stages.model_copy(update={"stages": [s.model_copy(update={"provenance": provenance[s.name]}) for s in stages.stages]})
    return stages, [s.line() for s in steps]


def _recorded_firmware(record: RunRecord) -> FirmwareProfile | None:
    return FirmwareProfile.model_validate(record.target.firmware) if record.target.firmware else None


def with_simulated_stages(
    record: RunRecord,
    pipeline: Pipeline | None,
    raw_rows: np.ndarray | None,
    model_path: str | Path,
    feed: Feeds,
    firmware: FirmwareProfile | str | Path | None = None,
    catalog_dirs: tuple[str, ...] = (),
) -> RunRecord:
    """``record`` (a board simulation) with the pipeline's stages, and each step's model among the
    simulation's assumptions; unchanged without a pipeline."""
    if pipeline is None:
        return record
    stages, lines = simulate_stages(record, pipeline, raw_rows, model_path, feed, firmware, catalog_dirs)
    update: dict = {"stages": stages}
    if record.simulation is not None and lines:
        update["simulation"] = record.simulation.model_copy(update={"assumptions": [*record.simulation.assumptions, *lines]})
    return record.model_copy(update=update)
