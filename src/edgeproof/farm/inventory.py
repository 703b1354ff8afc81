"""The board inventory, ``boards.toml``: device id → catalog board, chip revision, power modes, transport.

```toml
[devices.pi5-a]
board = "raspberry-pi-5"            # a catalog board (optional for a stand-in)
chip_revision = "c1"
power_modes = ["default"]
transport = "ssh://pi@10.0.0.7"     # or ssh://host-alias (from ~/.ssh/config), "labgrid:<place>", or "local"
agent = "edgeproof-agent"           # the agent command (default; a local device runs this checkout's agent)
```

``device:local`` is built in: the agent as a subprocess of this machine, needing no inventory.
A ``labgrid:<place>`` device is the target named <place> in labgrid's environment config (``$LG_ENV``):
its NetworkService reaches the agent over SSH and its power driver power-cycles the board.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgeproof.contract._locate import key_lines, line_of
from edgeproof.errors import TargetError, suggest

DEVICE_PREFIX = "device:"
LOCAL_ID = "local"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEFAULT_AGENT = "edgeproof-agent"
LABGRID_PREFIX = "labgrid:"
_FIELDS = {"board", "chip_revision", "power_modes", "transport", "agent"}


@dataclass(frozen=True)
class Device:
    """One board on the shelf (or the built-in local stand-in) and how to reach its agent."""

    id: str
    transport: str = "local"
    board: str | None = None
    chip_revision: str | None = None
    power_modes: tuple[str, ...] = ()
    agent: str = DEFAULT_AGENT
    source: str = "built-in"
    extra_args: tuple[str, ...] = field(default=())

    @property
    def target_id(self) -> str:
        return DEVICE_PREFIX + self.id

    @property
    def ssh(self) -> tuple[str, int | None, str | None] | None:
        """(host, port, user) of an ``ssh://`` transport; None for ``local``."""
        if not self.transport.startswith("ssh://"):
            return None
        parts = urlsplit(self.transport)
        return parts.hostname or "", parts.port, parts.username

    @property
    def labgrid_place(self) -> str | None:
        """The place of a ``labgrid:<place>`` transport; None for the others."""
        return self.transport.removeprefix(LABGRID_PREFIX) if self.transport.startswith(LABGRID_PREFIX) else None


LOCAL_DEVICE = Device(id=LOCAL_ID)


def inventory_path(path: str | Path | None = None) -> Path:
    """The inventory in use: ``path``, else ``$EDGEPROOF_BOARDS``, else ``./boards.toml``."""
    return Path(path or os.environ.get("EDGEPROOF_BOARDS") or "boards.toml")


def _problem(path: Path, lines: dict, where: tuple, message: str) -> TargetError:
    line = line_of(lines, where)
    dotted = ".".join(str(p) for p in where)
    return TargetError(f"{path}:{line}: {dotted}: {message}" if line else f"{path}: {dotted}: {message}")


def _transport(value: Any, path: Path, lines: dict, where: tuple) -> str:
    if value == "local":
        return value
    if isinstance(value, str) and value.startswith(LABGRID_PREFIX):
        if not value.removeprefix(LABGRID_PREFIX):
            raise _problem(path, lines, where, "labgrid:<place> needs the place's name")
        return value
    if not isinstance(value, str) or not value.startswith("ssh://"):
        raise _problem(path, lines, where, f"expected 'local', 'ssh://[user@]host[:port]' or 'labgrid:<place>', got {value!r}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (a bad port raises here)
    except ValueError as exc:
        raise _problem(path, lines, where, f"{value!r} is not an ssh:// address ({exc})") from None
    if not parts.hostname or parts.path not in ("", "/"):
        raise _problem(path, lines, where, f"{value!r} is not ssh://[user@]host[:port]")
    return value


def load_inventory(path: str | Path | None = None) -> dict[str, Device]:
    """Every device of an inventory file (none when the default file is absent), plus ``local``."""
    where = inventory_path(path)
    devices = {LOCAL_ID: LOCAL_DEVICE}
    if not where.exists():
        if path is not None or os.environ.get("EDGEPROOF_BOARDS"):
            raise TargetError(f"{where}: no such inventory file")
        return devices
    try:
        text = where.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except OSError as exc:
        raise TargetError(f"{where}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TargetError(f"{where}: not a TOML inventory ({exc})") from None
    lines = key_lines(text)
    unknown = set(raw) - {"devices"}
    if unknown:
        raise _problem(where, lines, (sorted(unknown)[0],), "unknown table; an inventory has [devices.<id>] tables")
    for device_id, entry in (raw.get("devices") or {}).items():
        at = ("devices", device_id)
        if not _ID.match(device_id) or device_id == LOCAL_ID:
            raise _problem(where, lines, at, "a device id is letters, digits, '.', '_' and '-', and 'local' is built in")
        if not isinstance(entry, dict):
            raise _problem(where, lines, at, "expected a table")
        extra = set(entry) - _FIELDS
        if extra:
            name = sorted(extra)[0]
            raise _problem(where, lines, (*at, name), f"unknown field{suggest(name, _FIELDS)}; fields are {', '.join(sorted(_FIELDS))}")
        if "transport" not in entry:
            raise _problem(where, lines, at, "needs transport = 'local', 'ssh://[user@]host[:port]' or 'labgrid:<place>'")
        modes = entry.get("power_modes", [])
        if not isinstance(modes, list) or not all(isinstance(m, str) and m for m in modes):
            raise _problem(where, lines, (*at, "power_modes"), "expected a list of power-mode names")
        for key in ("board", "chip_revision", "agent"):
            if key in entry and not (isinstance(entry[key], str) and entry[key]):
                raise _problem(where, lines, (*at, key), "expected a non-empty string")
        if "board" in entry:
            from edgeproof.targets import get_target

            try:
                board = get_target(entry["board"]).id
            except TargetError as exc:
                raise _problem(where, lines, (*at, "board"), str(exc)) from None
        devices[device_id] = Device(
            id=device_id,
            transport=_transport(entry["transport"], where, lines, (*at, "transport")),
            board=board if "board" in entry else None,
            chip_revision=entry.get("chip_revision"),
            power_modes=tuple(modes),
            agent=entry.get("agent", DEFAULT_AGENT),
            source=str(where),
        )
    return devices


def get_device(target: str, inventory: str | Path | None = None) -> Device:
    """The device a ``device:<id>`` target names; TargetError naming the known ones otherwise."""
    device_id = target.removeprefix(DEVICE_PREFIX)
    devices = load_inventory(inventory)
    if device_id not in devices:
        known = ", ".join(DEVICE_PREFIX + d for d in sorted(devices))
        raise TargetError(
            f"unknown device {target!r}{suggest(device_id, devices)}; known: {known} (inventory: {inventory_path(inventory)})"
        )
    return devices[device_id]


def is_device(target: str) -> bool:
    return target.startswith(DEVICE_PREFIX)
