"""Playbooks: each alarm mapped to an owner, a corrective action, runbook text and an automatic action, from TOML.

::

    [[playbook]]
    alarm = "fallback_rate"
    owner = "ml-platform@example.com"
    action = "rollback-stratum"        # halt-rollout | rollback-stratum | page-owner
    corrective = "Roll the stratum back; re-export the model with ops the accelerator supports on this chip revision."
    runbook = "..."

A mistake comes back as ``file:line: playbook[i].key: what is wrong`` (exit 2).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from edgeproof.contract._locate import key_lines, line_of
from edgeproof.errors import DataError, suggest
from edgeproof.fleet._alarms import ALARM_NAMES

ACTIONS = ("halt-rollout", "rollback-stratum", "page-owner")
DEFAULT_PLAYBOOK = Path(__file__).with_name("playbooks.toml")
_KEYS = ("alarm", "owner", "action", "corrective", "runbook")


@dataclass(frozen=True)
class PlaybookStep:
    """What to do when ``alarm`` fires: who owns it, the automatic action, the corrective action and the runbook."""

    alarm: str
    owner: str
    action: str
    corrective: str
    runbook: str


def load_playbook(path: str | Path = DEFAULT_PLAYBOOK) -> dict[str, PlaybookStep]:
    """The playbook steps of ``path`` by alarm name; raises DataError naming the file, line and key."""
    path = Path(path)
    try:
        text = path.read_text()
        doc = tomllib.loads(text)
    except OSError as exc:
        raise DataError(f"{path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{path}: {exc}") from exc
    lines = key_lines(text)

    def fail(where: tuple[str | int, ...], what: str) -> DataError:
        line = line_of(lines, where)
        name = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in where).replace(".[", "[")
        return DataError(f"{path}:{line or '?'}: {name}: {what}")

    for key in doc:
        if key != "playbook":
            raise fail((key,), "unknown table (a playbook file holds [[playbook]] entries)")
    entries = doc.get("playbook", [])
    if not isinstance(entries, list) or not entries:
        raise fail(("playbook",), "no [[playbook]] entries")
    steps: dict[str, PlaybookStep] = {}
    for i, entry in enumerate(entries):
        for key in entry:
            if key not in _KEYS:
                raise fail(("playbook", i, key), f"unknown key{suggest(key, _KEYS)} (known: {', '.join(_KEYS)})")
        for key in _KEYS:
            value = entry.get(key)
            if not isinstance(value, str) or not value.strip():
                raise fail(("playbook", i, key) if key in entry else ("playbook", i), f"{key} must be a non-empty string")
        if entry["alarm"] not in ALARM_NAMES:
            raise fail(
                ("playbook", i, "alarm"),
                f"unknown alarm {entry['alarm']!r}{suggest(entry['alarm'], ALARM_NAMES)} (known: {', '.join(ALARM_NAMES)})",
            )
        if entry["action"] not in ACTIONS:
            raise fail(("playbook", i, "action"), f"{entry['action']!r} is not one of {', '.join(ACTIONS)}")
        if entry["alarm"] in steps:
            raise fail(("playbook", i, "alarm"), f"{entry['alarm']!r} already has a playbook step")
        steps[entry["alarm"]] = PlaybookStep(**{k: entry[k].strip() for k in _KEYS})
    return steps
