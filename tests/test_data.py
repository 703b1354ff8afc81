"""Datasets, slices, transforms and content IDs (edgeproof.data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh

from edgeproof.data import (
    TRANSFORMS,
    SliceSpec,
    TransformSpec,
    apply_transform,
    calibration_set,
    check_fits_model,
    check_slice_specs,
    content_id,
    load_dataset,
    make_dataset,
    make_part,
    make_slice,
    make_slices,
)
from edgeproof.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits"


def images(n: int, seed: int, side: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, 1, side, side)).astype(np.float32)


def labels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, n).astype(np.int64)


def small_dataset(n_cal: int = 12, n_test: int = 20):
    parts = {
        "calibration": make_part("calibration", images(n_cal, 1), labels(n_cal, 1), "t"),
        "test": make_part("test", images(n_test, 2), labels(n_test, 2), "t"),
    }
    return make_dataset("synthetic", parts)


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def identity_model(path: Path, dims: list) -> Path:
    """A one-node model whose only job is to declare an input shape."""
    x = oh.make_tensor_value_info("input", TensorProto.FLOAT, dims)
    y = oh.make_tensor_value_info("output", TensorProto.FLOAT, dims)
    graph = oh.make_graph([oh.make_node("Identity", ["input"], ["output"])], "id", [x], [y])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# --- transforms -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_keeps_shape_range_and_is_identity_at_zero(name):
    x = images(6, 0)
    out = apply_transform(x, name, 0.7, np.random.default_rng(0), "t")
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, x), "severity 0.7 must change the images"
    same = apply_transform(x, name, 0.0, np.random.default_rng(0), "t")
    np.testing.assert_allclose(same, x, atol=1e-6)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_damage_grows_with_severity(name):
    x = images(16, 3)
    damage = [float(np.abs(apply_transform(x, name, s, np.random.default_rng(5), "t") - x).mean()) for s in (0.2, 0.5, 1.0)]
    assert damage[0] < damage[1] < damage[2]


@pytest.mark.parametrize("name", ["gaussian_noise", "occlusion", "dead_pixels"])
def test_random_transforms_are_deterministic_per_seed_and_differ_across_seeds(name):
    ds = small_dataset()
    spec = SliceSpec(name="s", kind="tail", transforms=[TransformSpec(name=name, severity=0.5)], seed=7)
    first, again = make_slice(ds, spec), make_slice(ds, spec)
    other = make_slice(ds, spec.model_copy(update={"seed": 8}))
    np.testing.assert_array_equal(first.x, again.x)
    assert first.id == again.id
    assert not np.array_equal(first.x, other.x)
    assert first.id != other.id


def test_transforms_refuse_images_outside_unit_range():
    with pytest.raises(DataError) as exc:
        apply_transform(images(2, 0) * 255.0, "blur", 0.5, np.random.default_rng(0), "slice 'x'")
    assert "[0, 1]" in one_line(exc)


# --- IDs ---------------------------------------------------------------------------------


def test_one_changed_byte_changes_every_id():
    ds = small_dataset()
    spec = SliceSpec(name="noisy", kind="stress", transforms=[TransformSpec(name="contrast", severity=0.4)])
    x = ds.evaluation.x.copy()
    raw = x.view(np.uint8)
    raw.reshape(-1)[123] ^= 1
    changed = make_dataset("synthetic", {"calibration": ds.calibration, "test": make_part("test", x, ds.evaluation.y, "t")})
    assert changed.evaluation.id != ds.evaluation.id
    assert changed.id != ds.id
    assert make_slice(changed, spec).id != make_slice(ds, spec).id
    assert content_id([("x", x)]) != content_id([("x", ds.evaluation.x)])


def test_ids_cover_dtype_shape_and_recipe():
    a = np.arange(12, dtype=np.float32)
    assert content_id([("x", a)]) != content_id([("x", a.reshape(3, 4))])
    assert content_id([("x", a)]) != content_id([("x", a.view(np.int32))])
    assert content_id([("x", a)], {"seed": 0}) != content_id([("x", a)], {"seed": 1})
    ds = small_dataset()
    spec = SliceSpec(name="s", kind="stress", transforms=[TransformSpec(name="blur", severity=0.3)])
    stronger = spec.model_copy(update={"transforms": (TransformSpec(name="blur", severity=0.4),)})
    assert make_slice(ds, spec).id != make_slice(ds, stronger).id


# --- loading -----------------------------------------------------------------------------


def test_npz_and_entry_point_give_the_same_ids(tmp_path):
    ds = small_dataset()
    write_npz(
        tmp_path / "d.npz",
        x_calibration=ds.calibration.x,
        y_calibration=ds.calibration.y,
        x_test=ds.evaluation.x,
        y_test=ds.evaluation.y,
        x_train=images(4, 9),
        y_train=labels(4, 9),
    )
    (tmp_path / "loader.py").write_text(
        "import numpy as np\n"
        "def load(part):\n"
        "    d = np.load(__file__.replace('loader.py', 'd.npz'))\n"
        "    return d['x_' + part], d['y_' + part]\n"
    )
    from_npz = load_dataset("d.npz", base_dir=tmp_path)
    from_entry = load_dataset("loader.py:load", base_dir=tmp_path)
    assert from_npz.id == from_entry.id == ds.id
    assert set(from_npz.parts) == {"calibration", "test"}, "parts no slice reads are not loaded"
    assert from_npz.summary()["parts"]["test"]["n"] == 20


def test_digits_entry_point_fits_the_digits_model():
    if not (DIGITS / "model.onnx").is_file():
        pytest.skip("examples/digits/model.onnx not built yet")
    ds = load_dataset("examples/digits/dataset.py:load", base_dir=ROOT)
    assert ds.calibration.x.shape[1:] == (1, 32, 32) and ds.evaluation.n > 0
    check_fits_model(ds, DIGITS / "model.onnx")


def test_overlapping_calibration_and_evaluation_is_refused():
    cal = images(10, 1)
    test = np.concatenate([images(8, 2), cal[3:5]])
    with pytest.raises(DataError) as exc:
        make_dataset(
            "synthetic",
            {
                "calibration": make_part("calibration", cal, labels(10, 1), "t"),
                "test": make_part("test", test, labels(10, 2), "t"),
            },
        )
    assert "2 rows of 'calibration' also appear in 'test'" in one_line(exc)


# --- bad input: one DataError line each ------------------------------------------------------


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"x_calibration": images(3, 1), "y_calibration": labels(3, 1), "x_test": images(3, 2)}, "has no labels"),
        ({"x_calibration": images(3, 1), "y_calibration": labels(3, 1), "y_test": labels(3, 2)}, "no array 'x_test'"),
        (
            {
                "x_calibration": images(3, 1),
                "y_calibration": labels(3, 1),
                "x_test": images(0, 2),
                "y_test": labels(0, 2),
            },
            "is empty",
        ),
        (
            {
                "x_calibration": images(3, 1),
                "y_calibration": labels(3, 1),
                "x_test": images(4, 2),
                "y_test": labels(3, 2),
            },
            "4 inputs but 3 labels",
        ),
        (
            {
                "x_calibration": images(3, 1),
                "y_calibration": labels(3, 1),
                "x_test": images(3, 2),
                "y_test": np.zeros((3, 2), np.int64),
            },
            "1-D integer array",
        ),
        (
            {
                "x_calibration": images(3, 1),
                "y_calibration": labels(3, 1),
                "x_test": np.full((3, 1, 8, 8), "a"),
                "y_test": labels(3, 2),
            },
            "not numbers",
        ),
    ],
)
def test_bad_npz_is_one_data_error_line(tmp_path, arrays, needle):
    write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as exc:
        load_dataset("bad.npz", base_dir=tmp_path)
    assert needle in one_line(exc)


@pytest.mark.parametrize(
    ("source", "entry", "needle"),
    [
        ("def load(part):\n    return np.zeros((2, 1, 8, 8), np.float32)\n", "ld.py:load", "has no labels"),
        ("def load(part):\n    raise KeyError(part)\n", "ld.py:load", "could not be loaded (KeyError"),
        ("def other(part):\n    return None\n", "ld.py:load", "no function 'load'"),
        ("raise RuntimeError('boom')\n", "ld.py:load", "importing ld.py failed (RuntimeError: boom)"),
        ("", "missing.py:load", "no such file"),
        ("", "data.csv", "expected a path to an .npz file"),
    ],
)
def test_bad_entry_point_is_one_data_error_line(tmp_path, source, entry, needle):
    (tmp_path / "ld.py").write_text("import numpy as np\n" + source)
    with pytest.raises(DataError) as exc:
        load_dataset(entry, base_dir=tmp_path)
    assert needle in one_line(exc)


def test_data_not_matching_the_model_input_is_refused(tmp_path):
    ds = small_dataset()
    check_fits_model(ds, identity_model(tmp_path / "ok.onnx", ["batch", 1, 8, 8]))
    check_fits_model(ds, identity_model(tmp_path / "b1.onnx", [1, 1, 8, 8]))
    with pytest.raises(DataError) as exc:
        check_fits_model(ds, identity_model(tmp_path / "big.onnx", ["batch", 1, 32, 32]))
    assert "rows have shape [1, 8, 8] but model input 'input' of big.onnx is [batch,1,32,32]" in one_line(exc)
    with pytest.raises(DataError):
        check_fits_model(ds, identity_model(tmp_path / "rank.onnx", ["batch", 64]))


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (SliceSpec(name="night", kind="tail", part="night"), "has no part 'night'"),
        (
            SliceSpec(name="fog", kind="stress", transforms=[TransformSpec(name="fog", severity=0.5)]),
            "unknown transform 'fog'",
        ),
        (SliceSpec(name="n", kind="stress", transforms=[TransformSpec(name="blur", severity=3)]), "outside [0, 1]"),
        (
            SliceSpec(name="n", kind="nominal", transforms=[TransformSpec(name="blur", severity=0.3)]),
            "takes no transforms",
        ),
        (SliceSpec(name="n", kind="stress"), "needs transforms"),
        (SliceSpec(name="n", kind="nominal", part="calibration"), "cannot read the calibration part"),
    ],
)
def test_bad_slice_is_one_data_error_line(spec, needle):
    with pytest.raises(DataError) as exc:
        make_slice(small_dataset(), spec)
    assert needle in one_line(exc)


def test_duplicate_slice_names_are_refused():
    spec = SliceSpec(name="clean", kind="nominal")
    with pytest.raises(DataError) as exc:
        check_slice_specs([spec, spec])
    assert "defined more than once" in one_line(exc)


# --- slices from extra parts, calibration sets ------------------------------------------------


def test_slice_can_read_a_part_of_its_own(tmp_path):
    ds = small_dataset()
    night = images(5, 11) * 0.2
    write_npz(
        tmp_path / "d.npz",
        x_calibration=ds.calibration.x,
        y_calibration=ds.calibration.y,
        x_test=ds.evaluation.x,
        y_test=ds.evaluation.y,
        x_night=night,
        y_night=labels(5, 11),
    )
    loaded = load_dataset("d.npz", base_dir=tmp_path, extra_parts=["night"])
    spec = SliceSpec(name="night", kind="tail", part="night", max_drop_pp=10)
    clean, real_night = make_slices(loaded, [SliceSpec(name="clean", kind="nominal"), spec])
    np.testing.assert_array_equal(real_night.x, night)
    assert real_night.id != clean.id


def test_calibration_set_records_kinds_and_stays_the_same_size():
    ds = small_dataset(n_cal=12)
    specs = [
        SliceSpec(name="clean", kind="nominal"),
        SliceSpec(name="noise", kind="stress", transforms=[TransformSpec(name="gaussian_noise", severity=0.5)]),
        SliceSpec(name="holes", kind="tail", transforms=[TransformSpec(name="dead_pixels", severity=0.5)]),
    ]
    nominal = calibration_set(ds, specs)
    mixed = calibration_set(ds, specs, kinds=("nominal", "stress", "tail"))
    assert nominal.kinds == ("nominal",) and mixed.kinds == ("nominal", "stress", "tail")
    np.testing.assert_array_equal(nominal.x, ds.calibration.x)
    assert mixed.n == nominal.n == 12
    np.testing.assert_array_equal(mixed.x[0::3], ds.calibration.x[0::3])
    assert not np.array_equal(mixed.x[1::3], ds.calibration.x[1::3])
    assert mixed.id != nominal.id
    assert calibration_set(ds, specs, kinds=("nominal", "stress", "tail")).id == mixed.id
    assert calibration_set(ds, specs, max_rows=5).n == 5
    with pytest.raises(DataError):
        calibration_set(ds, specs, kinds=("weird",))
