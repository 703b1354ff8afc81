"""ONNX model loading and validation, content hash, input resolution and feeds."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import load_external_data_for_model

from edgeproof.errors import DataError, ModelError, first_line
from edgeproof.records import ModelRef

# ONNX tensor element types we can feed, mapped to numpy.
_NP_DTYPES: dict[int, type] = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT16: np.int16,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.UINT16: np.uint16,
    onnx.TensorProto.BOOL: np.bool_,
}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _parse(data: bytes, path: Path) -> onnx.ModelProto:
    """The one place a model file's bytes become a ModelProto (tests count its calls)."""
    try:
        return onnx.load_model_from_string(data)
    except DecodeError:
        raise ModelError(f"{path}: not an ONNX model (protobuf does not parse; truncated or not a model file)") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot be read as ONNX ({first_line(exc)})") from None


def _read(path: Path) -> bytes:
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read ({first_line(exc)})") from None
    if not data:
        raise ModelError(f"{path}: empty file, not an ONNX model")
    return data


def _with_external_data(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    try:
        load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:  # a missing weights file is a ValidationError
        raise ModelError(f"{path}: external weights cannot be read ({first_line(exc)})") from None
    return model


def load_proto(path: str | Path, *, external_data: bool = True) -> onnx.ModelProto:
    """Parse an ONNX file without validating it: for artifacts edgeproof wrote itself (variants,
    prepared graphs). ``external_data=False`` reads the graph alone, leaving large weights on disk.
    A file that does not parse is one ModelError line. User models go through ``Model.load``."""
    path = Path(path)
    model = _parse(_read(path), path)
    return _with_external_data(model, path) if external_data else model


@dataclass(frozen=True, eq=False)
class Model:
    """A model file loaded once, validated and hashed; every stage takes this instead of re-reading
    the path. ``proto`` is shared: a stage that edits the graph works on its own copy."""

    path: Path
    proto: onnx.ModelProto
    sha256: str
    size_bytes: int

    @classmethod
    def load(cls, path: str | Path) -> Model:
        """Read, parse and check a model; any problem becomes one ModelError line naming the file."""
        path = Path(path)
        data = _read(path)
        proto = _parse(data, path)
        if not proto.graph.node and not proto.graph.output:
            raise ModelError(f"{path}: not an ONNX model (no graph inside; truncated or not a model file)")
        _with_external_data(proto, path)
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as exc:
            raise ModelError(f"{path}: invalid ONNX model ({first_line(exc)})") from None
        return cls(path=path, proto=proto, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))

    @cached_property
    def io(self) -> dict[str, list]:
        """The interface: ``{"inputs": [[name, dtype, dims], ...], "outputs": [...]}``."""
        return _io_of(self.proto)

    @cached_property
    def ref(self) -> ModelRef:
        """What a record says of this model."""
        return ModelRef(path=str(self.path), name=self.path.stem, sha256=self.sha256, size_bytes=self.size_bytes, io=self.io)

    @property
    def opset(self) -> int:
        return opset_version(self.proto)

    def with_input_shapes(self, shapes: dict[str, tuple[int, ...]]) -> Model:
        """This model with its inputs' free dims set as in ``shapes`` (what an analysis of the graph
        at one declared shape reads); the same file, hash and size. Itself when nothing is free."""
        inputs = {vi.name: vi for vi in graph_inputs(self.proto)}
        todo = [
            name for name, shape in shapes.items() if name in inputs and any(is_free(d) for d in inputs[name].type.tensor_type.shape.dim)
        ]
        if not todo:
            return self
        proto = self.proto_copy()
        for vi in graph_inputs(proto):
            if vi.name in todo:
                for d, size in zip(vi.type.tensor_type.shape.dim, shapes[vi.name]):
                    d.dim_value = int(size)
        return Model(path=self.path, proto=proto, sha256=self.sha256, size_bytes=self.size_bytes)

    def proto_copy(self) -> onnx.ModelProto:
        """A copy of the graph for a stage that edits it (converters and optimisers work in place)."""
        copy = onnx.ModelProto()
        copy.CopyFrom(self.proto)
        return copy


