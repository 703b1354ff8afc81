"""Per-node cost of an ONNX model after shape inference: MACs, FLOPs, bytes moved, data type, precision."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import onnx
from onnx import numpy_helper
from pydantic import BaseModel, ConfigDict, Field

from edgeproof.errors import ModelError, first_line
from edgeproof.model import Model, as_model

# Element types by ONNX enum, as (name, bytes per element).
_ELEM: dict[int, tuple[str, int]] = {
    onnx.TensorProto.FLOAT: ("float32", 4),
    onnx.TensorProto.FLOAT16: ("float16", 2),
    onnx.TensorProto.BFLOAT16: ("bfloat16", 2),
    onnx.TensorProto.DOUBLE: ("float64", 8),
    onnx.TensorProto.INT8: ("int8", 1),
    onnx.TensorProto.UINT8: ("uint8", 1),
    onnx.TensorProto.INT16: ("int16", 2),
    onnx.TensorProto.UINT16: ("uint16", 2),
    onnx.TensorProto.INT32: ("int32", 4),
    onnx.TensorProto.UINT32: ("uint32", 4),
    onnx.TensorProto.INT64: ("int64", 8),
    onnx.TensorProto.UINT64: ("uint64", 8),
    onnx.TensorProto.BOOL: ("bool", 1),
}

# Effective precision an accelerator sees, by element type.
_PRECISION = {
    "float32": "fp32",
    "float64": "fp32",
    "float16": "fp16",
    "bfloat16": "fp16",
    "int8": "int8",
    "uint8": "int8",
    "int16": "int16",
    "uint16": "int16",
}

# Floating-point operations per output element for element-wise ops (an estimate: transcendental
# functions count as a few operations, as vendor FLOP counters such as fvcore and ptflops do).
_ELEMENTWISE_FLOPS = {
    "Add": 1,
    "Sub": 1,
    "Mul": 1,
    "Div": 1,
    "Relu": 1,
    "LeakyRelu": 2,
    "PRelu": 2,
    "Clip": 2,
    "Max": 1,
    "Min": 1,
    "Abs": 1,
    "Neg": 1,
    "Sqrt": 1,
    "Reciprocal": 1,
    "Pow": 1,
    "Exp": 4,
    "Log": 4,
    "Erf": 8,
    "Sigmoid": 4,
    "Tanh": 4,
    "HardSigmoid": 3,
    "HardSwish": 4,
    "Gelu": 8,
    "Elu": 4,
    "Selu": 4,
    "Softplus": 4,
    "Mish": 8,
    "Floor": 1,
    "Ceil": 1,
    "Round": 1,
    "Sign": 1,
    "Equal": 1,
    "Greater": 1,
    "Less": 1,
    "Where": 1,
    "Not": 1,
    "And": 1,
    "Or": 1,
    "Cast": 1,
    "QuantizeLinear": 2,
    "DequantizeLinear": 2,
    "DynamicQuantizeLinear": 4,
    "BatchNormalization": 2,
    "Softmax": 5,
    "LogSoftmax": 6,
    "LayerNormalization": 8,
    "InstanceNormalization": 8,
    "GroupNormalization": 8,
    "LpNormalization": 3,
    "Dropout": 0,
    "Sum": 1,
    "Mean": 2,
    # LRN over a window of 5 channels: a sum of squares, a power and a division per element.
    "LRN": 13,
}

# Ops that only move or reinterpret data: no arithmetic.
DATA_MOVEMENT = {
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "GatherElements",
    "GatherND",
    "Pad",
    "Expand",
    "Tile",
    "Shape",
    "Size",
    "Constant",
    "ConstantOfShape",
    "DepthToSpace",
    "SpaceToDepth",
    "ScatterND",
    "ScatterElements",
    "Range",
    "NonZero",
}

_CONV = {"Conv", "ConvInteger", "QLinearConv"}
_MATMUL = {"MatMul", "MatMulInteger", "QLinearMatMul"}
_POOL = {"MaxPool", "AveragePool", "LpPool"}
_GLOBAL_OR_REDUCE = {
    "GlobalAveragePool",
    "GlobalMaxPool",
    "GlobalLpPool",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSumExp",
    "ArgMax",
    "ArgMin",
}
_INTEGER_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul", "QGemm"}
# Ops whose first two inputs are activation and weight (a third, the bias, is not data).
_WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


class NodeCost(BaseModel):
    """Cost of one node. Bytes count each input once per read and each output once per write;
    weights are tensors that do not depend on a graph input (initializers, Constant nodes and what
    folds from them), counted at their stored size."""

    model_config = ConfigDict(extra="forbid")

    name: str
    op_type: str
    dtype: str
    precision: str
    macs: int
    flops: int
    weight_bytes: int
    activation_read_bytes: int
    activation_write_bytes: int
    folded: bool = False
    # False when shape inference left a needed shape unknown or the op has no FLOP rule: macs and
    # flops then hold a stand-in (see ``analyze``), not a count.
    cost_known: bool = True
    # Shape of the weight input of Conv/Gemm/MatMul-like nodes ([M, C/group, kH, kW] for a Conv).
    weight_shape: list[int] | None = None
    inputs: list[str]
    outputs: list[str]

    @property
    def bytes_read(self) -> int:
        return self.weight_bytes + self.activation_read_bytes

    @property
    def bytes_moved(self) -> int:
        return self.bytes_read + self.activation_write_bytes

    @property
    def intensity(self) -> float:
        """Arithmetic intensity in FLOPs per byte moved (0 for a node that moves nothing)."""
        return self.flops / self.bytes_moved if self.bytes_moved else 0.0


class ModelCost(BaseModel):
    """Per-node costs keyed by node name, in topological order, plus totals and every tensor's size."""

    model_config = ConfigDict(extra="forbid")

    nodes: dict[str, NodeCost]
    tensor_bytes: dict[str, int]
    tensor_elements: dict[str, int]
    constant_tensors: list[str]
    graph_inputs: list[str]
    graph_outputs: list[str]
    weight_bytes: int
    assumptions: list[str] = Field(default_factory=list)
    # Graph rewrites applied before costing (constant folding, fusions), as a deployed runtime does.
    simplified: list[str] = Field(default_factory=list)

    def total(self, field: str) -> int:
        """Sum of one per-node figure over the model: flops, macs, weight_bytes, bytes_read, ..."""
        return sum(getattr(n, field) for n in self.nodes.values())

    @property
    def total_flops(self) -> int:
        return self.total("flops")

    @property
    def total_macs(self) -> int:
        return self.total("macs")

    @property
    def unknown_cost_nodes(self) -> list[str]:
        """Nodes whose cost is a stand-in, not a count (unknown shape or no FLOP rule)."""
        return [n.name for n in self.nodes.values() if not n.cost_known]

    @property
    def unknown_macs_share(self) -> float:
        """Share of the model's MACs that rests on stand-ins (0 when every node was counted)."""
        unknown = sum(n.macs for n in self.nodes.values() if not n.cost_known)
        return unknown / self.total_macs if self.total_macs else (1.0 if self.unknown_cost_nodes else 0.0)

    def uncertainty_warning(self) -> str | None:
        """One plain sentence on what could not be counted, or None when everything was."""
        unknown = self.unknown_cost_nodes
        if not unknown:
            return None
        ops = sorted({self.nodes[n].op_type for n in unknown})
        return (
            f"cost of {len(unknown)} node(s) unknown ({', '.join(ops)}; e.g. {unknown[0]!r}): "
            f"~{self.unknown_macs_share:.0%} of the MACs rest on a stand-in estimate, not a count; "
            "shape inference could not follow the graph (fix the input shapes or export without shape arithmetic)"
        )

    @property
    def intensity(self) -> float:
        """Arithmetic intensity of the whole model in FLOPs per byte moved."""
        moved = self.total("bytes_moved")
        return self.total_flops / moved if moved else 0.0


