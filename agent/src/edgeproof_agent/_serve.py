"""The agent's verbs over JSON-lines: hello, put-model, profile, update, workload, pull-telemetry, meters, bring-up, bye.
Nothing else runs.

``update`` installs a put model (and optionally a put firmware image) into the inactive A/B slot and commits it
only after a health check (``_slots.py``; the board's ``--firmware-hook`` is part of it when an image is sent);
``hello`` reports the slot state so a controller can reconcile it with its intent. ``workload`` runs the active
slot's model and records what it saw as telemetry (``--telemetry DIR``); ``pull-telemetry`` hands the lab the
segment frames it does not hold yet, so the fleet's gates judge what the devices run.

A model with external weights names its data files in ``external`` (``{"<location>": "<sha256>"}``,
each put like the model): the profile links them beside the model under the names the model uses.

Request: ``{"v": 1, "id": 7, "verb": "profile", ...}``. Reply: ``{"v": 1, "id": 7, "ok": true,
"result": {...}}`` or ``{"v": 1, "id": 7, "ok": false, "error": {"code": ..., "message": ...}}``.
A long verb may first send ``{"v": 1, "id": 7, "progress": "session 2/3"}`` lines.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from edgeproof_agent import PROTOCOL
from edgeproof_agent._board import EnergyCounter, bring_up, fingerprint, meters, peak_temperature_c
from edgeproof_agent._cache import ModelCache
from edgeproof_agent._fault import Fault
from edgeproof_agent._lock import BoardLock
from edgeproof_agent._slots import HealthLimits, Slots, SlotStateError, health_check, run_firmware_hook
from edgeproof_agent._telemetry import JobTelemetry
from edgeproof_agent._timing import TimingFault, cold_starts, node_trace, time_interleaved, time_sessions
from edgeproof_agent._wire import MAX_LINE_BYTES, WireError, read_message, write_message
from edgeproof_agent._workload import run_workload

Notify = Callable[[str], None]
# Raw segment bytes a pull-telemetry reply carries at most (base64 makes it 4/3 of this, well under the line cap).
PULL_BYTES = 4 * 2**20
# One workload is one verb: bounded so a request cannot hold the board (and its connection) for long.
MAX_WORKLOAD_RUNS = 1_000_000
MAX_WORKLOAD_S = 600.0


class Agent:
    """One connection's agent: the board's cache and lock, answering one verb at a time."""

    def __init__(
        self,
        device_id: str,
        state_dir: Path,
        cache_bytes: int,
        max_model_bytes: int,
        board: str | None = None,
        telemetry_dir: Path | None = None,
        labels: dict[str, str] | None = None,
        firmware_hook: str | None = None,
    ) -> None:
        self.device_id = device_id
        self.firmware_hook = firmware_hook
        self.board = board
        self.labels = dict(labels or {})
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.cache = ModelCache(state_dir / "models", cache_bytes, max_model_bytes)
        self.lock = BoardLock(state_dir)
        self.telemetry = JobTelemetry(telemetry_dir)
        self.slots = Slots(state_dir)
        self.verbs: dict[str, Callable[[dict[str, Any], Notify], dict[str, Any]]] = {
            "hello": self.hello,
            "put-model": self.put_model,
            "profile": self.profile,
            "update": self.update,
            "workload": self.workload,
            "pull-telemetry": self.pull_telemetry,
            "meters": lambda request, notify: {"meters": meters()},
            "bring-up": lambda request, notify: {"checks": bring_up(self.state_dir)},
            "bye": lambda request, notify: {},
        }

    def hello(self, request: dict[str, Any], notify: Notify) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL,
            "device_id": self.device_id,
            "fingerprint": self.fingerprint(),
            "labels": self.labels,
            "busy": self.lock.busy(),
            "cache": self.cache.usage(),
            "telemetry": self.telemetry.status(),
            "slots": self.slots.report(),
        }

    def fingerprint(self) -> dict[str, Any]:
        """The board's fingerprint plus the catalog board its owner declared (``--board``), if any."""
        return {**fingerprint(), "board": self.board}

    def put_model(self, request: dict[str, Any], notify: Notify) -> dict[str, Any]:
        data = request.get("data")
        raw = None
        if data is not None:
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise Fault("bad-request", "put-model data is not base64") from None
        return self.cache.put(request.get("sha256"), request.get("size"), request.get("offset"), raw)

    def _feeds(self, sha256: str) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """The timed runs' feeds (``f<i>__<input>``) and one batch-1 sample (``sample__<input>``) from a put blob."""
        feeds: dict[int, dict[str, np.ndarray]] = {}
        sample: dict[str, np.ndarray] = {}
        try:
            with np.load(self.cache.blob(sha256), allow_pickle=False) as npz:
                for key in npz.files:
                    head, _, name = key.partition("__")
                    if head == "sample":
                        sample[name] = npz[key]
                    elif head.startswith("f") and head[1:].isdigit():
                        feeds.setdefault(int(head[1:]), {})[name] = npz[key]
        except (OSError, ValueError) as exc:
            raise Fault("bad-request", f"inputs blob {sha256[:12]} is not an .npz of arrays ({exc})") from None
        if not feeds or not sample:
            raise Fault("bad-request", f"inputs blob {sha256[:12]} holds no f<i>__<input> or sample__<input> arrays")
        return [feeds[i] for i in sorted(feeds)], sample

    def _arm(
        self, model_sha: str, inputs_sha: str, external: object, workdir: Path
    ) -> tuple[Path, list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        model = self.cache.blob(model_sha)
        if external:
            model = self._with_data_files(model, model_sha, external, workdir)
        feeds, sample = self._feeds(inputs_sha)
        return model, feeds, sample

    def _with_data_files(self, model: Path, model_sha: str, external: object, workdir: Path) -> Path:
        """The model and its data files linked into one directory under the names the model uses."""
        if not isinstance(external, dict):
            raise Fault("bad-request", "external must map each data file's location to its sha256")
        where = Path(tempfile.mkdtemp(prefix=model_sha[:12] + "-", dir=workdir))
        for location, sha in external.items():
            parts = Path(str(location)).parts
            if not parts or Path(str(location)).is_absolute() or ".." in parts or len(parts) != 1:
                raise Fault("bad-request", f"external data location {str(location)[:80]!r} must be a plain file name beside the model")
            (where / parts[0]).symlink_to(self.cache.blob(sha))
        linked = where / "model.onnx"
        linked.symlink_to(model)
        return linked

    @contextlib.contextmanager
    def _job(self) -> Iterator[Path]:
        """A scratch dir for one profile; the job's blobs stay pinned in the cache until it ends."""
        try:
            with tempfile.TemporaryDirectory(prefix="job-", dir=self.state_dir) as workdir:
                yield Path(workdir)
        finally:
            self.cache.unpin()

    def profile(self, request: dict[str, Any], notify: Notify) -> dict[str, Any]:
        with self._job() as workdir:
            return self._profile(request, notify, workdir)

    def _profile(self, request: dict[str, Any], notify: Notify, workdir: Path) -> dict[str, Any]:
        settings = request.get("settings") or {}
        try:
            arms = [self._arm(request["model"], request["inputs"], request.get("external"), workdir)]
            ab = request.get("ab")
            if ab:
                arms.append(self._arm(ab["model"], ab["inputs"], ab.get("external"), workdir))
            self.lock.acquire(str(request.get("job", "edgeproof")), float(request.get("wait_s", 0.0)))
            notify("started")
            start_unix_ns = time.time_ns()
            energy = EnergyCounter.found()
            temps = [peak_temperature_c()]
            if ab:
                timed = time_interleaved((arms[0][0], arms[1][0]), (arms[0][1], arms[1][1]), settings, ab, energy, notify)
            else:
                timed = (time_sessions(arms[0][0], arms[0][1], settings, request, energy, notify),)
            temps.append(peak_temperature_c())
            results = []
            for (model, feeds, sample), sessions in zip(arms, timed):
                cold: list[dict[str, Any]] = []
                if int(request.get("cold_start", 0)) > 0:
                    notify("cold start in a fresh process")
                    with tempfile.TemporaryDirectory(prefix="edgeproof-agent-") as tmp:
                        npz = Path(tmp) / "sample.npz"
                        np.savez(npz, **sample)
                        cold = cold_starts(model, settings, npz, int(request["cold_start"]))
                nodes = node_trace(model, settings, feeds[0]) if request.get("nodes") else []
                results.append({"sessions": sessions, "cold_start": cold, "nodes": nodes})
        except KeyError as exc:
            raise Fault("bad-request", f"profile needs {exc}") from None
        except TimingFault as exc:
            raise Fault("model", str(exc)) from None
        readable = [t for t in temps if t is not None]
        fingerprint = self.fingerprint()
        provider = str(settings.get("provider", "CPUExecutionProvider"))
        warnings = self.telemetry.write_job(
            self.device_id,
            fingerprint.get("power_mode"),
            [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"],
            [(request["model"], timed[0]), *([(ab["model"], timed[1])] if ab else [])],
            start_unix_ns,
        )
        return {
            "arms": results,
            "peak_temperature_c": max(readable) if readable else None,
            "energy_meter": energy.name if energy else None,
            "fingerprint": fingerprint,
            "warnings": warnings,
        }

    def _golden(self, sha256: str) -> dict[str, dict[str, np.ndarray]]:
        """The golden inputs and recorded outputs (``input__<name>``, ``output__<name>``) from a put blob."""
        golden: dict[str, dict[str, np.ndarray]] = {"inputs": {}, "outputs": {}}
        try:
            with np.load(self.cache.blob(sha256), allow_pickle=False) as npz:
                for key in npz.files:
                    head, _, name = key.partition("__")
                    if head in ("input", "output") and name:
                        golden[head + "s"][name] = npz[key]
        except (OSError, ValueError) as exc:
            raise Fault("bad-request", f"golden blob {sha256[:12]} is not an .npz of arrays ({exc})") from None
        if not golden["inputs"] or not golden["outputs"]:
            raise Fault("bad-request", f"golden blob {sha256[:12]} holds no input__<name> and output__<name> arrays")
        return golden

    def update(self, request: dict[str, Any], notify: Notify) -> dict[str, Any]:
        """Install a model (and firmware version) into the inactive slot for one intent; commit only on a passed health check."""
        intent = request.get("intent")
        if not isinstance(intent, str) or not intent.strip():
            raise Fault("bad-request", "update needs an intent id (a non-empty string)")
        try:
            state = self.slots.load()
        except SlotStateError as exc:
            raise Fault("slot-state", str(exc)) from None
        done = state["intents"].get(intent)
        if done is not None:  # this intent already ran to an end: answer it again, install nothing
            if done.get("model_sha256") not in (None, request.get("model")):
                raise Fault(
                    "bad-request", f"intent {intent} was used for model {str(done['model_sha256'])[:12]}; a new release is a new intent"
                )
            return {"installed": False, "outcome": done["outcome"], "reason": done["reason"], "health": None, "slots": self.slots.report()}
        firmware = request.get("firmware")
        if firmware is not None and not isinstance(firmware, str):
            raise Fault("bad-request", f"firmware must be a version string, got {firmware!r}")
        image_sha = request.get("firmware_image")
        if image_sha is not None and not isinstance(image_sha, str):
            raise Fault("bad-request", f"firmware_image must be the sha256 of a put image, got {image_sha!r}")
        limits, wait_s = _health_limits(request)
        with self._job():
            model_sha = str(request.get("model"))
            model = self.cache.blob(model_sha)
            image = (self.cache.blob(image_sha), image_sha) if image_sha is not None else None
            golden = self._golden(str(request.get("golden")))
            self.lock.acquire(f"update {intent}", wait_s)
            installed = False
            if state["pending"] is not None and state["intent"] != intent:
                state = self.slots.revert(state, f"superseded by intent {intent} before its health check ended")
            if state["pending"] is None:
                notify("writing the inactive slot")
                state = self.slots.install(state, model, model_sha, firmware, intent, image)
                installed = True
            elif self.slots.slot_meta(state["pending"]).get("model_sha256") != model_sha:
                raise Fault("bad-request", f"intent {intent} is pending with another model in slot {state['pending']}")
            slot_dir = self.slots.root / state["active"]
            reason = None
            if image is not None and self.firmware_hook is not None:
                notify(f"firmware hook on slot {state['active']}")
                reason = run_firmware_hook(self.firmware_hook, slot_dir)
            if reason is None:
                notify(f"health check of slot {state['active']}")
                reason, measured = health_check(slot_dir / "model.onnx", golden, limits)
            else:
                measured = {"p50_ms": None, "p50_limit_ms": limits.p50_limit_ms, "max_abs_diff": {}}
            measured["firmware_hook"] = self.firmware_hook if image is not None else None
            self.slots.forget_old_intents(state)
            if reason is None:
                self.slots.commit(state)
            else:
                reason = f"health check failed: {reason}"
                self.slots.revert(state, reason)
        return {
            "installed": installed,
            "outcome": "committed" if reason is None else "reverted",
            "reason": reason,
            "health": measured,
            "slots": self.slots.report(),
        }

    def workload(self, request: dict[str, Any], notify: Notify) -> dict[str, Any]:
        """Run the active slot's model ``runs`` times or for ``seconds`` on synthetic feeds, recording one telemetry window.

        The window carries this device's labels (``--label``, with the request's ``labels`` over them: the rollout's
        cohort, the inventory's region and chip revision) and what the active slot holds: its model's sha256 and its
        firmware version, which no request overrides."""
        if not self.telemetry.recording:
            raise Fault("telemetry-off", f"the workload is run to record telemetry, and this agent records none: {self.telemetry.reason}")
        runs, seconds, wait_s = _workload_limits(request)
        asked = request.get("labels") or {}
        if not isinstance(asked, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in asked.items()):
            raise Fault("bad-request", "workload labels must map label names to strings")
        try:
            state = self.slots.load()
        except SlotStateError as exc:
            raise Fault("slot-state", str(exc)) from None
        if state["active"] is None:
            raise Fault("slot-state", "no slot is active yet: update the board before asking for a workload")
        meta = self.slots.slot_meta(state["active"])
        self.lock.acquire("workload", wait_s)
        notify(f"workload on slot {state['active']}")
        run = run_workload(self.slots.root / state["active"] / "model.onnx", runs, seconds)
        labels = {**self.labels, **asked}
        labels.update(
            device_id=self.device_id,
            model_sha256=str(meta.get("model_sha256") or ""),
            firmware_version=str(meta.get("firmware_version") or ""),
            accelerator=run.providers[0] if run.providers else "",
            power_mode=str(self.fingerprint().get("power_mode") or ""),
        )
        return {
            "slot": state["active"],
            "labels": self.telemetry.window_labels(labels),
            "calls": run.calls,
            "errors": run.errors,
            "first_error": run.first_error,
            "p50_ms": float(np.median(run.samples_ms)) if run.samples_ms else None,
            "provenance": "measured by perf_counter_ns around each call, 1 thread, CPUExecutionProvider, synthetic feeds",
            "warnings": self.telemetry.write_workload(labels, run),
        }

    def pull_telemetry(self, request: dict[str, Any], notify: Notify) -> dict[str, Any]:
        """The segment frames past the lab's ``offsets`` (file name -> bytes it holds), up to ``max_bytes`` a reply."""
        offsets = request.get("offsets") or {}
        if not isinstance(offsets, dict) or not all(isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in offsets.items()):
            raise Fault("bad-request", "pull-telemetry offsets must map segment file names to byte counts >= 0")
        max_bytes = request.get("max_bytes", PULL_BYTES)
        if not isinstance(max_bytes, int) or not 0 < max_bytes <= PULL_BYTES:
            raise Fault("bad-request", f"pull-telemetry max_bytes must be 1..{PULL_BYTES}, got {max_bytes!r}")
        segments, complete = self.telemetry.segments_since(offsets, max_bytes)
        return {"segments": segments, "complete": complete}

    def close(self) -> None:
        self.telemetry.close()
        self.lock.release()
        self.cache.discard_partials()


def _health_limits(request: dict[str, Any]) -> tuple[HealthLimits, float]:
    """An update's health limits and how long it may wait for the board, checked."""
    try:
        limits = HealthLimits(
            p50_limit_ms=float(request["p50_limit_ms"]),
            atol=float(request.get("atol", 1e-4)),
            rtol=float(request.get("rtol", 1e-3)),
            latency_runs=int(request.get("latency_runs", 20)),
        )
        wait_s = float(request.get("wait_s", 0.0))
    except KeyError as exc:
        raise Fault("bad-request", f"update needs {exc}") from None
    except (TypeError, ValueError) as exc:
        raise Fault("bad-request", f"update's health limits and wait_s must be numbers ({exc})") from None
    finite = all(math.isfinite(x) and x >= 0 for x in (limits.p50_limit_ms, limits.atol, limits.rtol, wait_s))
    if not finite or limits.p50_limit_ms == 0 or limits.latency_runs < 1:
        raise Fault("bad-request", "update needs p50_limit_ms > 0, atol, rtol and wait_s >= 0 (finite), latency_runs >= 1")
    return limits, wait_s


def _workload_limits(request: dict[str, Any]) -> tuple[int | None, float | None, float]:
    """A workload's call count and/or duration (at least one, each bounded) and how long it may wait for the board."""
    try:
        runs = None if request.get("runs") is None else int(request["runs"])
        seconds = None if request.get("seconds") is None else float(request["seconds"])
        wait_s = float(request.get("wait_s", 0.0))
    except (TypeError, ValueError) as exc:
        raise Fault("bad-request", f"workload runs, seconds and wait_s must be numbers ({exc})") from None
    if runs is None and seconds is None:
        raise Fault("bad-request", "workload needs runs or seconds (or both: whichever ends first)")
    if (runs is not None and not 1 <= runs <= MAX_WORKLOAD_RUNS) or (seconds is not None and not 0 < seconds <= MAX_WORKLOAD_S):
        raise Fault("bad-request", f"workload runs must be 1..{MAX_WORKLOAD_RUNS} and seconds in (0, {MAX_WORKLOAD_S:g}]")
    if not (math.isfinite(wait_s) and wait_s >= 0):
        raise Fault("bad-request", "workload wait_s must be finite and >= 0")
    return runs, seconds, wait_s


def _reply(out: BinaryIO, request_id: object, result: dict[str, Any] | None = None, fault: Fault | None = None) -> None:
    if fault is None:
        write_message(out, {"v": PROTOCOL, "id": request_id, "ok": True, "result": result or {}})
    else:
        write_message(out, {"v": PROTOCOL, "id": request_id, "ok": False, "error": {"code": fault.code, "message": fault.message}})


def serve(agent: Agent, stdin: BinaryIO, stdout: BinaryIO, max_line_bytes: int = MAX_LINE_BYTES) -> int:
    """Answer requests until ``bye`` or the end of input; the board lock and partial uploads go with the connection."""
    agent.cache.discard_partials()
    try:
        while True:
            try:
                request = read_message(stdin, max_line_bytes)
            except WireError as exc:
                _reply(stdout, None, fault=Fault(exc.code, str(exc)))
                continue
            if request is None:
                return 0
            request_id = request.get("id")
            verb = request.get("verb")
            if request.get("v") != PROTOCOL:
                _reply(
                    stdout,
                    request_id,
                    fault=Fault("protocol", f"this agent speaks protocol {PROTOCOL}; the request says {request.get('v')!r}"),
                )
                continue
            handler = agent.verbs.get(str(verb))
            if handler is None:
                _reply(stdout, request_id, fault=Fault("unknown-verb", f"no verb {verb!r}; the verbs are {', '.join(agent.verbs)}"))
                continue

            def notify(text: str, request_id: object = request_id) -> None:
                write_message(stdout, {"v": PROTOCOL, "id": request_id, "progress": text})

            try:
                result = handler(request, notify)
            except Fault as fault:
                _reply(stdout, request_id, fault=fault)
                continue
            except OSError as exc:
                _reply(stdout, request_id, fault=Fault("board", f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")))
                continue
            _reply(stdout, request_id, result)
            if verb == "bye":
                return 0
    finally:
        agent.close()
