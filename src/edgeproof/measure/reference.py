"""A fixed reference workload timed beside a model's sessions, so two runs made apart can be compared
as model/reference: drift of the host's speed (clock, co-tenant load) hits both and cancels."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeproof.measure.scenarios import Feeds, back_to_back
from edgeproof.measure.session import providers_for, run_checked, session_options
from edgeproof.records import ReferenceProbe, ReferenceRun, RuntimeSettings

# The workload's name: two runs are normalised only when both timed this same workload. Change the
# name whenever the graph below changes (records of the old workload then fall back to raw ratios).
REFERENCE_ID = "edgeproof-reference/1"
REFERENCE_WARMUP = 20
# The probe after each session: blocks of the model (about PROBE_BLOCK_MS of its work) alternating
# with blocks of the reference. Measured here under load (2 cores, load average 4-9): the blocks'
# log ratios scatter by ~9% and a session's median over 10 blocks carried nearly all of the spread
# between sessions, so 40 blocks.
PROBE_BLOCKS = 40
PROBE_BLOCK_MS = 8.0
PROBE_MODEL_BLOCK_MAX = 20
REFERENCE_BLOCK = 20

_CHANNELS = 16
_SIDE = 32
_WIDTH = 128


def _weights(shape: tuple[int, ...], salt: int) -> np.ndarray:
    """Deterministic weights from a formula (no random generator whose stream could change between
    numpy versions), scaled so activations stay of order one."""
    n = int(np.prod(shape))
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else n
    values = np.sin(np.arange(n, dtype=np.float64) * 0.7311 + salt) / np.sqrt(fan_in)
    return values.reshape(shape).astype(np.float32)


def reference_model() -> onnx.ModelProto:
    """The reference workload: two 3×3 convolutions on a 16×32×32 map, pooling, then two 128-wide
    MatMuls (about 0.3 ms on one thread of this class of CPU): the mix of conv and dense work that
    small edge models are made of, fixed forever under ``REFERENCE_ID``."""
    c, s, w = _CHANNELS, _SIDE, _WIDTH
    inits = [
        numpy_helper.from_array(_weights((c, c, 3, 3), 1), "w_conv1"),
        numpy_helper.from_array(_weights((c, c, 3, 3), 2), "w_conv2"),
        numpy_helper.from_array(_weights((c, w), 3), "w_fc1"),
        numpy_helper.from_array(_weights((w, w), 4), "w_fc2"),
        numpy_helper.from_array(np.array([1, c], dtype=np.int64), "flat_shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_conv1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w_conv2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"], name="pool"),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "w_fc1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["r3"], name="relu3"),
        helper.make_node("MatMul", ["r3", "w_fc2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "edgeproof_reference",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, s, s])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, w])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeproof")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def reference_input() -> dict[str, np.ndarray]:
    return {"x": _weights((1, _CHANNELS, _SIDE, _SIDE), 5)}


@lru_cache(maxsize=1)
def _reference_bytes() -> tuple[bytes, str]:
    """The workload serialised once per process, and its sha256."""
    data = reference_model().SerializeToString()
    return data, hashlib.sha256(data).hexdigest()


def probe_blocks(est_ms: float) -> int:
    """Model inferences per probe block: about 8 ms of the model's work (1 to 20 inferences)."""
    return max(1, min(PROBE_MODEL_BLOCK_MAX, round(PROBE_BLOCK_MS / max(est_ms, 1e-3))))


def probe(run: Callable[[None, Feeds], object], feeds: list[Feeds], per_block: int, settings: RuntimeSettings) -> ReferenceProbe:
    """Time the model (``run``, its session still open; ``per_block`` inferences a block) and a fresh
    session of the reference workload in alternating blocks, ``PROBE_BLOCKS`` of each: load on the
    host in that second hits both."""
    data, _ = _reference_bytes()
    ref = ort.InferenceSession(data, sess_options=session_options(settings), providers=providers_for(settings))
    ref_feeds = [reference_input()]
    run_checked(ref, ref_feeds[0], REFERENCE_ID)
    back_to_back(ref.run, ref_feeds, REFERENCE_WARMUP)
    model_ms: list[float] = []
    reference_ms: list[float] = []
    for _ in range(PROBE_BLOCKS):
        model_ms += back_to_back(run, feeds, per_block)
        reference_ms += back_to_back(ref.run, ref_feeds, REFERENCE_BLOCK)
    return ReferenceProbe(model_ms=model_ms, reference_ms=reference_ms)


def reference_run(probes: list[ReferenceProbe], model_block: int) -> ReferenceRun:
    """The record's ``reference`` field: the workload's identity, the probe layout and one probe per session."""
    _, sha = _reference_bytes()
    return ReferenceRun(
        workload=REFERENCE_ID,
        sha256=sha,
        blocks=PROBE_BLOCKS,
        model_block=model_block,
        reference_block=REFERENCE_BLOCK,
        probes=probes,
    )


def _block_logs(reference: ReferenceRun, p: ReferenceProbe) -> np.ndarray:
    m = np.asarray(p.model_ms).reshape(reference.blocks, reference.model_block)
    r = np.asarray(p.reference_ms).reshape(reference.blocks, reference.reference_block)
    return np.log(np.median(m, axis=1) / np.median(r, axis=1))


def normalised_run(reference: ReferenceRun) -> tuple[float, float]:
    """The run's log model/reference ratio (mean of its sessions' values) and that mean's variance,
    from the spread of the probe blocks: a median of n blocks varies as (π/2)·σ²/n, σ taken robustly
    (1.4826 × median absolute deviation; load bursts make single blocks stray). Three sessions give
    too few values to estimate their spread by; the blocks give 40 each. What varies between
    sessions beyond their blocks is left to the gate's between-run term."""
    values, variances = [], []
    for p in reference.probes:
        logs = _block_logs(reference, p)
        centre = float(np.median(logs))
        sigma = 1.4826 * float(np.median(np.abs(logs - centre)))
        values.append(centre)
        variances.append(math.pi / 2 * sigma**2 / len(logs))
    k = len(values)
    return float(np.mean(values)), float(np.sum(variances)) / k**2
