"""JSON-lines framing: one object per line, each line capped, every reply naming the request it answers."""

from __future__ import annotations

import json
from typing import Any, BinaryIO

# A model chunk is 1 MiB before base64; node-level profiles of large models stay well under this.
MAX_LINE_BYTES = 16 * 2**20


class WireError(Exception):
    """A line that is not one JSON object within the cap; ``code`` names the kind for the reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def read_message(stream: BinaryIO, max_line_bytes: int = MAX_LINE_BYTES) -> dict[str, Any] | None:
    """The next message, None at end of input. An oversized line is read to its end and refused
    (the stream stays in step), so one bad line costs one error reply, not the connection."""
    line = stream.readline(max_line_bytes + 1)
    if not line:
        return None
    if len(line) > max_line_bytes and not line.endswith(b"\n"):
        while True:
            rest = stream.readline(2**20)
            if not rest or rest.endswith(b"\n"):
                break
        raise WireError("line-too-long", f"a line over {max_line_bytes} bytes was refused")
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError("bad-json", f"a line is not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise WireError("bad-json", "a line is JSON but not an object")
    return message


def write_message(stream: BinaryIO, message: dict[str, Any]) -> None:
    stream.write(json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n")
    stream.flush()