def as_model(model: Model | str | Path) -> Model:
    """A loaded Model as is, or a path loaded now: lets an API take either."""
    return model if isinstance(model, Model) else Model.load(model)


def graph_of(model: Model | str | Path) -> onnx.ModelProto:
    """A loaded Model's proto, or a file's graph read without its weights (for node names and the
    interface of an artifact edgeproof wrote, such as a prepared or quantized variant)."""
    return model.proto if isinstance(model, Model) else load_proto(model, external_data=False)


def load_model(path: str | Path) -> onnx.ModelProto:
    """Load and check an ONNX model; any problem becomes one ModelError line naming the file."""
    return Model.load(path).proto


def dtype_name(elem_type: int) -> str:
    """An ONNX element type by the name contracts use: numpy's (``float32``, ``bool``), else ONNX's in lower case (``bfloat16``)."""
    np_type = _NP_DTYPES.get(elem_type)
    return np.dtype(np_type).name if np_type is not None else onnx.TensorProto.DataType.Name(elem_type).lower()


def _value_signature(v: onnx.ValueInfoProto) -> list:
    t = v.type.tensor_type
    dims = [dim_label(d) for d in t.shape.dim]
    return [v.name, dtype_name(t.elem_type), dims]


def _io_of(model: onnx.ModelProto) -> dict[str, list]:
    return {"inputs": [_value_signature(v) for v in graph_inputs(model)], "outputs": [_value_signature(v) for v in model.graph.output]}


def same_interface(a: dict[str, list] | None, b: dict[str, list] | None) -> str | None:
    """None when two io signatures could be one model's variants (same names, dtypes, ranks, and
    equal fixed dims), else what differs. Unknown signatures are not compared."""
    if a is None or b is None:
        return None
    for side in ("inputs", "outputs"):
        names_a, names_b = [v[0] for v in a[side]], [v[0] for v in b[side]]
        if names_a != names_b:
            return f"{side} {names_a} vs {names_b}"
        for (name, ta, da), (_, tb, db) in zip(a[side], b[side]):
            fixed_differ = len(da) != len(db) or any(
                isinstance(x, int) and isinstance(y, int) and x and y and x != y for x, y in zip(da, db)
            )
            if ta != tb or fixed_differ:
                return f"{side[:-1]} {name!r} is {ta}{da} vs {tb}{db}"
    return None


