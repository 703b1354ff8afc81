"""Ed25519 keys, and a detached signature over a BOM's canonical bytes and the model file it names.

The signed message binds both digests under a format tag::

    edgeproof.bom-signature/1
    bom-sha256:<hex sha256 of the BOM's canonical bytes>
    model-sha256:<hex sha256 of the model file's bytes>

The signature lives in a detached ``BOM.sig`` JSON file (``bom.json`` -> ``bom.json.sig``), not
inside the BOM: the BOM stays a plain CycloneDX document whose bytes are exactly its canonical
form (see ``canonical_bytes``), so changing any byte of it, or any byte of the model, breaks
verification. The file holds format, algorithm, public_key (raw, base64), key_id, signature
(base64), bom_sha256 and model_sha256 (the signed digests); model_path and signed_at are
informational and not signed: verify re-hashes the model at the path the (signed) BOM records,
or at ``--model``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgeproof.bom._read import BomFacts, facts_of, parse_json
from edgeproof.bom._schema import canonical_bytes
from edgeproof.errors import EdgeproofError, ModelError, RecordError
from edgeproof.model import sha256_file
from edgeproof.records import _Record, read_bytes, validated, write_atomic

SIGNATURE_FORMAT = "edgeproof.bom-signature/1"
PRIVATE_KEY_NAME = "edgeproof-ed25519.pem"
PUBLIC_KEY_NAME = "edgeproof-ed25519.pub.pem"


class BomSignature(_Record):
    """A detached signature file: the signed digests and the key that signed them; the optional fields are not signed."""

    format: str
    algorithm: str
    public_key: str  # raw Ed25519 public key, base64
    signature: str  # base64, over ``signed_message(bom_sha256, model_sha256)``
    bom_sha256: str
    model_sha256: str
    key_id: str | None = None
    model_path: str | None = None
    canonical_form: str | None = None
    signed_at: str | None = None


class KeyFileError(EdgeproofError):
    """A key file is missing, unreadable or not an Ed25519 PEM key."""


@dataclass(frozen=True)
class Verification:
    """The outcome of ``verify_bom``: ``ok`` and one line that says why."""

    ok: bool
    message: str


def signature_path(bom_path: str | Path) -> Path:
    """Where a BOM's detached signature lives: next to it, ``bom.json`` -> ``bom.json.sig``."""
    bom_path = Path(bom_path)
    return bom_path.with_name(bom_path.name + ".sig")


def signed_message(bom_sha256: str, model_sha256: str) -> bytes:
    return f"{SIGNATURE_FORMAT}\nbom-sha256:{bom_sha256}\nmodel-sha256:{model_sha256}\n".encode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    return hashlib.sha256(_raw_public(key)).hexdigest()[:16]


