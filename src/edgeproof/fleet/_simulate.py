"""The fleet simulator: thousands of simulated devices sending telemetry segments, with faults injected by scenario.

Each (board, firmware) is simulated once with the board simulator (latency, energy per inference, and a
thermal soak per region's ambient temperature); every device then draws its own noise around that
(speed, load, power) and every window its own samples. Devices send the way devices do: in batches,
some twice, some late, some never again, with skewed clocks. Every window is labelled simulated
(``bom_id = "simulated:<board>@<profile>"``), so no figure from it can pass for a field measurement.
A caller (a rollout controller) sets each device's release and cohort between steps.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgeproof.errors import DataError
from edgeproof.fleet._frames import write_segment
from edgeproof.fleet._sketch import encode_bins, keys_of
from edgeproof.telemetry._schema import METRICS, PROBABILITY_BOUNDS
from edgeproof.telemetry._segments import STORED_LABELS, SUFFIX, flat_schema, latency_quantiles, metric_column

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_MODEL = ROOT / "examples" / "digits" / "model.onnx"
FAULT_KINDS = ("provider-fallback", "thermal-throttle", "driver-reset", "telemetry-stop")
_LATENCY_DRAWS = 48  # latency draws per window; the window's sketch weights them up to its inference count


@dataclass(frozen=True)
class BoardMix:
    """A board in the fleet: its catalog id, chip revisions (equally shared) and share of devices."""

    target: str
    chip_revisions: tuple[str, ...]
    share: float


@dataclass(frozen=True)
class Region:
    name: str
    ambient_c: float
    share: float


@dataclass(frozen=True)
class Release:
    """What a device runs: a name the scenario's faults refer to, the model hash and firmware version on its labels."""

    name: str
    model_sha256: str
    firmware_version: str


@dataclass(frozen=True)
class Fault:
    """An injected fault: on devices running ``release`` (any when empty) that match ``chip_revision`` / ``region`` (any when empty).

    provider-fallback: ``rate`` of inferences fall back to the CPU (``slowdown`` × latency, ``energy_factor`` × energy).
    thermal-throttle: throttling in ``rate`` of the time (clocks × ``clock_factor``), ``events_per_h`` throttle changes.
    driver-reset: ``events_per_h`` session re-creations per device-hour. telemetry-stop: no telemetry after ``after_h``.
    """

    kind: str
    release: str = ""
    chip_revision: str = ""
    region: str = ""
    rate: float = 0.05
    slowdown: float = 4.0
    energy_factor: float = 3.0
    clock_factor: float = 0.7
    events_per_h: float = 2.0
    after_h: float = 0.0


@dataclass(frozen=True)
class Sending:
    """How devices send: windows per upload, shares re-sent and late, devices that go silent, clock skew."""

    batch_windows: int = 6
    duplicate_frac: float = 0.05
    late_frac: float = 0.05
    late_h: float = 3.0
    silent_frac: float = 0.01
    clock_skew_s: float = 30.0
    frame_rows: int = 20_000


@dataclass(frozen=True)
class FleetSpec:
    """A simulated fleet: size, composition, traffic and the faults to inject."""

    devices: int = 10_000
    seed: int = 0
    window_h: float = 1.0
    rate_hz: float = 2.0
    model: Path = DEFAULT_MODEL
    boards: tuple[BoardMix, ...] = (
        BoardMix("jetson-orin-nano-8gb", ("A1", "A2"), 0.6),
        BoardMix("hailo-8-rpi5", ("H8-r1", "H8-r2"), 0.4),
    )
    regions: tuple[Region, ...] = (
        Region("eu-north", 12.0, 0.3),
        Region("us-west", 24.0, 0.3),
        Region("ap-south", 33.0, 0.2),
        Region("me-central", 42.0, 0.2),
    )
    base_fallback_frac: float = 0.001
    base_error_frac: float = 1e-5
    confidence_sample_every: int = 100
    sending: Sending = field(default_factory=Sending)
    faults: tuple[Fault, ...] = ()


@dataclass(frozen=True)
class BoardModel:
    """What the board simulator says once per (board, firmware, ambient): the base for every device's draws."""

    target: str
    label: str
    accelerator: str
    power_mode: str
    latency_ms: float
    jitter_sigma: float
    energy_mj: float
    throttled_share: float
    clock_factor: float
    temperature_c: float


