"""End-to-end timing by stage: preprocess, copy in, model, copy out, postprocess, per inference.

One fresh session runs the whole pipeline on raw rows, one row at a time, and each stage is timed
with ``perf_counter_ns`` inside the same inference, so the stages add up to the end-to-end time.
The session is driven through IO binding so the copies into and out of it are separate calls:
copy in = wrapping the input as an ``OrtValue`` on the provider's device and binding it, model =
``run_with_iobinding``, copy out = ``copy_outputs_to_cpu``. On the CPU provider both copies are
close to free (the input is shared, not copied); a GPU provider moves real bytes there.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import onnxruntime as ort

from edgeproof.data.pipeline import Pipeline
from edgeproof.measure.session import open_session
from edgeproof.records import Copies, NodeRecord, RunRecord, RuntimeSettings, Stages, StageTiming

STAGES = ("pre", "copy_in", "model", "copy_out", "post")
TIMER = "perf_counter_ns"
_DEVICES = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
_COPY_OPS = ("MemcpyToHost", "MemcpyFromHost")


def _timing(name: str, samples_ms: np.ndarray, mean_total_ms: float, provenance: str) -> StageTiming:
    mean = float(samples_ms.mean())
    return StageTiming(
        name=name,
        p50_ms=float(np.quantile(samples_ms, 0.5)),
        p95_ms=float(np.quantile(samples_ms, 0.95)),
        p99_ms=float(np.quantile(samples_ms, 0.99)),
        mean_ms=mean,
        share=mean / mean_total_ms if mean_total_ms > 0 else 0.0,
        provenance=provenance,
    )


def summarize_stages(per_stage_ms: Mapping[str, Sequence[float]], pipeline: Pipeline, provenance: str) -> Stages:
    """Stage timings (and their sum per inference as ``total``) from raw per-inference samples."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in per_stage_ms.items()}
    total = np.sum(list(arrays.values()), axis=0)
    mean_total = float(total.mean())
    return Stages(
        pipeline_sha256=pipeline.sha256,
        pipeline=pipeline.describe(),
        n=len(total),
        stages=[_timing(name, arrays[name], mean_total, provenance) for name in STAGES if name in arrays],
        total=_timing("total", total, mean_total, provenance),
    )


def time_stages(
    model_path: str,
    settings: RuntimeSettings,
    pipeline: Pipeline,
    raw_rows: np.ndarray,
    other_feeds: dict[str, np.ndarray] | None = None,
    samples: int = 200,
    warmup: int = 20,
) -> Stages:
    """Run raw rows (cycled) through pre → session → post on one fresh session, one row per
    inference, and time each stage. ``other_feeds`` fills the model's other inputs (a state, a rate)."""
    sess = open_session(model_path, settings)
    first = sess.get_inputs()[0]
    dtype = _ORT_DTYPES.get(first.type)
    names = [o.name for o in sess.get_outputs()]
    device = _DEVICES.get(settings.provider, "cpu")
    binding = sess.io_binding()
    for name, value in (other_feeds or {}).items():
        if name != first.name:
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
    per_stage: dict[str, list[float]] = {name: [] for name in STAGES}
    clock = time.perf_counter_ns
    for i in range(warmup + samples):
        raw = raw_rows[i % len(raw_rows)][None]
        t0 = clock()
        x = pipeline.preprocess(raw)
        if dtype is not None and x.dtype != dtype:
            x = x.astype(dtype)
        t1 = clock()
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), device, 0)
        binding.bind_ortvalue_input(first.name, value)
        for name in names:
            binding.bind_output(name, device)
        t2 = clock()
        sess.run_with_iobinding(binding)
        t3 = clock()
        outputs = binding.copy_outputs_to_cpu()
        t4 = clock()
        pipeline.postprocess(dict(zip(names, outputs, strict=True)))
        t5 = clock()
        if i >= warmup:
            for name, (a, b) in zip(STAGES, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)), strict=True):
                per_stage[name].append((b - a) / 1e6)
    provenance = f"measured:{TIMER} per stage (IO binding: OrtValue bind, run_with_iobinding, copy_outputs_to_cpu)"
    return summarize_stages(per_stage, pipeline, provenance)


def stages_unavailable(pipeline: Pipeline, target_id: str) -> Stages:
    """Why a target gives no stage timing: a board cannot run a Python step (built-in and ONNX steps
    are costed on simulated boards by ``simulate.pipeline``)."""
    python = pipeline.python_steps
    if python:
        why = f"the pipeline's Python step {python[0]} cannot run on {target_id} (it runs only where Python does: this host)"
    else:
        why = f"no stage timing on {target_id}"
    return Stages(pipeline_sha256=pipeline.sha256, pipeline=pipeline.describe(), unavailable=why)


def copies_from_nodes(nodes: Sequence[NodeRecord], primary: str) -> Copies:
    """Count, bytes and time of the MemcpyToHost/MemcpyFromHost nodes in a profiled run (per inference:
    each node's median time). The CPU provider needs no copies, so it has none."""
    copies = [n for n in nodes if n.op_type in _COPY_OPS]
    provenance = "measured:onnxruntime-profiler"
    if not copies:
        why = "CPU provider: no host↔device copies" if primary == "CPUExecutionProvider" else "no Memcpy nodes in the profile"
        return Copies(count=0, bytes=0.0, time_ms=0.0, provenance=f"{provenance} ({why})")
    known = [n.output_bytes for n in copies if n.output_bytes is not None]
    return Copies(
        count=len(copies),
        bytes=float(sum(known)) if len(known) == len(copies) else None,
        time_ms=sum(n.time_us or 0.0 for n in copies) / 1000.0,
        provenance=provenance,
    )


def stage_options(options: Any, contract: Any, dataset: Any = None, max_rows: int = 64) -> Any:
    """``options`` (ProfileOptions) set to time the contract's ``[pipeline]`` by stage on raw rows of
    its data's test part (``dataset`` when loaded, else read here); unchanged without a pipeline or data."""
    from edgeproof.accuracy import contract_pipeline
    from edgeproof.data.dataset import EVALUATION, load_dataset

    if contract.pipeline is None or options.pipeline_rows is not None:
        return options
    if dataset is None and contract.data_entry is not None:
        dataset = load_dataset(contract.data_entry, contract.base_dir)
    if dataset is None:
        return replace(options, pipeline=contract_pipeline(contract))
    pipeline = dataset.pipeline if dataset.pipeline is not None else contract_pipeline(contract)
    return replace(options, pipeline=pipeline, pipeline_rows=dataset.parts[EVALUATION].x[:max_rows])


def with_stages(record: RunRecord, options: Any, target_id: str) -> RunRecord:
    """A record of a run that could not time the pipeline's stages (a simulated board) says why."""
    if options.pipeline is None or record.stages is not None:
        return record
    stages = stages_unavailable(options.pipeline, target_id)
    if record.kind == "measured" and options.pipeline_rows is None:
        stages = stages.model_copy(update={"unavailable": "no raw rows to time the pipeline on: give the contract a [data] table"})
    return record.model_copy(update={"stages": stages})
