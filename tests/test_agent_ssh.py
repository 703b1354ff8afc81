"""The SSH transport for real: an asyncssh server on loopback (throwaway keys) runs the agent as its
command, and the lab side finds the board through ``~/.ssh/config`` as a user's ssh would."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import threading
from pathlib import Path

import asyncssh
import pytest

from conftest import DIGITS_MODEL, run_cli
from test_agent import write_contract

AGENT_SRC = str(Path(__file__).resolve().parents[1] / "agent" / "src")


class LoopbackBoard:
    """An SSH server on 127.0.0.1 whose only command is ``edgeproof-agent``, served from this checkout."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.commands: list[str] = []
        authorized = asyncssh.import_authorized_keys(self.client_key.export_public_key().decode())

        async def listen() -> asyncssh.SSHAcceptor:
            return await asyncssh.create_server(
                asyncssh.SSHServer,
                "127.0.0.1",
                0,
                server_host_keys=[self.host_key],
                authorized_client_keys=authorized,
                process_factory=self._agent,
            )

        self.server = asyncio.run_coroutine_threadsafe(listen(), self.loop).result(30)
        self.port = self.server.get_port()

    async def _agent(self, process: asyncssh.SSHServerProcess) -> None:
        command = process.command or ""
        self.commands.append(command)
        argv = shlex.split(command)
        if not argv or argv[0] != "edgeproof-agent":
            process.stderr.write(f"{argv[0] if argv else 'a shell'}: not allowed on this board\n")
            process.exit(126)
            return
        env = {**os.environ, "PYTHONPATH": AGENT_SRC}
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edgeproof_agent", *argv[1:], "--state-dir", str(self.root / "board-state"),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        await process.redirect(stdin=child.stdin, stdout=child.stdout, stderr=child.stderr)
        process.exit(await child.wait())

    def write_user_ssh_config(self, home: Path, alias: str) -> None:
        """The user's ~/.ssh: a host alias, their key, and the board's host key as known."""
        ssh = home / ".ssh"
        ssh.mkdir(parents=True, exist_ok=True)
        self.client_key.write_private_key(str(ssh / "id_ed25519"))
        (ssh / "id_ed25519").chmod(0o600)
        host_pub = self.host_key.export_public_key().decode().strip()
        (ssh / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub}\n")
        (ssh / "config").write_text(f"Host {alias}\n  HostName 127.0.0.1\n  Port {self.port}\n  User tester\n")

    def close(self) -> None:
        self.server.close()
        asyncio.run_coroutine_threadsafe(self.server.wait_closed(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def board(tmp_path):
    board = LoopbackBoard(tmp_path)
    yield board
    board.close()


def test_check_over_ssh_finds_the_board_through_the_users_ssh_config(board, tmp_path):
    home = tmp_path / "home"
    board.write_user_ssh_config(home, "board-a")
    boards = tmp_path / "boards.toml"
    boards.write_text('[devices.board-a]\nchip_revision = "c1"\ntransport = "ssh://board-a"\n')
    out = tmp_path / "run.json"
    done = run_cli(
        "check", str(DIGITS_MODEL), "--contract", str(write_contract(tmp_path)), "--target", "device:board-a",
        "--sessions", "1", "--samples", "40", "--time-budget", "5", "--json", str(out),
        env={"HOME": str(home), "EDGEPROOF_BOARDS": str(boards), "EDGEPROOF_HOME": str(tmp_path / "edgeproof")},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert board.commands == ["edgeproof-agent --device-id board-a"]
    verdict = json.loads(out.with_suffix(".verdict.json").read_text())
    assert verdict["outcome"] == "pass" and verdict["target"] == "device:board-a"
    assert next(c for c in verdict["clauses"] if c["clause"] == "budgets.p95_ms")["provenance"] == "measured:agent:board-a"
    record = json.loads(out.read_text())
    assert record["env"]["extra"]["chip_revision"] == "c1" and record["env"]["extra"]["transport"] == "ssh://board-a"


def test_an_unknown_host_key_is_refused(board, tmp_path, monkeypatch):
    from edgeproof.agent import AgentError
    from edgeproof.farm.inventory import Device
    from edgeproof.runners.agent import AgentRunner

    home = tmp_path / "home"
    board.write_user_ssh_config(home, "board-a")
    (home / ".ssh" / "known_hosts").write_text("")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(AgentError, match="cannot reach the board over SSH"):
        AgentRunner(Device(id="board-a", transport="ssh://board-a")).open()
    assert board.commands == []
