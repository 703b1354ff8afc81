"""Datasets: load arrays from an .npz or a Python entry point, validate them, record their IDs.

A dataset has named parts, each inputs ``x`` (numbers, first axis = rows) and labels ``y``. Without
a ``[pipeline]`` the rows are fed to the model as they are, so they must be of its kind (float rows
for a float input); with one they are raw sensor data of any numeric dtype (a camera's ``uint8``
HWC frames) that the pipeline's steps turn into the model's input (its ``cast`` step makes the
model's dtype).
A model with several inputs reads them by input name: ``x_<part>__<input>`` arrays in an .npz, or
a dict ``{input: rows}`` in place of ``x`` from an entry point; the first becomes ``x`` (what slice
transforms work on) and the rest ride along row for row. Inputs the data does not hold (a
recurrent state, a sample rate) come from the contract's ``[model.feeds]``.
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from edgeproof.data.feeds import assign_unnamed
from edgeproof.data.ids import content_id, row_digests
from edgeproof.errors import DataError, first_line
from edgeproof.model import Model, as_model, dim_label, graph_inputs, graph_of

CALIBRATION = "calibration"
EVALUATION = "test"
REQUIRED_PARTS = (CALIBRATION, EVALUATION)


@dataclass(frozen=True)
class Part:
    """One part of a dataset: inputs (float32, or raw integers kept in their dtype), labels (int64
    classes or float32 targets) and their content ID.

    ``x_input`` is the model input ``x`` feeds (None: the model's one input the data feeds);
    ``more`` holds further inputs by name, row for row with ``x``.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    id: str
    x_input: str | None = None
    more: dict[str, np.ndarray] = field(default_factory=dict)
    # per-output labels beyond ``y`` (``y_<part>__<output>``), integer classes or float targets
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.y)

    def rows(self) -> dict[str, np.ndarray]:
        """Every input array by model input name; ``x`` without a name is under ``""``."""
        return {self.x_input or "": self.x, **self.more}


@dataclass(frozen=True)
class Dataset:
    """Validated parts of a dataset, where they came from, and an ID over all of them."""

    source: str
    parts: dict[str, Part]
    id: str
    # the contract's pipeline (edgeproof.data.pipeline.Pipeline): parts then hold raw sensor rows,
    # which slices transform and preprocess before the model sees them
    pipeline: Any = None
    # the contract's [model.feeds] by input name: what every run feeds an input the data does not hold
    feeds: dict[str, np.ndarray] = field(default_factory=dict)

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
    """Validate one part's arrays (one DataError line for each way they can be wrong). ``x`` may be
    a dict of arrays by model input name (a model with several inputs); ``y`` a dict of labels by
    output name, the first becoming ``y`` and the rest ``labels``."""
    if isinstance(y, dict):
        if not y:
            raise DataError(f"{where}: part {name!r} has no labels")
        (_, primary), *others = y.items()
        part = make_part(name, x, primary, where)
        labels = {str(k): _label_rows(name, str(k), v, part.n, where) for k, v in others}
        arrays = [("id", np.frombuffer(part.id.encode(), np.uint8)), *((f"y__{k}", v) for k, v in sorted(labels.items()))]
        return replace(part, labels=labels, id=content_id(arrays))
    if isinstance(x, dict):
        if not x:
            raise DataError(f"{where}: part {name!r} has no inputs")
        (x_input, first), *rest = x.items()
        part = make_part(name, first, y, where)
        more = {str(k): _more_rows(name, str(k), v, part.n, where) for k, v in rest}
        arrays = [("x", part.x), ("y", part.y), *((f"x__{k}", v) for k, v in sorted(more.items()))]
        return Part(name=name, x=part.x, y=part.y, id=content_id(arrays), x_input=str(x_input) or None, more=more)
    if x is None:
        raise DataError(f"{where}: part {name!r} has no inputs")
    if y is None:
        raise DataError(f"{where}: part {name!r} has no labels")
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind not in "iuf":
        raise DataError(
            f"{where}: part {name!r} inputs are {x.dtype}, not numbers; give float rows (or raw integer data with a [pipeline])"
        )
    if x.ndim < 2:
        raise DataError(f"{where}: part {name!r} inputs have shape {list(x.shape)}; need rows along the first axis")
    if len(x) == 0:
        raise DataError(f"{where}: part {name!r} is empty")
    if y.ndim < 1 or y.dtype.kind not in "biuf" or (y.ndim > 1 and y.dtype.kind != "f"):
        raise DataError(
            f"{where}: part {name!r} labels must be a 1-D integer array (classes) or float targets, got {y.dtype} {list(y.shape)}"
        )
    if len(y) != len(x):
        raise DataError(f"{where}: part {name!r} has {len(x)} inputs but {len(y)} labels")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{where}: part {name!r} inputs contain NaN or infinity")
    # floats are float32 (what the ID was always taken over); raw integers keep their dtype
    xs = np.ascontiguousarray(x, dtype=np.float32 if x.dtype.kind == "f" else x.dtype)
    y64 = np.ascontiguousarray(y, dtype=np.float32 if y.dtype.kind == "f" else np.int64)
    return Part(name=name, x=xs, y=y64, id=content_id([("x", xs), ("y", y64)]))