@functools.lru_cache(maxsize=64)
def board_model(model: Path, target: str, ambient_c: float, rate_hz: float) -> BoardModel:
    """One board simulation (with a 10-minute soak at ``ambient_c`` and the device's rate): the fleet's base for that board."""
    from edgeproof.simulate import simulate_run

    record = simulate_run(model, target, soak_s=600.0, ambient_c=ambient_c, rate_hz=rate_hz, sessions=1, samples_per_session=50)
    sim = record.simulation
    assert sim is not None and sim.soak is not None and sim.operating_point is not None
    soak = sim.soak
    fw = record.target.firmware or {}
    governor = fw.get("governor", {}) if isinstance(fw, dict) else {}
    return BoardModel(
        target=target,
        label=sim.profile,
        accelerator=record.settings.provider or "",
        power_mode=record.target.power_mode or "",
        latency_ms=float(sim.latency_model_ms or record.latency.p50_ms),
        jitter_sigma=float(sim.jitter.sigma) if sim.jitter is not None else 0.02,
        energy_mj=float(record.energy_mj_per_inference.value or 0.0),
        throttled_share=float(soak.throttled_s / soak.duration_s) if soak.duration_s else 0.0,
        clock_factor=float(governor.get("throttled_clock_factor", 1.0)),
        temperature_c=float(soak.peak_temperature_c),
    )


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class FleetSimulator:
    """A simulated fleet; ``set_release`` assigns releases and cohorts, ``advance`` simulates time and sends segments."""

    def __init__(self, spec: FleetSpec) -> None:
        if spec.devices < 1:
            raise DataError(f"fleet: devices must be at least 1, got {spec.devices}")
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        self.rng = rng
        n = spec.devices
        self.device_id = np.array([f"sim-{spec.seed}-{i:06d}" for i in range(n)], dtype=object)
        self.boot_id = np.array([_hash(f"boot:{spec.seed}:{i}")[:32] for i in range(n)], dtype=object)
        shares = np.array([b.share for b in spec.boards], float)
        self.board = rng.choice(len(spec.boards), size=n, p=shares / shares.sum())
        self.chip = np.array(
            [spec.boards[b].chip_revisions[rng.integers(len(spec.boards[b].chip_revisions))] for b in self.board], dtype=object
        )
        rshares = np.array([r.share for r in spec.regions], float)
        self.region = rng.choice(len(spec.regions), size=n, p=rshares / rshares.sum())
        self.ambient_c = np.array([spec.regions[r].ambient_c for r in self.region]) + rng.normal(0, 2.0, n)
        self.speed = rng.lognormal(0.0, 0.03, n)  # silicon and install spread of latency
        self.power = rng.lognormal(0.0, 0.05, n)  # ... and of energy
        self.load = rng.lognormal(0.0, 0.3, n)  # traffic differs per device
        self.confidence = np.clip(rng.normal(0.9, 0.02, n), 0.5, 0.99)
        self.skew_ns = (rng.normal(0.0, spec.sending.clock_skew_s, n) * 1e9).astype(np.int64)
        self.silent_after_h = np.where(rng.random(n) < spec.sending.silent_frac, rng.uniform(0, 24, n), np.inf)
        self.next_seq = np.zeros(n, dtype=np.int64)
        self.hours = 0.0
        self.start_ns = 1_800_000_000 * 10**9
        baseline = Release("baseline", _hash(f"model:{spec.model.name}"), "fw-1")
        self.releases: list[Release] = [baseline]
        self.release = np.zeros(n, dtype=np.int64)
        self.cohort = np.array(["control"] * n, dtype=object)
        self._late: list[pa.Table] = []
        self._segment_index = 0
        self.models = {
            (b, r): board_model(spec.model, spec.boards[b].target, spec.regions[r].ambient_c, spec.rate_hz)
            for b in range(len(spec.boards))
            for r in range(len(spec.regions))
        }
        # each device's board simulation, as columns
        per_device = [self.models[(int(b), int(r))] for b, r in zip(self.board, self.region)]
        self.base_latency_ms = np.array([bm.latency_ms for bm in per_device])
        self.base_sigma = np.array([bm.jitter_sigma for bm in per_device])
        self.base_energy_mj = np.array([bm.energy_mj for bm in per_device])
        self.base_throttled = np.array([bm.throttled_share for bm in per_device])
        self.base_clock = np.array([bm.clock_factor for bm in per_device])
        self.base_temperature_c = np.array([bm.temperature_c for bm in per_device]) + (
            self.ambient_c - np.array([spec.regions[r].ambient_c for r in self.region])
        )
        self.profile = np.array([f"simulated:{bm.label}" for bm in per_device], dtype=object)
        self.accelerator = np.array([bm.accelerator for bm in per_device], dtype=object)
        self.power_mode = np.array([bm.power_mode for bm in per_device], dtype=object)
        self.region_name = np.array([spec.regions[r].name for r in self.region], dtype=object)

    def set_release(self, devices: np.ndarray | list[int], release: Release, cohort: str) -> None:
        """Devices (indices) run ``release`` from now on, labelled ``cohort``."""
        if release not in self.releases:
            self.releases.append(release)
        self.release[np.asarray(devices, dtype=np.int64)] = self.releases.index(release)
        self.cohort[np.asarray(devices, dtype=np.int64)] = cohort

    def _matches(self, fault: Fault) -> np.ndarray:
        names = np.array([r.name for r in self.releases], dtype=object)[self.release]
        mask = np.ones(self.spec.devices, bool)
        if fault.release:
            mask &= names == fault.release
        if fault.chip_revision:
            mask &= self.chip == fault.chip_revision
        if fault.region:
            mask &= self.region_name == fault.region
        return mask

    def advance(self, hours: float) -> list[pa.Table]:
        """Simulate ``hours`` more of the fleet; returns the frames (segment-schema tables) received, in arrival order."""
        spec = self.spec
        n_windows = max(1, int(round(hours / spec.window_h)))
        arrived: list[pa.Table] = self._late
        self._late = []
        pending: list[pa.Table] = []
        for w in range(n_windows):
            t_h = self.hours + w * spec.window_h
            tables = self._window_period(t_h)
            pending += tables
            if (w + 1) % spec.sending.batch_windows == 0 or w == n_windows - 1:
                arrived += self._send(pending)
                pending = []
        self.hours += n_windows * spec.window_h
        return _frames(arrived, spec.sending.frame_rows)

    def write(self, directory: Path, hours: float) -> list[Path]:
        """``advance(hours)`` and write what arrived as segment files in ``directory`` (one file per upload round)."""
        directory.mkdir(parents=True, exist_ok=True)
        frames = self.advance(hours)
        path = directory / f"sim-{self.spec.seed}-{self._segment_index:06d}{SUFFIX}"
        self._segment_index += 1
        write_segment(path, frames)
        return [path]

    def _send(self, tables: list[pa.Table]) -> list[pa.Table]:
        """What reaches the receiver now: each row once, some twice; some batches are held back to arrive late."""
        send = self.spec.sending
        out = []
        for table in _by_columns(tables):  # windows, then events
            n = table.num_rows
            late = self.rng.random(n) < send.late_frac
            dup = self.rng.random(n) < send.duplicate_frac
            out.append(table.take(pa.array(np.flatnonzero(~late))))
            if dup.any():
                out.append(table.take(pa.array(np.flatnonzero(dup))))
            if late.any():
                self._late.append(table.take(pa.array(np.flatnonzero(late))))
        return out

    def _window_period(self, t_h: float) -> list[pa.Table]:
        spec, rng = self.spec, self.rng
        window_s = spec.window_h * 3600.0
        alive = self.silent_after_h > t_h
        for fault in spec.faults:
            if fault.kind == "telemetry-stop" and t_h >= fault.after_h:
                alive &= ~self._matches(fault)
        idx = np.flatnonzero(alive)
        m = idx.size
        if m == 0:
            return []
        latency_ms = self.base_latency_ms[idx] * self.speed[idx]
        sigma = self.base_sigma[idx]
        energy_mj = self.base_energy_mj[idx] * self.power[idx]
        throttled = self.base_throttled[idx].copy()
        clock = self.base_clock[idx].copy()
        temperature = self.base_temperature_c[idx]
        fallback = np.full(m, spec.base_fallback_frac)
        slowdown = np.full(m, 4.0)
        energy_factor = np.full(m, 3.0)
        throttle_events_per_h = np.where(throttled > 0, 1.0, 0.0)
        resets_per_h = np.zeros(m)
        for fault in spec.faults:
            hit = self._matches(fault)[idx]
            if fault.kind == "provider-fallback":
                fallback[hit] = fault.rate
                slowdown[hit], energy_factor[hit] = fault.slowdown, fault.energy_factor
            elif fault.kind == "thermal-throttle":
                throttled[hit] = np.maximum(throttled[hit], fault.rate)
                clock[hit] = fault.clock_factor
                throttle_events_per_h[hit] += fault.events_per_h
            elif fault.kind == "driver-reset":
                resets_per_h[hit] += fault.events_per_h
        inferences = rng.poisson(spec.rate_hz * window_s * self.load[idx]).astype(np.int64)
        fb = rng.binomial(inferences, fallback)
        errors = rng.poisson(inferences * spec.base_error_frac)
        throttled_share = np.clip(throttled, 0, 1)
        # latency draws: a throttled share at clock_factor, a fallback share on the CPU path
        d = _LATENCY_DRAWS
        draws = rng.lognormal(np.log(latency_ms)[:, None], sigma[:, None], (m, d))
        draws *= np.where(rng.random((m, d)) < throttled_share[:, None], 1.0 / clock[:, None], 1.0)
        draws *= np.where(rng.random((m, d)) < fallback[:, None], slowdown[:, None], 1.0)
        keys = keys_of(draws * 1e-3)
        lo = keys.min(axis=1)
        span = int((keys.max(axis=1) - lo).max()) + 1
        counts = np.zeros((m, span))
        np.add.at(counts, (np.repeat(np.arange(m), d), (keys - lo[:, None]).ravel()), 1.0)
        counts *= (inferences / d)[:, None]
        mean_s = (draws.mean(axis=1) * 1e-3) * np.where(inferences > 0, 1, 0)
        last = span - 1 - np.argmax(counts[:, ::-1] > 0, axis=1)
        sketches = [encode_bins(counts[i, : last[i] + 1], int(lo[i])) if inferences[i] else encode_bins(counts[i, :0], 0) for i in range(m)]
        energy_j = inferences * energy_mj * 1e-3 * (1 + (fb / np.maximum(inferences, 1)) * (energy_factor - 1))
        conf_n = inferences // max(1, spec.confidence_sample_every)
        conf_samples = np.clip(rng.normal(np.repeat(self.confidence[idx], conf_n), 0.05), 0.0, 1.0)
        owner = np.repeat(np.arange(m), conf_n)
        conf_sum = np.bincount(owner, weights=conf_samples, minlength=m)
        buckets = np.zeros((m, len(PROBABILITY_BOUNDS) + 1), dtype=np.int64)
        np.add.at(buckets, (owner, np.searchsorted(PROBABILITY_BOUNDS, conf_samples, side="left")), 1)
        throttles = rng.poisson(throttle_events_per_h * spec.window_h)
        resets = rng.poisson(resets_per_h * spec.window_h)
        start = self.start_ns + int(t_h * 3600e9) + self.skew_ns[idx]
        end = start + int(window_s * 1e9)
        seq0 = self.next_seq[idx].copy()
        self.next_seq[idx] += 1 + throttles + resets
        labels = self._labels(idx)
        windows = _window_table(
            self.device_id[idx],
            self.boot_id[idx],
            seq0,
            start,
            end,
            labels,
            {
                "edgeproof.inference.count": inferences.astype(float),
                "edgeproof.inference.errors": (errors + resets).astype(float),
                "edgeproof.fallback.provider.inferences": fb.astype(float),
                "edgeproof.fallback.provider.nodes": np.where(fallback > spec.base_fallback_frac, 3.0, 0.0),
                "hw.energy": energy_j,
                "hw.temperature": temperature,
            },
            sketches,
            inferences,
            mean_s,
            conf_n,
            conf_sum,
            buckets,
        )
        tables = [windows]
        # events take the sequence numbers after their window's: throttle changes first, then resets
        for kind, per_device, first in (
            ("thermal_throttle_changed", throttles, seq0 + 1),
            ("session_recreated", resets, seq0 + 1 + throttles),
        ):
            if not per_device.sum():
                continue
            owner = np.repeat(np.arange(m), per_device)
            j = np.arange(owner.size) - np.repeat(np.cumsum(per_device) - per_device, per_device)
            at = start[owner] + (rng.random(owner.size) * window_s * 1e9).astype(np.int64)
            owned = {key: value[owner] for key, value in labels.items()}
            tables.append(_event_table(self.device_id[idx][owner], self.boot_id[idx][owner], first[owner] + j, at, owned, kind))
        return tables

    def _labels(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        models = np.array([r.model_sha256 for r in self.releases], dtype=object)
        firmware = np.array([r.firmware_version for r in self.releases], dtype=object)
        return {
            "device_id": self.device_id[idx],
            "model_sha256": models[self.release[idx]],
            "bom_id": self.profile[idx],
            "firmware_version": firmware[self.release[idx]],
            "accelerator": self.accelerator[idx],
            "power_mode": self.power_mode[idx],
            "chip_revision": self.chip[idx],
            "region": self.region_name[idx],
            "cohort": self.cohort[idx],
        }


_DURATION = "edgeproof.inference.duration"
_CONFIDENCE = "edgeproof.inference.confidence"


def _constant(value: str, m: int) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(m, np.int8)), pa.array([value]))


