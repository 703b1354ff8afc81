"""The Recipe record: how a model variant is made. A leaf module (pydantic only), so run records can hold it."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

SliceKind = Literal["nominal", "stress", "tail"]
Precision = Literal["fp32", "fp16", "int8-dynamic", "int8-static"]
QuantFormatName = Literal["QDQ", "QOperator"]
Calibrator = Literal["minmax", "entropy", "percentile"]
IntType = Literal["U8", "S8"]
ExclusionReason = Literal["accuracy", "speed", "user"]

PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8-dynamic", "int8-static")
_DEFAULTS: dict[str, dict[str, str]] = {
    "int8-static": {"format": "QDQ", "calibrator": "minmax", "activation_type": "U8", "weight_type": "S8"},
    "int8-dynamic": {"weight_type": "S8"},
}
# Fields the builder fills in from what it actually did; they describe the artifact, not the request.
_OUTCOME_FIELDS = {"steps"}


class ExcludedNode(BaseModel):
    """A node kept in float, and why: accuracy (mixed precision), speed (profiler) or the user."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    reason: ExclusionReason
    note: str = ""


class Recipe(BaseModel):
    """How to make (and how was made) one variant of a model.

    Static INT8 defaults to QDQ, MinMax, U8 activations and S8 weights; dynamic INT8 to S8
    weights. ``source_sha256``, ``calibration_*`` and ``steps`` are filled in by the builder.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    precision: Precision
    format: QuantFormatName | None = None
    per_channel: bool = False
    calibrator: Calibrator | None = None
    activation_type: IntType | None = None
    weight_type: IntType | None = None
    excluded_nodes: tuple[ExcludedNode, ...] = ()
    calibration_kinds: tuple[SliceKind, ...] = ()
    calibration_id: str | None = None
    calibration_rows: int | None = None
    source_sha256: str = ""
    steps: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key, default in _DEFAULTS.get(data.get("precision"), {}).items():
            data[key] = data.get(key) or default
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        static = self.precision == "int8-static"
        if not static:
            for name in ("format", "calibrator", "activation_type"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} applies to int8-static only, not {self.precision}")
            if self.calibration_kinds or self.calibration_id or self.calibration_rows:
                raise ValueError(f"{self.precision} takes no calibration data")
        if self.precision in ("fp32", "fp16") and (self.weight_type is not None or self.per_channel):
            raise ValueError(f"weight_type and per_channel apply to int8 precisions, not {self.precision}")
        if self.precision == "fp32" and self.excluded_nodes:
            raise ValueError("fp32 has nothing to exclude nodes from")
        if static and self.activation_type == "S8" and self.weight_type == "U8":
            raise ValueError("onnxruntime cannot quantize S8 activations with U8 weights")
        names = [n.name for n in self.excluded_nodes]
        if len(set(names)) != len(names):
            raise ValueError("a node is excluded more than once")
        return self

    def with_excluded(self, nodes: list[ExcludedNode]) -> Recipe:
        """This recipe with more nodes kept in float (nodes already excluded keep their reason)."""
        have = {n.name for n in self.excluded_nodes}
        extra = tuple(n for n in nodes if n.name not in have)
        return self.model_copy(update={"excluded_nodes": self.excluded_nodes + extra})

    def request(self) -> dict:
        """The fields that decide the artifact (everything but what the builder reports back)."""
        return self.model_dump(mode="json", exclude=_OUTCOME_FIELDS)

    def cache_key(self) -> str:
        """sha256 over the request: source model, recipe and calibration data ID together."""
        return hashlib.sha256(json.dumps(self.request(), sort_keys=True).encode()).hexdigest()

    def label(self) -> str:
        """Short human name, e.g. ``int8-static/QDQ/per-channel/minmax/U8S8 +2 float``."""
        parts: list[str] = [self.precision]
        if self.precision == "int8-static":
            parts += [str(self.format), "per-channel" if self.per_channel else "per-tensor", str(self.calibrator)]
            parts.append(f"{self.activation_type}{self.weight_type}")
        elif self.precision == "int8-dynamic":
            parts += ["per-channel" if self.per_channel else "per-tensor", f"{self.weight_type} weights"]
        text = "/".join(parts)
        return f"{text} +{len(self.excluded_nodes)} float" if self.excluded_nodes else text
