"""A/B slots for the board's model and firmware: install into the inactive slot, health-check, commit or revert.

Layout under the agent's state dir::

    slots/a/model.onnx, slots/a/firmware.txt, slots/a/meta.json   (one slot's payload)
    slots/a/firmware.bin                                            (the firmware image, when a release carries one)
    slots/b/...                                                     (the other slot)
    slots/state.json          active / pending slot, boot counter, committed flag, intents seen
    slots/reboot-intended     written before an intended reboot; ``boot-check`` consumes it

Every file is written to a temporary name, fsynced and renamed (and the directory fsynced), so a
power cut leaves either the old or the new file, never half of one. An install switches to the new
slot as *pending*; only a passed health check commits it. A failed check, or a pending slot that does
not come up within ``BOOT_LIMIT`` unintended boots, reverts to the last committed slot and records why.

A firmware image is verified by its sha256 as written; the device's firmware hook (``serve --firmware-hook``) then
applies or verifies it for the board, and its non-zero exit fails the health check like a golden mismatch does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof_agent._fault import Fault

SCHEMA = "edgeproof-agent.slots/1"
SLOTS = ("a", "b")
BOOT_LIMIT = 3
_KEPT_INTENTS = 64  # outcomes remembered so that a repeated intent is answered, not reinstalled
FIRMWARE_IMAGE = "firmware.bin"
FIRMWARE_HOOK_TIMEOUT_S = 600.0  # a board's flash-and-verify can be slow; a hook that hangs past this fails the check


class SlotStateError(Exception):
    """``state.json`` cannot be read as slot state: one line naming the file and what is wrong."""


@dataclass(frozen=True)
class HealthLimits:
    """What a new slot must show before it is committed."""

    p50_limit_ms: float
    atol: float = 1e-4
    rtol: float = 1e-3
    latency_runs: int = 20


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


def _copy_atomic(source: Path, path: Path) -> str:
    """Copy ``source`` to ``path`` durably; the sha256 of the bytes written."""
    tmp = path.with_name(path.name + ".tmp")
    hasher = hashlib.sha256()
    with source.open("rb") as src, tmp.open("wb") as dst:
        for chunk in iter(lambda: src.read(2**20), b""):
            hasher.update(chunk)
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)
    return hasher.hexdigest()


def _fresh_state() -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "active": None,  # the slot the board runs from
        "pending": None,  # the slot switched to but not yet committed (then active == pending)
        "committed": False,  # whether the active slot passed its health check
        "known_good": None,  # the last committed slot: where a revert goes
        "boot_count": 0,  # unintended boots of the pending slot
        "intent": None,  # the intent that installed the active slot
        "intents": {},  # intent id → its outcome, so a repeated intent is not installed twice
        "last_revert": None,
        "last_update": None,  # the last intent that ran to an end: its outcome, reason and model
        "last_boot": None,
    }


_REQUIRED = {"schema": str, "boot_count": int, "intents": dict, "committed": bool}


class Slots:
    """The slot state of one board under ``state_dir / "slots"``."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "slots"
        self.state_path = self.root / "state.json"
        self.marker_path = self.root / "reboot-intended"

    # -- state file -----------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """The state (a fresh one when nothing was ever installed); ``SlotStateError`` when it is unreadable."""
        if not self.state_path.exists():
            return _fresh_state()
        where = str(self.state_path)
        try:
            state = json.loads(self.state_path.read_bytes())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise SlotStateError(f"{where}: not readable slot state ({exc}); restore it or remove the slots directory") from None
        if not isinstance(state, dict):
            raise SlotStateError(f"{where}: not a JSON object; restore it or remove the slots directory")
        if state.get("schema") != SCHEMA:
            raise SlotStateError(f"{where}: schema is {state.get('schema')!r}, this agent reads {SCHEMA!r}")
        for key, kind in _REQUIRED.items():
            if not isinstance(state.get(key), kind):
                raise SlotStateError(f"{where}: {key} must be a {kind.__name__}, got {state.get(key)!r}")
        for key in ("active", "pending", "known_good"):
            if state.get(key) not in (None, *SLOTS):
                raise SlotStateError(f"{where}: {key} must be one of {', '.join(SLOTS)} or null, got {state.get(key)!r}")
        if state["pending"] is not None and state["pending"] != state["active"]:
            raise SlotStateError(f"{where}: pending slot {state['pending']} is not the active slot {state['active']}")
        return state

    def save(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.state_path, json.dumps(state, indent=1, sort_keys=True).encode())

    def slot_meta(self, slot: str | None) -> dict[str, Any]:
        if slot is None:
            return {}
        try:
            meta = json.loads((self.root / slot / "meta.json").read_bytes())
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    # -- what the controller reads --------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """The slot state as a controller reconciles it: active slot, its model and firmware, committed, last revert."""
        try:
            state = self.load()
        except SlotStateError as exc:
            return {"error": str(exc)}
        meta = self.slot_meta(state["active"])
        contents = {}
        for slot in SLOTS:
            held = self.slot_meta(slot) if (self.root / slot).is_dir() else {}
            contents[slot] = {key: held.get(key) for key in ("model_sha256", "firmware_version", "firmware_sha256", "intent")}
        return {
            "active": state["active"],
            "model_sha256": meta.get("model_sha256"),
            "firmware_version": meta.get("firmware_version"),
            "firmware_sha256": meta.get("firmware_sha256"),  # of the active slot's firmware image; None without one
            "committed": state["committed"],
            "pending": state["pending"],
            "known_good": state["known_good"],
            "boot_count": state["boot_count"],
            "intent": state["intent"],
            "last_revert": state["last_revert"],
            "last_update": state.get("last_update"),  # absent from a state file an older agent wrote
            "contents": contents,
        }

    # -- install, check, commit, revert ---------------------------------------------------------

    def _ended(self, state: dict[str, Any], outcome: str, reason: str | None, slot: str | None) -> None:
        """Remember how the active intent ended: answered again if it is repeated, reported as the last update."""
        intent = state["intent"]
        if intent is None:
            return
        ended = {"outcome": outcome, "reason": reason, "model_sha256": self.slot_meta(slot).get("model_sha256")}
        # the order intents ended in: the state file is written with sorted keys, so it is not the dict's
        order = 1 + max((int(v.get("order", 0)) for v in state["intents"].values()), default=0)
        state["intents"][intent] = {**ended, "order": order}
        state["last_update"] = {"intent": intent, "slot": slot, **ended, "at_utc": _now()}

    def revert(self, state: dict[str, Any], reason: str) -> dict[str, Any]:
        """Back to the last committed slot (none when the first install failed); the reason is kept."""
        failed = state["active"]
        state["last_revert"] = {"intent": state["intent"], "slot": failed, "reason": reason, "at_utc": _now()}
        self._ended(state, "reverted", reason, failed)
        back = state["known_good"]
        state.update(active=back, pending=None, committed=back is not None, boot_count=0)
        state["intent"] = self.slot_meta(back).get("intent")
        self.save(state)
        return state

    def commit(self, state: dict[str, Any]) -> dict[str, Any]:
        state.update(pending=None, committed=True, known_good=state["active"], boot_count=0)
        self._ended(state, "committed", None, state["active"])
        self.save(state)
        return state

    def install(
        self,
        state: dict[str, Any],
        model: Path,
        model_sha256: str,
        firmware_version: str | None,
        intent: str,
        firmware_image: tuple[Path, str] | None = None,
    ) -> dict[str, Any]:
        """Write the inactive slot durably and switch to it as pending (not yet committed).

        ``firmware_image`` is (a file, the sha256 it must have): written as the slot's ``firmware.bin`` and refused
        (``hash-mismatch``, nothing switched) when the bytes written hash otherwise. Without one, the running slot's
        firmware (version and image) is kept; a new version without an image keeps no image."""
        target = "b" if state["active"] == "a" else "a"
        running = self.slot_meta(state["active"])
        if firmware_version is None:  # a release that does not change the firmware keeps the running one
            firmware_version = running.get("firmware_version")
        same_firmware = firmware_version == running.get("firmware_version")
        slot_dir = self.root / target
        if slot_dir.exists():
            shutil.rmtree(slot_dir)
        slot_dir.mkdir(parents=True)
        written = _copy_atomic(model, slot_dir / "model.onnx")
        if written != model_sha256:
            raise Fault("hash-mismatch", f"slot {target}: the model copied hashes to {written[:12]}, not {model_sha256[:12]}")
        image_source, image_sha256 = firmware_image or (None, None)
        if image_source is None and same_firmware and running.get("firmware_sha256") and state["active"] is not None:
            image_source, image_sha256 = self.root / state["active"] / FIRMWARE_IMAGE, running["firmware_sha256"]
        if image_source is not None:
            written = _copy_atomic(image_source, slot_dir / FIRMWARE_IMAGE)
            if written != image_sha256:
                raise Fault(
                    "hash-mismatch", f"slot {target}: the firmware image written hashes to {written[:12]}, not {str(image_sha256)[:12]}"
                )
        _write_atomic(slot_dir / "firmware.txt", (firmware_version or "").encode())
        meta = {
            "model_sha256": model_sha256,
            "firmware_version": firmware_version,
            "firmware_sha256": image_sha256,
            "intent": intent,
            "written_utc": _now(),
        }
        _write_atomic(slot_dir / "meta.json", json.dumps(meta, sort_keys=True).encode())
        _fsync_dir(self.root)
        state.update(active=target, pending=target, committed=False, boot_count=0, intent=intent)
        self.save(state)
        return state

    def forget_old_intents(self, state: dict[str, Any]) -> None:
        intents = state["intents"]
        oldest_first = sorted(intents, key=lambda k: int(intents[k].get("order", 0)))
        for old in oldest_first[: max(0, len(intents) - _KEPT_INTENTS)]:
            del intents[old]

    # -- boot -------------------------------------------------------------------------------------

    def mark_intended_reboot(self, reason: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.marker_path, json.dumps({"reason": reason, "at_utc": _now()}).encode())

    def boot_check(self, limit: int = BOOT_LIMIT) -> tuple[dict[str, Any], str]:
        """Count this boot against a pending slot; past ``limit`` unintended boots revert it. The state and one line saying what happened."""
        state = self.load()
        intended = self.marker_path.exists()
        if intended:
            self.marker_path.unlink()
            _fsync_dir(self.root)
        state["last_boot"] = {"at_utc": _now(), "intended": intended}
        if state["pending"] is None:
            self.save(state)
            return state, f"slot {state['active'] or '-'} {'committed' if state['committed'] else 'empty'}; nothing pending"
        if intended:
            self.save(state)
            return state, f"intended reboot: pending slot {state['pending']} keeps boot count {state['boot_count']}/{limit}"
        state["boot_count"] += 1
        if state["boot_count"] > limit:
            failed = state["pending"]
            reason = f"pending slot {failed} did not come up in {limit} boots (boot counter {state['boot_count']})"
            state = self.revert(state, reason)
            return state, f"reverted slot {failed} to {state['active'] or 'no slot'}: {reason}"
        self.save(state)
        return state, f"pending slot {state['pending']}: boot {state['boot_count']}/{limit} (not an intended reboot)"