def _key_columns(
    kind: str, device: np.ndarray, boot: np.ndarray, seq: np.ndarray, start: np.ndarray, end: np.ndarray, labels: dict[str, np.ndarray]
) -> dict[str, pa.Array]:
    """The columns every flat-layout row has (names as plain strings until ``_frames`` encodes them per frame)."""
    return {
        "kind": _constant(kind, device.size),
        "device_id": pa.array(device.tolist(), pa.string()),
        "boot_id": pa.array(boot.tolist(), pa.string()),
        "seq": pa.array(seq, pa.int64()),
        "start_unix_ns": pa.array(start, pa.int64()),
        "end_unix_ns": pa.array(end, pa.int64()),
        **{name: pa.array(labels[name].tolist(), pa.string()) for name in STORED_LABELS},
    }


def _window_table(
    device: np.ndarray,
    boot: np.ndarray,
    seq: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    labels: dict[str, np.ndarray],
    counters: dict[str, np.ndarray],
    sketches: list[bytes],
    inferences: np.ndarray,
    mean_s: np.ndarray,
    conf_n: np.ndarray,
    conf_sum: np.ndarray,
    buckets: np.ndarray,
) -> pa.Table:
    """Windows in the flat segment layout, a column per metric field (the latency quantiles read once from the sketches)."""
    assert all(name in METRICS for name in counters)
    m = device.size
    sketch_column = pa.array(sketches, pa.binary())
    per_row = buckets.shape[1]
    columns = {
        **_key_columns("window", device, boot, seq, start, end, labels),
        **{metric_column(name, "value"): pa.array(values, pa.float64()) for name, values in counters.items()},
        metric_column(_DURATION, "count"): pa.array(inferences, pa.int64()),
        metric_column(_DURATION, "sum"): pa.array(mean_s * inferences, pa.float64()),
        metric_column(_DURATION, "min"): pa.array(np.where(inferences > 0, mean_s, np.nan), pa.float64(), from_pandas=True),
        metric_column(_DURATION, "sketch"): sketch_column,
        **latency_quantiles(sketch_column),
        metric_column(_CONFIDENCE, "count"): pa.array(conf_n, pa.int64()),
        metric_column(_CONFIDENCE, "sum"): pa.array(conf_sum, pa.float64()),
        metric_column(_CONFIDENCE, "bucket_counts"): pa.ListArray.from_arrays(
            pa.array(np.arange(0, (m + 1) * per_row, per_row, dtype=np.int32)), pa.array(buckets.ravel(), pa.int64())
        ),
    }
    return _unencoded(columns)


