"""Datasets: load arrays from an .npz or a Python entry point, validate them, record their IDs.

A dataset has named parts, each inputs ``x`` (float, first axis = rows) and integer labels ``y``.
Two parts are required and must share no row:

* ``calibration``: what static quantization calibrates on;
* ``test``: what every slice is evaluated on (the *evaluation* part).

Sources:

* ``data.npz`` holds ``x_<part>`` / ``y_<part>`` pairs: ``x_calibration``, ``y_calibration``,
  ``x_test``, ``y_test``, plus any extra part a slice reads (``x_night`` / ``y_night``); other
  keys (``x_train``) are ignored.
* ``path/to/file.py:func`` is loaded by path; ``func(part)`` returns ``(x, y)`` for each part
  name asked for ("calibration", "test" and any extra part a slice reads).
"""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.data.ids import content_id, row_digests
from edgeproof.errors import DataError, ModelError, first_line
from edgeproof.model import Model, as_model, graph_inputs, graph_of

CALIBRATION = "calibration"
EVALUATION = "test"
REQUIRED_PARTS = (CALIBRATION, EVALUATION)


@dataclass(frozen=True)
class Part:
    """One part of a dataset: float32 inputs, int64 labels and their content ID."""

    name: str
    x: np.ndarray
    y: np.ndarray
    id: str

    @property
    def n(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    """Validated parts of a dataset, where they came from, and an ID over all of them."""

    source: str
    parts: dict[str, Part]
    id: str

    @property
    def calibration(self) -> Part:
        return self.parts[CALIBRATION]

    @property
    def evaluation(self) -> Part:
        return self.parts[EVALUATION]

    def part(self, name: str, why: str) -> Part:
        """The named part, or a DataError saying who asked for it (``why``) and what exists."""
        if name not in self.parts:
            raise DataError(f"{why}: data {self.source} has no part {name!r} (has: {', '.join(self.parts)})")
        return self.parts[name]

    def summary(self) -> dict[str, Any]:
        """What a BOM or report records about this dataset: IDs and sizes, no arrays."""
        return {
            "source": self.source,
            "id": self.id,
            "parts": {p.name: {"id": p.id, "n": p.n, "shape": list(p.x.shape)} for p in self.parts.values()},
        }


def make_part(name: str, x: Any, y: Any, where: str) -> Part:
    """Validate one part's arrays (one DataError line for each way they can be wrong)."""
    if x is None:
        raise DataError(f"{where}: part {name!r} has no inputs")
    if y is None:
        raise DataError(f"{where}: part {name!r} has no labels")
    x, y = np.asarray(x), np.asarray(y)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{where}: part {name!r} inputs are {x.dtype}; give float images scaled to [0, 1]")
    if x.ndim < 2:
        raise DataError(f"{where}: part {name!r} inputs have shape {list(x.shape)}; need rows along the first axis")
    if len(x) == 0:
        raise DataError(f"{where}: part {name!r} is empty")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: part {name!r} labels must be a 1-D integer array, got {y.dtype} {list(y.shape)}")
    if len(y) != len(x):
        raise DataError(f"{where}: part {name!r} has {len(x)} inputs but {len(y)} labels")
    if not np.isfinite(x).all():
        raise DataError(f"{where}: part {name!r} inputs contain NaN or infinity")
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    y64 = np.ascontiguousarray(y, dtype=np.int64)
    return Part(name=name, x=x32, y=y64, id=content_id([("x", x32), ("y", y64)]))


def make_dataset(source: str, parts: dict[str, Part]) -> Dataset:
    """Assemble parts into a Dataset after checking the required ones exist and are disjoint."""
    for name in REQUIRED_PARTS:
        if name not in parts:
            raise DataError(f"{source}: no {name!r} part (need {' and '.join(REQUIRED_PARTS)})")
    check_disjoint(parts, source)
    ordered = dict(sorted(parts.items()))
    dataset_id = content_id([(f"{name}.{k}", a) for name, p in ordered.items() for k, a in (("x", p.x), ("y", p.y))])
    return Dataset(source=source, parts=ordered, id=dataset_id)


def check_disjoint(parts: dict[str, Part], source: str) -> None:
    """Raise DataError if any calibration row also appears (byte for byte) in another part."""
    calib = parts[CALIBRATION]
    seen = {digest: i for i, digest in enumerate(row_digests(calib.x))}
    for name, part in parts.items():
        if name == CALIBRATION:
            continue
        shared = [(seen[d], j) for j, d in enumerate(row_digests(part.x)) if d in seen]
        if shared:
            i, j = shared[0]
            raise DataError(
                f"{source}: {len(shared)} rows of {CALIBRATION!r} also appear in {name!r} "
                f"(first: {CALIBRATION} row {i} = {name} row {j}); calibration and evaluation data must be disjoint"
            )


def load_dataset(entry: str, base_dir: str | Path | None = None, extra_parts: Iterable[str] = ()) -> Dataset:
    """Load ``data.npz`` or ``file.py:func`` (paths relative to ``base_dir``) into a checked Dataset.

    ``extra_parts`` names parts beyond calibration/test that slices read; the entry point is
    asked for each, and an .npz must hold each.
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    wanted = list(dict.fromkeys([*REQUIRED_PARTS, *extra_parts]))
    if entry.endswith(".npz"):
        return make_dataset(entry, _load_npz(base / entry, entry, wanted))
    file_part, sep, func_name = entry.rpartition(":")
    if sep and file_part.endswith(".py") and func_name.isidentifier():
        func = _load_entry_point(base / file_part, func_name, entry)
        return make_dataset(entry, {name: _call_entry_point(func, name, entry) for name in wanted})
    raise DataError(f"data entry {entry!r}: expected a path to an .npz file or 'path/to/file.py:function'")


def _load_npz(path: Path, entry: str, wanted: list[str]) -> dict[str, Part]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise DataError(f"{entry}: no such file ({path})") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{entry}: not a readable .npz ({first_line(exc)})") from None
    for name in wanted:
        if f"x_{name}" not in arrays:
            raise DataError(f"{entry}: no array 'x_{name}' (inputs of part {name!r}); keys: {', '.join(arrays) or 'none'}")
        if f"y_{name}" not in arrays:
            raise DataError(f"{entry}: part {name!r} has no labels (array 'y_{name}' missing)")
    return {name: make_part(name, arrays[f"x_{name}"], arrays[f"y_{name}"], entry) for name in wanted}


def _load_entry_point(path: Path, func_name: str, entry: str) -> Callable[[str], Any]:
    if not path.is_file():
        raise DataError(f"{entry}: no such file ({path})")
    # A unique module name per file path keeps two datasets with the same file name apart.
    module_name = "edgeproof_data_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise DataError(f"{entry}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user's module can fail in any way; report it on one line
        raise DataError(f"{entry}: importing {path.name} failed ({type(exc).__name__}: {first_line(exc)})") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise DataError(f"{entry}: {path.name} has no function {func_name!r}")
    return func


def _call_entry_point(func: Callable[[str], Any], name: str, entry: str) -> Part:
    try:
        result = func(name)
    except Exception as exc:  # the user's loader decides what an unknown part raises
        raise DataError(f"{entry}: part {name!r} could not be loaded ({type(exc).__name__}: {first_line(exc)})") from None
    if isinstance(result, np.ndarray):
        raise DataError(f"{entry}: part {name!r} has no labels (the function returned only an array)")
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise DataError(f"{entry}: part {name!r}: expected (inputs, labels), got {type(result).__name__}")
    return make_part(name, result[0], result[1], entry)


def model_input(model: Model | str | Path) -> tuple[str, list[int | str]]:
    """Name and dims of the model's one graph input; a symbolic dim is its name (or "?")."""
    where = model.path if isinstance(model, Model) else model
    inputs = graph_inputs(graph_of(model))
    if len(inputs) != 1:
        raise ModelError(f"{where}: evaluation needs exactly one graph input, the model has {len(inputs)}")
    dims: list[int | str] = [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?") for d in inputs[0].type.tensor_type.shape.dim
    ]
    return inputs[0].name, dims


def check_fits_model(dataset: Dataset, model: Model | str | Path) -> None:
    """Raise DataError unless every part's row shape matches the model input (batch may be symbolic)."""
    loaded = as_model(model)
    name, dims = model_input(loaded)
    for part in dataset.parts.values():
        row = list(part.x.shape[1:])
        want = dims[1:]
        fits = len(row) == len(want) and all(isinstance(d, str) or d == r for d, r in zip(want, row, strict=True))
        if not fits:
            shown = ",".join(str(d) for d in dims)
            raise DataError(
                f"{dataset.source}: part {part.name!r} rows have shape {row} but model input {name!r} of {loaded.path.name} is [{shown}]"
            )