def _load(model: Model | onnx.ModelProto | str | Path) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else as_model(model).proto


def _fix_symbolic_inputs(model: onnx.ModelProto, assumptions: list[str]) -> onnx.ModelProto:
    """Copy the model with every symbolic input dimension set to 1 (batch 1), noting each."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    inits = {t.name for t in fixed.graph.initializer}
    for vi in fixed.graph.input:
        if vi.name in inits or not vi.type.HasField("tensor_type"):
            continue
        for i, dim in enumerate(vi.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                label = dim.dim_param or "?"
                dim.Clear()
                dim.dim_value = 1
                assumptions.append(f"input {vi.name!r} dim {i} ({label}) taken as 1")
    return fixed


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError) as exc:
        raise ModelError(f"shape inference failed ({first_line(exc)})") from None


def _shape_of(vi: onnx.ValueInfoProto) -> tuple[int | None, tuple[int, ...] | None]:
    if not vi.type.HasField("tensor_type"):
        return None, None
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return tt.elem_type, None
    dims = []
    for d in tt.shape.dim:
        if not d.HasField("dim_value") or d.dim_value < 0:
            return tt.elem_type, None
        dims.append(int(d.dim_value))
    return tt.elem_type, tuple(dims)


def _constant_value(node: onnx.NodeProto) -> tuple[int, tuple[int, ...], int] | None:
    """(elem type, shape, stored bytes) of a Constant node's value."""
    for attr in node.attribute:
        if attr.name in ("value", "sparse_value"):
            tensor = attr.t if attr.name == "value" else attr.sparse_tensor.values
            shape = tuple(int(d) for d in (attr.t.dims if attr.name == "value" else attr.sparse_tensor.dims))
            arr = numpy_helper.to_array(tensor)
            return tensor.data_type, shape, int(arr.nbytes)
        if attr.name in ("value_float", "value_int"):
            return (
                (onnx.TensorProto.FLOAT if attr.name == "value_float" else onnx.TensorProto.INT64),
                (),
                4 if attr.name == "value_float" else 8,
            )
        if attr.name in ("value_floats", "value_ints"):
            n = len(attr.floats) if attr.name == "value_floats" else len(attr.ints)
            return (
                (onnx.TensorProto.FLOAT if attr.name == "value_floats" else onnx.TensorProto.INT64),
                (n,),
                n * (4 if attr.name == "value_floats" else 8),
            )
    return None


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int | None:
    """Multiply-accumulates of a node, or None where a needed shape is unknown."""
    op = node.op_type
    out = shapes.get(node.output[0]) if node.output else None
    if op in _CONV:
        w = shapes.get(node.input[3] if op == "QLinearConv" else node.input[1])
        return None if out is None or w is None else math.prod(out) * math.prod(w[1:])
    if op == "ConvTranspose":
        x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
        return None if x is None or w is None else math.prod(x) * math.prod(w[1:])
    if op in _MATMUL or op == "Gemm":
        a = shapes.get(node.input[0])
        if out is None or a is None or not a:
            return None
        k = a[0] if op == "Gemm" and _attr(node, "transA", 0) else a[-1]
        return math.prod(out) * k
    return 0


