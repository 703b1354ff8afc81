"""Feeds for data rows: every model input for rows i..j, from the data by input name and the contract's feeds.

Evaluation, static INT8 calibration and the per-node speed profile all run a model on data rows;
this module is the one place that turns those rows into ONNX Runtime feed dicts.

* An input the data holds by name gets its rows; the data's unnamed rows (``x``) go to the
  model's first input that is neither named in the data nor fixed.
* An input the data does not hold gets its fixed value (the contract's ``[model.feeds]``: a
  recurrent state, a sample rate), the same in every run.
* A row is the input without its leading batch axis (rows are then fed several per run, or
  exactly the model's fixed batch, the last run padded with copies of the last row), or, with
  the input's own rank, a whole run's input (fed one row per run).
* A fixed value that is not a scalar and sits on an input with a free dim (a state of one
  sequence) is sized for one row: rows are then fed one per run, each with the same fixed
  value, so every row is evaluated independently from the same state.

When rows go one per run as whole inputs (``stacked``), each run's outputs are one row of the
result (stacked on a new leading axis); otherwise outputs are joined along their batch axis.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.errors import DataError
from edgeproof.model import Model, as_model, graph_inputs, is_free

# ONNX Runtime's names for tensor element types, as numpy dtypes.
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True)
class Inputs:
    """What a model is fed for some data rows: ``rows`` by model input name (``""``: the data's
    unnamed rows) and ``fixed`` values fed to every run (the contract's ``[model.feeds]``)."""

    rows: Mapping[str, np.ndarray]
    fixed: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(next(iter(self.rows.values()))) if self.rows else 0

    def head(self, k: int) -> Inputs:
        """The first ``k`` rows (the fixed values unchanged)."""
        return Inputs({name: rows[:k] for name, rows in self.rows.items()}, self.fixed)

    @classmethod
    def of(cls, x: np.ndarray | Inputs) -> Inputs:
        """``x`` as Inputs: an array is the rows of the model's one unnamed input."""
        return x if isinstance(x, Inputs) else cls({"": x})

    @classmethod
    def one_run(cls, feeds: Mapping[str, Any]) -> Inputs:
        """One run's feed dict (every input whole, batch included) as one row per input."""
        return cls({name: np.asarray(value)[None] for name, value in feeds.items()})


@dataclass(frozen=True)
class Declared:
    """One model input as the feeds need it: name, dims (None where free) and element type."""

    name: str
    dims: tuple[int | None, ...]
    dtype: np.dtype


def declared_of_session(sess: Any) -> list[Declared]:
    """The inputs of an ONNX Runtime session (a free dim: a name, None or a non-positive size)."""
    out = []
    for meta in sess.get_inputs():
        dims = tuple(d if isinstance(d, int) and d > 0 else None for d in (meta.shape or []))
        out.append(Declared(meta.name, dims, np.dtype(_ORT_DTYPES.get(meta.type, np.float32))))
    return out


def declared_of_model(model: Model | str | Path) -> list[Declared]:
    """The real graph inputs of a model (loaded, or a path)."""
    from onnx import helper

    out = []
    for vi in graph_inputs(as_model(model).proto):
        t = vi.type.tensor_type
        dims = tuple(None if is_free(d) else int(d.dim_value) for d in t.shape.dim)
        out.append(Declared(vi.name, dims, np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))))
    return out


def assign_unnamed(rows: Mapping[str, np.ndarray], names: Sequence[str], fixed: Sequence[str], what: str) -> dict[str, np.ndarray]:
    """Rows by model input name: named rows must name an input of the model; the unnamed rows
    (key ``""``) go to the first input neither named in ``rows`` nor ``fixed``."""
    out = dict(rows)
    unknown = [name for name in out if name and name not in names]
    if unknown:
        raise DataError(f"{what} holds input {unknown[0]!r}, which the model does not have (its inputs: {list(names)})")
    if "" in out:
        free = [name for name in names if name not in out and name not in fixed]
        if not free:
            raise DataError(f"{what} holds unnamed inputs but every model input {list(names)} is named in the data or fed")
        out[free[0]] = out.pop("")
    return out


def _cast(arr: np.ndarray, dtype: np.dtype, name: str, what: str) -> np.ndarray:
    """``arr`` as the input's element type; a cast that would change the kind of number (float
    rows into an integer input) is a DataError naming the input."""
    arr = np.asarray(arr)
    if arr.dtype == dtype:
        return arr
    if not np.can_cast(arr.dtype, dtype, casting="same_kind"):
        raise DataError(f"{what}: input {name!r} is {dtype} in the model, the data holds {arr.dtype}")
    return arr.astype(dtype)


