"""ONNX model loading and validation, content hash, input resolution and feeds."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from edgeproof.errors import DataError, ModelError, first_line
from edgeproof.records import ModelRef

# ONNX tensor element types we can feed, mapped to numpy.
_NP_DTYPES = {
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


def load_model(path: str | Path) -> onnx.ModelProto:
    """Load and check an ONNX model; any problem becomes one ModelError line naming the file."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: empty file, not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=True)
    except DecodeError:
        raise ModelError(f"{path}: not an ONNX model (protobuf does not parse; truncated or not a model file)") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot be read as ONNX ({first_line(exc)})") from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{path}: not an ONNX model (no graph inside; truncated or not a model file)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"{path}: invalid ONNX model ({first_line(exc)})") from None
    return model


def model_ref(path: str | Path, model: onnx.ModelProto | None = None) -> ModelRef:
    """What a record says of its model file; pass ``model`` when it is already loaded, so the file
    is not parsed a second time for its interface."""
    path = Path(path)
    io = io_signature(model if model is not None else path)
    return ModelRef(path=str(path), name=path.stem, sha256=sha256_file(path), size_bytes=path.stat().st_size, io=io)


def dtype_name(elem_type: int) -> str:
    """An ONNX element type by the name contracts use: numpy's (``float32``, ``bool``), else ONNX's in lower case (``bfloat16``)."""
    np_type = _NP_DTYPES.get(elem_type)
    return np.dtype(np_type).name if np_type is not None else onnx.TensorProto.DataType.Name(elem_type).lower()


def _value_signature(v: onnx.ValueInfoProto) -> list:
    t = v.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    return [v.name, dtype_name(t.elem_type), dims]


def io_signature(model: onnx.ModelProto | str | Path) -> dict[str, list] | None:
    """The model's interface: ``{"inputs": [[name, dtype, dims], ...], "outputs": [...]}``, from a
    loaded model or read from the graph alone (no weights). Variants of one model share it; None when
    the file does not parse."""
    if not isinstance(model, onnx.ModelProto):
        try:
            model = onnx.load(str(model), load_external_data=False)
        except (DecodeError, OSError, ValueError):
            return None
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
            fixed_differ = len(da) != len(db) or any(isinstance(x, int) and isinstance(y, int) and x and y and x != y for x, y in zip(da, db))
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
                    f"input {vi.name!r} dim {i} is symbolic ({label}); give it with --shape {vi.name}=" + ",".join(
                        str(x) for x in resolved + ["N"]
                    )
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
