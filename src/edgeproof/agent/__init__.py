"""The lab side of the device agent: links (local subprocess, SSH, a labgrid place), the JSON-lines client, and ``connect``.

The agent itself is the separate distribution ``edgeproof-agent`` (``agent/`` in this repository),
which needs only onnxruntime, numpy and psutil on the board.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from edgeproof.agent._client import PROTOCOL, AgentClient, Hello, SlotReport, UpdateOutcome
from edgeproof.agent._errors import AgentError, BoardLost
from edgeproof.agent._link import MAX_LINE_BYTES, Link, LocalLink, local_agent_argv
from edgeproof.farm.inventory import DEFAULT_AGENT, Device

__all__ = [
    "PROTOCOL",
    "AgentClient",
    "AgentError",
    "BoardLost",
    "Hello",
    "Link",
    "SlotReport",
    "UpdateOutcome",
    "connect",
    "local_state_dir",
    "open_link",
]


def local_state_dir(device: Device) -> Path:
    """Where a local agent keeps its cache and lock: ``$EDGEPROOF_HOME/agents/<id>``."""
    return Path(os.environ.get("EDGEPROOF_HOME", ".edgeproof")) / "agents" / device.id


def open_link(device: Device, max_line_bytes: int = MAX_LINE_BYTES) -> Link:
    """A started link to ``device``'s agent by its transport (``local``, ``ssh://`` or ``labgrid:<place>``)."""
    ssh = device.ssh
    command = f"{device.agent} --device-id {shlex.quote(device.id)}"
    if device.labgrid_place is not None:
        from edgeproof.agent._labgrid import open_place
        from edgeproof.agent._ssh import SshLink

        place = open_place(device.labgrid_place)
        try:
            return SshLink(
                place.host, place.port, place.user, command, device.target_id, max_line_bytes, place.keyfile, place.password
            ).start()
        finally:
            place.close()
    if ssh is None:
        argv = local_agent_argv(device.id, local_state_dir(device), device.extra_args)
        if device.agent != DEFAULT_AGENT:
            # a local agent given by command (a wrapper, another interpreter): the same arguments follow it
            argv = [*shlex.split(device.agent), *argv[3:]]
        return LocalLink(argv, device.target_id, max_line_bytes).start()
    from edgeproof.agent._ssh import SshLink

    host, port, user = ssh
    return SshLink(host, port, user, command, device.target_id, max_line_bytes).start()


def connect(device: Device) -> tuple[AgentClient, Hello]:
    """A client to ``device``'s agent that has said hello (protocol checked); closes the link on failure."""
    link = open_link(device)
    client = AgentClient(link, device.id)
    try:
        return client, client.hello()
    except AgentError:
        link.close()
        raise
