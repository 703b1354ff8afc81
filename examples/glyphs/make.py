"""Build the glyphs example model: fixed conv features (PCA patch filters, then a seeded random layer),
global average pooling, and two heads fitted with scikit-learn; no torch. Deterministic: same bytes
on every run (single-threaded ONNX Runtime, seeded numpy, lbfgs).

    python examples/glyphs/make.py      # rewrites model.onnx and model.json next to this file
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh
from sklearn.linear_model import LogisticRegression, Ridge

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import dataset  # noqa: E402
from edgeproof.accuracy import contract_pipeline  # noqa: E402
from edgeproof.contract import load_contract  # noqa: E402
from edgeproof.records import write_atomic  # noqa: E402

OPSET = 17
SEED = 11
N_PCA = 12  # first-layer filters come as ± pairs of the leading patch components
C2 = 48


def patch_filters(x: np.ndarray, k: int, n: int) -> np.ndarray:
    """Leading principal components of k×k RGB patches, as ± filter pairs ``[2n, 3, k, k]``."""
    rng = np.random.RandomState(SEED)
    idx = rng.randint(0, len(x), 4000)
    top = rng.randint(0, x.shape[2] - k + 1, 4000)
    left = rng.randint(0, x.shape[3] - k + 1, 4000)
    patches = np.stack([x[i, :, t : t + k, c : c + k].ravel() for i, t, c in zip(idx, top, left)]).astype(np.float64)
    patches -= patches.mean(axis=0)
    _, _, vt = np.linalg.svd(patches, full_matrices=False)
    comps = vt[:n].reshape(n, 3, k, k)
    return np.concatenate([comps, -comps]).astype(np.float32)


def feature_graph(w1: np.ndarray, w2: np.ndarray) -> list:
    """Conv 3×3 → ReLU → Conv 3×3 stride 2 → ReLU → GlobalAveragePool of both layers → [N, C1 + C2]."""
    return [
        oh.make_node("Conv", ["image", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        oh.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        oh.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
        oh.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        oh.make_node("GlobalAveragePool", ["r1"], ["g1"], name="gap1"),
        oh.make_node("GlobalAveragePool", ["r2"], ["g2"], name="gap2"),
        oh.make_node("Concat", ["g1", "g2"], ["g"], axis=1, name="concat"),
        oh.make_node("Flatten", ["g"], ["features"], name="flatten"),
    ]


def model_proto(w1: np.ndarray, w2: np.ndarray, heads: dict[str, tuple[np.ndarray, np.ndarray]] | None) -> onnx.ModelProto:
    image = oh.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    nodes = feature_graph(w1, w2)
    inits = [nh.from_array(w1, "w1"), nh.from_array(w2, "w2")]
    if heads is None:
        outputs = [oh.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", w1.shape[0] + w2.shape[0]])]
    else:
        outputs = []
        for name, (w, b) in heads.items():
            nodes.append(oh.make_node("Gemm", ["features", f"{name}_w", f"{name}_b"], [name], transB=1, name=f"{name}_head"))
            inits += [nh.from_array(w.astype(np.float32), f"{name}_w"), nh.from_array(b.astype(np.float32), f"{name}_b")]
            outputs.append(oh.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", w.shape[0]]))
    graph = oh.make_graph(nodes, "glyphs", [image], outputs, inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", OPSET)], producer_name="edgeproof-examples-glyphs")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x})


def main() -> int:
    contract = load_contract(HERE / "edgeproof.toml")
    pipeline = contract_pipeline(contract)
    assert pipeline is not None
    parts = dataset.load_all()
    x = {name: pipeline.preprocess(frames) for name, (frames, _) in parts.items()}
    w1 = patch_filters(x["train"], 3, N_PCA)
    w2 = (np.random.RandomState(SEED).normal(0.0, 1.0, (C2, w1.shape[0], 3, 3)) / np.sqrt(w1.shape[0] * 9)).astype(np.float32)
    features = {name: run(model_proto(w1, w2, None), v)[0].astype(np.float64) for name, v in x.items()}
    mean, std = features["train"].mean(axis=0), features["train"].std(axis=0) + 1e-6
    z = {name: (f - mean) / std for name, f in features.items()}
    y, ink = parts["train"][1]["logits"], parts["train"][1]["ink"][:, 0]
    clf = LogisticRegression(C=1.0, max_iter=3000).fit(z["train"], y)
    reg = Ridge(alpha=1.0).fit(z["train"], ink)
    # fold the feature standardisation into each head: w·(f − mean)/std + b = (w/std)·f + (b − w·mean/std)
    heads = {
        "logits": (clf.coef_ / std, clf.intercept_ - (clf.coef_ / std) @ mean),
        "ink": (reg.coef_[None, :] / std, np.atleast_1d(reg.intercept_ - (reg.coef_ / std) @ mean)),
    }
    model = model_proto(w1, w2, heads)
    logits, ink_hat = run(model, x["test"])
    test = parts["test"][1]
    accuracy = float(np.mean(logits.argmax(1) == test["logits"]))
    mse = float(np.mean((ink_hat - test["ink"]) ** 2))
    data = model.SerializeToString()
    write_atomic(HERE / "model.onnx", data)
    facts = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "test_top1": round(accuracy, 4),
        "test_ink_mse": round(mse, 6),
        "ink_variance": round(float(np.var(test["ink"])), 6),
        "parameters": int(sum(np.prod(i.dims) for i in model.graph.initializer)),
        "opset": OPSET,
    }
    write_atomic(HERE / "model.json", json.dumps(facts, indent=2) + "\n")
    print(json.dumps(facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
