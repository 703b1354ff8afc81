"""The lab side of the agent protocol: one request at a time, replies checked, blobs uploaded in chunks."""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeproof.agent._errors import AgentError
from edgeproof.agent._link import Link

# The protocol version this edgeproof speaks (the agent's PROTOCOL): a different one is refused at hello.
PROTOCOL = 1
# How long a verb may stay silent; a profile sends progress between sessions, so this bounds one session.
REPLY_TIMEOUT_S = 900.0
_HELLO_TIMEOUT_S = 60.0
# Raw bytes per put-model chunk (base64 makes it 4/3 of this on the wire, well under the line cap).
CHUNK_BYTES = 2**20


@dataclass(frozen=True)
class UpdateOutcome:
    """How the board's last ``update`` intent ended: committed after its health check, or reverted by the board itself."""

    intent: str
    outcome: str  # committed | reverted
    reason: str | None  # why it was reverted (the failed health check, the boot counter, a newer intent)
    model_sha256: str | None  # the model that intent installed
    slot: str | None

    @property
    def self_reverted(self) -> bool:
        return self.outcome == "reverted"


@dataclass(frozen=True)
class SlotReport:
    """The board's A/B slots as its agent re-reports them: what runs, what each slot holds, how the last update ended.

    ``error`` says why the agent could not read its slot state (then the rest is empty)."""

    active: str | None
    model_sha256: dict[str, str | None]  # slot -> the model it holds
    firmware_version: str | None  # of the active slot
    committed: bool
    pending: str | None
    intent: str | None  # the intent that installed the active slot
    last_update: UpdateOutcome | None
    error: str | None = None
    firmware_sha256: str | None = None  # of the active slot's firmware image; None where it holds a version only

    @property
    def active_model_sha256(self) -> str | None:
        return self.model_sha256.get(self.active) if self.active is not None else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_slots(raw: object) -> SlotReport | None:
    """The ``slots`` object of a hello; None from an agent that has no A/B slots (it does not send one)."""
    if not isinstance(raw, dict):
        return None
    if "error" in raw:
        return SlotReport(None, {}, None, False, None, None, None, error=str(raw["error"]))
    active = _text(raw.get("active"))
    contents = raw.get("contents")
    if isinstance(contents, dict):
        models = {str(k): _text(v.get("model_sha256")) if isinstance(v, dict) else None for k, v in contents.items()}
    else:  # an agent before per-slot contents reported the active slot's model only
        models = {active: _text(raw.get("model_sha256"))} if active is not None else {}
    last = raw.get("last_update")
    last_update = None
    if isinstance(last, dict) and isinstance(last.get("intent"), str):
        last_update = UpdateOutcome(
            intent=last["intent"],
            outcome=str(last.get("outcome")),
            reason=_text(last.get("reason")),
            model_sha256=_text(last.get("model_sha256")),
            slot=_text(last.get("slot")),
        )
    return SlotReport(
        active=active,
        model_sha256=models,
        firmware_version=_text(raw.get("firmware_version")),
        committed=raw.get("committed") is True,
        pending=_text(raw.get("pending")),
        intent=_text(raw.get("intent")),
        last_update=last_update,
        firmware_sha256=_text(raw.get("firmware_sha256")),
    )


@dataclass
class Hello:
    """What the agent said at ``hello``: its protocol, the board's fingerprint, who holds the board, its labels and slots."""

    device_id: str
    protocol: int
    fingerprint: dict[str, Any]
    busy: dict[str, Any] | None
    cache: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)  # what its owner configured (``--label``): cohort, region, …
    slots: SlotReport | None = None  # None: an agent without A/B slots
    # whether it records telemetry (``recording``, ``directory``) or why not (``reason``); empty from an older agent
    telemetry: dict[str, Any] = field(default_factory=dict)

    @property
    def telemetry_off(self) -> str | None:
        """Why the agent records no telemetry (None when it does)."""
        if self.telemetry.get("recording") is True:
            return None
        return str(self.telemetry.get("reason") or "the agent's hello says nothing of telemetry (an agent before it recorded any)")


@dataclass(frozen=True)
class SegmentBytes:
    """Bytes of one telemetry segment file of the board, from ``offset``: whole frames, to append to the lab's copy."""

    name: str
    offset: int
    data: bytes


def _segment_bytes(device_id: str, raw: object) -> SegmentBytes:
    from edgeproof.telemetry._segments import SUFFIX

    if not isinstance(raw, dict):
        raise AgentError(f"device:{device_id}: pull-telemetry sent {str(raw)[:80]!r}, not a segment object")
    name = raw.get("name")
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(SUFFIX) or name.startswith("."):
        raise AgentError(f"device:{device_id}: pull-telemetry named {str(name)[:80]!r}, not a segment file name")
    try:
        data = base64.b64decode(raw["data"], validate=True)
        offset = int(raw["offset"])
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise AgentError(f"device:{device_id}: pull-telemetry sent {name} without base64 data and an offset") from None
    return SegmentBytes(name, offset, data)


