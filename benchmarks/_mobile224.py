"""A real 224×224 classifier for the search benchmark: MobileNet v2 with rendered shape data, no download.

The backbone is MobileNet v2 1.0 as its paper defines it (``edgeproof.simulate.reference``: 300 M
MACs, random weights, built with ``onnx.helper``), with its convolution biases zeroed and weights
scaled by √2 (He initialisation) so that its pooled features depend on the image, not on random
biases. Its 1000-way head is replaced by a 4-way nearest-class-mean head on standardised pooled
features of rendered training images (2.2 M parameters, about 9 MB), so the model really classifies
what it is fed (about 60% top-1 on 4 classes, by ground truth). Images (numpy, 224×224 RGB in [0, 1]) show
one of four shapes — disc, square, horizontal bars, diagonal bars — at a random place, size and
colour on a textured background. Labels are the rendered classes (ground truth); accuracy drops are
judged against the fp32 model on the same rows, as for any model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeproof.simulate.reference import mobilenet_v2

SIZE = 224
CLASSES = ("disc", "square", "bars", "diagonal")


def render(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (N, 3, 224, 224) float32 in [0, 1], classes in turn, and their labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    images = np.empty((n, 3, SIZE, SIZE), np.float32)
    labels = np.arange(n) % len(CLASSES)
    for i, label in enumerate(labels):
        back = rng.uniform(0.1, 0.5, 3).astype(np.float32)
        fore = rng.uniform(0.5, 1.0, 3).astype(np.float32)
        cy, cx = rng.uniform(60, 164, 2)
        r = rng.uniform(30, 60)
        if label == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        elif label == 1:
            mask = (np.abs(yy - cy) <= r * 0.8) & (np.abs(xx - cx) <= r * 0.8)
        elif label == 2:
            mask = (np.floor((yy + rng.uniform(0, 20)) / rng.uniform(12, 24)) % 2 == 0) & (np.abs(yy - cy) <= 2 * r)
        else:
            mask = (np.floor((yy + xx + rng.uniform(0, 20)) / rng.uniform(16, 30)) % 2 == 0) & (np.abs(xx - cx) <= 2 * r)
        texture = rng.normal(0.0, 0.05, (SIZE, SIZE)).astype(np.float32)
        for ch in range(3):
            images[i, ch] = np.where(mask, fore[ch], back[ch]) + texture
    return np.clip(images, 0.0, 1.0), labels.astype(np.int64)


def _pooled(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The backbone's global-average-pooled features of ``x`` (N, 1280)."""
    import onnxruntime as ort

    pool = next(n for n in model.graph.node if n.op_type == "GlobalAveragePool")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.append(helper.make_tensor_value_info(pool.output[0], onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": x[i : i + 1]})[0].reshape(1, -1) for i in range(len(x))])


def _backbone() -> onnx.ModelProto:
    model = mobilenet_v2(SIZE)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    weights, biases = {n.input[1] for n in convs}, {n.input[2] for n in convs}
    for init in model.graph.initializer:
        if init.name in weights or init.name in biases:
            scale = np.sqrt(2.0) if init.name in weights else 0.0
            init.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(init) * scale).astype(np.float32), init.name))
    return model


def build(out: Path, train: int = 64, calibration: int = 32, test: int = 48) -> tuple[Path, Path]:
    """Write ``model.onnx``, ``data.npz`` and ``edgeproof.toml`` under ``out``; returns (model, contract).
    Few rows: one evaluation of a 224² model costs seconds per slice on this host."""
    out.mkdir(parents=True, exist_ok=True)
    model = _backbone()
    x_train, y_train = render(train, seed=1)
    feats = _pooled(model, x_train)
    mu, sd = feats.mean(axis=0), feats.std(axis=0) + 1e-6
    means = np.stack([((feats - mu) / sd)[y_train == k].mean(axis=0) for k in range(len(CLASSES))])
    # nearest class mean on z = (f - mu) / sd as one linear layer: argmax_k (z·m_k - |m_k|²/2)
    weight = means / sd
    bias = -(means * (mu / sd)).sum(axis=1) - 0.5 * (means**2).sum(axis=1)
    gemm = next(n for n in reversed(model.graph.node) if n.op_type == "Gemm")
    for init in model.graph.initializer:
        if init.name == gemm.input[1]:
            init.CopyFrom(numpy_helper.from_array(weight.astype(np.float32), init.name))
        elif init.name == gemm.input[2]:
            init.CopyFrom(numpy_helper.from_array(bias.astype(np.float32), init.name))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = len(CLASSES)
    model.graph.name = "mobilenet_v2_shapes4"
    onnx.checker.check_model(model)
    model_path = out / "model.onnx"
    onnx.save(model, model_path)
    x_cal, y_cal = render(calibration, seed=2)
    x_test, y_test = render(test, seed=3)
    np.savez(out / "data.npz", x_calibration=x_cal, y_calibration=y_cal, x_test=x_test, y_test=y_test)
    contract = out / "edgeproof.toml"
    contract.write_text(CONTRACT)
    return model_path, contract


CONTRACT = """\
# MobileNet v2 (224x224, 4 rendered shape classes) for benchmarks/search_speed.py, written by _mobile224.py.
[contract]
name = "mobilenet-v2-shapes"
owner = "bench@example.com"
targets = ["host"]

[model]
path = "model.onnx"
precisions = ["fp32", "int8"]

[model.inputs.input]
shape = [1, 3, 224, 224]
dtype = "float32"

[budgets]
scenario = "single-stream"
p95_ms = "500 ms"
peak_rss_mib = "1500 MiB"
model_size_mib = "40 MiB"

[preferences]
minimize = ["p95_ms", "model_size_mib"]

[data]
name = "rendered-shapes-224"
npz = "data.npz"

[slices.nominal]
kind = "nominal"
max_drop_pp = 5.0

[slices.noise]
kind = "stress"
description = "sensor read noise"
transforms = [{ name = "gaussian_noise", severity = 0.1 }]
max_drop_pp = 10.0
"""
