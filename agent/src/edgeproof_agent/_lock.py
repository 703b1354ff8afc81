"""One job measures a board at a time: an exclusive flock on a file in the agent's state dir."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import IO, Any

from edgeproof_agent._fault import Fault

_POLL_S = 0.2


class BoardLock:
    """Held by the connection that measures, from its first profile until it says bye or goes away."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "board.lock"
        self.holder_path = state_dir / "board.holder.json"
        self._fh: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def busy(self) -> dict[str, Any] | None:
        """Who holds the board when another connection does; None when free or held by this one."""
        if self._fh is not None:
            return None
        with self.path.open("a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    return json.loads(self.holder_path.read_text())
                except (OSError, ValueError):
                    return {"pid": None, "since": None, "job": "unknown"}
            fcntl.flock(fh, fcntl.LOCK_UN)
        return None

    def acquire(self, job: str, wait_s: float) -> None:
        """Take the board, waiting up to ``wait_s`` for the job that has it; a fault if it stays busy."""
        if self._fh is not None:
            return
        fh = self.path.open("a")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.close()
                    holder = self.busy() or {}
                    raise Fault(
                        "busy",
                        f"the board is measuring another job ({holder.get('job')}, pid {holder.get('pid')}, since {holder.get('since')})",
                    ) from None
                time.sleep(_POLL_S)
        self._fh = fh
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.holder_path.write_text(json.dumps({"pid": os.getpid(), "since": since, "job": job}))

    def release(self) -> None:
        if self._fh is None:
            return
        self.holder_path.unlink(missing_ok=True)
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
        self._fh = None
