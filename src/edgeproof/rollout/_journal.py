"""The rollout's append-only journal: one JSON object a line, fsync'd before the controller acts on it.

Every entry carries an ``id``; appending an id the journal already holds does nothing, so replaying a step
after a crash cannot record a transition twice. A torn last line (a crash mid-write) is ignored on read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgeproof.errors import DataError

JOURNAL_NAME = "journal.jsonl"


class Journal:
    """The journal file in ``folder``; ``entries`` are what it held when opened plus what was appended since."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / JOURNAL_NAME
        self.entries: list[dict[str, Any]] = []
        self.ids: set[str] = set()
        if self.path.exists():
            lines = self.path.read_bytes().split(b"\n")
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    if n == len(lines):  # torn final write: it never happened
                        break
                    raise DataError(f"{self.path}:{n}: not a JSON journal entry") from None
                if not isinstance(entry, dict) or "id" not in entry or "kind" not in entry:
                    raise DataError(f"{self.path}:{n}: journal entry without id and kind")
                self.entries.append(entry)
                self.ids.add(entry["id"])

    def append(self, entry: dict[str, Any]) -> bool:
        """Write ``entry`` durably unless its id is already journalled; True when it was written."""
        if entry["id"] in self.ids:
            return False
        self.folder.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.entries.append(entry)
        self.ids.add(entry["id"])
        return True

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["kind"] in kinds]