class AgentClient:
    """Requests over a started ``Link``; every refusal becomes an ``AgentError`` naming the device."""

    def __init__(self, link: Link, device_id: str) -> None:
        self.link = link
        self.device_id = device_id
        self._ids = itertools.count(1)

    def request(
        self, verb: str, progress: Callable[[str], None] | None = None, timeout_s: float = REPLY_TIMEOUT_S, **args: Any
    ) -> dict[str, Any]:
        request_id = next(self._ids)
        self.link.send({"v": PROTOCOL, "id": request_id, "verb": verb, **args})
        while True:
            reply = self.link.receive(timeout_s)
            if reply.get("id") != request_id and reply.get("id") is not None:
                raise AgentError(f"device:{self.device_id}: the agent answered request {reply.get('id')} while {request_id} was open")
            if "progress" in reply:
                if progress is not None:
                    progress(str(reply["progress"]))
                continue
            if reply.get("ok") is True:
                result = reply.get("result")
                if not isinstance(result, dict):
                    raise AgentError(f"device:{self.device_id}: the agent's reply to {verb} has no result object")
                return result
            error = reply.get("error") or {}
            code, message = error.get("code", "error"), error.get("message", "no message")
            if code == "protocol":
                raise AgentError(
                    f"device:{self.device_id}: protocol mismatch: {message}; install the edgeproof-agent that matches this edgeproof"
                )
            raise AgentError(f"device:{self.device_id}: {verb} refused ({code}): {message}")

    def hello(self) -> Hello:
        result = self.request("hello", timeout_s=_HELLO_TIMEOUT_S, protocol=PROTOCOL)
        protocol = result.get("protocol")
        if protocol != PROTOCOL:
            raise AgentError(
                f"device:{self.device_id}: protocol mismatch: the agent speaks protocol {protocol}, this edgeproof speaks {PROTOCOL}; "
                "install the edgeproof-agent that matches this edgeproof on the board"
            )
        return Hello(
            device_id=str(result.get("device_id", self.device_id)),
            protocol=PROTOCOL,
            fingerprint=dict(result.get("fingerprint") or {}),
            busy=result.get("busy"),
            cache=dict(result.get("cache") or {}),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels := result.get("labels"), dict) else {},
            slots=parse_slots(result.get("slots")),
            telemetry=dict(telemetry) if isinstance(telemetry := result.get("telemetry"), dict) else {},
        )

    def workload(
        self, labels: dict[str, str], runs: int | None = None, seconds: float | None = None, wait_s: float = 0.0
    ) -> dict[str, Any]:
        """Have the board run its active slot's model ``runs`` times or for ``seconds`` and record a telemetry window
        labelled ``labels`` (over its own; model and firmware come from the slot); returns what it ran and measured."""
        return self.request("workload", labels=labels, runs=runs, seconds=seconds, wait_s=wait_s)

    def pull_telemetry(self, offsets: dict[str, int]) -> Iterator[SegmentBytes]:
        """The board's telemetry segment bytes past ``offsets`` (file name -> bytes the lab holds), reply after reply
        until it has sent all its finished frames. Each file name is checked to be a plain segment name."""
        offsets = dict(offsets)
        while True:
            result = self.request("pull-telemetry", offsets=offsets)
            for raw in result.get("segments") or []:
                got = _segment_bytes(self.device_id, raw)
                if got.offset != offsets.get(got.name, 0):
                    raise AgentError(
                        f"device:{self.device_id}: sent {got.name} from byte {got.offset}, asked from {offsets.get(got.name, 0)}"
                    )
                offsets[got.name] = got.offset + len(got.data)
                yield got
            if result.get("complete") is not False:
                return

    def put(self, data: bytes, sha256: str | None = None) -> str:
        """Upload bytes (a model, an inputs archive) unless the board has them; returns their sha256.

        ``sha256`` is what the bytes are claimed to be; the agent checks it and stores nothing on a mismatch."""
        sha256 = sha256 or hashlib.sha256(data).hexdigest()
        started = self.request("put-model", sha256=sha256, size=len(data))
        if started.get("have"):
            return sha256
        step = min(CHUNK_BYTES, int(started.get("chunk_bytes") or CHUNK_BYTES))
        for offset in range(0, len(data), step):
            chunk = data[offset : offset + step]
            self.request("put-model", sha256=sha256, size=len(data), offset=offset, data=base64.b64encode(chunk).decode())
        return sha256

    def put_file(self, path: Path, sha256: str | None = None) -> str:
        return self.put(path.read_bytes(), sha256)

    def bye(self) -> None:
        self.request("bye", timeout_s=_HELLO_TIMEOUT_S)