def _more_rows(part: str, input_name: str, rows: Any, n: int, where: str) -> np.ndarray:
    """One more input's rows: numbers, one per row of the part, finite."""
    rows = np.asarray(rows)
    if rows.dtype.kind not in "biuf":
        raise DataError(f"{where}: part {part!r} input {input_name!r} is {rows.dtype}, not numbers")
    if rows.ndim < 1 or len(rows) != n:
        raise DataError(f"{where}: part {part!r} input {input_name!r} has shape {list(rows.shape)}, need {n} rows along the first axis")
    if rows.dtype.kind == "f" and not np.isfinite(rows).all():
        raise DataError(f"{where}: part {part!r} input {input_name!r} contains NaN or infinity")
    return np.ascontiguousarray(rows)


def _label_rows(part: str, output: str, rows: Any, n: int, where: str) -> np.ndarray:
    """One output's labels: integer classes (int64) or float targets (float32), one per row, finite."""
    rows = np.asarray(rows)
    if rows.dtype.kind not in "biuf" or rows.ndim < 1 or len(rows) != n:
        raise DataError(f"{where}: part {part!r} labels {output!r} are {rows.dtype} {list(rows.shape)}; need {n} rows of numbers")
    if rows.dtype.kind == "f" and not np.isfinite(rows).all():
        raise DataError(f"{where}: part {part!r} labels {output!r} contain NaN or infinity")
    return np.ascontiguousarray(rows, dtype=np.float32 if rows.dtype.kind == "f" else np.int64)


def make_dataset(source: str, parts: dict[str, Part]) -> Dataset:
    """Assemble parts into a Dataset after checking the required ones exist and are disjoint."""
    for name in REQUIRED_PARTS:
        if name not in parts:
            raise DataError(f"{source}: no {name!r} part (need {' and '.join(REQUIRED_PARTS)})")
    check_disjoint(parts, source)
    ordered = dict(sorted(parts.items()))
    dataset_id = content_id(
        [
            (f"{name}.{k}", a)
            for name, p in ordered.items()
            for k, a in (("x", p.x), ("y", p.y), *((f"y__{o}", v) for o, v in sorted(p.labels.items())))
        ]
    )
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
    parts = {}
    for name in wanted:
        named = {key.split("__", 1)[1]: arr for key, arr in arrays.items() if key.startswith(f"x_{name}__")}
        if f"x_{name}" not in arrays and not named:
            raise DataError(
                f"{entry}: no array 'x_{name}' or 'x_{name}__<input>' (inputs of part {name!r}); keys: {', '.join(arrays) or 'none'}"
            )
        if f"y_{name}" not in arrays:
            raise DataError(f"{entry}: part {name!r} has no labels (array 'y_{name}' missing)")
        x = arrays[f"x_{name}"] if not named else ({"": arrays[f"x_{name}"]} if f"x_{name}" in arrays else {}) | named
        per_output = {key.split("__", 1)[1]: arr for key, arr in arrays.items() if key.startswith(f"y_{name}__")}
        y = {"": arrays[f"y_{name}"], **per_output} if per_output else arrays[f"y_{name}"]
        parts[name] = make_part(name, x, y, entry)
    return parts


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


