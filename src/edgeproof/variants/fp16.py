"""fp16 variants that are checked before they ship: convert, load, compare with fp32, else refuse.

onnxconverter-common's ``convert_float_to_float16`` can break a graph with control flow
(``If``/``Loop``/``Scan``): a subgraph that reads a float32 value of the outer scope (a graph input
kept float32 by ``keep_io_types``) is retyped to float16 without a Cast, and ONNX Runtime refuses
the model (silero-vad: "Type (tensor(float16)) of output arg (…/Pad_output_0) … does not match
expected type (tensor(float))"). A wrong-but-loadable conversion is as bad. So every conversion is
checked here: the session must load and, on the probe feeds (real rows where the caller has them),
every output must be finite and close to fp32's (``MAX_REL_RMS``).

When the plain conversion fails the check and the graph has control flow, it is converted again
with the control-flow nodes in the converter's block list: their subgraphs stay float32, with Casts
at their edges (including the outer values a subgraph reads by name, which the converter misses).
If that conversion fails the check too, or leaves no arithmetic in fp16 (the whole model lives
inside one ``If``, as silero-vad does), the variant is refused with ``Fp16Refused``: one line that
the search keeps as a note, never a broken candidate.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxconverter_common import float16

from edgeproof.analysis import DATA_MOVEMENT
from edgeproof.errors import DataError, ModelError, first_line
from edgeproof.model import Model, resolve_inputs, synthetic_feeds
from edgeproof.variants.recipe import Recipe

Feeds = dict[str, np.ndarray]
CONTROL_FLOW = ("If", "Loop", "Scan")
# Feeds the check runs fp32 and fp16 on: a handful of real rows catches a broken branch or an
# overflow; more would only cost time at every build.
PROBE_FEEDS = 4
# Largest relative RMS error of an fp16 float output against fp32 (‖y16 − y32‖ / ‖y32‖). fp16 keeps
# 11 significant bits (unit roundoff 2⁻¹¹ ≈ 4.9e-4); rounding weights and activations through many
# layers adds up: a PaddleOCR text-direction classifier (opset 11, 0.6 MB) showed 4.9e-3 on 4 real
# rows (2026-12-02). 5e-2 (−26 dB) leaves such a model 10× headroom, while a broken branch, a wrong
# subgraph or an overflow gives errors of order 1.
MAX_REL_RMS = 5e-2
# Non-float outputs (class indices, masks) may flip on near-ties in fp16; more than this share of
# differing elements means the graph computes something else.
MAX_INT_MISMATCH = 0.5
# convert_float_to_float16's defaults: smaller non-zero magnitudes are flushed up to this, larger clipped down to that
_FP16_MIN_POSITIVE = 1e-7
_FP16_MAX_FINITE = 1e4
# Ops whose fp16 output is no arithmetic worth an fp16 variant.
_NOT_ARITHMETIC = DATA_MOVEMENT | {"Cast", *CONTROL_FLOW}


class Fp16Refused(ModelError):
    """The fp16 conversion broke the model (it does not load, or computes something else): no variant."""


@dataclass(frozen=True)
class Checked:
    """What the check found: ``problem`` (None when the conversion passed) and what was compared."""

    problem: str | None
    compared: str


def write_fp16(source: Model, recipe: Recipe, out: Path, probe: Sequence[Feeds] | None = None) -> tuple[str, ...]:
    """Convert ``source`` to fp16 (float32 inputs and outputs kept), check it and write it to ``out``.

    ``probe``: feeds to compare fp16 with fp32 on (the first ``PROBE_FEEDS``); without them,
    synthetic feeds where every input's shape is fixed, else the check is that the session loads.
    Returns the recipe steps (tool, what the check compared, the weight-truncation note). Raises
    ``Fp16Refused`` when neither the plain conversion nor the one keeping control flow in float passes.
    """
    feeds, no_feeds = _probe_feeds(source, probe)
    reference = _reference_outputs(source, feeds)
    block = [n.name for n in recipe.excluded_nodes]
    converted, truncated = convert_fp16(source, block)
    checked = check_fp16(converted, feeds, reference, no_feeds)
    tool = f"onnxconverter-common {version('onnxconverter-common')} convert_float_to_float16(keep_io_types=True)"
    steps = [tool]
    if checked.problem is not None:
        flow = sorted({n.op_type for n in source.proto.graph.node if n.op_type in CONTROL_FLOW})
        if not flow:
            raise Fp16Refused(f"fp16 skipped: the converter broke the model: {checked.problem}")
        kind = "/".join(flow)
        first = checked.problem
        kept = [_control_flow_name(n, i) for i, n in enumerate(source.proto.graph.node) if n.op_type in CONTROL_FLOW]
        # ONNX Runtime names the node it refuses: then the control flow is known to be what broke
        blamed = any(f"({name})" in first for name in kept) or any(f"Op ({op})" in first for op in flow)
        said = f"the converter broke the model's {kind} subgraph" if blamed else "the converter broke the model"
        converted, truncated = convert_fp16(source, block + kept, keep_subgraphs=True)
        if not _fp16_arithmetic(converted, set(kept)):
            raise Fp16Refused(f"fp16 skipped: {said}: {first}; keeping {', '.join(kept)} in float32 leaves no arithmetic in fp16")
        checked = check_fp16(converted, feeds, reference, no_feeds)
        if checked.problem is not None:
            raise Fp16Refused(f"fp16 skipped: {said}: {first}; with {', '.join(kept)} kept in float32: {checked.problem}")
        steps.append(f"the plain conversion broke the {kind} subgraph ({first}); converted again with {', '.join(kept)} kept in float32")
    steps.append(checked.compared)
    onnx.save(converted, str(out))
    note = fp16_truncation_note(source.proto) if truncated else None
    return (*steps, note) if note else tuple(steps)


def convert_fp16(source: Model, block: list[str], keep_subgraphs: bool = False) -> tuple[onnx.ModelProto, bool]:
    """The converter's output and whether it truncated weights; its per-tensor "will be truncated"
    warnings are folded into one note (``fp16_truncation_note``) instead of raw warnings with paths
    into the venv. ``keep_subgraphs``: the blocked control-flow nodes' subgraphs also get Casts for
    the outer values they read."""
    proto = source.proto_copy()
    if keep_subgraphs:
        for i, n in enumerate(proto.graph.node):
            if n.op_type in CONTROL_FLOW:
                n.name = _control_flow_name(n, i)  # the converter blocks nodes by name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # keep_io_types: callers keep feeding float32 and reading float32, as with the reference.
        converted = float16.convert_float_to_float16(proto, keep_io_types=True, node_block_list=block or None)
    truncated = False
    for w in caught:
        if "will be truncated" in str(w.message):
            truncated = True
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if keep_subgraphs:
        _cast_outer_reads(converted, set(block))
    return converted, truncated


def fp16_truncation_note(model: onnx.ModelProto) -> str | None:
    """How many float weights (initializers and Constant nodes) fall outside what the fp16
    conversion keeps: non-zero magnitudes under 1e-7 are flushed to ±1e-7, over 1e4 clipped to ±1e4."""
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    tiny = huge = 0
    for t in tensors:
        if t.data_type != onnx.TensorProto.FLOAT:
            continue
        mag = np.abs(numpy_helper.to_array(t))
        tiny += int(np.count_nonzero((mag > 0) & (mag < _FP16_MIN_POSITIVE)))
        huge += int(np.count_nonzero(mag > _FP16_MAX_FINITE))
    said = []
    if tiny:
        said.append(f"{tiny} weight{'s' if tiny != 1 else ''} under fp16's range {'were' if tiny != 1 else 'was'} flushed to ±1e-7")
    if huge:
        said.append(f"{huge} weight{'s' if huge != 1 else ''} over 1e4 {'were' if huge != 1 else 'was'} clipped to ±1e4")
    return "fp16: " + "; ".join(said) if said else None


# --- keeping control flow in float32 -----------------------------------------------------------------


def _control_flow_name(node: onnx.NodeProto, index: int) -> str:
    """A control-flow node's name, or one made from its op and position when it has none."""
    return node.name or f"{node.op_type}_{index}"


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        yield from a.graphs


