"""Budget quantities: a bare number in the field's canonical unit, or a "number unit" string converted to it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_MIB = 1024.0 * 1024.0


@dataclass(frozen=True)
class Dimension:
    """A kind of quantity: its canonical unit, the units it accepts (factor to canonical) and its range."""

    name: str
    canonical: str
    factors: dict[str, float]
    allow_zero: bool = False
    upper: float | None = None

    def units(self) -> str:
        return ", ".join(self.factors)


TIME = Dimension("time", "ms", {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6})
MEMORY = Dimension(
    "memory size",
    "MiB",
    {
        "MiB": 1.0,
        "KiB": 1.0 / 1024.0,
        "GiB": 1024.0,
        "B": 1.0 / _MIB,
        "kB": 1e3 / _MIB,
        "MB": 1e6 / _MIB,
        "GB": 1e9 / _MIB,
    },
)
ENERGY = Dimension("energy", "mJ", {"mJ": 1.0, "J": 1000.0, "uJ": 1e-3, "µJ": 1e-3})
POWER = Dimension("power", "W", {"W": 1.0, "mW": 1e-3})
TEMPERATURE = Dimension("temperature", "C", {"C": 1.0, "°C": 1.0, "degC": 1.0})
# "No CPU fallback at all" and "no accuracy drop at all" are meaningful budgets, so zero is allowed there.
FRACTION = Dimension("fraction", "fraction", {"%": 0.01}, allow_zero=True, upper=1.0)
POINTS = Dimension("accuracy drop", "pp", {"pp": 1.0}, allow_zero=True, upper=100.0)
PERCENT = Dimension("percentage", "%", {"%": 1.0})
HOURS = Dimension("duration", "h", {"h": 1.0, "min": 1.0 / 60.0, "d": 24.0})

_QUANTITY = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(\S.*?)?\s*$")


def _type_name(value: object) -> str:
    return {bool: "a boolean", str: "a string", list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def parse_quantity(value: object, dim: Dimension) -> float:
    """Turn a bare number (canonical unit) or a "number unit" string into the canonical unit.

    Raises ValueError with a message fit for the user when the value is not a number, has an
    unknown unit or a unit of another dimension, or lies outside the dimension's range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"wrong type: expected a number in {dim.canonical} or a string like '5 {dim.canonical}', got {_type_name(value)}")
    if isinstance(value, str):
        match = _QUANTITY.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a quantity; write a number or a string like '5 {dim.canonical}'")
        number, unit = float(match.group(1)), match.group(2)
        if unit is None:
            raise ValueError(f"{value!r} has no unit; write a bare number for {dim.canonical} or add a unit ({dim.units()})")
        if unit not in dim.factors:
            other = next((d for d in _ALL if unit in d.factors), None)
            if other is not None:
                raise ValueError(f"{value!r} is a {other.name}, this field needs a {dim.name} ({dim.units()})")
            raise ValueError(f"unknown unit {unit!r} in {value!r}; a {dim.name} takes {dim.units()}")
        canonical = number * dim.factors[unit]
    else:
        canonical = float(value)
    if not math.isfinite(canonical):
        raise ValueError(f"must be a finite number, got {value!r}")
    if canonical < 0 or (canonical == 0 and not dim.allow_zero):
        bound = ">= 0" if dim.allow_zero else "> 0"
        raise ValueError(f"must be {bound}, got {value!r}")
    if dim.upper is not None and canonical > dim.upper:
        unit = " (a fraction; write a percentage as '5 %')" if dim is FRACTION else f" {dim.canonical}"
        raise ValueError(f"must be at most {dim.upper:g}{unit}, got {value!r}")
    return canonical


def to_canonical(value: float, unit: str, dim: Dimension) -> float | None:
    """Convert a recorded value in ``unit`` to the dimension's canonical unit; None when the unit is foreign."""
    if unit == dim.canonical:
        return value
    factor = dim.factors.get(unit)
    return None if factor is None else value * factor


_ALL = (TIME, MEMORY, ENERGY, POWER, TEMPERATURE, POINTS, HOURS)


# Suffix of a field name -> the dimension its value is in; longest suffixes first.
_SUFFIX_DIMENSIONS = (
    ("_mj_per_inference", ENERGY),
    ("_ms", TIME),
    ("_mib", MEMORY),
    ("_w", POWER),
    ("_c", TEMPERATURE),
    ("_frac", FRACTION),
    ("_pp", POINTS),
    ("_pct", PERCENT),
    ("_h", HOURS),
)


def dimension_for(field_name: str) -> Dimension | None:
    """The dimension a field holds, read from its name's unit suffix (``p95_ms`` -> time)."""
    for suffix, dim in _SUFFIX_DIMENSIONS:
        if field_name.endswith(suffix):
            return dim
    return None
