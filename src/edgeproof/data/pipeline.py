"""Pre- and postprocessing around a model: built-in steps, an ONNX graph or a ``file.py:fn``, hashed.

A contract's ``[pipeline]`` says what the raw sensor data looks like (``raw_layout``, ``raw_range``)
and how it becomes the model's input (``preprocess``) and how the model's outputs become what the
metric judges (``postprocess``). Each stage is a list of steps, or one string naming an ONNX graph
(``pre.onnx``) or a Python function (``pre.py:fn``).

| preprocess step | parameters                                  | does                                        |
|-----------------|---------------------------------------------|---------------------------------------------|
| resize          | size = [H, W]                               | bilinear resample of the spatial axes       |
| crop            | size = [H, W]                               | centre crop                                 |
| pad             | size = [H, W], value                        | pad bottom/right up to the size             |
| scale           | factor, offset                              | x·factor + offset                           |
| normalize       | mean = [...], std = [...]                   | (x − mean) / std per channel                |
| layout          | to = "NCHW" or "NHWC"                       | move the channel axis                       |
| cast            | dtype                                       | change the element type                     |
| onnx            | path                                        | run an ONNX graph (one input, one output)   |
| python          | entry = "file.py:fn"                        | ``fn(batch) -> batch``                      |

| postprocess step | parameters        | does                                                    |
|------------------|-------------------|---------------------------------------------------------|
| softmax          | output, axis      | probabilities over ``axis`` (default last)              |
| argmax           | output, axis      | class index per row                                     |
| topk             | output, k         | the k best class indices per row, best first            |
| onnx / python    | path / entry      | ``fn(outputs: dict) -> dict`` (e.g. NMS on detections)  |

Built-in and ONNX steps run wherever the model runs; a Python step runs only where Python does
(this host), so a board cannot run it (``Pipeline.python_steps``). A simulated board costs each
built-in step from the work it does (``step_work``: bytes read and written, operations per element)
and an ONNX step as a graph (``edgeproof.simulate.pipeline``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from edgeproof.errors import DataError, first_line

PRE_OPS = ("resize", "crop", "pad", "scale", "normalize", "layout", "cast", "onnx", "python")
POST_OPS = ("softmax", "argmax", "topk", "onnx", "python")
LAYOUTS = ("NCHW", "NHWC")
CASTS = ("float32", "float16", "uint8", "int8", "int32", "int64")
# Bumped whenever a built-in step's arithmetic changes, so a pipeline hash made by older code never matches.
PIPELINE_VERSION = 1

Layout = Literal["NCHW", "NHWC"]


class StepSpec(BaseModel):
    """One step as the contract writes it: ``op`` and the parameters that op takes (see the table above)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    op: str
    size: list[int] | None = None
    factor: float | None = None
    offset: float | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    to: str | None = None
    dtype: str | None = None
    value: float | None = None
    output: str | None = None
    axis: int | None = None
    k: int | None = None
    path: str | None = None
    entry: str | None = None

    @model_validator(mode="after")
    def _params(self) -> StepSpec:
        need = {
            "resize": ("size",),
            "crop": ("size",),
            "pad": ("size",),
            "normalize": ("mean", "std"),
            "layout": ("to",),
            "cast": ("dtype",),
            "topk": ("k",),
            "onnx": ("path",),
            "python": ("entry",),
        }.get(self.op, ())
        missing = [p for p in need if getattr(self, p) is None]
        if missing:
            raise ValueError(f"step {self.op!r} needs {', '.join(missing)}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) <= 0):
            raise ValueError(f"step {self.op!r}: size must be [height, width] of positive sizes, got {self.size}")
        if self.to is not None and self.to not in LAYOUTS:
            raise ValueError(f"step {self.op!r}: to must be one of {', '.join(LAYOUTS)}, got {self.to!r}")
        if self.dtype is not None and self.dtype not in CASTS:
            raise ValueError(f"step {self.op!r}: dtype must be one of {', '.join(CASTS)}, got {self.dtype!r}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"step {self.op!r}: every std must be > 0")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError(f"step {self.op!r}: mean has {len(self.mean)} values, std {len(self.std)}")
        if self.k is not None and self.k <= 0:
            raise ValueError(f"step {self.op!r}: k must be > 0")
        if self.entry is not None:
            check_entry(self.entry)
        return self

    def label(self) -> str:
        """Short human form: ``resize(32x32)``, ``python(pre.py:fn)``."""
        if self.op == "python":
            return f"python({self.entry})"
        if self.op == "onnx":
            return f"onnx({self.path})"
        params = {k: v for k, v in self.model_dump(exclude_none=True).items() if k != "op"}
        return f"{self.op}({', '.join(f'{k}={v}' for k, v in params.items())})"


Stage = list[StepSpec] | str


class PipelineSpec(BaseModel):
    """``[pipeline]``: the raw data's layout and value range, and the pre/postprocessing steps."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    raw_layout: str = "NCHW"
    raw_range: list[float] = [0.0, 1.0]
    preprocess: Stage = []
    postprocess: Stage = []

    @model_validator(mode="after")
    def _check(self) -> PipelineSpec:
        if self.raw_layout not in LAYOUTS:
            raise ValueError(f"raw_layout must be one of {', '.join(LAYOUTS)}, got {self.raw_layout!r}")
        if len(self.raw_range) != 2 or not self.raw_range[0] < self.raw_range[1]:
            raise ValueError(f"raw_range must be [black, white] with black < white, got {self.raw_range}")
        for stage, allowed in (("preprocess", PRE_OPS), ("postprocess", POST_OPS)):
            for step in steps_of(getattr(self, stage)):
                if step.op not in allowed:
                    raise ValueError(f"{stage}: unknown step {step.op!r}; known: {', '.join(allowed)}")
        return self

    @property
    def pre_steps(self) -> list[StepSpec]:
        return steps_of(self.preprocess)

    @property
    def post_steps(self) -> list[StepSpec]:
        return steps_of(self.postprocess)


def check_entry(entry: str) -> str:
    """``entry`` must read ``file.py:function``; a ValueError fit for the contract loader otherwise."""
    file, sep, func = entry.rpartition(":")
    if not (sep and file.endswith(".py") and func.isidentifier()):
        raise ValueError(f"{entry!r} must look like 'file.py:function'")
    return entry


def steps_of(stage: Stage) -> list[StepSpec]:
    """A stage as steps: a string is one ONNX graph (``.onnx``) or one Python function (``file.py:fn``)."""
    if isinstance(stage, list):
        return stage
    if stage.endswith(".onnx"):
        return [StepSpec(op="onnx", path=stage)]
    return [StepSpec(op="python", entry=check_entry(stage))]


def load_function(entry: str, base_dir: Path, what: str) -> Callable[..., Any]:
    """Import ``file.py:fn`` (the file relative to ``base_dir``); a DataError line naming ``what`` when it cannot be."""
    file, _, func_name = entry.rpartition(":")
    path = (base_dir / file).resolve()
    if not path.is_file():
        raise DataError(f"{what} {entry!r}: no such file ({path})")
    module_name = "edgeproof_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise DataError(f"{what} {entry!r}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user's module can fail in any way; one line says how
        raise DataError(f"{what} {entry!r}: importing {path.name} failed ({type(exc).__name__}: {first_line(exc)})") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise DataError(f"{what} {entry!r}: {path.name} has no function {func_name!r}")
    return func


def call_user(func: Callable[..., Any], what: str, *args: Any) -> Any:
    """Call a user's function; whatever it raises becomes one DataError line naming it."""
    try:
        return func(*args)
    except Exception as exc:  # the user's code decides what it raises; we name it and stop
        raise DataError(f"{what} raised {type(exc).__name__}: {first_line(exc)}") from None


# --- built-in preprocessing (batches: first axis = rows) -------------------------------------------


def _spatial_axes(layout: str) -> tuple[int, int]:
    return (2, 3) if layout == "NCHW" else (1, 2)


def _channel_axis(layout: str) -> int:
    return 1 if layout == "NCHW" else 3


def _bilinear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower index, upper index and upper weight per output position (half-pixel centres, as in ONNX Resize)."""
    position = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, n_in - 1)
    return lower, upper, (position - lower).astype(np.float32)


def resize(x: np.ndarray, size: list[int], layout: str) -> np.ndarray:
    """Bilinear resample of the spatial axes to ``size`` = [H, W]."""
    out = x.astype(np.float32, copy=False)
    for axis, n_out in zip(_spatial_axes(layout), size, strict=True):
        n_in = out.shape[axis]
        if n_in == n_out:
            continue
        lo, hi, w = _bilinear_weights(n_in, n_out)
        shape = [1] * out.ndim
        shape[axis] = n_out
        w = w.reshape(shape)
        out = np.take(out, lo, axis=axis) * (1.0 - w) + np.take(out, hi, axis=axis) * w
    return out


def crop(x: np.ndarray, size: list[int], layout: str) -> np.ndarray:
    """Centre crop to ``size``; a side already smaller stays as it is."""
    index: list[slice] = [slice(None)] * x.ndim
    for axis, n_out in zip(_spatial_axes(layout), size, strict=True):
        start = max(0, (x.shape[axis] - n_out) // 2)
        index[axis] = slice(start, start + n_out)
    return x[tuple(index)]


def pad(x: np.ndarray, size: list[int], layout: str, value: float) -> np.ndarray:
    """Pad bottom and right up to ``size`` with ``value``; a side already larger stays as it is."""
    widths = [(0, 0)] * x.ndim
    for axis, n_out in zip(_spatial_axes(layout), size, strict=True):
        widths[axis] = (0, max(0, n_out - x.shape[axis]))
    return np.pad(x, widths, constant_values=value)


def normalize(x: np.ndarray, mean: list[float], std: list[float], layout: str) -> np.ndarray:
    """(x − mean) / std along the channel axis."""
    axis = _channel_axis(layout)
    if x.ndim != 4 or x.shape[axis] != len(mean):
        raise DataError(f"normalize: {len(mean)} channel means for a batch of shape {list(x.shape)} ({layout})")
    shape = [1, 1, 1, 1]
    shape[axis] = len(mean)
    m = np.asarray(mean, dtype=np.float32).reshape(shape)
    s = np.asarray(std, dtype=np.float32).reshape(shape)
    return (x.astype(np.float32, copy=False) - m) / s


def to_layout(x: np.ndarray, source: str, target: str) -> np.ndarray:
    """Move the channel axis of a 4-D batch between NHWC and NCHW."""
    if source == target:
        return x
    if x.ndim != 4:
        raise DataError(f"layout: a {source}→{target} change needs a 4-D batch, got shape {list(x.shape)}")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if target == "NCHW" else x.transpose(0, 2, 3, 1))


# --- built-in postprocessing (on named outputs) ----------------------------------------------------


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x.astype(np.float64) - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def topk(x: np.ndarray, k: int) -> np.ndarray:
    """The k highest-scoring class indices per row, best first."""
    flat = x.reshape(len(x), -1)
    return np.argsort(-flat, axis=1, kind="stable")[:, :k]


# --- the work of each built-in step, for a board's cost model ------------------------------------------


@dataclass(frozen=True)
class Traced:
    """One step as it ran once: the arrays it read and wrote (by output name; ``""`` is the
    preprocessing batch) and the layout of the batch it read."""

    step: StepSpec
    read: dict[str, np.ndarray]
    wrote: dict[str, np.ndarray]
    layout: str


@dataclass(frozen=True)
class StepWork:
    """A built-in step's work on one batch, as a single-pass implementation on a board does it: each
    array read and written once (a resize's neighbouring taps share cache lines) and its arithmetic
    operations. ``like`` is the ONNX op that does the same work, whose kernel class a board profile
    rates (``Resize``, ``Transpose``: layout; ``Mul``, ``Softmax``: elementwise); ``basis`` says how
    the operations were counted."""

    label: str
    like: str
    bytes_read: int
    bytes_written: int
    flops: int
    basis: str


# Operations per element of the built-in postprocessing, counted as the graph analysis counts the
# matching ONNX ops: Softmax 5 (max, subtract, exp, sum, divide), ArgMax one compare per input.
_SOFTMAX_FLOPS = 5


def step_work(traced: Traced) -> StepWork | None:
    """The work of a built-in step from what it read and wrote; None for an ONNX or Python step
    (an ONNX step is costed as a graph; a Python step runs only here)."""
    step = traced.step
    if step.op in ("onnx", "python"):
        return None
    label = step.label()
    x = next(iter(traced.read.values()))
    y = next(iter(traced.wrote.values()))
    if y is x or (step.op == "cast" and x.dtype == y.dtype):  # nothing to do: a layout in place, a resize or cast to what it is
        return StepWork(label, "Identity", 0, 0, 0, "nothing to do: the batch is returned as it is")
    read, written = int(x.nbytes), int(y.nbytes)
    if step.op == "resize":
        axes = sum(1 for a in _spatial_axes(traced.layout) if x.shape[a] != y.shape[a])
        taps = 2**axes
        return StepWork(label, "Resize", read, written, 2 * taps * y.size, f"bilinear: {taps} taps per output element, a multiply-add each")
    if step.op == "crop":
        return StepWork(label, "Slice", written, written, 0, "a copy of the kept region")
    if step.op in ("pad", "layout"):
        return StepWork(label, "Pad" if step.op == "pad" else "Transpose", read, written, 0, "a copy, no arithmetic")
    if step.op == "scale":
        ops = [name for name, used in (("multiply", step.factor not in (None, 1.0)), ("add", bool(step.offset))) if used]
        return StepWork(label, "Mul", read, written, len(ops) * y.size, f"{len(ops)} operation(s) per element ({', '.join(ops) or 'none'})")
    if step.op == "normalize":
        return StepWork(label, "Sub", read, written, 2 * y.size, "2 operations per element (subtract the mean, divide by the std)")
    if step.op == "cast":
        return StepWork(label, "Cast", read, written, y.size, "1 conversion per element")
    if step.op == "softmax":
        return StepWork(label, "Softmax", read, written, _SOFTMAX_FLOPS * x.size, f"{_SOFTMAX_FLOPS} operations per element")
    if step.op == "argmax":
        return StepWork(label, "ArgMax", read, written, x.size, "1 compare per input element")
    assert step.op == "topk" and step.k is not None
    per = max(1, math.ceil(math.log2(step.k + 1)))
    return StepWork(label, "TopK", read, written, per * x.size, f"a heap of k={step.k}: {per} compares per input element")


@dataclass
class Pipeline:
    """A loaded pipeline: its spec, where its files live, and what it hashes to (files included)."""

    spec: PipelineSpec
    base_dir: Path
    sha256: str
    _functions: dict[str, Callable[..., Any]] = field(default_factory=dict, repr=False)
    _sessions: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, spec: PipelineSpec, base_dir: str | Path) -> Pipeline:
        """Check every file the spec names exists (importing Python steps) and hash spec and files."""
        base = Path(base_dir)
        functions: dict[str, Callable[..., Any]] = {}
        h = hashlib.sha256(json.dumps({"v": PIPELINE_VERSION, **spec.model_dump()}, sort_keys=True).encode())
        for stage, steps in (("preprocess", spec.pre_steps), ("postprocess", spec.post_steps)):
            for step in steps:
                if step.op == "python":
                    assert step.entry is not None
                    functions[step.entry] = load_function(step.entry, base, f"{stage} step")
                    h.update(_file_bytes(base / step.entry.rpartition(":")[0], f"{stage} step {step.entry!r}"))
                elif step.op == "onnx":
                    assert step.path is not None
                    h.update(_file_bytes(base / step.path, f"{stage} step {step.path!r}"))
        return cls(spec, base, h.hexdigest(), functions)

    @property
    def python_steps(self) -> list[str]:
        """The ``file.py:fn`` steps: they run only where Python runs (this host), never on a board."""
        return [s.entry for s in self.spec.pre_steps + self.spec.post_steps if s.op == "python" and s.entry]

    def recipe(self) -> dict[str, Any]:
        """What a BOM records: the spec as written, the built-in steps' version and the hash."""
        return {"spec": self.spec.model_dump(exclude_none=True), "version": PIPELINE_VERSION, "sha256": self.sha256}

    def describe(self) -> str:
        pre = " → ".join(s.label() for s in self.spec.pre_steps) or "none"
        post = " → ".join(s.label() for s in self.spec.post_steps) or "none"
        return f"pre: {pre}; post: {post}"

    # raw data as images in [0, 1] (what slice transforms act on) and back

    def raw_range_for(self, dtype: np.dtype) -> tuple[float, float]:
        """``raw_range`` as written; when the contract does not write it, integer raw data spans its
        dtype (``uint8``: [0, 255]) and float raw data [0, 1]."""
        if "raw_range" not in self.spec.model_fields_set and np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            return float(info.min), float(info.max)
        lo, hi = self.spec.raw_range
        return lo, hi

    def raw_to_unit(self, raw: np.ndarray) -> np.ndarray:
        """Raw rows as NCHW float images in [0, 1] per ``raw_range_for`` their dtype."""
        lo, hi = self.raw_range_for(raw.dtype)
        return to_layout(((raw.astype(np.float32) - lo) / (hi - lo)), self.spec.raw_layout, "NCHW")

    def unit_to_raw(self, unit: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Inverse of ``raw_to_unit`` for raw data of ``dtype``: integers are rounded and clipped to it."""
        lo, hi = self.raw_range_for(np.dtype(dtype))
        raw = to_layout(unit, "NCHW", self.spec.raw_layout) * (hi - lo) + lo
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            return np.clip(np.rint(raw), info.min, info.max).astype(dtype)
        return raw.astype(dtype)

    # the stages

    def preprocess(self, raw: np.ndarray) -> np.ndarray:
        """Raw rows → the model's input batch."""
        x: Any = raw
        layout = self.spec.raw_layout
        for step in self.spec.pre_steps:
            x, layout = self._pre_step(step, x, layout)
        return np.ascontiguousarray(x)

    def postprocess(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's named outputs → what the metrics judge (a step without ``output`` acts on the first)."""
        out = dict(outputs)
        for step in self.spec.post_steps:
            out = self._post_step(step, out)
        return out

    def trace(self, raw: np.ndarray, outputs: dict[str, np.ndarray]) -> tuple[list[Traced], list[Traced]]:
        """Run each step once, keeping what it read and wrote: the preprocessing of ``raw`` and the
        postprocessing of ``outputs`` (what a board's cost model sizes each step's work from)."""
        pre: list[Traced] = []
        x: Any = raw
        layout = self.spec.raw_layout
        for step in self.spec.pre_steps:
            y, after = self._pre_step(step, x, layout)
            pre.append(Traced(step, {"": np.asarray(x)}, {"": np.asarray(y)}, layout))
            x, layout = y, after
        post: list[Traced] = []
        out = dict(outputs)
        for step in self.spec.post_steps:
            new = self._post_step(step, out)
            changed = {k: v for k, v in new.items() if k not in out or v is not out[k]}
            read = out if step.op in ("onnx", "python") else {k: out[k] for k in changed if k in out}
            post.append(Traced(step, read, changed, layout))
            out = new
        return pre, post

    def _pre_step(self, step: StepSpec, x: Any, layout: str) -> tuple[Any, str]:
        """One preprocessing step on a batch in ``layout``: the new batch and its layout."""
        if step.op == "resize":
            assert step.size is not None
            return resize(x, step.size, layout), layout
        if step.op == "crop":
            assert step.size is not None
            return crop(x, step.size, layout), layout
        if step.op == "pad":
            assert step.size is not None
            return pad(x, step.size, layout, step.value or 0.0), layout
        if step.op == "scale":
            factor, offset = np.float32(1.0 if step.factor is None else step.factor), np.float32(step.offset or 0.0)
            return x.astype(np.float32, copy=False) * factor + offset, layout
        if step.op == "normalize":
            assert step.mean is not None and step.std is not None
            return normalize(x, step.mean, step.std, layout), layout
        if step.op == "layout":
            assert step.to is not None
            return to_layout(x, layout, step.to), step.to
        if step.op == "cast":
            return x.astype(step.dtype), layout
        if step.op == "onnx":
            assert step.path is not None
            return self._onnx(step.path, {"": x})[0], layout
        assert step.entry is not None
        y = call_user(self._functions[step.entry], f"preprocess step {step.entry!r}", x)
        if not isinstance(y, np.ndarray):
            raise DataError(f"preprocess step {step.entry!r} returned {type(y).__name__}, not a numpy array")
        return y, layout

    def _post_step(self, step: StepSpec, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One postprocessing step on the named outputs: the new named outputs."""
        if step.op in ("softmax", "argmax", "topk"):
            name = step.output or next(iter(out))
            if name not in out:
                raise DataError(f"postprocess step {step.op!r}: no output {name!r} (outputs: {', '.join(out)})")
            value = out[name]
            if step.op == "softmax":
                result = softmax(value, -1 if step.axis is None else step.axis)
            elif step.op == "argmax":
                result = value.reshape(len(value), -1).argmax(axis=1) if step.axis is None else value.argmax(axis=step.axis)
            else:
                assert step.k is not None
                result = topk(value, step.k)
            return {**out, name: result}
        if step.op == "onnx":
            assert step.path is not None
            names = self._output_names(step.path)
            return dict(zip(names, self._onnx(step.path, out), strict=True))
        assert step.entry is not None
        result = call_user(self._functions[step.entry], f"postprocess step {step.entry!r}", out)
        if not isinstance(result, dict):
            raise DataError(f"postprocess step {step.entry!r} returned {type(result).__name__}, not a dict of outputs")
        return {str(k): np.asarray(v) for k, v in result.items()}

    def _session(self, path: str) -> Any:
        if path not in self._sessions:
            from edgeproof.measure.session import open_session
            from edgeproof.records import RuntimeSettings

            self._sessions[path] = open_session(self.base_dir / path, RuntimeSettings())
        return self._sessions[path]

    def _output_names(self, path: str) -> list[str]:
        return [o.name for o in self._session(path).get_outputs()]

    def _onnx(self, path: str, values: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run an ONNX step: its inputs by name where the names match, else in order."""
        from edgeproof.measure.session import run_checked

        sess = self._session(path)
        metas = sess.get_inputs()
        ordered = list(values.values())
        feeds = {m.name: values.get(m.name, ordered[i] if i < len(ordered) else None) for i, m in enumerate(metas)}
        missing = [k for k, v in feeds.items() if v is None]
        if missing:
            raise DataError(f"pipeline step onnx({path}): nothing to feed input {missing[0]!r}")
        return [np.asarray(v) for v in run_checked(sess, feeds, f"pipeline step onnx({path})")]


def _file_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what}: no such file ({path})") from None
    except OSError as exc:
        raise DataError(f"{what}: cannot read {path} ({exc.strerror or exc})") from None