def generate_keypair(key_dir: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair into ``key_dir``: private PEM (mode 0600) and public PEM.

    Existing keys are never overwritten.
    """
    key_dir = Path(key_dir)
    private_path, public_path = key_dir / PRIVATE_KEY_NAME, key_dir / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise KeyFileError(f"{path}: already exists; edgeproof never overwrites a key (choose another folder)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_dir.mkdir(parents=True, exist_ok=True)
    _write_private(private_path, private_pem)
    write_atomic(public_path, public_pem)
    return private_path, public_path


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the first byte (O_EXCL: never through an existing file or link), removed if the write fails.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read ({exc.strerror or exc})") from None


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """An unencrypted Ed25519 private key from a PEM file; anything else is one KeyFileError line."""
    path = Path(path)
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: a {type(key).__name__.lstrip('_')}, not an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; anything else is one KeyFileError line."""
    path = Path(path)
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: a {type(key).__name__.lstrip('_')}, not an Ed25519 public key")
    return key


def _model_sha256(facts: BomFacts, model_path: str | Path | None) -> tuple[Path, str]:
    """Re-hash the model file the BOM names (or ``model_path``); a missing file is unusable input."""
    path = Path(model_path if model_path is not None else facts.model_path)
    if not path.is_file():
        hint = "" if model_path is not None else "; pass --model with its current location"
        raise ModelError(f"{path}: model file named by {facts.path} not found{hint}")
    return path, sha256_file(path)


def sign_bom(bom_path: str | Path, key_path: str | Path, model_path: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Sign ``bom_path`` and the model it names with an Ed25519 key; write and return the ``.sig`` file.

    The BOM must be in canonical form (as ``bom build`` writes it) and the model file must
    still hash to the sha256 the BOM records.
    """
    key = load_private_key(key_path)
    raw, doc = parse_json(bom_path)
    facts = facts_of(bom_path, doc, raw)
    if raw != canonical_bytes(doc):
        raise RecordError(f"{bom_path}: not in canonical form (sorted keys, no whitespace); sign the file `edgeproof bom build` wrote")
    model, model_sha = _model_sha256(facts, model_path)
    if model_sha != facts.model_sha256:
        raise ModelError(f"{model}: sha256 {model_sha[:12]}… is not the model {bom_path} describes ({facts.model_sha256[:12]}…)")
    public = key.public_key()
    record = BomSignature(
        format=SIGNATURE_FORMAT,
        algorithm="Ed25519",
        public_key=base64.b64encode(_raw_public(public)).decode(),
        key_id=key_id(public),
        signature=base64.b64encode(key.sign(signed_message(facts.sha256, model_sha))).decode(),
        bom_sha256=facts.sha256,
        model_sha256=model_sha,
        model_path=str(model.resolve()),
        canonical_form="JSON, keys sorted, separators ',' ':', UTF-8, no trailing newline",
        signed_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    target = Path(out) if out is not None else signature_path(bom_path)
    return write_atomic(target, json.dumps(record.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")


def load_signature(path: str | Path) -> BomSignature:
    """Read a detached signature file; a missing, malformed or foreign one is one RecordError line."""
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: no such signature file (sign the BOM with `edgeproof bom sign`)")
    _, data = parse_json(path)
    if not isinstance(data, dict):
        raise RecordError(f"{path}: expected a JSON object")
    sig = validated(BomSignature, data, str(path))
    if sig.format != SIGNATURE_FORMAT:
        raise RecordError(f"{path}: signature format {sig.format!r}, this edgeproof reads {SIGNATURE_FORMAT!r}")
    if sig.algorithm != "Ed25519":
        raise RecordError(f"{path}: algorithm {sig.algorithm!r}, this edgeproof verifies Ed25519 only")
    return sig


def _b64(path: Path, field: str, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise RecordError(f"{path}: {field} is not base64") from None


def verify_bom(
    bom_path: str | Path, public_key_path: str | Path, model_path: str | Path | None = None, sig_path: str | Path | None = None
) -> Verification:
    """Check a BOM's detached signature with a trusted public key, then every byte of the BOM and the model.

    A mismatch (other key, altered signature, any changed BOM byte — even one that breaks its
    JSON —, changed model byte) is a failed Verification; input that cannot be checked at all
    (missing files, a signature that is not JSON, a malformed key) raises an EdgeproofError.
    """
    bom_path = Path(bom_path)
    public = load_public_key(public_key_path)
    raw = read_bytes(bom_path)  # hashed before it is parsed: a changed byte fails verification, whatever it breaks
    sig_file = Path(sig_path) if sig_path is not None else signature_path(bom_path)
    sig = load_signature(sig_file)
    if _b64(sig_file, "public_key", sig.public_key) != _raw_public(public):
        return Verification(False, f"{sig_file}: signed by another key, not by {public_key_path} (key {key_id(public)})")
    try:
        public.verify(_b64(sig_file, "signature", sig.signature), signed_message(sig.bom_sha256, sig.model_sha256))
    except InvalidSignature:
        return Verification(False, f"{sig_file}: signature does not match its digests: the signature file was altered")
    bom_sha = hashlib.sha256(raw).hexdigest()
    if bom_sha != sig.bom_sha256:
        signed = sig.bom_sha256
        return Verification(False, f"{bom_path}: changed since it was signed (sha256 {bom_sha[:12]}…, signed {signed[:12]}…)")
    _, doc = parse_json(bom_path, raw)
    facts = facts_of(bom_path, doc, raw)
    model, model_sha = _model_sha256(facts, model_path)
    if model_sha != sig.model_sha256:
        signed = sig.model_sha256
        return Verification(False, f"{model}: model changed since it was signed (sha256 {model_sha[:12]}…, signed {signed[:12]}…)")
    unchanged = f"BOM and model {model} (sha256 {model_sha[:12]}…) unchanged"
    return Verification(True, f"{bom_path}: signature OK (key {key_id(public)}); {unchanged}")
