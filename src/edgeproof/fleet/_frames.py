"""Frames of telemetry segment files as Arrow tables (no Python object per record), and writing them back.

The device's segment format (``edgeproof.telemetry._segments``): ``EPTSEG1\\n`` then frames of
``b"EPFR" | u32 length | u32 crc32 | Arrow IPC stream``. Ingest reads a file from the offset its journal
committed, frame by frame; a frame that does not check out is reported with its file and offset and
skipped (so is a frame whose layout this reader does not know, or a flat frame missing or mistyping a
column); a torn tail (a frame still being written) is left for the next run. The file is memory-mapped
and each frame's table points into the mapping: no copy of the bytes is made (reading a 240 MiB file
into a ``bytes`` object cost more than checking and decoding it), and the mapping lives as long as a
table does.
"""

from __future__ import annotations

import mmap
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from edgeproof.fleet._phases import Phases
from edgeproof.telemetry._segments import (
    _FRAME_HEAD,
    ARROW_SCHEMA,
    FILE_MAGIC,
    FRAME_MAGIC,
    MAX_FRAME_BYTES,
    SUFFIX,
    SegmentProblem,
    _framed,
    frame_problem,
)


@dataclass(frozen=True)
class Frame:
    """One frame that checked out: its table, where it starts in the file and where the next one starts."""

    table: pa.Table
    offset: int
    end: int


# A stretch of a segment file that was skipped is the device reader's SegmentProblem: file, byte offset, what was wrong.
FrameProblem = SegmentProblem


def read_frames(path: Path, start: int = 0, phases: Phases | None = None) -> Iterator[Frame | FrameProblem]:
    """Frames of ``path`` from byte ``start`` (0: the file's beginning); a torn tail ends the scan without a problem.

    ``phases``, when given, gains the time spent checking CRCs (``crc``) and decoding Arrow (``ipc_decode``).
    """
    clock = Phases() if phases is None else phases
    data = _map(path)
    if start <= 0:
        if data[: len(FILE_MAGIC)] != FILE_MAGIC:
            if len(data) >= len(FILE_MAGIC) or not FILE_MAGIC.startswith(data[:]):
                yield SegmentProblem(path, 0, "not an edgeproof telemetry segment (bad file magic)")
            return
        start = len(FILE_MAGIC)
    pos = start
    while len(data) - pos >= _FRAME_HEAD.size:
        magic, length, crc = _FRAME_HEAD.unpack_from(data, pos)
        begin, end = pos + _FRAME_HEAD.size, pos + _FRAME_HEAD.size + length
        if magic != FRAME_MAGIC or length > MAX_FRAME_BYTES:
            following = data.find(FRAME_MAGIC, pos + 1)
            resume = following if following != -1 else len(data)
            yield SegmentProblem(path, pos, f"bad frame head; skipped {resume - pos} bytes to the next frame")
            pos = resume
            continue
        if end > len(data):
            return
        payload = memoryview(data)[begin:end]
        with clock("crc"):
            sound = zlib.crc32(payload) == crc
        if not sound:
            yield SegmentProblem(path, pos, "checksum mismatch; frame skipped")
        else:
            try:
                with clock("ipc_decode"):
                    table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
            except (pa.ArrowInvalid, OSError) as exc:
                yield SegmentProblem(path, pos, f"not an Arrow IPC stream: {exc}; frame skipped")
            else:
                problem = frame_problem(table.schema)
                if problem is not None:
                    yield SegmentProblem(path, pos, f"{problem}; frame skipped")
                else:
                    yield Frame(table, pos, end)
        pos = end


def _map(path: Path) -> mmap.mmap | bytes:
    """The file's bytes, mapped read-only (an empty file: no bytes; a map of nothing is refused)."""
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def encode_table_frame(table: pa.Table) -> bytes:
    """One frame holding ``table`` (rows in the segment schema, either layout), as the device's writer frames records."""
    return _framed(table)


def write_segment(path: Path, tables: list[pa.Table]) -> None:
    """A whole segment file of one frame per table, written under a temporary name, fsync'd and renamed in."""
    staging = path.with_name(path.name + ".tmp")
    with staging.open("wb") as f:
        f.write(FILE_MAGIC)
        for table in tables:
            f.write(encode_table_frame(table))
        f.flush()
        os.fsync(f.fileno())
    staging.rename(path)


__all__ = ["ARROW_SCHEMA", "SUFFIX", "Frame", "FrameProblem", "encode_table_frame", "read_frames", "write_segment"]
