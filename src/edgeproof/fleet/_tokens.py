"""Per-device tokens of the fleet receiver: a file of device → sha256 of its token, never the token itself.

A token is 256 random bits (``secrets.token_urlsafe``), so one unsalted SHA-256 is enough to make the
file useless to whoever reads it, and checking a request costs a microsecond instead of a scrypt's tens
of milliseconds. The file is JSON (written here) or TOML (hand-written)::

    {"schema": "edgeproof.fleet-tokens/1", "devices": {"cam-7": "sha256:<64 hex>"}}

    # fleet-tokens.toml
    [devices]
    cam-7 = "sha256:<64 hex>"
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from edgeproof.errors import DataError
from edgeproof.records import write_atomic

TOKENS_SCHEMA = "edgeproof.fleet-tokens/1"
_PREFIX = "sha256:"


def token_hash(token: str) -> str:
    """What the tokens file stores for ``token``."""
    return _PREFIX + hashlib.sha256(token.encode()).hexdigest()


def _parse(path: Path) -> dict[str, str]:
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a tokens file ({exc})") from None
    devices = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(devices, dict):
        raise DataError(f"{path}: a tokens file needs a 'devices' table of device id → token hash")
    for device, digest in devices.items():
        if not isinstance(digest, str) or not digest.startswith(_PREFIX) or len(digest) != len(_PREFIX) + 64:
            raise DataError(f"{path}: devices.{device}: expected 'sha256:' and 64 hex digits (add tokens with `edgeproof fleet token add`)")
    return dict(devices)


@dataclass
class TokenBook:
    """The tokens file as the receiver reads it; re-read when the file changes, so a new device needs no restart."""

    path: Path
    _by_hash: dict[str, str]
    _stamp: tuple[int, int]

    @classmethod
    def load(cls, path: str | Path) -> TokenBook:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"{p}: no tokens file; create one with `edgeproof fleet token add DEVICE --tokens {p}`")
        st = p.stat()
        return cls(p, {digest: device for device, digest in _parse(p).items()}, (st.st_mtime_ns, st.st_size))

    def device_of(self, token: str) -> str | None:
        """The device ``token`` belongs to, or None for a token nobody holds."""
        try:
            st = self.path.stat()
            if (st.st_mtime_ns, st.st_size) != self._stamp:
                self._by_hash = {digest: device for device, digest in _parse(self.path).items()}
                self._stamp = (st.st_mtime_ns, st.st_size)
        except (OSError, DataError):
            pass  # a file being rewritten or broken by hand: keep serving with the tokens read last
        return self._by_hash.get(token_hash(token))

    @property
    def devices(self) -> int:
        return len(self._by_hash)


def add_token(path: str | Path, device_id: str) -> str:
    """A fresh token for ``device_id`` (replacing any it had); only its hash is written. Returns the token, shown once."""
    if not device_id or device_id != device_id.strip():
        raise DataError(f"device id {device_id!r}: must be non-empty without surrounding spaces")
    p = Path(path)
    if p.suffix == ".toml":
        raise DataError(f"{p}: `token add` writes JSON tokens files; name it *.json (TOML files are read, not written)")
    devices = _parse(p) if p.exists() else {}
    token = secrets.token_urlsafe(32)
    devices[device_id] = token_hash(token)
    write_atomic(p, json.dumps({"schema": TOKENS_SCHEMA, "devices": dict(sorted(devices.items()))}, indent=2) + "\n")
    os.chmod(p, 0o600)
    return token


def remove_token(path: str | Path, device_id: str) -> bool:
    """Revoke ``device_id``'s token; False when it had none."""
    p = Path(path)
    devices = _parse(p) if p.exists() else {}
    if devices.pop(device_id, None) is None:
        return False
    write_atomic(p, json.dumps({"schema": TOKENS_SCHEMA, "devices": dict(sorted(devices.items()))}, indent=2) + "\n")
    os.chmod(p, 0o600)
    return True
