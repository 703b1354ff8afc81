"""``edgeproof-agent``: serve the verbs on stdin/stdout (what ``ssh board edgeproof-agent`` runs).

Two commands for the device's init instead: ``edgeproof-agent boot-check --state DIR`` (at boot, before
the application: count a pending slot's boot, revert it past the limit) and ``edgeproof-agent
mark-reboot --state DIR`` (just before an intended reboot, so that boot is not counted as a crash).
"""

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


def _slot_command(argv: list[str]) -> int:
    """``boot-check`` or ``mark-reboot``: one line on stdout, or one line on stderr and exit 2 for an unreadable state."""
    from edgeproof_agent._slots import BOOT_LIMIT, Slots, SlotStateError

    command = argv[0]
    parser = argparse.ArgumentParser(prog=f"edgeproof-agent {command}")
    parser.add_argument("--state", type=Path, default=_default_state_dir(), metavar="DIR", help="the agent's state dir (its --state-dir)")
    if command == "boot-check":
        parser.add_argument("--limit", type=int, default=BOOT_LIMIT, help="unintended boots a pending slot gets before it is reverted")
    else:
        parser.add_argument("--reason", default="intended reboot", help="why the board reboots, kept with the marker")
    args = parser.parse_args(argv[1:])
    if not args.state.is_dir():
        print(f"edgeproof-agent {command}: {args.state}: no such state dir (the agent's --state-dir)", file=sys.stderr)
        return 2
    slots = Slots(args.state)
    try:
        if command == "mark-reboot":
            slots.load()  # refuse to mark a board whose state cannot be read
            slots.mark_intended_reboot(args.reason)
            print(f"{slots.marker_path}: the next boot is an intended reboot")
            return 0
        if args.limit < 1:
            print(f"edgeproof-agent boot-check: --limit must be at least 1, got {args.limit}", file=sys.stderr)
            return 2
        _state, line = slots.boot_check(args.limit)
    except SlotStateError as exc:
        print(f"edgeproof-agent {command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"edgeproof-agent {command}: {exc.filename or args.state}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("boot-check", "mark-reboot"):
        return _slot_command(argv)
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
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label the fleet selects this board by (cohort, region, chip_revision), sent in hello; repeatable",
    )
    parser.add_argument(
        "--firmware-hook",
        default=None,
        metavar="CMD",
        help="run as `CMD SLOT_DIR IMAGE` when an update sends a firmware image, before the model's health check: it applies "
        "or verifies the image for this board (e.g. a RAUC/Mender install or a U-Boot env switch); a non-zero exit reverts",
    )
    parser.add_argument("--version", action="version", version=f"edgeproof-agent {__version__} (protocol {PROTOCOL})")
    args = parser.parse_args(argv)
    labels: dict[str, str] = {}
    for label in args.label:
        key, eq, value = label.partition("=")
        if not (key and eq and value):
            parser.error(f"--label {label!r}: expected KEY=VALUE, both non-empty")
        labels[key] = value

    from edgeproof_agent._serve import Agent, serve

    # The protocol owns stdout: keep a handle on it, then point fd 1 at stderr so a library that
    # prints (onnxruntime's native logs) cannot corrupt the stream.
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    agent = Agent(
        args.device_id,
        args.state_dir,
        int(args.cache_mib * 2**20),
        int(args.max_model_mib * 2**20),
        args.board,
        args.telemetry,
        labels,
        args.firmware_hook,
    )
    return serve(agent, sys.stdin.buffer, protocol_out, args.max_line_bytes)


if __name__ == "__main__":
    sys.exit(main())
