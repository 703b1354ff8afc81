"""Reading sysfs attributes: numbers that must be there, labels that may not, and natural ordering."""

from __future__ import annotations

import re
from pathlib import Path

from edgeproof.measure.meters._base import MeterError


def read_sysfs_number(path: Path) -> float:
    """Read one number from a sysfs attribute; a missing or garbled file is a MeterError naming it."""
    try:
        text = path.read_text().strip()
    except OSError as err:
        raise MeterError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        return float(text)
    except ValueError:
        raise MeterError(f"{path} holds {text!r}, not a number") from None


def read_sysfs_label(path: Path) -> str | None:
    """Text of a label/name attribute, or None when the file is absent, empty or unreadable."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def numeric_key(path: Path) -> tuple[tuple[int, ...], str]:
    """Sort key putting ``hwmon2`` before ``hwmon10`` and ``intel-rapl:0:1`` after ``intel-rapl:0``."""
    return tuple(int(n) for n in re.findall(r"\d+", path.name)), path.name