def _standin_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]], input_spatial: int) -> int:
    """MACs of a weighted node whose output shape is unknown: every weight used once per output
    position, with the largest known feature map's size standing in for the unknown one (a
    Gemm/MatMul: once, as at batch 1). Other ops get 0: their cost is not guessed."""
    op = node.op_type
    w_index = 3 if op == "QLinearConv" else 1
    weight = shapes.get(node.input[w_index]) if len(node.input) > w_index else None
    if weight is None:
        return 0
    if op in _CONV or op == "ConvTranspose":
        return math.prod(weight) * input_spatial
    if op in _MATMUL or op == "Gemm":
        return math.prod(weight)
    return 0


def _flops(node: onnx.NodeProto, macs: int, shapes: dict[str, tuple[int, ...]]) -> int | None:
    op = node.op_type
    out = shapes.get(node.output[0]) if node.output else None
    if op in _CONV or op in _MATMUL or op in ("Gemm", "ConvTranspose"):
        bias = out is not None and (
            (op in ("Conv", "ConvTranspose", "Gemm") and len(node.input) > 2 and node.input[2])
            or (op == "QLinearConv" and len(node.input) > 8)
        )
        return 2 * macs + (math.prod(out) if bias and out is not None else 0)
    if op in _POOL:
        kernel = _attr(node, "kernel_shape", [])
        return None if out is None else math.prod(out) * max(1, math.prod(kernel))
    if op in _GLOBAL_OR_REDUCE:
        x = shapes.get(node.input[0])
        return None if x is None else math.prod(x)
    if op == "Resize":
        mode = _attr(node, "mode", b"nearest")
        per = 1 if (mode.decode() if isinstance(mode, bytes) else mode) == "nearest" else 4
        return None if out is None else per * math.prod(out)
    if op in DATA_MOVEMENT:
        return 0
    if op in _ELEMENTWISE_FLOPS:
        return None if out is None else _ELEMENTWISE_FLOPS[op] * math.prod(out)
    return None