def run_firmware_hook(command: str, slot_dir: Path, timeout_s: float = FIRMWARE_HOOK_TIMEOUT_S) -> str | None:
    """Run the device's firmware hook as ``COMMAND SLOT_DIR IMAGE``; why it failed (None when it exits 0)."""
    image = slot_dir / FIRMWARE_IMAGE
    try:
        done = subprocess.run(
            [*shlex.split(command), str(slot_dir), str(image)], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, ValueError) as exc:
        return f"firmware hook {command!r} did not start ({exc})"
    except subprocess.TimeoutExpired:
        return f"firmware hook {command!r} ran past {timeout_s:g} s"
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1][:200]
        return f"firmware hook exited {done.returncode}: {said}"
    return None


def health_check(model: Path, golden: dict[str, dict[str, np.ndarray]], limits: HealthLimits) -> tuple[str | None, dict[str, Any]]:
    """Load ``model`` in ONNX Runtime, compare its outputs on the golden inputs, time its p50.

    ``golden`` is ``{"inputs": {...}, "outputs": {...}}``. Returns the failure reason (None when it
    passes) and what was measured.
    """
    import onnxruntime as ort

    measured: dict[str, Any] = {"p50_ms": None, "p50_limit_ms": limits.p50_limit_ms, "max_abs_diff": {}}
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for a model it cannot load
        return f"the model does not load in ONNX Runtime ({str(exc).splitlines()[0][:200]})", measured
    wanted = list(golden["outputs"])
    try:
        got = session.run(wanted, golden["inputs"])
    except Exception as exc:  # a golden input the model refuses (name, shape, dtype)
        return f"the golden inputs do not run ({str(exc).splitlines()[0][:200]})", measured
    for name, value in zip(wanted, got):
        expected = golden["outputs"][name]
        if np.shape(value) != np.shape(expected):
            return f"golden output {name}: shape {list(np.shape(value))}, recorded {list(np.shape(expected))}", measured
        diff = float(np.max(np.abs(np.asarray(value, dtype=np.float64) - expected))) if np.size(value) else 0.0
        measured["max_abs_diff"][name] = diff
        if not np.allclose(value, expected, rtol=limits.rtol, atol=limits.atol):
            return (
                f"golden output {name} differs from the recorded one (max |diff| {diff:.3g} > atol {limits.atol} + rtol {limits.rtol})",
                measured,
            )
    samples_ns = []
    for _ in range(limits.latency_runs):
        start = time.perf_counter_ns()
        session.run(wanted, golden["inputs"])
        samples_ns.append(time.perf_counter_ns() - start)
    p50_ms = float(np.median(samples_ns)) / 1e6
    measured["p50_ms"] = p50_ms
    measured["p50_provenance"] = (
        f"measured by perf_counter_ns over {limits.latency_runs} runs of the golden inputs, 1 thread, CPUExecutionProvider"
    )
    if p50_ms > limits.p50_limit_ms:
        return f"p50 {p50_ms:.3f} ms over the limit of {limits.p50_limit_ms} ms", measured
    return None, measured
