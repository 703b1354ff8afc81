"""Group ONNX nodes into the kernels a runtime executes: folded constants, absorbed Q/DQ, fused activations."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from edgeproof.analysis import DATA_MOVEMENT, ModelCost, NodeCost

# Activations that inference runtimes (ORT FusedConv, TensorRT, TFLite) fold into the producing layer.
_FUSABLE_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish"}
_FUSING_PRODUCERS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
_QDQ = {"QuantizeLinear", "DequantizeLinear"}
_INTEGER = {"int8", "int16"}
ITEMSIZE = {"fp32": 4, "fp16": 2, "int8": 1, "int16": 2}
NARROW_CHANNELS = 8

# How a kernel's time is modelled on a CPU: by its FLOPs (compute classes) or its bytes.
OP_CLASS = {
    "Conv": "conv",
    "ConvTranspose": "conv",
    "QLinearConv": "conv",
    "ConvInteger": "conv",
    "Gemm": "gemm",
    "MatMul": "gemm",
    "QGemm": "gemm",
    "QLinearMatMul": "gemm",
    "MatMulInteger": "gemm",
    "MaxPool": "pool",
    "AveragePool": "pool",
    "GlobalAveragePool": "pool",
    "GlobalMaxPool": "pool",
    "LpPool": "pool",
}
_NORM = {"BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization", "LpNormalization", "LRN"}
_POOL_LIKE = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "GlobalLpPool"}
# Layout ops a board runtime executes as copies (Resize too: it only reads and writes memory).
_LAYOUT = DATA_MOVEMENT | {"Resize", "Upsample"}


@dataclass(frozen=True)
class Kernel:
    """One executed unit: a primary node plus what the runtime fuses into it.

    ``inputs``/``outputs`` are activation tensors as the kernel really reads and writes them (the
    integer tensor on the far side of an absorbed Q/DQ pair); weights are in ``weight_bytes``.
    """

    name: str
    op_type: str
    precision: str
    nodes: tuple[str, ...]
    flops: int
    weight_bytes: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    # Input channels per group and output channels of a convolution (None for other ops).
    channels_per_group: int | None = None
    out_channels: int | None = None
    out_elements: int = 0
    # Spatial size of a convolution's kernel (kH*kW; None for other ops).
    kernel_hw: int | None = None

    @property
    def op_class(self) -> str:
        """conv / conv-narrow / gemm / pool / elementwise: how a CPU's speed on it is calibrated.

        A convolution with few input channels per group (a network's first layer, depthwise
        layers) runs far below the speed of a wide one, so it is its own class.
        """
        cls = OP_CLASS.get(self.op_type, "elementwise")
        if cls == "conv" and self.channels_per_group is not None and self.channels_per_group < NARROW_CHANNELS:
            return "conv-narrow"
        return cls

    @property
    def board_class(self) -> str:
        """The class a board profile gives its own efficiency (``targets.spec.OP_CLASSES``):
        dense, depthwise (one input channel per group) and pointwise (1x1) convolution, gemm,
        pooling, normalisation, layout (reshape/concat/transpose/shuffle/slice) and elementwise."""
        cls = OP_CLASS.get(self.op_type)
        if cls == "conv":
            if self.channels_per_group == 1 and (self.out_channels or 0) > 1:
                return "conv-depthwise"
            return "conv-pointwise" if self.kernel_hw == 1 else "conv"
        if cls in ("gemm", "pool"):
            return cls
        if self.op_type in _POOL_LIKE:
            return "pool"
        if self.op_type in _NORM:
            return "norm"
        return "layout" if self.op_type in _LAYOUT else "elementwise"


@dataclass(frozen=True)
class KernelGraph:
    """Kernels in execution (topological) order and the byte size of every tensor between them."""

    kernels: tuple[Kernel, ...]
    tensor_bytes: dict[str, int]
    graph_inputs: tuple[str, ...]
    graph_outputs: tuple[str, ...]
    folded_nodes: tuple[str, ...] = field(default=())

    def bytes_in(self, kernel: Kernel) -> int:
        return sum(self.tensor_bytes.get(t, 0) for t in kernel.inputs)

    def bytes_out(self, kernel: Kernel) -> int:
        return sum(self.tensor_bytes.get(t, 0) for t in kernel.outputs)

    @property
    def weight_bytes(self) -> int:
        return sum(k.weight_bytes for k in self.kernels)


def _is_integer_compute(node: NodeCost) -> bool:
    return node.precision in _INTEGER and node.op_type not in _QDQ


def build_kernels(cost: ModelCost) -> KernelGraph:
    """Fuse a costed model into kernels.

    - folded nodes (all inputs constant) do not run;
    - a DequantizeLinear feeding only integer-precision nodes, and a QuantizeLinear right after
      an integer-precision node, are absorbed: the neighbour reads/writes the integer tensor;
    - an activation whose only input comes from a Conv/Gemm/MatMul read by nothing else is fused
      into that producer.
    """
    live = [n for n in cost.nodes.values() if not n.folded]
    constants = set(cost.constant_tensors)
    producer: dict[str, NodeCost] = {t: n for n in live for t in n.outputs if t}
    consumers: dict[str, list[NodeCost]] = {}
    for n in live:
        for t in n.inputs:
            if t and t not in constants:
                consumers.setdefault(t, []).append(n)
    outputs = set(cost.graph_outputs)

    absorbed_dq = {
        n.name
        for n in live
        if n.op_type == "DequantizeLinear"
        and n.outputs[0] not in outputs
        and consumers.get(n.outputs[0])
        and all(_is_integer_compute(c) for c in consumers[n.outputs[0]])
    }
    absorbed_q = set()
    for n in live:
        if n.op_type != "QuantizeLinear" or not n.inputs or n.inputs[0] in outputs:
            continue
        src = producer.get(n.inputs[0])
        if src is not None and _is_integer_compute(src) and all(c.op_type == "QuantizeLinear" for c in consumers[n.inputs[0]]):
            absorbed_q.add(n.name)

    fused_into: dict[str, str] = {}
    for n in live:
        if n.op_type not in _FUSABLE_ACTIVATIONS or not n.inputs:
            continue
        src = producer.get(n.inputs[0])
        if (
            src is not None
            and src.op_type in _FUSING_PRODUCERS
            and src.name not in fused_into
            and [c.name for c in consumers[n.inputs[0]]] == [n.name]
            and src.precision == n.precision
            and n.inputs[0] not in outputs
        ):
            fused_into[n.name] = src.name

    def read_as(t: str) -> str:
        node = producer.get(t)
        while node is not None and node.name in absorbed_dq:
            t = node.inputs[0]
            node = producer.get(t)
        return t

    def written_as(t: str) -> list[str]:
        readers = consumers.get(t, [])
        if readers and all(r.name in absorbed_q for r in readers) and t not in outputs:
            return [r.outputs[0] for r in readers]
        return [t]

    fused_members: dict[str, list[NodeCost]] = {}
    for act, prod in fused_into.items():
        fused_members.setdefault(prod, []).append(cost.nodes[act])

    kernels = []
    for n in live:
        if n.name in absorbed_dq or n.name in absorbed_q or n.name in fused_into:
            continue
        members = [n, *fused_members.get(n.name, [])]
        conv_shape = n.weight_shape if OP_CLASS.get(n.op_type) == "conv" and n.weight_shape and len(n.weight_shape) > 1 else None
        last = members[-1]
        ins = [read_as(t) for m in members for t in m.inputs if t and t not in constants and t not in n.outputs]
        outs = [w for t in last.outputs if t for w in written_as(t)]
        absorbed = [producer[t].name for m in members for t in m.inputs if t in producer and producer[t].name in absorbed_dq]
        absorbed += [r.name for t in last.outputs for r in consumers.get(t, []) if r.name in absorbed_q]
        kernels.append(
            Kernel(
                name=n.name,
                op_type=n.op_type,
                precision=n.precision,
                nodes=tuple(dict.fromkeys([m.name for m in members] + absorbed)),
                flops=sum(m.flops for m in members),
                weight_bytes=sum(m.weight_bytes for m in members),
                inputs=tuple(dict.fromkeys(ins)),
                outputs=tuple(dict.fromkeys(outs)),
                channels_per_group=conv_shape[1] if conv_shape else None,
                out_channels=conv_shape[0] if conv_shape else None,
                kernel_hw=math.prod(conv_shape[2:]) if conv_shape else None,
                out_elements=sum(cost.tensor_elements.get(t, 0) for t in last.outputs if t),
            )
        )
    return KernelGraph(
        kernels=tuple(kernels),
        tensor_bytes=dict(cost.tensor_bytes),
        graph_inputs=tuple(cost.graph_inputs),
        graph_outputs=tuple(cost.graph_outputs),
        folded_nodes=tuple(n.name for n in cost.nodes.values() if n.folded),
    )


def as_precision(graph: KernelGraph, precision: str, cost: ModelCost) -> KernelGraph:
    """The same graph as if its float kernels were converted to ``precision`` (for what-if compat).

    Float kernels take the new precision; their activation tensors and weights shrink or grow by
    the item-size ratio. Integer kernels and non-float tensors are left as they are.
    """
    float_kernels = [k for k in graph.kernels if k.precision in ("fp32", "fp16")]
    touched = {t for k in float_kernels for t in (*k.inputs, *k.outputs)}
    sizes = dict(graph.tensor_bytes)
    for t in touched:
        elements = cost.tensor_elements.get(t)
        if elements and t in sizes and sizes[t] // elements in (2, 4):
            sizes[t] = elements * ITEMSIZE[precision]
    kernels = tuple(
        replace(k, precision=precision, weight_bytes=k.weight_bytes * ITEMSIZE[precision] // ITEMSIZE[k.precision])
        if k.precision in ("fp32", "fp16")
        else k
        for k in graph.kernels
    )
    return replace(graph, kernels=kernels, tensor_bytes=sizes)
