"""Byte links to an agent (a local subprocess, an SSH channel) with one JSON-lines reader for both.

A reader thread splits the agent's output into lines (each capped) and queues the decoded messages,
so a caller can wait with a timeout and learn at once when the agent has gone, and why.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path
from typing import Any

from edgeproof.agent._errors import AgentError, BoardLost

# The agent's own cap (edgeproof_agent/_wire.py): a node profile of a large model fits, a runaway line does not.
MAX_LINE_BYTES = 16 * 2**20
_CHUNK = 2**16


class _Gone:
    """Queued when the agent's output ends: why, as far as the link can tell."""

    def __init__(self, why: str) -> None:
        self.why = why


class Link(ABC):
    """A two-way byte stream to one agent; ``send`` a message, ``receive`` the next one."""

    def __init__(self, label: str, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.label = label
        self.max_line_bytes = max_line_bytes
        self._inbox: queue.Queue[dict[str, Any] | _Gone] = queue.Queue()
        self._gone: str | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> Link:
        self._reader = threading.Thread(target=self._pump, name=f"agent-reader:{self.label}", daemon=True)
        self._reader.start()
        return self

    def _pump(self) -> None:
        buffer = b""
        why = ""
        try:
            while True:
                chunk = self._read_chunk()
                if not chunk:
                    break
                buffer += chunk
                while b"\n" in buffer:
                    line, _, buffer = buffer.partition(b"\n")
                    self._inbox.put(self._decode(line))
                if len(buffer) > self.max_line_bytes:
                    why = f"the agent sent a line over {self.max_line_bytes} bytes; the link was closed"
                    break
        except OSError as exc:
            why = f"reading from the agent failed ({exc.strerror or exc})"
        self._inbox.put(_Gone(why or self._exit_reason()))

    def _decode(self, line: bytes) -> dict[str, Any] | _Gone:
        if len(line) > self.max_line_bytes:
            return _Gone(f"the agent sent a line over {self.max_line_bytes} bytes; the link was closed")
        try:
            message = json.loads(line)
        except ValueError:
            return _Gone(f"the agent sent a line that is not JSON ({line[:80]!r})")
        if not isinstance(message, dict):
            return _Gone(f"the agent sent JSON that is not an object ({line[:80]!r})")
        return message

    def send(self, message: dict[str, Any]) -> None:
        if self._gone is not None:
            raise BoardLost(f"{self.label}: {self._gone}")
        data = json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        if len(data) > self.max_line_bytes:
            raise AgentError(f"{self.label}: a request of {len(data)} bytes is over the {self.max_line_bytes}-byte line cap")
        try:
            self._write(data)
        except (OSError, EOFError) as exc:
            self._gone = f"writing to the agent failed ({getattr(exc, 'strerror', None) or exc or 'closed'}); {self._exit_reason()}"
            raise BoardLost(f"{self.label}: {self._gone}") from None

    def receive(self, timeout_s: float) -> dict[str, Any]:
        """The agent's next message; BoardLost when it has gone or says nothing for ``timeout_s``."""
        if self._gone is not None:
            raise BoardLost(f"{self.label}: {self._gone}")
        try:
            item = self._inbox.get(timeout=timeout_s)
        except queue.Empty:
            self._gone = f"no answer for {timeout_s:g} s"
            raise BoardLost(f"{self.label}: {self._gone}") from None
        if isinstance(item, _Gone):
            self._gone = item.why
            raise BoardLost(f"{self.label}: {item.why}")
        return item

    def close(self) -> None:
        self._gone = self._gone or "closed"
        self._close()
        if self._reader is not None:
            self._reader.join(timeout=5)

    @abstractmethod
    def _read_chunk(self) -> bytes: ...

    @abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def _exit_reason(self) -> str: ...


def agent_pythonpath() -> str | None:
    """``agent/src`` of this checkout, where edgeproof runs from a clone; None when installed."""
    src = Path(__file__).resolve().parents[3] / "agent" / "src"
    return str(src) if (src / "edgeproof_agent" / "__init__.py").exists() else None


class LocalLink(Link):
    """The agent as a subprocess of this one: a board stand-in for tests and for measuring here."""

    def __init__(self, argv: list[str], label: str, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        super().__init__(label, max_line_bytes)
        env = dict(os.environ)
        src = agent_pythonpath()
        if src:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        except OSError as exc:
            raise AgentError(f"{label}: cannot start the agent {argv[0]} ({exc.strerror or exc})") from None
        self._stderr: deque[str] = deque(maxlen=20)
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._stderr.append(raw.decode(errors="replace").rstrip())

    def _read_chunk(self) -> bytes:
        assert self.proc.stdout is not None
        return os.read(self.proc.stdout.fileno(), _CHUNK)

    def _write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def _exit_reason(self) -> str:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "the agent stopped answering"
        tail = [line for line in self._stderr if line.strip()]
        said = f": {tail[-1]}" if tail else ""
        return f"the agent exited with status {code}{said}" if code >= 0 else f"the agent was killed by signal {-code}{said}"

    def _close(self) -> None:
        for stream in (self.proc.stdin,):
            if stream is not None and not stream.closed:
                try:
                    stream.close()
                except OSError:
                    pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def local_agent_argv(device_id: str, state_dir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """How to start the agent here: this interpreter, the checkout's (or the installed) edgeproof_agent."""
    return [sys.executable, "-m", "edgeproof_agent", "--device-id", device_id, "--state-dir", str(state_dir), *extra]
