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
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
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


def parse_shape_overrides(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME=1,3,224,224`` strings from ``--shape``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        try:
            parsed = tuple(int(d) for d in dims.split(",")) if sep else ()
        except ValueError:
            parsed = ()
        if not name or not parsed or any(d <= 0 for d in parsed):
            raise DataError(f"--shape {item!r}: expected NAME=D1,D2,... with positive integers")
        shapes[name] = parsed
    return shapes


def resolve_inputs(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None, batch: int = 1) -> list[InputSpec]:
    """Resolve every input's shape: overrides first, a symbolic leading dim becomes ``batch``,
    and any other symbolic dim without an override is an error that names it."""
    shapes = dict(shapes or {})
    inputs = graph_inputs(model)
    names = {vi.name for vi in inputs}
    unknown = sorted(set(shapes) - names)
    if unknown:
        raise DataError(f"--shape names unknown input(s) {unknown}; the model's inputs are {sorted(names)}")
    specs = []
    for vi in inputs:
        ttype = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise ModelError(f"input {vi.name!r}: only tensor inputs are supported (got {vi.type.WhichOneof('value')})")
        if ttype.elem_type not in _NP_DTYPES:
            raise ModelError(f"input {vi.name!r}: element type {onnx.TensorProto.DataType.Name(ttype.elem_type)} is not supported")
        dtype = np.dtype(_NP_DTYPES[ttype.elem_type])
        if vi.name in shapes:
            dims = shapes[vi.name]
            declared = list(ttype.shape.dim)
            if len(declared) != len(dims):
                raise DataError(f"--shape {vi.name}: model input has rank {len(declared)}, got {len(dims)} dims")
            for i, (d, v) in enumerate(zip(declared, dims)):
                if d.HasField("dim_value") and d.dim_value != v:
                    raise DataError(f"--shape {vi.name}: dim {i} is fixed at {d.dim_value} in the model, got {v}")
            specs.append(InputSpec(vi.name, dtype, dims))
            continue
        resolved = []
        for i, d in enumerate(ttype.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                resolved.append(int(d.dim_value))
            elif i == 0:
                resolved.append(batch)
            else:
                label = d.dim_param or "?"
                raise DataError(
                    f"input {vi.name!r} dim {i} is symbolic ({label}); give it with --shape {vi.name}="
                    + ",".join(str(x) for x in resolved + ["N"])
                    + ",..."
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


def feeds_from_npz(path: str | Path, specs: list[InputSpec]) -> list[dict[str, np.ndarray]]:
    """Real samples from ``--inputs FILE.npz``: one array per input name, either one sample of the
    input's shape or a stack of samples along a new leading axis. Returns one feed dict per sample."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz ({first_line(exc)})") from None
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise DataError(f"{path}: no array for input(s) {missing}; it holds {sorted(arrays)}")
    stacks: dict[str, np.ndarray] = {}
    for spec in specs:
        arr = arrays[spec.name]
        if tuple(arr.shape) == spec.shape:
            arr = arr[None]
        elif tuple(arr.shape[1:]) != spec.shape:
            raise DataError(f"{path}: array {spec.name!r} has shape {arr.shape}, the input needs {spec.shape} or (N,)+{spec.shape}")
        if arr.dtype != spec.dtype:
            if np.can_cast(arr.dtype, spec.dtype, casting="same_kind"):
                arr = arr.astype(spec.dtype)
            else:
                raise DataError(f"{path}: array {spec.name!r} is {arr.dtype}, the input needs {spec.dtype}")
        stacks[spec.name] = arr
    counts = {len(a) for a in stacks.values()}
    if len(counts) != 1 or 0 in counts:
        raise DataError(f"{path}: inputs hold different or zero sample counts {sorted(counts)}")
    n = counts.pop()
    return [{name: np.ascontiguousarray(a[i]) for name, a in stacks.items()} for i in range(n)]