def _event_table(
    device: np.ndarray, boot: np.ndarray, seq: np.ndarray, at: np.ndarray, labels: dict[str, np.ndarray], kind: str
) -> pa.Table:
    m = device.size
    attributes = json.dumps({"simulated": True}, sort_keys=True)
    columns = {
        **_key_columns("event", device, boot, seq, at, at, labels),
        "event_type": _constant(kind, m),
        "event_attributes_json": pa.array([attributes] * m, pa.string()),
    }
    return _unencoded(columns)


def _unencoded(columns: dict[str, pa.Array]) -> pa.Table:
    """The columns as a table of the flat layout's schema, but with names still plain strings."""
    schema = flat_schema(list(columns))
    plain = pa.schema([f.with_type(columns[f.name].type) for f in schema], metadata=schema.metadata)
    return pa.table({f.name: columns[f.name] for f in plain}, schema=plain)


def _by_columns(tables: list[pa.Table]) -> list[pa.Table]:
    """Tables of the same columns concatenated (windows, events), in the order each kind first came."""
    groups: dict[tuple[str, ...], list[pa.Table]] = {}
    for table in tables:
        groups.setdefault(tuple(table.column_names), []).append(table)
    return [pa.concat_tables(group) for group in groups.values()]


def _frames(tables: list[pa.Table], frame_rows: int) -> list[pa.Table]:
    """Frames of at most ``frame_rows`` rows in the flat layout, each with its own dictionaries of names.

    Rows are grouped by device (in arrival order within one), as a receiver appends each device's upload
    whole: a frame names a few devices, not every device of the fleet.
    """
    out = []
    for table in _by_columns(tables):
        table = table.combine_chunks()
        table = table.take(pc.sort_indices(table.column("device_id")))
        schema = flat_schema(table.column_names)
        for i in range(0, table.num_rows, frame_rows):
            part = table.slice(i, frame_rows)
            columns = [
                part.column(f.name).dictionary_encode().cast(f.type) if part.schema.field(f.name).type != f.type else part.column(f.name)
                for f in schema
            ]
            out.append(pa.table(columns, schema=schema))
    return out


