"""What can go wrong talking to a board's agent: bad input (exit 2) or a board lost mid-job (exit 3)."""

from __future__ import annotations

from edgeproof.errors import TargetError
from edgeproof.outcome import EXIT_UNDECIDED


class AgentError(TargetError):
    """The agent cannot be reached or refused a request: an unknown device, an unreachable host, a
    protocol mismatch, a model over the cap or with the wrong hash, a malformed line."""


class BoardLost(AgentError):
    """The link or the agent died while a job was open; nothing was measured, so nothing passes."""

    exit_code = EXIT_UNDECIDED
