"""Reference networks built with onnx.helper (random weights) to check board profiles against published figures.

MobileNet v1/v2, ResNet-18/50 and VGG-16 as their papers define them (batch 1, NCHW, ReLU/ReLU6,
BatchNorm already folded into the convolutions as a deployed graph has it), so their MACs and
parameters match the published counts; the onnx package's own test graphs (``light_*.onnx``:
SqueezeNet 1.0, GoogLeNet, DenseNet-121, VGG-19, ...) cover the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


class _Net:
    """A tiny graph builder: each call adds one node and returns its output tensor name."""

    def __init__(self, name: str, size: int, seed: int = 0) -> None:
        self.name = name
        self.size = size
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def _id(self, op: str) -> str:
        self.count += 1
        return f"{op.lower()}{self.count}"

    def _weight(self, name: str, shape: tuple[int, ...]) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        data = (self.rng.standard_normal(shape, dtype=np.float32) / np.sqrt(fan_in)).astype(np.float32)
        self.inits.append(numpy_helper.from_array(data, name))
        return name

    def conv(self, x: str, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, act: str | None = "Relu") -> str:
        name = self._id("conv")
        w = self._weight(f"{name}.w", (c_out, c_in // groups, k, k))
        b = self._weight(f"{name}.b", (c_out,))
        pad = k // 2
        out = f"{name}.y"
        self.nodes.append(
            helper.make_node(
                "Conv", [x, w, b], [out], name=name, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=groups
            )
        )
        return self.act(out, act) if act else out

    def act(self, x: str, kind: str) -> str:
        name = self._id(kind)
        out = f"{name}.y"
        if kind == "Relu6":
            lo, hi = f"{name}.lo", f"{name}.hi"
            self.inits += [numpy_helper.from_array(np.array(0.0, np.float32), lo), numpy_helper.from_array(np.array(6.0, np.float32), hi)]
            self.nodes.append(helper.make_node("Clip", [x, lo, hi], [out], name=name))
        else:
            self.nodes.append(helper.make_node(kind, [x], [out], name=name))
        return out

    def op(self, kind: str, inputs: list[str], **attrs) -> str:
        name = self._id(kind)
        out = f"{name}.y"
        self.nodes.append(helper.make_node(kind, inputs, [out], name=name, **attrs))
        return out

    def classifier(self, x: str, c_in: int, hidden: tuple[int, ...] = (), classes: int = 1000) -> str:
        x = self.op("Flatten", [x], axis=1)
        for width in (*hidden, classes):
            name = self._id("fc")
            w = self._weight(f"{name}.w", (width, c_in))
            b = self._weight(f"{name}.b", (width,))
            x = self.op("Gemm", [x, w, b], transB=1)
            if width != classes:
                x = self.act(x, "Relu")
            c_in = width
        return x

    def model(self, y: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, self.size, self.size])],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 1000])],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgeproof.reference")
        onnx.checker.check_model(model)
        return model


def mobilenet_v1(size: int = 224) -> onnx.ModelProto:
    """MobileNet v1 1.0 (Howard et al. 2017, Table 1): 569 M MACs, 4.2 M parameters at 224x224."""
    net = _Net("mobilenet_v1", size)
    x = net.conv("input", 3, 32, 3, stride=2)
    c = 32
    for c_out, stride in [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]:
        x = net.conv(x, c, c, 3, stride=stride, groups=c)
        x = net.conv(x, c, c_out, 1)
        c = c_out
    x = net.op("GlobalAveragePool", [x])
    return net.model(net.classifier(x, c))


def mobilenet_v2(size: int = 224) -> onnx.ModelProto:
    """MobileNet v2 1.0 (Sandler et al. 2018, Table 2): 300 M MACs, 3.4 M parameters at 224x224."""
    net = _Net("mobilenet_v2", size)
    x = net.conv("input", 3, 32, 3, stride=2, act="Relu6")
    c = 32
    for t, c_out, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = c * t
            y = net.conv(x, c, hidden, 1, act="Relu6") if t != 1 else x
            y = net.conv(y, hidden, hidden, 3, stride=stride, groups=hidden, act="Relu6")
            y = net.conv(y, hidden, c_out, 1, act=None)
            x = net.op("Add", [x, y]) if stride == 1 and c == c_out else y
            c = c_out
    x = net.conv(x, c, 1280, 1, act="Relu6")
    x = net.op("GlobalAveragePool", [x])
    return net.model(net.classifier(x, 1280))


def resnet(depth: int = 18, size: int = 224) -> onnx.ModelProto:
    """ResNet-18 (1.82 G MACs, 11.7 M parameters) or ResNet-50 v1.5 (4.1 G MACs, 25.6 M) at 224x224 (He et al. 2016, Table 1)."""
    blocks = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}[depth]
    bottleneck = depth >= 50
    net = _Net(f"resnet{depth}", size)
    x = net.conv("input", 3, 64, 7, stride=2)
    x = net.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c = 64
    for stage, (width, n) in enumerate(zip((64, 128, 256, 512), blocks)):
        for i in range(n):
            stride = 2 if i == 0 and stage > 0 else 1
            c_out = width * 4 if bottleneck else width
            if bottleneck:
                y = net.conv(x, c, width, 1)
                y = net.conv(y, width, width, 3, stride=stride)
                y = net.conv(y, width, c_out, 1, act=None)
            else:
                y = net.conv(x, c, width, 3, stride=stride)
                y = net.conv(y, width, c_out, 3, act=None)
            shortcut = net.conv(x, c, c_out, 1, stride=stride, act=None) if stride != 1 or c != c_out else x
            x = net.act(net.op("Add", [y, shortcut]), "Relu")
            c = c_out
    x = net.op("GlobalAveragePool", [x])
    return net.model(net.classifier(x, c))


def vgg16(size: int = 224) -> onnx.ModelProto:
    """VGG-16 (Simonyan & Zisserman 2015, configuration D): 15.5 G MACs, 138 M parameters at 224x224."""
    net = _Net("vgg16", size)
    x, c = "input", 3
    for item in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
        if item == "M":
            x = net.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        else:
            assert isinstance(item, int)
            x, c = net.conv(x, c, item, 3), item
    return net.model(net.classifier(x, c * (size // 32) ** 2, hidden=(4096, 4096)))


def light(name: str, drop: tuple[str, ...] = ()) -> onnx.ModelProto:
    """One of the onnx package's ``light_<name>.onnx`` test graphs, with ops in ``drop`` (one input,
    one output, e.g. LRN) bypassed: a converter for another runtime leaves them out."""
    from edgeproof.model import load_proto

    model = load_proto(LIGHT_DIR / f"light_{name}.onnx")
    if drop:
        rename: dict[str, str] = {}
        keep = []
        for node in model.graph.node:
            if node.op_type in drop:
                rename[node.output[0]] = rename.get(node.input[0], node.input[0])
            else:
                node.input[:] = [rename.get(t, t) for t in node.input]
                keep.append(node)
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return model


BUILDERS = {
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
    "resnet18": lambda size=224: resnet(18, size),
    "resnet50": lambda size=224: resnet(50, size),
    "vgg16": vgg16,
}