def deployed_graph(model: onnx.ModelProto, assumptions: list[str]) -> tuple[onnx.ModelProto, list[str]]:
    """The graph a deployed runtime executes: symbolic input dims fixed to 1 (noted in
    ``assumptions``), then ONNX Runtime's basic optimisation (constant folding, shape arithmetic on
    static shapes, Identity/Dropout removal, Conv+BatchNorm fusion). Returns the graph and what
    changed; a graph ONNX Runtime cannot load is costed as written, and that is said."""
    import onnxruntime as ort

    from edgeproof.model import load_proto

    fixed = _fix_symbolic_inputs(model, assumptions)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="edgeproof-fold-") as tmp:
        out = Path(tmp) / "basic.onnx"
        options.optimized_model_filepath = str(out)
        try:
            ort.InferenceSession(fixed.SerializeToString(), options, providers=["CPUExecutionProvider"])
            folded = load_proto(out)
        except Exception as exc:  # any load failure: cost the graph as written, and say so
            return fixed, [f"not simplified: ONNX Runtime could not load the graph ({first_line(exc)})"]
    # ONNX Runtime writes folded weights as initializers that are not graph inputs, which IR < 4 does
    # not allow (shape inference would then ignore them).
    folded.ir_version = max(folded.ir_version, 4)
    before, after = len(fixed.graph.node), len(folded.graph.node)
    return folded, [f"simplified as ONNX Runtime's basic optimisation does: {before} -> {after} nodes"]


def analyze(model: Model | onnx.ModelProto | str | Path, simplify: bool = False) -> ModelCost:
    """Cost every node of a model (a loaded Model, a ModelProto or a path) after shape inference.

    Symbolic input dimensions are taken as 1 and listed in ``assumptions``, as are nodes whose
    cost could not be counted (an unknown op or an unknown shape): those carry ``cost_known=False``
    and a stand-in (see ``_standin_macs``). With ``simplify``, the graph is first folded as a
    deployed runtime would (``deployed_graph``).
    """
    proto = _load(model)
    assumptions: list[str] = []
    simplified: list[str] = []
    if simplify:
        proto, simplified = deployed_graph(proto, assumptions)
    inferred = _infer(_fix_symbolic_inputs(proto, assumptions))
    graph = inferred.graph

    elem: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        et, shape = _shape_of(vi)
        if et is not None:
            elem[vi.name] = et
        if shape is not None:
            shapes[vi.name] = shape

    stored: dict[str, int] = {}  # constant tensor → bytes as stored in the file
    for init in graph.initializer:
        elem[init.name] = init.data_type
        shapes[init.name] = tuple(int(d) for d in init.dims)
        stored[init.name] = int(numpy_helper.to_array(init).nbytes)
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            value = _constant_value(node)
            if value is not None:
                elem[node.output[0]], shapes[node.output[0]], stored[node.output[0]] = value
    weight_total = sum(stored.values())

    inits = {t.name for t in graph.initializer}
    graph_inputs = [vi.name for vi in graph.input if vi.name not in inits]

    def nbytes(name: str) -> int | None:
        if name not in shapes or name not in elem:
            return None
        return math.prod(shapes[name]) * _ELEM.get(elem[name], ("?", 4))[1]

    # Stand-in spatial size for convolutions whose output shape is unknown: the largest known
    # feature map (a network's first layers work at about its input's resolution).
    input_spatial = max((math.prod(shape[2:]) for t, shape in shapes.items() if len(shape) == 4 and t not in stored), default=1)
    producer_op: dict[str, str] = {}
    constant: dict[str, int] = dict(stored)  # tensor → stored bytes of the constants it folds from
    nodes: dict[str, NodeCost] = {}
    for index, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{index}"
        while name in nodes:
            name = f"{name}_{index}"
        inputs = [t for t in node.input]
        live_inputs = [t for t in inputs if t]
        folded = node.op_type == "Constant" or (bool(live_inputs) and all(t in constant for t in live_inputs))
        if node.op_type == "Shape" and live_inputs and live_inputs[0] in shapes:
            folded = True  # a static shape is known before the graph runs
        if folded:
            sources = sum(constant.get(t, 0) for t in live_inputs)
            for t in node.output:
                if t:
                    constant[t] = constant.get(t, sources)

        dtype_name = _node_dtype(node, elem)
        precision = _node_precision(node, dtype_name, producer_op, constant)
        for t in node.output:
            producer_op[t] = node.op_type

        cost_known = True
        if folded:
            macs, flops, w_bytes, a_read, a_write = 0, 0, 0, 0, 0
        else:
            counted_macs = _macs(node, shapes)
            counted_flops = _flops(node, counted_macs or 0, shapes)
            cost_known = counted_macs is not None and counted_flops is not None
            macs, flops = counted_macs or 0, counted_flops or 0
            if not cost_known:
                what = "a shape is unknown" if _has_flop_rule(node.op_type) else "op has no FLOP rule"
                if counted_macs is None:
                    macs = _standin_macs(node, shapes, input_spatial)
                    flops = 2 * macs
                assumptions.append(f"node {name!r} ({node.op_type}): cost unknown ({what}); stand-in {macs} MACs")
            w_bytes = a_read = a_write = 0
            for t in live_inputs:
                if t in constant:
                    w_bytes += constant[t]
                else:
                    size = nbytes(t)
                    if size is None:
                        assumptions.append(f"node {name!r}: size of input {t!r} unknown, counted as 0 bytes")
                    a_read += size or 0
            for t in node.output:
                if t:
                    size = nbytes(t)
                    if size is None:
                        assumptions.append(f"node {name!r}: size of output {t!r} unknown, counted as 0 bytes")
                    a_write += size or 0
        w_index = 3 if node.op_type == "QLinearConv" else 1
        weight_shape = None
        if (node.op_type in _CONV | _MATMUL or node.op_type in ("Gemm", "ConvTranspose")) and len(node.input) > w_index:
            known = shapes.get(node.input[w_index])
            weight_shape = list(known) if known is not None else None
        nodes[name] = NodeCost(
            name=name,
            op_type=node.op_type,
            dtype=dtype_name,
            precision=precision,
            macs=int(macs),
            flops=int(flops),
            weight_bytes=int(w_bytes),
            activation_read_bytes=int(a_read),
            activation_write_bytes=int(a_write),
            folded=folded,
            cost_known=folded or cost_known,
            weight_shape=weight_shape,
            inputs=inputs,
            outputs=list(node.output),
        )

    tensor_bytes = {t: b for t in shapes if (b := nbytes(t)) is not None}
    tensor_elements = {t: math.prod(s) for t, s in shapes.items()}
    return ModelCost(
        nodes=nodes,
        tensor_bytes=tensor_bytes,
        tensor_elements=tensor_elements,
        constant_tensors=sorted(constant),
        graph_inputs=graph_inputs,
        graph_outputs=[vi.name for vi in graph.output],
        weight_bytes=weight_total,
        assumptions=assumptions,
        simplified=simplified,
    )


