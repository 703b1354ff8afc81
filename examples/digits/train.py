"""Train the digits example CNN, export it to ONNX and record its float test accuracy."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

import dataset
from edgeproof.records import write_atomic

HERE = Path(__file__).resolve().parent
MODEL_PATH = HERE / "model.onnx"
MODEL_JSON_PATH = HERE / "model.json"
OPSET = 17
TRAIN_SEED = 7
EPOCHS = 30
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
MAX_SHIFT_PX = 2
NOISE_STD = 0.05
# Nodes that only make sense while training; an inference graph must not carry them.
TRAINING_ONLY_OPS = {"BatchNormalization", "Dropout"}


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3×3 same-padding convolution, batch norm (folded into the Conv at export) and ReLU."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            bn=nn.BatchNorm2d(c_out),
            relu=nn.ReLU(),
        )
    )


def build_model() -> nn.Sequential:
    """Four conv layers, three 2×2 max-pools, global average pool, linear head → 10 logits."""
    # Named modules become readable ONNX node names (/conv3/conv/Conv), which reports and
    # per-node quantisation exclusions refer to.
    return nn.Sequential(
        OrderedDict(
            conv1=conv_block(1, 32),
            conv2=conv_block(32, 32),
            pool2=nn.MaxPool2d(2),
            conv3=conv_block(32, 64),
            pool3=nn.MaxPool2d(2),
            conv4=conv_block(64, 160),
            pool4=nn.MaxPool2d(2),
            gap=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            head=nn.Linear(160, 10),
        )
    )


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift images up to ``MAX_SHIFT_PX`` (zero fill), add Gaussian noise, clip to [0, 1]."""
    n, _, h, w = images.shape
    pad = MAX_SHIFT_PX
    padded = nn.functional.pad(images, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    shifted = torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])
    noise = torch.randn(shifted.shape, generator=gen) * NOISE_STD
    return (shifted + noise).clamp_(0.0, 1.0)


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> None:
    """Seeded Adam + one-cycle schedule over the training split, in place."""
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    steps_per_epoch = -(-len(x) // BATCH_SIZE)
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=LEARNING_RATE, epochs=EPOCHS, steps_per_epoch=steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for epoch in range(EPOCHS):
        order = torch.randperm(len(x), generator=gen)
        total_loss = 0.0
        for start in range(0, len(x), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            optimiser.zero_grad()
            loss = loss_fn(model(augment(x[idx], gen)), y[idx])
            loss.backward()
            optimiser.step()
            schedule.step()
            total_loss += loss.item() * len(idx)
        print(f"epoch {epoch + 1:2d}/{EPOCHS}  train loss {total_loss / len(x):.4f}", flush=True)


def export_onnx(model: nn.Module) -> bytes:
    """Serialise the eval-mode model to ONNX bytes with a symbolic batch dimension."""
    model.eval()
    buffer = io.BytesIO()
    # The legacy (TorchScript) exporter folds BatchNorm into Conv in eval mode and needs no
    # onnxscript; it is chosen on purpose, so its deprecation notice is only noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, dataset.SIDE_PX, dataset.SIDE_PX),),
            buffer,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return buffer.getvalue()


def name_initializers(proto: onnx.ModelProto) -> None:
    """Rename weights after the layer that uses them (``conv3.weight``), in place.

    BatchNorm folding leaves the Conv weights with generated names such as ``onnx::Conv_52``.
    """
    renames: dict[str, str] = {}
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            layer = node.name.strip("/").split("/")[0]
            for role, name in zip(("weight", "bias"), node.input[1:]):
                renames[name] = f"{layer}.{role}"
    for tensor in proto.graph.initializer:
        tensor.name = renames.get(tensor.name, tensor.name)
    for node in proto.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]


def check_graph(proto: onnx.ModelProto) -> None:
    """Fail unless the graph is valid, has 4 Conv nodes and no training-only nodes."""
    onnx.checker.check_model(proto, full_check=True)
    op_types = [node.op_type for node in proto.graph.node]
    leftovers = TRAINING_ONLY_OPS.intersection(op_types)
    if leftovers:
        raise SystemExit(f"exported graph still has training-only nodes: {sorted(leftovers)}")
    if op_types.count("Conv") != 4:
        raise SystemExit(f"exported graph has {op_types.count('Conv')} Conv nodes, expected 4")


def count_params(proto: onnx.ModelProto) -> int:
    """Weight elements in the graph: initializers plus tensors held in Constant nodes."""
    tensors = list(proto.graph.initializer)
    tensors += [
        attr.t
        for node in proto.graph.node
        if node.op_type == "Constant"
        for attr in node.attribute
        if attr.type == onnx.AttributeProto.TENSOR
    ]
    return sum(int(np.prod(t.dims, dtype=np.int64)) for t in tensors)


def onnx_accuracy(model_bytes: bytes, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of the ONNX model under ONNX Runtime (CPU, one thread, one batch)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"input": images})[0]
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def main() -> int:
    """Train, export, verify and write model.onnx + model.json next to this script."""
    torch.manual_seed(TRAIN_SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    splits = dataset.load_all()
    model = build_model()
    train(model, *splits["train"])

    proto = onnx.load_from_string(export_onnx(model))
    name_initializers(proto)
    check_graph(proto)
    model_bytes = proto.SerializeToString()
    test_images, test_labels = splits["test"]
    accuracy = onnx_accuracy(model_bytes, test_images, test_labels)
    summary = {
        "params": count_params(proto),
        "conv_layers": 4,
        "opset": OPSET,
        "test_accuracy": accuracy,
        "n_test": int(len(test_labels)),
        "split_seed": dataset.SPLIT_SEED,
        "train_seed": TRAIN_SEED,
        "epochs": EPOCHS,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "onnx_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "trained_at": dt.date.today().isoformat(),
        "command": "python examples/digits/train.py",
    }
    write_atomic(MODEL_PATH, model_bytes)
    write_atomic(MODEL_JSON_PATH, json.dumps(summary, indent=2) + "\n")
    print(
        f"wrote {MODEL_PATH.name} ({len(model_bytes)} bytes, {summary['params']} params); "
        f"ONNX Runtime test accuracy {accuracy:.4f} on {summary['n_test']} images"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