@dataclass(frozen=True)
class RowFeeds:
    """Feed dicts for the rows of some data, run after run (see the module docstring)."""

    n: int
    rows_per_run: int
    # every run holds exactly rows_per_run rows (a fixed batch): the last one is padded
    padded: bool
    # rows go one per run as whole inputs: each run's outputs are one row of the result
    stacked: bool
    rows: dict[str, np.ndarray]
    fixed: dict[str, np.ndarray]
    # inputs whose rows lack the batch axis, fed as a slice of rows (the rest: one whole row)
    sliced: frozenset[str]

    def feeds(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The feed dict for rows ``start..stop`` (one row when ``stacked``)."""
        out = dict(self.fixed)
        for name, arr in self.rows.items():
            if self.stacked:
                out[name] = arr[start : start + 1] if name in self.sliced else arr[start]
                continue
            batch = arr[start:stop]
            if self.padded and len(batch) < self.rows_per_run:
                batch = np.concatenate([batch, np.repeat(batch[-1:], self.rows_per_run - len(batch), axis=0)])
            out[name] = np.ascontiguousarray(batch)
        return out

    def runs(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """(real rows in the run, its feed dict) for every run over all rows, in order."""
        for start in range(0, self.n, self.rows_per_run):
            stop = min(start + self.rows_per_run, self.n)
            yield stop - start, self.feeds(start, stop)


def row_feeds(declared: Sequence[Declared], inputs: Inputs, batch_size: int = 64, even: bool = False, what: str = "data") -> RowFeeds:
    """Feeds for every row of ``inputs`` to a model with ``declared`` inputs, ``batch_size`` rows
    per run where rows can share a run. With ``even`` every run has the same number of rows: the
    largest divisor of the row count up to ``batch_size`` (a fixed batch must divide it)."""
    names = [d.name for d in declared]
    by_name = {d.name: d for d in declared}
    stray = sorted(set(inputs.fixed) - set(names))
    if stray:
        raise DataError(f"[model.feeds.{stray[0]}] names no input of the model (its inputs: {names})")
    rows = assign_unnamed(inputs.rows, names, list(inputs.fixed), what)
    fixed = {k: _cast(v, by_name[k].dtype, k, "[model.feeds]") for k, v in inputs.fixed.items() if k not in rows}
    missing = [name for name in names if name not in rows and name not in fixed]
    if missing:
        raise DataError(
            f"{what}: nothing to feed model input {missing[0]!r} (the model's inputs are {names}); "
            f"add 'x_<part>__{missing[0]}' to the data, or give it in the contract as [model.feeds.{missing[0]}]"
        )
    n = len(next(iter(rows.values()))) if rows else 1
    sliced, whole = set(), set()
    for name, arr in rows.items():
        rank = len(by_name[name].dims)
        if len(arr) != n:
            raise DataError(f"{what}: input {name!r} has {len(arr)} rows, the others {n}")
        if arr.ndim == rank and rank > 0:
            sliced.add(name)
        elif arr.ndim == rank + 1:
            whole.add(name)
        else:
            shown = [d if d is not None else "?" for d in by_name[name].dims]
            raise DataError(f"{what}: rows for input {name!r} have shape {list(arr.shape[1:])}; the input is {shown}")
    cast_rows = {name: _cast(arr, by_name[name].dtype, name, what) for name, arr in rows.items()}
    # a non-scalar fixed value on an input with a free dim is sized for one sequence
    per_row_state = any(np.ndim(v) > 0 and None in by_name[k].dims for k, v in fixed.items())
    if whole or per_row_state:
        return RowFeeds(n, 1, False, True, cast_rows, fixed, frozenset(sliced))
    batches = {by_name[name].dims[0] for name in sliced}
    fixed_batch = sorted(b for b in batches if b is not None)
    if len(fixed_batch) > 1:
        raise DataError(f"{what}: the model's inputs fix different batch sizes {fixed_batch}")
    if fixed_batch:
        step = fixed_batch[0]
        if even and n % step:
            raise DataError(f"{what}: the model's fixed batch {step} does not divide the {n} rows")
    else:
        step = max(d for d in range(1, batch_size + 1) if n % d == 0) if even else batch_size
    return RowFeeds(n, step, bool(fixed_batch), False, cast_rows, fixed, frozenset(sliced))