def input_rows(
    rows: dict[str, np.ndarray], model: Model | str | Path, fed: Iterable[str] = (), what: str = "the data"
) -> dict[str, np.ndarray]:
    """Data rows by model input name (``Part.rows()``). Named arrays go to their input; the
    unnamed one (key ``""``) goes to the model's first input that the data does not name and
    ``fed`` (the contract's ``[model.feeds]``) does not give. A name the model lacks is a DataError."""
    return assign_unnamed(rows, [vi.name for vi in graph_inputs(graph_of(model))], list(fed), what)


def check_fits_model(dataset: Dataset, model: Model | str | Path, fed: Iterable[str] = ()) -> None:
    """Raise DataError unless every part's rows fit the model inputs they feed (a row is the input
    without its leading batch dim; fixed dims equal, free dims any size) and every input is either
    in the data or ``fed`` (given by the contract's ``[model.feeds]``)."""
    loaded = as_model(model)
    fed = list(dict.fromkeys([*fed, *dataset.feeds]))
    by_name = {vi.name: vi for vi in graph_inputs(loaded.proto)}
    for part in dataset.parts.values():
        try:
            part_rows = part.rows()
            if dataset.pipeline is not None:  # the model is fed preprocessed raw rows
                part_rows[part.x_input or ""] = dataset.pipeline.preprocess(part.x[:1])
            rows = input_rows(part_rows, loaded, fed, f"part {part.name!r}")
        except DataError as exc:
            raise DataError(f"{dataset.source}: {exc}") from None
        _check_kinds(dataset, part, rows, by_name, loaded)
        missing = [name for name in by_name if name not in rows and name not in fed]
        if missing:
            raise DataError(
                f"{dataset.source}: part {part.name!r} has no rows for model input {missing[0]!r} (the model's inputs are "
                f"{list(by_name)}); add 'x_{part.name}__{missing[0]}' to the data, or give it in the contract as [model.feeds.{missing[0]}]"
            )
        for name, arr in rows.items():
            dims = [dim_label(d) for d in by_name[name].type.tensor_type.shape.dim]
            row = list(arr.shape[1:])
            want = dims[1:] if len(dims) == len(row) + 1 else dims
            fits = len(row) == len(want) and all(isinstance(d, str) or d == r for d, r in zip(want, row, strict=True))
            if not fits:
                shown = ",".join(str(d) for d in dims)
                raise DataError(
                    f"{dataset.source}: part {part.name!r} rows have shape {row} but model input {name!r} of {loaded.path.name} is [{shown}]"
                )


def _check_kinds(dataset: Dataset, part: Part, rows: dict[str, np.ndarray], by_name: dict[str, onnx.ValueInfoProto], model: Model) -> None:
    """Refuse rows of another kind of number than the input they feed: float rows for an integer
    input, or (without a pipeline to scale them) raw integers for a float input."""
    for name, arr in rows.items():
        want = np.dtype(helper.tensor_dtype_to_np_dtype(by_name[name].type.tensor_type.elem_type))
        if np.can_cast(arr.dtype, want, casting="same_kind") and not (arr.dtype.kind in "iu" and want.kind == "f"):
            continue
        if arr.dtype.kind in "iu" and want.kind == "f":
            fix = (
                "end the [pipeline] preprocess with steps that make float rows (scale, normalize or cast)"
                if dataset.pipeline is not None
                else "give float rows, or add a [pipeline] whose steps (scale, normalize) turn the raw data into the model's input"
            )
        else:
            fix = f"give {want} rows" + (" (the [pipeline]'s cast step makes the model's dtype)" if dataset.pipeline is not None else "")
        raise DataError(
            f"{dataset.source}: part {part.name!r} rows for input {name!r} are {arr.dtype} but {model.path.name} takes {want}; {fix}"
        )
