"""``edgeproof-agent``: serve the verbs on stdin/stdout (what ``ssh board edgeproof-agent`` runs)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from edgeproof_agent import PROTOCOL, __version__
from edgeproof_agent._wire import MAX_LINE_BYTES


def _default_state_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeproof-agent"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeproof-agent", description=__doc__)
    parser.add_argument("--device-id", default=socket.gethostname(), help="the id the lab knows this board by")
    parser.add_argument("--board", default=None, help="the catalog board this is (e.g. raspberry-pi-5), sent in its fingerprint")
    parser.add_argument("--state-dir", type=Path, default=_default_state_dir(), help="model cache, board lock, telemetry probe")
    parser.add_argument("--cache-mib", type=float, default=2048.0, help="disk budget of the model cache")
    parser.add_argument("--max-model-mib", type=float, default=1024.0, help="the largest model put-model accepts")
    parser.add_argument("--max-line-bytes", type=int, default=MAX_LINE_BYTES, help="the longest request line accepted")
    parser.add_argument(
        "--telemetry",
        type=Path,
        default=None,
        metavar="DIR",
        help="write each profile job's latency window and events as edgeproof.telemetry/1 segments into DIR "
        "(needs edgeproof.telemetry installed on the board)",
    )
    parser.add_argument("--version", action="version", version=f"edgeproof-agent {__version__} (protocol {PROTOCOL})")
    args = parser.parse_args(argv)

    from edgeproof_agent._serve import Agent, serve

    # The protocol owns stdout: keep a handle on it, then point fd 1 at stderr so a library that
    # prints (onnxruntime's native logs) cannot corrupt the stream.
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    agent = Agent(args.device_id, args.state_dir, int(args.cache_mib * 2**20), int(args.max_model_mib * 2**20), args.board, args.telemetry)
    return serve(agent, sys.stdin.buffer, protocol_out, args.max_line_bytes)


if __name__ == "__main__":
    sys.exit(main())
