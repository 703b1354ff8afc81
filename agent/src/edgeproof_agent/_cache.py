"""The board's model cache: blobs by sha256, received in chunks, size-capped, hash-checked, within a disk budget.

A blob is written to ``<sha>.part`` and renamed to ``<sha>.blob`` only once its bytes match its hash,
so an interrupted or bad upload never leaves a usable half-file; the least recently used blobs make
room for a new one, never the blobs the job in progress has put or used (a model and its external
data files are measured together, so one must not evict the other).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from edgeproof_agent._fault import Fault

CHUNK_BYTES = 2**20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelCache:
    """Content-addressed blobs (models and their input arrays) under ``root``."""

    def __init__(self, root: Path, budget_bytes: int, max_model_bytes: int) -> None:
        self.root = root
        self.budget_bytes = budget_bytes
        self.max_model_bytes = max_model_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._pending: dict[str, Any] = {}  # sha → (size, hasher) of uploads in progress
        self._pinned: set[str] = set()  # blobs the job in progress put or used: not evicted until it ends

    def blob(self, sha256: str) -> Path:
        """The stored blob (its use time refreshed), or a fault when it was never put."""
        path = self.root / f"{_checked_sha(sha256)}.blob"
        if not path.exists():
            raise Fault("unknown-model", f"no blob {sha256[:12]} in the cache; put-model it first")
        os.utime(path)
        self._pinned.add(sha256)
        return path

    def unpin(self) -> None:
        """The job ended: its blobs may make room for the next one's."""
        self._pinned.clear()

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("*.blob"))

    def usage(self) -> dict[str, Any]:
        return {
            "dir": str(self.root),
            "used_bytes": self.used_bytes(),
            "budget_bytes": self.budget_bytes,
            "max_model_bytes": self.max_model_bytes,
        }

    def put(self, sha256: str, size: int, offset: int | None, data: bytes | None) -> dict[str, Any]:
        """One put-model step: without data, say whether the blob is here (and make room for it);
        with data, append it at ``offset``; the last chunk checks the hash and stores the blob."""
        sha256 = _checked_sha(sha256)
        final = self.root / f"{sha256}.blob"
        self._pinned.add(sha256)
        if final.exists():
            os.utime(final)
            return {"have": True, "received": size}
        if not isinstance(size, int) or size <= 0:
            raise Fault("bad-request", f"size must be a positive byte count, got {size!r}")
        if size > self.max_model_bytes:
            raise Fault("too-large", f"{size} bytes is over this agent's cap of {self.max_model_bytes} bytes (--max-model-mib)")
        part = self.root / f"{sha256}.part"
        if data is None:
            self._make_room(size)
            part.write_bytes(b"")
            self._pending[sha256] = (size, hashlib.sha256())
            return {"have": False, "received": 0, "chunk_bytes": CHUNK_BYTES}
        if sha256 not in self._pending:
            raise Fault("bad-request", f"no upload of {sha256[:12]} in progress; start it with put-model without data")
        expected, hasher = self._pending[sha256]
        have = part.stat().st_size
        if expected != size or offset != have or have + len(data) > size:
            self.discard(sha256)
            raise Fault(
                "bad-request", f"chunk at offset {offset} of {len(data)} bytes does not continue the {have} of {expected} bytes received"
            )
        with part.open("ab") as fh:
            fh.write(data)
        hasher.update(data)
        received = have + len(data)
        if received < size:
            return {"have": False, "received": received}
        del self._pending[sha256]
        if hasher.hexdigest() != sha256:
            part.unlink()
            raise Fault(
                "hash-mismatch", f"the {size} bytes received hash to {hasher.hexdigest()[:12]}, not {sha256[:12]}; nothing was stored"
            )
        part.replace(final)
        return {"have": True, "received": received}

    def discard(self, sha256: str) -> None:
        self._pending.pop(sha256, None)
        (self.root / f"{sha256}.part").unlink(missing_ok=True)

    def discard_partials(self) -> None:
        """Drop every unfinished upload (at the end of a connection, and at start for a crashed one)."""
        for part in self.root.glob("*.part"):
            self.discard(part.stem)

    def _make_room(self, size: int) -> None:
        if size > self.budget_bytes:
            raise Fault("too-large", f"{size} bytes is over the cache's disk budget of {self.budget_bytes} bytes (--cache-mib)")
        blobs = sorted(self.root.glob("*.blob"), key=lambda p: p.stat().st_mtime)
        used = sum(p.stat().st_size for p in blobs)
        for oldest in [p for p in blobs if p.stem not in self._pinned]:
            if used + size <= self.budget_bytes:
                break
            used -= oldest.stat().st_size
            oldest.unlink()
        if used + size > self.budget_bytes:
            raise Fault(
                "too-large",
                f"{size} bytes do not fit the cache's disk budget of {self.budget_bytes} bytes beside the {used} bytes "
                "this job already holds (a model and its data files must fit together; --cache-mib)",
            )


def _checked_sha(sha256: object) -> str:
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise Fault("bad-request", f"sha256 must be 64 lowercase hex digits, got {str(sha256)[:80]!r}")
    return sha256