def _node_dtype(node: onnx.NodeProto, elem: dict[str, int]) -> str:
    """Element type of the node's main data: its first input, or its first output for sources."""
    if node.op_type == "QuantizeLinear" and node.output and node.output[0] in elem:
        return _ELEM.get(elem[node.output[0]], ("other", 0))[0]
    for t in list(node.input[:1]) + list(node.output[:1]):
        if t and t in elem:
            return _ELEM.get(elem[t], ("other", 0))[0]
    return "unknown"


def _has_flop_rule(op: str) -> bool:
    return (
        op in _ELEMENTWISE_FLOPS
        or op in DATA_MOVEMENT
        or op in _CONV | _MATMUL | _POOL | _GLOBAL_OR_REDUCE | {"Gemm", "ConvTranspose", "Resize"}
    )


def _node_precision(node: onnx.NodeProto, dtype_name: str, producer_op: dict[str, str], constant: dict[str, int]) -> str:
    """The precision an accelerator would run the node in.

    A float node whose data inputs all come from DequantizeLinear is part of a QDQ-quantized
    region and runs in the integer type (compilers such as TensorRT and ORT fold the Q/DQ pair).
    Data inputs are the activation and weight of Conv/Gemm/MatMul, and every non-constant input
    of other ops (a Reshape's shape or a Clip's bounds are not data).
    """
    op = node.op_type
    if op in _INTEGER_OPS or op in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"):
        return "int16" if dtype_name in ("int16", "uint16") else "int8"
    if op in _WEIGHTED:
        data = [t for t in node.input[:2] if t]
    else:
        data = [t for t in node.input if t and t not in constant]
    if data and all(producer_op.get(t) == "DequantizeLinear" for t in data):
        return "int8"
    return _PRECISION.get(dtype_name, "other")
