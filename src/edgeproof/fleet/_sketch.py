"""DDSketch protobufs without a Python object per window: write one from bin counts, read quantiles of many at once.

A window's latency sketch travels as the ``ddsketch`` protobuf (``DDSketchProto``). Decoding one with the
library costs ~250 µs, so ingest reads the quantile of a whole column with numpy instead: the bytes the
library writes for a positive-only sketch have a fixed layout (mapping, then the contiguous positive bins
and their key offset), parsed here for every row at once. A row in any other layout (negative values, a
zero count, sparse bins) is decoded by the library, so every sketch gets its exact quantile either way.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgeproof.telemetry._aggregate import RELATIVE_ACCURACY, sketch_from_bytes

GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = float(np.log(GAMMA))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def keys_of(values: np.ndarray) -> np.ndarray:
    """The sketch key of each positive value (the library's logarithmic mapping, offset 0)."""
    return np.ceil(np.log(values) / _LOG_GAMMA).astype(np.int64)


def value_of(keys: np.ndarray) -> np.ndarray:
    """The value a key stands for (the library's ``mapping.value``)."""
    return np.power(GAMMA, keys.astype(np.float64)) * (2.0 / (1.0 + GAMMA))


def encode_bins(counts: np.ndarray, first_key: int) -> bytes:
    """The protobuf of a sketch whose positive bins hold ``counts`` from key ``first_key`` on (nothing at or below zero)."""
    bins = np.ascontiguousarray(counts, dtype="<f8").tobytes()
    inner = b"\x12" + _varint(len(bins)) + bins
    if first_key:
        inner += b"\x18" + _varint((first_key << 1) ^ (first_key >> 63) if first_key < 0 else first_key << 1)
    return b"\x0a\x09\x09" + struct.pack("<d", GAMMA) + b"\x12" + _varint(len(inner)) + inner


def _read_varints(data: np.ndarray, pos: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value, position after it) of the varint at ``pos`` in every row where ``ok``; up to 5 bytes."""
    value = np.zeros(pos.size, dtype=np.int64)
    done = ~ok
    after = pos.copy()
    for i in range(5):
        at = np.minimum(pos + i, data.size - 1)
        byte = data[at].astype(np.int64)
        live = ~done
        value[live] |= (byte[live] & 0x7F) << (7 * i)
        ends = live & (byte < 0x80)
        after[ends] = pos[ends] + i + 1
        done |= ends
    ok &= done
    return value, after


def quantiles(sketches: pa.Array | pa.ChunkedArray, q: float, rows: np.ndarray | None = None) -> np.ndarray:
    """The ``q`` quantile (0..1) of each serialized sketch in a binary column (of its ``rows``); NaN where empty or null.

    ``rows`` reads some sketches where they lie, without copying them out of the column first.
    """
    return quantiles_of(sketches, (q,), rows)[0]


def quantiles_of(sketches: pa.Array | pa.ChunkedArray, qs: Sequence[float], rows: np.ndarray | None = None) -> np.ndarray:
    """Several quantiles of each sketch, one row of the result per ``qs``: the bytes are parsed once for all of them."""
    if isinstance(sketches, pa.ChunkedArray):
        if rows is not None:
            sketches = sketches.combine_chunks()
        else:
            parts = [quantiles_of(chunk, qs) for chunk in sketches.chunks]
            return np.concatenate(parts, axis=1) if parts else np.zeros((len(qs), 0))
    arr = sketches.cast(pa.large_binary())
    at = np.arange(len(arr)) if rows is None else np.asarray(rows, dtype=np.int64)
    n = at.size
    out = np.full((len(qs), n), np.nan)
    if n == 0:
        return out
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    buf = arr.buffers()[2]
    data = np.frombuffer(buf, dtype=np.uint8) if buf is not None else np.zeros(0, np.uint8)
    start, end = offsets[at], offsets[at + 1]
    valid = np.asarray(arr.is_valid())[at] if arr.null_count else np.ones(n, bool)
    ok = valid & (end - start >= 14)
    if data.size < 16:
        ok[:] = False
    pad = np.concatenate([data, np.zeros(16, np.uint8)])
    head_ok = (pad[np.minimum(start, data.size)] == 0x0A) & (pad[np.minimum(start + 1, data.size)] == 0x09)
    head_ok &= pad[np.minimum(start + 2, data.size)] == 0x09
    ok &= head_ok
    if ok.any():
        gamma_bytes = pad[(start[:, None] + 3 + np.arange(8)).clip(0, data.size)]
        gamma = gamma_bytes.copy().view("<f8").ravel()
        ok &= np.abs(gamma - GAMMA) < 1e-12
    pos = start + 11
    ok &= pad[np.minimum(pos, data.size)] == 0x12
    store_len, p2 = _read_varints(pad, pos + 1, ok)
    store_end = p2 + store_len
    ok &= pad[np.minimum(p2, data.size)] == 0x12
    bins_len, ds = _read_varints(pad, p2 + 1, ok)
    ok &= (bins_len % 8 == 0) & (ds + bins_len <= store_end)
    off_at = ds + bins_len
    has_off = ok & (off_at < store_end)
    ok &= ~has_off | (pad[np.minimum(off_at, data.size)] == 0x18)
    zz, off_end = _read_varints(pad, off_at + 1, has_off & ok)
    ok &= ~has_off | (off_end == store_end)
    first_key = np.where(has_off, (zz >> 1) ^ -(zz & 1), 0)
    # after the positive store only an empty negative store (1a 00) may follow
    tail = end - store_end
    empty_neg = (tail == 2) & (pad[np.minimum(store_end, data.size)] == 0x1A) & (pad[np.minimum(store_end + 1, data.size)] == 0)
    ok &= (tail == 0) | empty_neg
    parsed = np.flatnonzero(ok)
    if parsed.size:
        nbins = bins_len[parsed] // 8
        rel = ds[parsed] - start[parsed]
        # Rows written by the same library share the bins' place and count (128-bin chunks): slice each such
        # group out in one Arrow call and read it as a matrix of doubles.
        group_key = (rel << 32) | nbins
        order = np.argsort(group_key, kind="stable")
        parsed, group_key = parsed[order], group_key[order]
        bounds = np.flatnonzero(np.diff(group_key)) + 1
        for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), group_key.size]):
            place, m = int(group_key[lo]) >> 32, int(group_key[lo]) & 0xFFFFFFFF
            members = parsed[lo:hi]
            if m == 0:
                continue
            taken = arr if rows is None and members.size == len(arr) else arr.take(pa.array(at[members]))
            part = pc.binary_slice(taken, place, place + 8 * m)
            counts = np.frombuffer(part.buffers()[2], dtype="<f8", count=members.size * m).reshape(members.size, m)
            cum = np.cumsum(counts, axis=1)
            totals = cum[:, -1]
            for k, q in enumerate(qs):
                index = np.minimum((cum <= (q * (totals - 1))[:, None]).sum(axis=1), m - 1)
                out[k, members] = np.where(totals > 0, value_of(first_key[members] + index), np.nan)
    for i in np.flatnonzero(valid & ~ok):
        try:
            sketch = sketch_from_bytes(arr[int(at[i])].as_py())
        except ValueError:
            continue
        for k, q in enumerate(qs):
            value = sketch.get_quantile_value(q)
            out[k, i] = np.nan if value is None else float(value)
    return out
