"""The SSH link: asyncssh on a private event loop, honouring ``~/.ssh/config`` (host aliases, users,
keys, known hosts, jump hosts), running the agent command as the remote process."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from concurrent.futures import Future
from typing import Any

from edgeproof.agent._errors import AgentError
from edgeproof.agent._link import _CHUNK, MAX_LINE_BYTES, Link
from edgeproof.errors import first_line

_CONNECT_TIMEOUT_S = 20.0


class SshLink(Link):
    """``ssh [user@]host [-p port] <command>`` through asyncssh; what the config says fills in the rest."""

    def __init__(
        self,
        host: str,
        port: int | None,
        user: str | None,
        command: str,
        label: str,
        max_line_bytes: int = MAX_LINE_BYTES,
        keyfile: str | None = None,
        password: str | None = None,
    ) -> None:
        super().__init__(label, max_line_bytes)
        import asyncssh

        self._asyncssh = asyncssh
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"agent-ssh:{label}", daemon=True)
        self._thread.start()
        self._stderr: deque[str] = deque(maxlen=20)
        try:
            self._conn, self._process = self._call(self._open(host, port, user, command, keyfile, password), _CONNECT_TIMEOUT_S + 5)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            self._stop_loop()
            why = first_line(exc) or type(exc).__name__
            raise AgentError(f"{label}: cannot reach the board over SSH ({why}); check the host, `ssh {host}` and ~/.ssh/config") from None

    def _call(self, coroutine: Any, timeout_s: float | None = None) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout_s)

    async def _open(
        self, host: str, port: int | None, user: str | None, command: str, keyfile: str | None, password: str | None
    ) -> tuple[Any, Any]:
        options: dict[str, Any] = {"connect_timeout": _CONNECT_TIMEOUT_S}
        if keyfile is not None:
            options["client_keys"] = [keyfile]
        if password is not None:
            options["password"] = password
        if port is not None:
            options["port"] = port
        if user is not None:
            options["username"] = user
        conn = await self._asyncssh.connect(host, **options)
        process = await conn.create_process(command, encoding=None)
        self._loop.create_task(self._drain_stderr(process))
        return conn, process

    async def _drain_stderr(self, process: Any) -> None:
        async for raw in process.stderr:
            self._stderr.append(raw.decode(errors="replace").rstrip())

    def _read_chunk(self) -> bytes:
        try:
            data: bytes = self._call(self._process.stdout.read(_CHUNK))
        except (self._asyncssh.Error, RuntimeError) as exc:
            raise OSError(first_line(exc)) from None
        return data

    def _write(self, data: bytes) -> None:
        async def write() -> None:
            if self._process.stdin.is_closing():
                raise EOFError("the SSH channel is closed")
            self._process.stdin.write(data)
            await self._process.stdin.drain()

        try:
            self._call(write(), 60)
        except (self._asyncssh.Error, ConnectionError) as exc:
            raise OSError(first_line(exc)) from None

    def _exit_reason(self) -> str:
        status, signal = self._process.exit_status, self._process.exit_signal
        tail = [line for line in self._stderr if line.strip()]
        said = f": {tail[-1]}" if tail else ""
        if signal:
            return f"the agent was killed by {signal[0]} on the board{said}"
        if status is None or status == -1:
            return f"the SSH connection was lost{said}"
        return f"the agent exited with status {status}{said}"

    def _close(self) -> None:
        async def close() -> None:
            if not self._process.stdin.is_closing():
                self._process.stdin.write_eof()
            try:
                await asyncio.wait_for(self._process.wait_closed(), 10)
            except TimeoutError:
                pass
            self._conn.close()
            await self._conn.wait_closed()

        try:
            self._call(close(), 20)
        except Exception:  # the link is going away; a failure to close it politely changes nothing
            pass
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