def load_scenario(path: str | Path) -> FleetSpec:
    """A fleet scenario TOML: ``[fleet]`` (devices, seed, window_h, rate_hz, model), ``[sending]`` and ``[[fault]]`` tables.

    Raises DataError naming the file and key on anything it cannot use.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise DataError(f"{path}: {exc.strerror or exc}") from exc
    spec = FleetSpec()
    known = {"fleet", "sending", "fault"}
    for key in doc:
        if key not in known:
            raise DataError(f"{path}: [{key}]: unknown table (known: fleet, sending, fault)")
    fleet = doc.get("fleet", {})
    updates: dict[str, Any] = {}
    numbers = {"devices": int, "seed": int, "window_h": float, "rate_hz": float, "base_fallback_frac": float}
    for key, value in fleet.items():
        if key == "model":
            model = Path(value)
            updates["model"] = model if model.is_absolute() else path.parent / model
        elif key in numbers:
            updates[key] = _number(path, f"fleet.{key}", value, numbers[key])
        else:
            raise DataError(f"{path}: fleet.{key}: unknown key (known: model, {', '.join(numbers)})")
    sending_fields = {f: type(getattr(Sending(), f)) for f in Sending.__dataclass_fields__}
    sending: dict[str, Any] = {}
    for key, value in doc.get("sending", {}).items():
        if key not in sending_fields:
            raise DataError(f"{path}: sending.{key}: unknown key (known: {', '.join(sending_fields)})")
        sending[key] = _number(path, f"sending.{key}", value, sending_fields[key])
    faults = []
    fault_fields = Fault.__dataclass_fields__
    for i, table in enumerate(doc.get("fault", [])):
        where = f"fault[{i}]"
        kind = table.get("kind")
        if kind not in FAULT_KINDS:
            raise DataError(f"{path}: {where}.kind: {kind!r} is not one of {', '.join(FAULT_KINDS)}")
        args: dict[str, Any] = {}
        for key, value in table.items():
            if key not in fault_fields:
                raise DataError(f"{path}: {where}.{key}: unknown key (known: {', '.join(fault_fields)})")
            default = getattr(Fault(kind="x"), key)
            args[key] = str(value) if isinstance(default, str) else _number(path, f"{where}.{key}", value, float)
        faults.append(Fault(**args))
    return replace(spec, **updates, sending=Sending(**sending), faults=tuple(faults))


def _number(path: Path, key: str, value: object, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)) or value < 0:
        raise DataError(f"{path}: {key}: must be a {'whole ' if kind is int else ''}number >= 0, got {value!r}")
    return kind(value)
