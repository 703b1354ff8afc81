"""Micro-models for host calibration: chains of one op class at one size and precision, and their timing."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
_ACT_SCALE = 0.05
_W_SCALE = 0.01


@dataclass(frozen=True)
class MicroCase:
    """One calibration point: ``n`` chained ops of ``op_class`` at ``size`` in ``precision``."""

    op_class: str
    precision: str
    size: tuple[int, ...]
    n: int

    @property
    def name(self) -> str:
        return f"{self.op_class}-{self.precision}-{'x'.join(map(str, self.size))}-n{self.n}"


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


class _Chain:
    """Builds a chain graph: float input → (optional quantize/cast) → ops → (dequantize/cast) → output."""

    def __init__(self, precision: str, shape: list[int], seed: int = 0):
        self.precision = precision
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.shape = shape
        self.count = 0
        self.cur = "x"
        if precision == "int8":
            self.inits += [_const("act_scale", np.array(_ACT_SCALE, np.float32)), _const("act_zp", np.array(128, np.uint8))]
            self._node("QuantizeLinear", [self.cur, "act_scale", "act_zp"])
        elif precision == "fp16":
            self._node("Cast", [self.cur], to=TensorProto.FLOAT16)

    def _node(self, op: str, inputs: list[str], **attrs) -> str:
        self.count += 1
        out = f"t{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self.count}", **attrs))
        self.cur = out
        return out

    def _float_weight(self, name: str, array: np.ndarray) -> str:
        """A weight as the chain's precision expects it: fp32/fp16 initializer, or int8 + DequantizeLinear."""
        if self.precision == "int8":
            q = np.clip(np.round(array / _W_SCALE), -127, 127).astype(np.int8)
            self.inits += [_const(f"{name}_q", q), _const(f"{name}_s", np.array(_W_SCALE, np.float32))]
            out = f"{name}_dq"
            self.nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s"], [out], name=f"{name}_DQ"))
            return out
        dtype = np.float16 if self.precision == "fp16" else np.float32
        self.inits.append(_const(name, array.astype(dtype)))
        return name

    def op(self, op: str, weights: dict[str, np.ndarray], **attrs) -> None:
        """Append one op (wrapped in DQ/Q for int8), reading the current tensor and the given weights."""
        inputs = [self.cur]
        if self.precision == "int8":
            inputs = [self._node("DequantizeLinear", [self.cur, "act_scale", "act_zp"])]
        inputs += [self._float_weight(f"w{self.count}_{k}", v) for k, v in weights.items()]
        self._node(op, inputs, **attrs)
        if self.precision == "int8":
            self._node("QuantizeLinear", [self.cur, "act_scale", "act_zp"])

    def model(self, out_shape: list[int]) -> onnx.ModelProto:
        if self.precision == "int8":
            self._node("DequantizeLinear", [self.cur, "act_scale", "act_zp"])
        elif self.precision == "fp16":
            self._node("Cast", [self.cur], to=TensorProto.FLOAT)
        self.nodes[-1].output[0] = "y"
        graph = helper.make_graph(
            self.nodes,
            "edgeproof-microbench",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        return model


def build_case(case: MicroCase) -> onnx.ModelProto:
    """The chain model for one calibration case.

    conv: ``n`` 3x3 convolutions C→C at side×side (size = (C, side)).
    conv-narrow: one 3x3 convolution cin→C followed by one C→C (size = (cin, C, side)); its own
    cost is what remains after the C→C conv chain's intercept and per-conv cost are taken away.
    gemm: ``n`` fully connected K→K layers (size = (K,)).
    pool: one C→C conv, then ``n`` 2x2 stride-1 max-pools, each shrinking the side by one
    (size = (C, side)); the conv puts the pools in the layout a CNN runs them in (ONNX Runtime
    runs an int8 pool 10x faster in the NHWC region after a QLinearConv than on its own).
    elementwise: ``n`` additions of a constant (size = (elements,)).
    """
    shape = _input_shape(case)
    chain = _Chain(case.precision, shape)
    rng = chain.rng
    if case.op_class == "conv-narrow":
        cin, c, side = case.size
        _conv(chain, rng, cin, c)
        _conv(chain, rng, c, c)
        return chain.model([1, c, side, side])
    out = list(shape)
    if case.op_class == "pool":
        _conv(chain, rng, shape[1], shape[1])
    for _ in range(case.n):
        if case.op_class == "conv":
            _conv(chain, rng, shape[1], shape[1])
        elif case.op_class == "gemm":
            (k,) = case.size
            chain.op("Gemm", {"w": rng.normal(0, 0.1, (k, k)).astype(np.float32)}, transB=1)
        elif case.op_class == "pool":
            chain.op("MaxPool", {}, kernel_shape=[2, 2], strides=[1, 1])
            out = [out[0], out[1], out[2] - 1, out[3] - 1]
        elif case.op_class == "elementwise":
            chain.op("Add", {"c": rng.normal(0, 0.1, shape[1:]).astype(np.float32)})
        else:
            raise ValueError(f"unknown op class {case.op_class!r}")
    return chain.model(out)


def _conv(chain: _Chain, rng: np.random.Generator, cin: int, cout: int) -> None:
    w = rng.normal(0, 0.1, (cout, cin, 3, 3)).astype(np.float32)
    weights = {"w": w} if chain.precision == "int8" else {"w": w, "b": rng.normal(0, 0.1, (cout,)).astype(np.float32)}
    chain.op("Conv", weights, pads=[1, 1, 1, 1])


def _input_shape(case: MicroCase) -> list[int]:
    if case.op_class in ("conv", "pool"):
        c, side = case.size
        return [1, c, side, side]
    if case.op_class == "conv-narrow":
        cin, _c, side = case.size
        return [1, cin, side, side]
    return [1, case.size[0]]


def case_features(case: MicroCase) -> dict[str, float]:
    """Size features of one op of the case, named as ``kernel_features`` names them for a model's kernels.

    mflops: million FLOPs; kpixels: thousand output pixels (convolutions); mbytes: million bytes
    read and written (element-wise ops). For pools the middle op of the shrinking chain stands
    for all of them.
    """
    if case.op_class == "conv":
        c, side = case.size
        return {"mflops": (2.0 * 9 * c * c + c) * side * side / 1e6, "kpixels": side * side / 1e3}
    if case.op_class == "conv-narrow":
        cin, c, side = case.size
        return {"mflops": (2.0 * 9 * cin * c + c) * side * side / 1e6, "kpixels": side * side / 1e3}
    if case.op_class == "gemm":
        (k,) = case.size
        return {"mflops": 2.0 * k * k / 1e6}
    if case.op_class == "pool":
        c, side = case.size
        mid = side - 1 - (case.n - 1) / 2
        return {"mflops": 4.0 * c * mid * mid / 1e6}
    itemsize = {"fp32": 4, "fp16": 2, "int8": 1}[case.precision]
    return {"mbytes": 2.0 * case.size[0] * itemsize / 1e6}


def time_model(
    model: onnx.ModelProto | bytes, threads: int, sessions: int = 3, samples: int = 200, warmup: int = 30
) -> tuple[float, float]:
    """(latency µs, coefficient of variation) over ``sessions`` fresh ONNX Runtime sessions.

    The latency is the lowest of the per-session medians: background load on a shared machine
    comes in bursts that slow whole sessions, and the quietest session is the best estimate of
    the kernel's own cost.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    payload = model if isinstance(model, bytes) else model.SerializeToString()
    feeds: dict[str, np.ndarray] = {}
    medians, cvs = [], []
    for _ in range(sessions):
        sess = ort.InferenceSession(payload, sess_options=opts, providers=["CPUExecutionProvider"])
        if not feeds:
            # the session knows the input's shape; parsing the payload again just to read it would cost as much
            meta = sess.get_inputs()[0]
            feeds = {meta.name: np.random.default_rng(0).random(meta.shape, dtype=np.float32)}
        for _ in range(warmup):
            sess.run(None, feeds)
        ts = np.empty(samples)
        for i in range(samples):
            t0 = time.perf_counter_ns()
            sess.run(None, feeds)
            ts[i] = (time.perf_counter_ns() - t0) / 1e3
        medians.append(float(np.median(ts)))
        q25, q75 = np.percentile(ts, [25, 75])
        cvs.append(float((q75 - q25) / 1.349 / np.median(ts)))
    return float(np.min(medians)), float(np.median(cvs))


def memory_bandwidth_gbs(mib: int = 64, repeats: int = 5) -> float:
    """Host copy bandwidth (read + write counted) from numpy copies of a buffer larger than caches."""
    src = np.ones(mib * 2**20 // 8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        np.copyto(dst, src)
        best = min(best, (time.perf_counter_ns() - t0) / 1e9)
    return 2 * src.nbytes / best / 1e9