def opset_version(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


@dataclass(frozen=True)
class InputSpec:
    """One graph input, with every dimension resolved to a number."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: graph inputs that are not initializers (old exporters list weights as inputs)."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def is_free(dim: onnx.TensorShapeProto.Dimension) -> bool:
    """A dimension the model leaves open: a name (``batch``, ``?``), nothing, or a non-positive size
    (Paddle and some TF converters write a free dim as ``dim_value: -1``; ONNX Runtime treats it as free)."""
    return not (dim.HasField("dim_value") and dim.dim_value > 0)


def dim_label(dim: onnx.TensorShapeProto.Dimension) -> int | str:
    """A dimension as the interface shows it: its size, else its name, else ``?``."""
    return (dim.dim_param or "?") if is_free(dim) else int(dim.dim_value)


def parse_shape_overrides(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME=1,3,224,224`` strings from ``--shape`` (``NAME=`` alone is a scalar)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        try:
            parsed = tuple(int(d) for d in dims.split(",")) if sep and dims.strip() else ()
        except ValueError:
            parsed = (0,)
        if not name or not sep or any(d <= 0 for d in parsed):
            raise DataError(f"--shape {item!r}: expected NAME=D1,D2,... with positive integers")
        shapes[name] = parsed
    return shapes


def _tensor_input(vi: onnx.ValueInfoProto) -> tuple[np.dtype, list[onnx.TensorShapeProto.Dimension]]:
    if not vi.type.HasField("tensor_type"):
        raise ModelError(f"input {vi.name!r}: only tensor inputs are supported (got {vi.type.WhichOneof('value')})")
    ttype = vi.type.tensor_type
    if ttype.elem_type not in _NP_DTYPES:
        raise ModelError(f"input {vi.name!r}: element type {onnx.TensorProto.DataType.Name(ttype.elem_type)} is not supported")
    return np.dtype(_NP_DTYPES[ttype.elem_type]), list(ttype.shape.dim)


def _check_shape(vi: onnx.ValueInfoProto, shape: tuple[int, ...], given: str) -> None:
    """Refuse a shape that does not fit the input: wrong rank, or a fixed dim given another size."""
    _, declared = _tensor_input(vi)
    shown = "[" + ", ".join(str(dim_label(d)) for d in declared) + "]"
    if len(declared) != len(shape):
        raise DataError(f"{given}: input {vi.name!r} has rank {len(declared)} {shown}, got shape {list(shape)}")
    for i, (d, v) in enumerate(zip(declared, shape)):
        if not is_free(d) and d.dim_value != v:
            raise DataError(
                f"{given}: input {vi.name!r} dim {i} is fixed at {d.dim_value} in the model {shown}, got {v} (shape {list(shape)})"
            )


def resolve_inputs(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None, batch: int = 1) -> list[InputSpec]:
    """Resolve every input's shape: overrides first, a free leading dim becomes ``batch``, and any
    other free dim without an override is an error that names the input, the dim and the fix."""
    shapes = dict(shapes or {})
    inputs = graph_inputs(model)
    names = {vi.name for vi in inputs}
    unknown = sorted(set(shapes) - names)
    if unknown:
        raise DataError(f"--shape names unknown input(s) {unknown}; the model's inputs are {sorted(names)}")
    specs = []
    for vi in inputs:
        dtype, declared = _tensor_input(vi)
        if vi.name in shapes:
            _check_shape(vi, shapes[vi.name], f"--shape {vi.name}")
            specs.append(InputSpec(vi.name, dtype, shapes[vi.name]))
            continue
        resolved: list[int] = []
        for i, d in enumerate(declared):
            if not is_free(d):
                resolved.append(int(d.dim_value))
            elif i == 0:
                resolved.append(batch)
            else:
                hint = ",".join([*(str(x) for x in resolved), "N"] + ["..."] * (len(declared) - i - 1))
                raise DataError(
                    f"input {vi.name!r} dim {i} is free ({dim_label(d)}); give it with --shape {vi.name}={hint}, "
                    f"feed real arrays (--inputs FILE.npz, the contract's [data]), or declare [budgets] shape"
                )
        specs.append(InputSpec(vi.name, dtype, tuple(resolved)))
    return specs


def synthetic_feeds(specs: list[InputSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs: floats uniform in [0, 1), integers zero (valid as indices), bools False."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        if np.issubdtype(spec.dtype, np.floating):
            feeds[spec.name] = rng.random(spec.shape).astype(spec.dtype)
        else:
            feeds[spec.name] = np.zeros(spec.shape, dtype=spec.dtype)
    return feeds


Feeds = dict[str, np.ndarray]


def _as_dtype(arr: np.ndarray, dtype: np.dtype, name: str, where: str) -> np.ndarray:
    if arr.dtype == dtype:
        return arr
    if np.can_cast(arr.dtype, dtype, casting="same_kind"):
        return arr.astype(dtype)
    raise DataError(f"{where}: array {name!r} is {arr.dtype}, the input needs {dtype}")


def assemble_feeds(
    model: onnx.ModelProto,
    stacks: dict[str, np.ndarray],
    constants: dict[str, np.ndarray] | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    where: str = "inputs",
    missing_hint: str = "",
) -> tuple[list[InputSpec], list[Feeds]]:
    """Feeds for every model input from arrays the user gave: ``stacks[name]`` holds samples along a
    new leading axis (each sample one run's full input, batch included; a stack of one is fed to
    every run), ``constants[name]`` one value fed to every run (the contract's ``[model.feeds]``). The arrays fix every free dim; a
    fixed dim must match, a declared ``shapes`` entry must agree. An input with neither is a
    DataError that names it (``missing_hint`` says where it could come from)."""
    constants = constants or {}
    shapes = shapes or {}
    inputs = graph_inputs(model)
    names = [vi.name for vi in inputs]
    stray = sorted(set(shapes) - set(names))
    if stray:
        raise DataError(f"--shape names unknown input(s) {stray}; the model's inputs are {names}")
    specs: list[InputSpec] = []
    per_input: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for vi in inputs:
        dtype, _ = _tensor_input(vi)
        if vi.name in stacks:
            stack = np.asarray(stacks[vi.name])
            if len(stack) != 1:  # one sample is fed to every run, beside a stack of others
                counts[vi.name] = len(stack)
        elif vi.name in constants:
            stack = np.asarray(constants[vi.name])[None].astype(dtype)
        else:
            raise DataError(f"{where}: no array for input {vi.name!r} (the model's inputs are {names}){missing_hint}")
        sample = tuple(int(d) for d in stack.shape[1:])
        _check_shape(vi, sample, where)
        if vi.name in shapes and shapes[vi.name] != sample:
            raise DataError(
                f"{where}: input {vi.name!r} is declared at shape {list(shapes[vi.name])} but its arrays have shape {list(sample)}; "
                "give arrays of the declared shape or drop the declared shape"
            )
        per_input[vi.name] = _as_dtype(stack, dtype, vi.name, where)
        specs.append(InputSpec(vi.name, dtype, sample))
    sizes = set(counts.values())
    if 0 in sizes or len(sizes) > 1:
        raise DataError(f"{where}: inputs hold different or zero sample counts {dict(sorted(counts.items()))}")
    n = sizes.pop() if sizes else 1
    # np.require, not ascontiguousarray: a scalar input must stay 0-d
    feeds = [{name: np.require(stack[i if name in counts else 0], requirements="C") for name, stack in per_input.items()} for i in range(n)]
    return specs, feeds


def samples_as_stack(arr: np.ndarray, vi: onnx.ValueInfoProto) -> np.ndarray:
    """An array given for one input as a stack of samples: rank of the input → one sample, one
    more → a stack along the first axis."""
    _, declared = _tensor_input(vi)
    if arr.ndim == len(declared):
        return arr[None]
    if arr.ndim == len(declared) + 1:
        return arr
    shown = "[" + ", ".join(str(dim_label(d)) for d in declared) + "]"
    raise DataError(
        f"array {vi.name!r} has shape {list(arr.shape)}; input {vi.name!r} is {shown}: give one sample of that rank or a stack (N, ...)"
    )


def rows_as_stack(rows: np.ndarray, vi: onnx.ValueInfoProto) -> np.ndarray:
    """A dataset's rows for one input as a stack of batch-1 samples: a row lacks the batch axis
    (rank of the input less one), or is the whole input when the input has no batch axis."""
    _, declared = _tensor_input(vi)
    if rows.ndim == len(declared):  # (N, *row) with row one rank short: add the batch axis
        return rows[:, None]
    if rows.ndim == len(declared) + 1:
        return rows
    shown = "[" + ", ".join(str(dim_label(d)) for d in declared) + "]"
    raise DataError(f"rows for input {vi.name!r} have shape {list(rows.shape[1:])}; the input is {shown}")


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file; an unreadable one is one DataError line."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz ({first_line(exc)})") from None


def feeds_from_npz(
    path: str | Path,
    model: onnx.ModelProto,
    constants: dict[str, np.ndarray] | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> tuple[list[InputSpec], list[Feeds]]:
    """Real samples from ``--inputs FILE.npz``: one array per input name, either one sample of the
    input's rank or a stack of samples along a new leading axis. The arrays fix every free dim;
    an input missing from the file may come from ``constants`` (the contract's ``[model.feeds]``)."""
    arrays = read_npz(path)
    by_name = {vi.name: vi for vi in graph_inputs(model)}
    stacks = {}
    for name, arr in arrays.items():
        if name in by_name:
            try:
                stacks[name] = samples_as_stack(arr, by_name[name])
            except DataError as exc:
                raise DataError(f"{path}: {exc}") from None
    hint = f"; it holds {sorted(arrays)}: add an array named like the input, or give it in the contract as [model.feeds.NAME]"
    return assemble_feeds(model, stacks, constants, shapes, where=str(path), missing_hint=hint)
