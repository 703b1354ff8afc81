"""The bundled digits example: a fixed data split and the model that model.json describes."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import scipy.ndimage
from sklearn.datasets import load_digits

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "digits"
MODEL_PATH = EXAMPLE_DIR / "model.onnx"
SPLIT_SIZES = {"train": 1237, "calibration": 200, "test": 360}
# sha256 over every split's image and label bytes in SPLITS order; a change here silently
# invalidates model.json's accuracy, so it must be a deliberate one.
DATASET_SHA256 = "3b81cf40234ceb58664f552af21f5e92a4b4bd212640213b3442f6f60fc6259d"


def _load_dataset_module():
    spec = importlib.util.spec_from_file_location("digits_dataset", EXAMPLE_DIR / "dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dataset = _load_dataset_module()


@pytest.fixture(scope="module")
def splits():
    return dataset.load_all()


@pytest.fixture(scope="module")
def model_json():
    return json.loads((EXAMPLE_DIR / "model.json").read_text())


@pytest.fixture(scope="module")
def model_proto():
    return onnx.load(str(MODEL_PATH))


def _row_digests(images: np.ndarray) -> list[str]:
    return [hashlib.sha256(row.tobytes()).hexdigest() for row in images]


def _dataset_sha256(splits) -> str:
    digest = hashlib.sha256()
    for name in dataset.SPLITS:
        images, labels = splits[name]
        digest.update(images.tobytes())
        digest.update(labels.tobytes())
    return digest.hexdigest()


def test_splits_have_stated_shapes_types_and_range(splits):
    assert set(splits) == set(SPLIT_SIZES)
    for name, (images, labels) in splits.items():
        n = SPLIT_SIZES[name]
        assert images.shape == (n, 1, 32, 32) and images.dtype == np.float32
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert images.min() == 0.0 and images.max() == 1.0
        assert set(np.unique(labels)) == set(range(10))


def test_dataset_is_deterministic_across_calls_and_pinned(splits):
    again = dataset.load_all()
    for name in dataset.SPLITS:
        assert again[name][0].tobytes() == splits[name][0].tobytes()
        assert again[name][1].tobytes() == splits[name][1].tobytes()
        single = dataset.load(name)
        assert single[0].tobytes() == splits[name][0].tobytes()
    assert _dataset_sha256(splits) == DATASET_SHA256


def test_splits_are_disjoint_and_cover_sklearn_digits(splits):
    raw = load_digits()
    # sklearn's digits hold no exact duplicate images, so content hashes identify rows.
    raw_digests = _row_digests(raw.images.astype(np.uint8))
    assert len(set(raw_digests)) == len(raw_digests)

    per_split = {name: _row_digests(images) for name, (images, _) in splits.items()}
    for name, digests in per_split.items():
        assert len(set(digests)) == len(digests), name
    names = list(per_split)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not set(per_split[a]) & set(per_split[b]), (a, b)
    assert sum(len(d) for d in per_split.values()) == len(raw_digests)


def test_images_are_bilinear_upsamples_with_their_own_labels(splits):
    raw = load_digits()
    expected = scipy.ndimage.zoom(raw.images, (1, 4, 4), order=1) / 16.0
    expected = expected.reshape(len(raw.images), -1)
    matched = []
    for images, labels in splits.values():
        flat = images.reshape(len(images), -1).astype(np.float64)
        # Nearest scipy reference image per row: float32 rounding rules out exact byte matches.
        sq_norms = (flat**2).sum(1)[:, None] + (expected**2).sum(1)[None, :]
        sq_dist = sq_norms - 2.0 * flat @ expected.T
        rows = np.argmin(sq_dist, axis=1)
        np.testing.assert_allclose(flat, expected[rows], atol=1e-6)
        assert np.array_equal(labels, raw.target[rows])
        matched.extend(rows.tolist())
    assert sorted(matched) == list(range(len(raw.images)))


def test_split_is_stratified(splits):
    overall = np.bincount(load_digits().target, minlength=10) / 1797
    for name, (_, labels) in splits.items():
        counts = np.bincount(labels, minlength=10)
        assert np.all(np.abs(counts - overall * len(labels)) < 1.0), name


def test_unknown_split_names_the_valid_ones():
    with pytest.raises(ValueError, match="train, calibration, test"):
        dataset.load("validation")


def test_model_is_a_clean_opset17_graph_with_four_convs(model_proto, model_json):
    onnx.checker.check_model(model_proto, full_check=True)
    opset = {o.domain: o.version for o in model_proto.opset_import}[""]
    assert opset >= 17 and model_json["opset"] == opset
    op_types = [node.op_type for node in model_proto.graph.node]
    assert op_types.count("Conv") == 4 == model_json["conv_layers"]
    assert not {"BatchNormalization", "Dropout"} & set(op_types)
    assert MODEL_PATH.stat().st_size < 1_000_000
    assert hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest() == model_json["onnx_sha256"]


def test_model_parameters_are_in_range_and_recorded(model_proto, model_json):
    tensors = list(model_proto.graph.initializer) + [
        attr.t
        for node in model_proto.graph.node
        if node.op_type == "Constant"
        for attr in node.attribute
        if attr.type == onnx.AttributeProto.TENSOR
    ]
    params = sum(int(np.prod(t.dims)) for t in tensors)
    assert 100_000 <= params <= 200_000
    assert params == model_json["params"]


def test_model_io_has_symbolic_batch(model_proto):
    (graph_input,) = model_proto.graph.input
    (graph_output,) = model_proto.graph.output
    in_dims = graph_input.type.tensor_type.shape.dim
    out_dims = graph_output.type.tensor_type.shape.dim
    assert graph_input.name == "input" and graph_output.name == "logits"
    assert in_dims[0].dim_param == "batch" and [d.dim_value for d in in_dims[1:]] == [1, 32, 32]
    assert out_dims[0].dim_param == "batch" and out_dims[1].dim_value == 10


def test_onnxruntime_accuracy_matches_model_json(splits, model_json):
    images, labels = splits["test"]
    session = ort.InferenceSession(str(MODEL_PATH), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"input": images})[0]
    assert logits.shape == (len(labels), 10)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == labels))
    assert accuracy == pytest.approx(model_json["test_accuracy"], abs=1e-9)
    assert accuracy >= 0.95
    assert model_json["n_test"] == len(labels)
    assert model_json["split_seed"] == dataset.SPLIT_SEED
    single = session.run(["logits"], {"input": images[:1]})[0]
    np.testing.assert_allclose(single, logits[:1], rtol=1e-4, atol=1e-4)
