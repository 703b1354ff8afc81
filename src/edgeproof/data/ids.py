"""Content IDs: a sha256 over array bytes, dtypes, shapes and the recipe that produced them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _frame(h: hashlib._Hash, chunk: bytes) -> None:
    # Length-prefix every chunk so that moving bytes between fields can never give the same digest.
    h.update(len(chunk).to_bytes(8, "little"))
    h.update(chunk)


def content_id(arrays: Sequence[tuple[str, np.ndarray]], recipe: Mapping[str, Any] | None = None) -> str:
    """Hex sha256 of named arrays (name, dtype, shape, C-order bytes) plus a JSON recipe.

    Changing one byte of any array, its dtype, its shape, its name or the recipe changes the ID.
    """
    h = hashlib.sha256()
    for name, array in arrays:
        a = np.ascontiguousarray(array)
        _frame(h, name.encode())
        _frame(h, a.dtype.str.encode())
        _frame(h, json.dumps(list(a.shape)).encode())
        _frame(h, a.tobytes())
    _frame(h, json.dumps(recipe or {}, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def row_digests(x: np.ndarray) -> list[bytes]:
    """One digest per row (first axis), used to find rows shared between two parts of a dataset."""
    flat = np.ascontiguousarray(x).reshape(len(x), -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]