def _walk(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph nested in it."""
    yield graph
    for node in graph.node:
        for sub in _subgraphs(node):
            yield from _walk(sub)


def _outer_reads(node: onnx.NodeProto) -> set[str]:
    """Names a control-flow node's subgraphs read from the enclosing scope (ONNX names are unique
    across nesting levels, so what no level defines comes from outside)."""
    defined: set[str] = set()
    read: set[str] = set()
    for sub in _subgraphs(node):
        for g in _walk(sub):
            defined |= {i.name for i in g.input} | {t.name for t in g.initializer}
            for n in g.node:
                defined |= set(n.output)
                read |= {i for i in n.input if i}
            read |= {o.name for o in g.output}
    return read - defined


def _top_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.value_info, *g.output]}
    types |= {t.name: t.data_type for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def _cast_outer_reads(model: onnx.ModelProto, blocked: set[str]) -> None:
    """Give each blocked control-flow node's subgraphs a float32 Cast of every float16 outer value
    they read (the converter casts a blocked node's explicit inputs only)."""
    types = _top_types(model)
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.name in blocked and node.op_type in CONTROL_FLOW:
            renamed = {}
            for name in sorted(_outer_reads(node)):
                if types.get(name) == onnx.TensorProto.FLOAT16:
                    renamed[name] = f"{name}__fp32_for_{node.name}"
                    nodes.append(onnx.helper.make_node("Cast", [name], [renamed[name]], to=onnx.TensorProto.FLOAT, name=renamed[name]))
            for sub in _subgraphs(node):
                for g in _walk(sub):
                    for n in g.node:
                        n.input[:] = [renamed.get(i, i) for i in n.input]
                    for o in g.output:
                        if o.name in renamed:
                            o.name = renamed[o.name]
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _fp16_arithmetic(model: onnx.ModelProto, kept: set[str]) -> list[str]:
    """Top-level nodes outside ``kept`` that compute a float16 value (what the variant runs in fp16)."""
    types = _top_types(model)
    return [
        n.name
        for n in model.graph.node
        if n.name not in kept
        and n.op_type not in _NOT_ARITHMETIC
        and n.op_type != "Constant"
        and any(types.get(o) == onnx.TensorProto.FLOAT16 for o in n.output)
    ]


# --- the check ----------------------------------------------------------------------------------------


def _probe_feeds(source: Model, probe: Sequence[Feeds] | None) -> tuple[list[Feeds], str]:
    """Feeds to compare on and, when there are none, why."""
    if probe:
        return [dict(f) for f in probe[:PROBE_FEEDS]], ""
    try:
        return [synthetic_feeds(resolve_inputs(source.proto))], ""
    except (DataError, ModelError) as exc:
        return [], first_line(exc)


def _session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    data = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _reference_outputs(source: Model, feeds: list[Feeds]) -> list[list[np.ndarray]] | str:
    """fp32's outputs per feed, or why there are none (the float model itself refuses the feeds)."""
    if not feeds:
        return []
    try:
        sess = _session(source.path)
        return [[np.asarray(v) for v in sess.run(None, f)] for f in feeds]
    except Exception as exc:  # onnxruntime raises untyped errors; the check then says it could not compare
        return f"the float32 model does not run on the probe feeds ({first_line(exc)})"


def _output_problem(name: str, y16: np.ndarray, y32: np.ndarray) -> tuple[str | None, float]:
    """What is wrong with one fp16 output against fp32's (None when close), and its relative RMS error."""
    if y16.shape != y32.shape:
        return f"output {name!r} has shape {list(y16.shape)}, fp32 gives {list(y32.shape)}", float("inf")
    if np.issubdtype(y32.dtype, np.floating):
        a, b = y16.astype(np.float64), y32.astype(np.float64)
        bad = int(np.count_nonzero(~np.isfinite(a) & np.isfinite(b)))
        if bad:
            return f"output {name!r} has {bad} non-finite value(s) where fp32's are finite", float("inf")
        finite = np.isfinite(b)
        signal = float(np.sqrt(np.mean(b[finite] ** 2))) if finite.any() else 0.0
        noise = float(np.sqrt(np.mean((a[finite] - b[finite]) ** 2))) if finite.any() else 0.0
        rel = noise / signal if signal > 0 else (0.0 if noise == 0 else float("inf"))
        if rel > MAX_REL_RMS:
            return f"output {name!r} differs from fp32 by {rel:.3g} relative RMS (limit {MAX_REL_RMS:g})", rel
        return None, rel
    differ = float(np.mean(y16 != y32)) if y32.size else 0.0
    if differ > MAX_INT_MISMATCH:
        return f"output {name!r} differs from fp32 in {differ:.0%} of its elements", differ
    return None, 0.0


def _ort_said(exc: Exception) -> str:
    """ONNX Runtime's message without its ``[ONNXRuntimeError] : 1 : FAIL :`` prefix."""
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first_line(exc))


