"""The agent runner: a board measured through its edgeproof-agent; the agent times, this side builds the RunRecord.

The agent returns raw samples, cold starts, node traces and the board's fingerprint; statistics,
the stopping rule and the record are computed here exactly as for the host. An A/B comparison is
interleaved on the agent (pairs of fresh sessions, alternating blocks), so the link's latency never
sits between two timed blocks. A board lost mid-job is retried once after a fresh ``hello``; a second
loss raises ``BoardLost`` (never a pass). A model with external weights goes up with its data files.
"""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

import edgeproof
from edgeproof.agent import AgentClient, BoardLost, Hello, connect
from edgeproof.errors import DataError, TargetError
from edgeproof.farm.inventory import Device, get_device
from edgeproof.measure.interleaved import ArmSettings, Decided, InterleaveOptions, pair_records, per_arm
from edgeproof.measure.placement import parse_profile, placement_of
from edgeproof.measure.runner import Prepared, ProfileOptions, _node_flops, cold_start_figure, prepare
from edgeproof.measure.stats import relative_half_width, summarize
from edgeproof.model import Model
from edgeproof.records import (
    ColdStart,
    EnvFingerprint,
    Figure,
    InterleaveLayout,
    RunRecord,
    RuntimeSettings,
    ScenarioResult,
    SessionSamples,
    TargetRef,
)
from edgeproof.runners._base import Progress, Runner

# A job waits this long for another job to release the board before it fails as busy.
DEFAULT_WAIT_S = 120.0