def check_fp16(converted: onnx.ModelProto, feeds: list[Feeds], reference: list[list[np.ndarray]] | str, no_feeds: str) -> Checked:
    """Load the converted model and compare its outputs with fp32's on ``feeds``."""
    try:
        sess = _session(converted)
    except Exception as exc:  # onnxruntime's refusal, untyped
        return Checked(f"onnxruntime cannot load it ({_ort_said(exc)})", "")
    if isinstance(reference, str) or not feeds:
        why = reference if isinstance(reference, str) else f"no feeds: {no_feeds}"
        return Checked(None, f"checked: the fp16 session loads; outputs not compared with fp32 ({why})")
    names = [o.name for o in sess.get_outputs()]
    worst = 0.0
    for feed, ref in zip(feeds, reference, strict=True):
        try:
            got = sess.run(None, feed)
        except Exception as exc:  # untyped onnxruntime errors
            return Checked(f"inference fails ({_ort_said(exc)})", "")
        for name, y16, y32 in zip(names, got, ref, strict=True):
            problem, rel = _output_problem(name, np.asarray(y16), y32)
            if problem is not None:
                return Checked(problem, "")
            worst = max(worst, rel)
    return Checked(
        None,
        f"checked against fp32 on {len(feeds)} feed(s): outputs finite, worst relative RMS error {worst:.2g} (limit {MAX_REL_RMS:g})",
    )