def _inputs_archive(prep: Prepared) -> bytes:
    """The feeds a prepared model's runs use (``f<i>__<input>``) and one batch-1 sample (``sample__<input>``)."""
    arrays = {f"f{i}__{name}": value for i, feeds in enumerate(prep.feeds) for name, value in feeds.items()}
    arrays |= {f"sample__{name}": value for name, value in (prep.sample or prep.feeds[0]).items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def external_data_files(model_path: Path) -> dict[str, Path]:
    """The data files an ONNX model keeps its weights in, by the location the model names (beside it)."""
    from edgeproof.model import load_proto

    proto = load_proto(model_path, external_data=False)
    tensors = [*proto.graph.initializer]
    tensors += [a.t for node in proto.graph.node for a in node.attribute if a.HasField("t")]
    files: dict[str, Path] = {}
    for tensor in tensors:
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value not in files:
                path = model_path.parent / entry.value
                if Path(entry.value).is_absolute() or ".." in Path(entry.value).parts or len(Path(entry.value).parts) != 1:
                    raise DataError(f"{model_path}: external data location {entry.value!r} is not a file beside the model")
                if not path.is_file():
                    raise DataError(f"{model_path}: external data file {entry.value} is missing beside the model")
                files[entry.value] = path
    return files


def declared_board(device: Device, fingerprint: dict[str, Any]) -> str | None:
    """The catalog board a device is: boards.toml's ``board``, else the one its agent declares
    (``edgeproof-agent --board``); the two must agree where both are given."""
    from edgeproof.targets import get_target

    said = fingerprint.get("board")
    if said:
        try:
            said = get_target(str(said)).id
        except TargetError as exc:
            raise DataError(f"{device.target_id}: the agent declares board {fingerprint.get('board')!r}: {exc}") from None
    if device.board and said and said != device.board:
        raise DataError(f"{device.target_id}: {device.source} says board {device.board!r} but the agent declares {said!r}; fix one of them")
    return device.board or said


class AgentRunner(Runner):
    """Measures on a board through its agent (``device:<id>``; ``device:local`` is a subprocess here).

    ``power_mode`` must be one of the inventory's modes for the device and, where the board reports
    its mode (``nvpmodel``), the mode it is in: the agent runs no code, so it never switches modes.
    """

    kind = "measured"

    def __init__(self, device: Device | str, power_mode: str | None = None, wait_s: float = DEFAULT_WAIT_S) -> None:
        self.device = get_device(device) if isinstance(device, str) else device
        super().__init__(self.device.target_id)
        self.power_mode = power_mode
        self.wait_s = wait_s
        self.hello: Hello | None = None
        # the catalog board this device is (boards.toml, else the agent's --board); set at open
        self.board: str | None = self.device.board
        self._client: AgentClient | None = None
        self._archives: dict[int, tuple[Prepared, bytes]] = {}

    @property
    def provenance(self) -> str:
        return f"measured:agent:{self.device.id}"

    def __enter__(self) -> AgentRunner:
        self.open()
        return self

    def _open(self) -> None:
        modes = self.device.power_modes
        if self.power_mode is not None and modes and self.power_mode not in modes:
            raise DataError(f"{self.target_id} has power modes {', '.join(modes)}; --power-mode {self.power_mode!r} is not one of them")
        self._connect()

    def _connect(self) -> None:
        self._client, self.hello = connect(self.device)
        try:
            self.board = declared_board(self.device, self.hello.fingerprint)
        except DataError:
            self._client.link.close()
            raise
        reported = self.hello.fingerprint.get("power_mode")
        if self.power_mode is not None and reported and reported != self.power_mode:
            self._client.link.close()
            raise DataError(
                f"{self.target_id} is in power mode {reported!r}, not {self.power_mode!r}; switch it on the board (nvpmodel -m)"
            )

    def _reconnect(self, lost: BoardLost) -> None:
        """After a lost link: close it, connect again and say hello; a board that stays dead raises."""
        if self._client is not None:
            self._client.link.close()
        try:
            self._connect()
        except Exception as again:  # any failure to reconnect leaves the first loss as the story
            raise BoardLost(f"{lost}; the board did not answer a fresh hello ({again})") from None

    def _prepare(self, model: Model | str | Path, options: ProfileOptions) -> Prepared:
        if options.engine == "loadgen":
            raise DataError(f"--engine loadgen runs on the host only; {self.target_id} times with the agent's builtin loop")
        prep = prepare(model, options)
        self._archives[id(prep)] = (prep, _inputs_archive(prep))
        self._upload(prep)
        return prep

    def _upload(self, prep: Prepared) -> tuple[str, str, dict[str, str]]:
        """The board's blob ids of a prepared model, its feeds and its external data files by
        location (each uploaded unless the board has it; the data files first, the model last)."""
        assert self._client is not None
        external = {location: self._client.put_file(path) for location, path in external_data_files(prep.path).items()}
        model_sha = self._client.put_file(prep.path, prep.model.sha256)
        _, archive = self._archives.get(id(prep)) or (prep, _inputs_archive(prep))
        return model_sha, self._client.put(archive), external

    def _profile(self, progress: Progress, fraction: float, **job: Any) -> dict[str, Any]:
        assert self._client is not None
        return self._client.request(
            "profile", progress=lambda text: progress(f"{self.target_id}: {text}", fraction), job="edgeproof", wait_s=self.wait_s, **job
        )

    def _retrying(self, attempt: Any) -> Any:
        """Run ``attempt()``; after a lost board, once more after a re-hello."""
        try:
            return attempt()
        except BoardLost as lost:
            self._reconnect(lost)
            try:
                return attempt()
            except BoardLost as again:
                raise BoardLost(f"{again} (retried once after a re-hello)") from None

    def _run(self, prepared: Prepared, settings: RuntimeSettings, options: ProfileOptions, progress: Progress) -> RunRecord:
        return self._retrying(lambda: self._run_once(prepared, settings, options, progress))

    def _run_once(self, prep: Prepared, settings: RuntimeSettings, options: ProfileOptions, progress: Progress) -> RunRecord:
        model_sha, inputs_sha, external = self._upload(prep)
        scenario = {"name": prep.scenario.name, "rate_hz": prep.scenario.rate_hz}
        job = {
            "model": model_sha,
            "inputs": inputs_sha,
            "external": external,
            "settings": settings.model_dump(),
            "scenario": scenario,
            "samples": options.samples_per_session,
            "warmup": options.warmup,
            "session_budget_s": options.time_budget_s / max(options.min_sessions, 1) * 0.8,
            "seed": options.seed,
        }
        started = time.monotonic()
        reply = self._profile(progress, 0.1, **job, sessions=options.min_sessions, session_offset=0)
        raw = list(reply["arms"][0]["sessions"])
        peaks = [reply.get("peak_temperature_c")]
        said = list(reply.get("warnings") or [])  # what the board noticed beside the samples (telemetry it could not write)
        while len(raw) < options.max_sessions:
            narrow = relative_half_width(summarize([s["samples_ms"] for s in raw]), "p95") <= options.target_rel_ci
            if narrow or time.monotonic() - started > options.time_budget_s:
                break
            more = self._profile(progress, min(0.8, 0.1 + 0.1 * len(raw)), **job, sessions=1, session_offset=len(raw))
            raw += more["arms"][0]["sessions"]
            peaks.append(more.get("peak_temperature_c"))
            said += [w for w in more.get("warnings") or [] if w not in said]
        last = self._profile(progress, 0.9, **job, sessions=0, cold_start=options.cold_start_repeats, nodes=options.profile_nodes)
        sessions = [SessionSamples(warmup_ms=s["warmup_ms"], samples_ms=s["samples_ms"], started_at=s["started_at"]) for s in raw]
        all_ms = [x for s in sessions for x in s.samples_ms]
        scen = ScenarioResult(
            name=prep.scenario.name,
            engine="builtin",
            rate_hz=prep.scenario.rate_hz,
            deadline_ms=prep.scenario.deadline_ms,
            batch_size=prep.batch,
        )
        if prep.scenario.rate_hz and prep.scenario.deadline_ms is not None:
            queueing = [q for s in raw for q in s["queueing_ms"]]
            scen.deadline_miss_rate = float(np.mean(np.array(all_ms) > prep.scenario.deadline_ms))
            scen.queueing_delay_p50_ms = float(np.quantile(queueing, 0.5))
            scen.queueing_delay_p95_ms = float(np.quantile(queueing, 0.95))
        if prep.scenario.name == "offline":
            scen.throughput_ips = prep.batch * len(all_ms) / (sum(all_ms) / 1000.0)
        record = self._record(prep, settings, sessions, raw, last["arms"][0], scen, peaks + [last.get("peak_temperature_c")], reply, None)
        record.warnings += [f"agent {self.device.id}: {w}" for w in said]
        if time.monotonic() - started > options.time_budget_s and relative_half_width(record.latency, "p95") > options.target_rel_ci:
            record.latency.warnings.append(
                f"time budget {options.time_budget_s:g}s reached before the p95 interval narrowed to ±{options.target_rel_ci:.0%}"
            )
        return record

    def _run_ab(
        self,
        a: Prepared,
        b: Prepared,
        settings: ArmSettings,
        options: ProfileOptions,
        ab: InterleaveOptions,
        decided: Decided | None,
        progress: Progress,
    ) -> tuple[RunRecord, RunRecord]:
        if any(p.scenario.name != "single-stream" for p in (a, b)):
            raise DataError("interleaved A/B measurement times single-stream inference only")
        arm_a, arm_b = per_arm(settings)
        if arm_a != arm_b:
            raise DataError("a remote agent times both arms of an A/B at one runtime setting")
        return self._retrying(lambda: self._run_ab_once(a, b, arm_a, options, ab, decided, progress))

    def _run_ab_once(
        self,
        a: Prepared,
        b: Prepared,
        settings: RuntimeSettings,
        options: ProfileOptions,
        ab: InterleaveOptions,
        decided: Decided | None,
        progress: Progress,
    ) -> tuple[RunRecord, RunRecord]:
        (sha_a, in_a, ext_a), (sha_b, in_b, ext_b) = self._upload(a), self._upload(b)

        def pairs(count: int, seed: int, extras: bool) -> dict[str, Any]:
            layout = {
                "model": sha_b,
                "inputs": in_b,
                "external": ext_b,
                "pairs": count,
                "blocks": ab.blocks,
                "block_size": ab.block_size,
                "warmup": ab.warmup,
                "seed": seed,
            }
            more = {"cold_start": options.cold_start_repeats, "nodes": options.profile_nodes} if extras else {}
            return self._profile(progress, 0.5, model=sha_a, inputs=in_a, external=ext_a, settings=settings.model_dump(), ab=layout, **more)

        reply = pairs(ab.pairs, ab.seed, True)
        raw = [list(reply["arms"][0]["sessions"]), list(reply["arms"][1]["sessions"])]
        peaks = [reply.get("peak_temperature_c")]
        while decided is not None and len(raw[0]) < ab.max_pairs and not decided(*([s["samples_ms"] for s in arm] for arm in raw)):
            more = pairs(min(ab.step, ab.max_pairs - len(raw[0])), ab.seed + 7919 * len(raw[0]), False)
            raw = [raw[arm] + more["arms"][arm]["sessions"] for arm in (0, 1)]
            peaks.append(more.get("peak_temperature_c"))
        records = []
        for arm, prep in enumerate((a, b)):
            sessions = [SessionSamples(warmup_ms=s["warmup_ms"], samples_ms=s["samples_ms"], started_at=s["started_at"]) for s in raw[arm]]
            scen = ScenarioResult(name="single-stream", engine="builtin", batch_size=1)
            layout = InterleaveLayout(arm="AB"[arm], block_size=ab.block_size, blocks=ab.blocks, pairs=len(sessions), seed=ab.seed)
            records.append(self._record(prep, settings, sessions, raw[arm], reply["arms"][arm], scen, peaks, reply, layout))
        return pair_records(records[0], records[1])

    def _record(
        self,
        prep: Prepared,
        settings: RuntimeSettings,
        sessions: list[SessionSamples],
        raw: list[dict[str, Any]],
        extras: dict[str, Any],
        scenario: ScenarioResult,
        peaks: list[float | None],
        reply: dict[str, Any],
        interleave: InterleaveLayout | None,
    ) -> RunRecord:
        """The RunRecord of one arm from the agent's raw samples, cold starts, node trace and fingerprint."""
        board = reply.get("fingerprint") or {}
        cold = [ColdStart.model_validate(c) for c in extras.get("cold_start", [])]
        placement = None
        if extras.get("nodes"):
            placement = placement_of(parse_profile(extras["nodes"]), settings.provider, _node_flops(prep.model.proto))
            placement = placement.model_copy(update={"provenance": f"{self.provenance}:onnxruntime-profiler"})
        meter = reply.get("energy_meter")
        inferences = prep.batch * sum(len(s.samples_ms) for s in sessions)
        joules = [float(s["energy_j"]) for s in raw if s.get("energy_j") is not None]
        seconds = [float(s["energy_s"]) for s in raw if s.get("energy_s") is not None]
        if meter and inferences and len(joules) == len(raw) and sum(seconds) > 0:
            energy = Figure.measured(sum(joules) / inferences * 1000.0, "mJ", f"agent:{self.device.id}:{meter}")
            watts = Figure.measured(sum(joules) / sum(seconds), "W", f"agent:{self.device.id}:{meter}")
        else:
            why = self._meter_unavailable("energy")
            energy, watts = Figure.unavailable("mJ", why), Figure.unavailable("W", why)
        readable = [p for p in peaks if p is not None]
        temperature = (
            Figure.measured(max(readable), "°C", f"agent:{self.device.id}:thermal-sensors-peak")
            if readable
            else Figure.unavailable("°C", self._meter_unavailable("temperature"))
        )
        return RunRecord(
            kind="measured",
            model=prep.ref,
            target=self._target_ref(board),
            settings=settings,
            scenario=scenario,
            sessions=sessions,
            latency=summarize([s.samples_ms for s in sessions]),
            latency_provenance=self.provenance,
            load_time_ms=cold_start_figure(
                cold, "load_time_ms", "ms", f"agent:{self.device.id}:fresh-process:session+first-inference", statistics.median
            ),
            peak_rss_mib=cold_start_figure(cold, "peak_rss_mib", "MiB", f"agent:{self.device.id}:fresh-process:VmHWM", max),
            model_size_mib=Figure.measured(prep.ref.size_bytes / 2**20, "MiB", "file-size"),
            energy_mj_per_inference=energy,
            sustained_w=watts,
            temperature_c=temperature,
            placement=placement,
            env=self._env(board),
            cold_start=cold,
            inputs={s.name: list(s.shape) for s in prep.specs},
            interleave=interleave,
        )

    def _meter_unavailable(self, name: str) -> str:
        said = ((self.hello.fingerprint if self.hello else {}).get("meters") or {}).get(name, "")
        why = said.split(":", 1)[1] if said.startswith("unavailable:") else "the agent reported no reading"
        return f"{why} ({self.target_id})"

    def _target_ref(self, board: dict[str, Any]) -> TargetRef:
        release = board.get("firmware_release")
        return TargetRef(
            id=self.target_id,
            kind="remote",
            power_mode=board.get("power_mode") or self.power_mode,
            firmware={"release": release} if release else None,
            board=self.board,
        )

    def _env(self, board: dict[str, Any]) -> EnvFingerprint:
        """The board's fingerprint as the record's environment; what the lab knows of the device goes in ``extra``."""
        known = {
            "device": self.device.id,
            "board": self.board,
            "chip_revision": self.device.chip_revision,
            "transport": self.device.transport,
            "agent": board.get("agent"),
            "machine": board.get("machine"),
            "onnxruntime_build": board.get("onnxruntime_build"),
            "device_tree_model": board.get("device_tree_model"),
            "power_mode": board.get("power_mode"),
        }
        return EnvFingerprint(
            hostname=str(board.get("hostname", "?")),
            os=str(board.get("os", "?")),
            cpu_model=str(board.get("cpu_model", "?")),
            cpu_cores=int(board.get("cpu_cores", 0)),
            ram_gib=float(board.get("ram_gib", 0.0)),
            python=str(board.get("python", "?")),
            onnxruntime=str(board.get("onnxruntime", "?")),
            onnx=str(board.get("onnx", "absent")),
            providers=list(board.get("providers", [])),
            edgeproof=edgeproof.__version__,
            governor=board.get("governor"),
            extra={k: str(v) for k, v in known.items() if v},
        )

    def _meters(self) -> dict[str, str]:
        said = (self.hello.fingerprint if self.hello else {}).get("meters") or {}
        return {name: value if value.startswith("unavailable:") else f"{self.provenance}:{value}" for name, value in said.items()}

    def bring_up(self) -> list[dict[str, str]]:
        """The agent's phase-1 checklist (uptime, providers, kernel errors, telemetry): name, status, detail."""
        self._require_open("bring_up")
        assert self._client is not None
        return list(self._client.request("bring-up")["checks"])

    def _close(self) -> None:
        if self._client is None:
            return
        try:
            self._client.bye()
        except BoardLost:
            pass
        self._client.link.close()
        self._client = None
        self._archives.clear()
