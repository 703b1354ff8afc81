"""The recorder: a sub-microsecond hot path around each inference, and a sampler thread that aggregates windows off it.

Per inference the hot path takes two ``perf_counter_ns`` stamps, appends the latency to a ring buffer,
and bumps the in-flight depth: nothing else. Confidence and input quality run on one inference in
``sample_every`` (or on every one when a fallback policy needs the confidence), and their own cost is
reported as metrics. The sampler thread drains the ring buffer into a DDSketch every ``tick_s``, reads
the system (RSS, PSI, power, temperature, throttle, power mode, firmware), closes a window every
``window_s`` and appends it to the segment store; a window is acknowledged (``on_ack``) only once fsync'd.

Nothing is collected until ``enable()`` is called: that is the user's consent. Raw inputs never leave
the device; input quality is kept as statistics only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.telemetry._aggregate import add_many, histogram_metric, new_sketch, sketch_metric
from edgeproof.telemetry._quality import Confidence, confidence, image_quality
from edgeproof.telemetry._schema import PROBABILITY_BOUNDS, Event, Labels, MetricValue, Record, Window
from edgeproof.telemetry._segments import SegmentStore, canonical_metrics
from edgeproof.telemetry._system import PowerWindow, SystemReading, read_system

_NEVER = 1 << 62


@dataclass
class TelemetryConfig:
    """What the recorder collects and where it keeps it; ``enabled`` stays False until the user consents."""

    directory: Path
    labels: Labels
    enabled: bool = False
    window_s: float = 3600.0
    tick_s: float = 1.0
    system_period_s: float = 10.0
    sample_every: int = 100
    raw_sample_share: float = 0.0
    raw_samples_max: int = 10_000
    segment_bytes: int = 4 << 20
    max_disk_bytes: int = 64 << 20
    min_free_bytes: int = 256 << 20
    # Nominal range of image inputs for the quality statistics; None: (0, 1) for floats, the dtype's range for integers.
    input_range: tuple[float, float] | None = None
    # Root of /proc and /sys (a fake tree in tests).
    root: Path = Path("/")

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.tick_s <= 0 or self.system_period_s <= 0:
            raise ValueError("window_s, tick_s and system_period_s must be > 0")
        if not 0.0 <= self.raw_sample_share <= 1.0:
            raise ValueError(f"raw_sample_share must be within 0..1, got {self.raw_sample_share}")
        if self.sample_every < 0:
            raise ValueError(f"sample_every must be >= 0 (0: never), got {self.sample_every}")


@dataclass
class FallbackPolicy:
    """Below ``min_confidence`` (top-1 probability) the ``fallback`` runs instead and its answer is returned; counted as ``policy_fallback``."""

    min_confidence: float
    fallback: Callable[..., Any]
    name: str = "fallback"


def draws_raw_samples(device_id: str, share: float) -> bool:
    """Whether this device is among the ``share`` of the fleet that keeps raw per-inference samples (stable per device)."""
    draw = int.from_bytes(hashlib.sha256(f"edgeproof.telemetry.raw:{device_id}".encode()).digest()[:8], "big") / 2**64
    return draw < share


def read_boot_id(root: Path = Path("/")) -> str:
    """The kernel's boot id; a fresh random one per process where the kernel has none (then every start is a "boot")."""
    try:
        return (root / "proc/sys/kernel/random/boot_id").read_text().strip() or uuid.uuid4().hex
    except OSError:
        return uuid.uuid4().hex


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_array(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    value = args[0] if args else next(iter(kwargs.values()), None)
    if isinstance(value, dict):
        value = next(iter(value.values()), None)
    return value


def _first_output(out: Any) -> Any:
    return out[0] if isinstance(out, list | tuple) else out


@dataclass(frozen=True)
class _Probe:
    """Handles on one wrapped callable's hot-path state: switch recording on/off, read its in-flight depth."""

    switch: Callable[[bool], None]
    depth: Callable[[bool], tuple[int, int]]


@dataclass
class _Window:
    """What the current window has gathered so far (sampler thread only)."""

    start_unix_ns: int
    latency_s: Any = field(default_factory=new_sketch)
    entropy: Any = field(default_factory=new_sketch)
    top1: list[float] = field(default_factory=list)
    margin: list[float] = field(default_factory=list)
    quality: dict[str, Any] = field(default_factory=dict)
    statistics: dict[str, Any] = field(default_factory=dict)
    n_inferences: int = 0
    latency_sum_ns: int = 0
    latency_min_ns: int = _NEVER
    latency_max_ns: int = 0
    n_errors: int = 0
    n_policy_fallback: int = 0
    provider_fallback_inferences: int = 0
    confidence_cost_ns: int = 0
    confidence_samples: int = 0
    quality_cost_ns: int = 0
    quality_samples: int = 0
    paths: dict[str, int] = field(default_factory=dict)
    raw_latency_ns: list[int] | None = None
    raw_confidence: list[float] | None = None


class Recorder:
    """Records inferences of wrapped callables or ONNX Runtime sessions into windows and events on disk.

    ``on_ack`` is called with the sequence numbers of records once they are durable (fsync'd).
    Use ``with Recorder(config) as rec:`` or call ``enable()``/``close()``; ``tick()`` and
    ``flush()`` run the sampler's work synchronously (for tests and for devices without threads).
    """

    def __init__(
        self,
        config: TelemetryConfig,
        *,
        boot_id: str | None = None,
        on_ack: Callable[[list[int]], None] | None = None,
        read_power: bool = True,
    ) -> None:
        self.config = config
        self.labels = config.labels
        self.boot_id = boot_id or read_boot_id(config.root)
        self.on_ack = on_ack
        self.keeps_raw_samples = draws_raw_samples(config.labels.device_id, config.raw_sample_share)
        self.enabled = False
        self._read_power = read_power
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store: SegmentStore | None = None
        self._power: PowerWindow | None = None
        # Shared with the hot path: deques and itertools.count are atomic under the GIL.
        self._latency_ns: deque[int] = deque()
        self._probes: list[_Probe] = []
        self._confidences: deque[tuple[Confidence, int]] = deque()
        self._qualities: deque[tuple[dict[str, float], int]] = deque()
        self._policy_fallbacks: deque[int] = deque()
        self._errors: deque[str] = deque()
        self._paths: deque[str] = deque()
        self._events: deque[tuple[int, str, dict[str, Any]]] = deque()
        self._pending: list[Record] = []
        self._seq = 0
        self._window: _Window | None = None
        self._window_end_ns = _NEVER
        self._next_system_ns = 0
        self._last_system: SystemReading | None = None
        self.provider_fallback_nodes: int | None = None
        self.refused_records = 0
        # The newest window on disk: what a Prometheus scrape serves.
        self.last_window: Window | None = None
        if config.enabled:
            self.enable()

    # -- consent and life cycle ------------------------------------------------------------------

    def enable(self, start_thread: bool = True) -> None:
        """Start collecting (the user's consent): open the store, start the window and the sampler thread."""
        with self._lock:
            if self.enabled:
                return
            self._store = SegmentStore(
                self.config.directory,
                self.boot_id,
                segment_bytes=self.config.segment_bytes,
                max_disk_bytes=self.config.max_disk_bytes,
                min_free_bytes=self.config.min_free_bytes,
            )
            self._seq = self._store.last_seq + 1
            self._power = PowerWindow(self.config.root) if self._read_power else None
            self._open_window(time.time_ns())
            self.enabled = True
            for probe in self._probes:
                probe.switch(True)
            self.event("telemetry_enabled", raw_samples=self.keeps_raw_samples, window_s=self.config.window_s)
        if start_thread:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="edgeproof-telemetry", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Close the current window, write what is pending, stop the thread. Collection stops."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            if self.enabled:
                self.flush()
            self.enabled = False
            for probe in self._probes:
                probe.switch(False)
            if self._store is not None:
                self._store.close()
            if self._power is not None:
                self._power.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.wait(self.config.tick_s):
            try:
                self.tick()
            except Exception as exc:  # the sampler must outlive a bad reading or a full disk; the error becomes an event
                self.event("runtime_error", error=type(exc).__name__, message=str(exc)[:200], source="telemetry sampler")

    # -- the hot path ----------------------------------------------------------------------------

    def wrap(
        self,
        fn: Callable[..., Any],
        *,
        policy: FallbackPolicy | None = None,
        input_of: Callable[[tuple[Any, ...], dict[str, Any]], Any] = _first_array,
        output_of: Callable[[Any], Any] = _first_output,
        quality_hook: Callable[[Any], dict[str, float]] | None = None,
    ) -> Callable[..., Any]:
        """``fn`` with every call recorded; with ``policy``, low-confidence answers come from its fallback.

        ``input_of(args, kwargs)`` picks the input whose quality is measured on sampled calls (the first
        array by default; an image when it has two or more axes), ``output_of(result)`` the classifier
        output whose confidence is measured, and ``quality_hook(input)`` adds statistics of other sensors.
        """
        rec = self
        clock = time.perf_counter_ns
        started, finished = itertools.count(1), itertools.count(1)
        latency_append = self._latency_ns.append
        every = self.config.sample_every or _NEVER
        # The hot path keeps its state in closure cells: cheaper than attributes, read by the sampler through `probe`.
        on = self.enabled
        done = 0
        depth_max = 0

        def recorded(*args: Any, **kwargs: Any) -> Any:
            nonlocal done, depth_max
            if not on:
                return fn(*args, **kwargs)
            t0 = clock()
            n = next(started)
            if n - done > depth_max:
                depth_max = n - done
            try:
                out = fn(*args, **kwargs)
            except BaseException as exc:
                done = next(finished)
                rec._failed(exc)
                raise
            latency_append(clock() - t0)
            done = next(finished)
            if not n % every:
                rec._sample(input_of(args, kwargs), output_of(out), quality_hook)
            return out

        def recorded_with_policy(*args: Any, **kwargs: Any) -> Any:
            nonlocal done, depth_max
            assert policy is not None
            if not on:
                out = fn(*args, **kwargs)
                return policy.fallback(*args, **kwargs) if confidence(output_of(out)).top1 < policy.min_confidence else out
            t0 = clock()
            n = next(started)
            if n - done > depth_max:
                depth_max = n - done
            try:
                out = fn(*args, **kwargs)
                c0 = clock()
                conf = confidence(output_of(out))
                rec._confidences.append((conf, clock() - c0))
                if conf.top1 < policy.min_confidence:
                    rec._policy_fallbacks.append(1)
                    out = policy.fallback(*args, **kwargs)
            except BaseException as exc:
                done = next(finished)
                rec._failed(exc)
                raise
            latency_append(clock() - t0)
            done = next(finished)
            if not n % every:
                rec._sample(input_of(args, kwargs), None, quality_hook)
            return out

        def switch(enabled: bool) -> None:
            nonlocal on
            on = enabled

        def depth(reset: bool) -> tuple[int, int]:
            """(requests in flight now, most in flight at once since the last reset)."""
            nonlocal depth_max
            now = max(0, int(repr(started)[6:-1]) - 1 - done)
            most = max(depth_max, now)
            if reset:
                depth_max = now
            return now, most

        self._probes.append(_Probe(switch, depth))
        return recorded if policy is None else recorded_with_policy

    def count(self, path: str) -> None:
        """Count one execution of the named code path (``edgeproof.path.count{path=...}``)."""
        if self.enabled:
            self._paths.append(path)

    def event(self, type: str, **attributes: Any) -> None:
        """Record an event now (see ``EVENT_TYPES``); it is written with the next tick."""
        if self.enabled:
            self._events.append((time.time_ns(), type, attributes))

    # -- off the hot path ------------------------------------------------------------------------

    def _sample(self, array: Any, output: Any, quality_hook: Callable[[Any], dict[str, float]] | None) -> None:
        clock = time.perf_counter_ns
        if output is not None:
            c0 = clock()
            try:
                conf = confidence(output)
            except (ValueError, TypeError):
                pass
            else:
                self._confidences.append((conf, clock() - c0))
        if array is None:
            return
        q0 = clock()
        stats: dict[str, float] = {}
        x = np.asarray(array)
        if x.ndim >= 2 and x.dtype.kind in "fiu":
            stats = {f"edgeproof.input.{k}": v for k, v in dataclasses.asdict(image_quality(x, self.config.input_range)).items()}
        if quality_hook is not None:
            stats.update({f"statistic:{k}": float(v) for k, v in quality_hook(array).items()})
        if stats:
            self._qualities.append((stats, clock() - q0))

    def _failed(self, exc: BaseException) -> None:
        self._errors.append(type(exc).__name__)
        self.event("runtime_error", error=type(exc).__name__, message=str(exc)[:200])

    def _open_window(self, now_ns: int) -> None:
        self._window = _Window(start_unix_ns=now_ns)
        if self.keeps_raw_samples:
            self._window.raw_latency_ns, self._window.raw_confidence = [], []
        self._window_end_ns = now_ns + int(self.config.window_s * 1e9)

    def _drain(self) -> None:
        w = self._window
        assert w is not None
        batch = np.fromiter((self._latency_ns.popleft() for _ in range(len(self._latency_ns))), dtype=np.int64)
        if batch.size:
            add_many(w.latency_s, batch * 1e-9)
            w.n_inferences += int(batch.size)
            w.latency_sum_ns += int(batch.sum())
            w.latency_min_ns = min(w.latency_min_ns, int(batch.min()))
            w.latency_max_ns = max(w.latency_max_ns, int(batch.max()))
            if w.raw_latency_ns is not None:
                w.raw_latency_ns.extend(batch[: self.config.raw_samples_max - len(w.raw_latency_ns)].tolist())
        for _ in range(len(self._confidences)):
            conf, cost = self._confidences.popleft()
            w.top1.append(conf.top1)
            w.margin.append(conf.margin)
            w.entropy.add(conf.entropy)
            w.confidence_cost_ns += cost
            w.confidence_samples += 1
            if w.raw_confidence is not None and len(w.raw_confidence) < self.config.raw_samples_max:
                w.raw_confidence.append(conf.top1)
        for _ in range(len(self._qualities)):
            stats, cost = self._qualities.popleft()
            for name, value in stats.items():
                if name.startswith("statistic:"):
                    w.statistics.setdefault(name.removeprefix("statistic:"), new_sketch()).add(value)
                else:
                    w.quality.setdefault(name, new_sketch()).add(value)
            w.quality_cost_ns += cost
            w.quality_samples += 1
        n_fallbacks = len(self._policy_fallbacks)
        for _ in range(n_fallbacks):
            self._policy_fallbacks.popleft()
        if n_fallbacks and not w.n_policy_fallback:
            self.event("policy_fallback_activated", first_in_window_starting_unix_ns=w.start_unix_ns)
        w.n_policy_fallback += n_fallbacks
        for _ in range(len(self._errors)):
            self._errors.popleft()
            w.n_errors += 1
        for _ in range(len(self._paths)):
            path = self._paths.popleft()
            w.paths[path] = w.paths.get(path, 0) + 1

    def _in_flight(self, reset: bool) -> tuple[int, int]:
        depths = [probe.depth(reset) for probe in self._probes]
        return sum(d[0] for d in depths), sum(d[1] for d in depths)

    def _sample_system(self, now_ns: int) -> None:
        reading = read_system(self.config.root)
        last = self._last_system
        if last is not None:
            if reading.throttle_count is not None and last.throttle_count is not None and reading.throttle_count != last.throttle_count:
                self.event(
                    "thermal_throttle_changed",
                    throttle_count=reading.throttle_count,
                    new_events=reading.throttle_count - last.throttle_count,
                )
            if reading.power_mode != last.power_mode:
                self.event("power_mode_changed", old=last.power_mode, new=reading.power_mode)
            if reading.firmware != last.firmware:
                self.event("firmware_changed", old=last.firmware, new=reading.firmware)
        self._last_system = reading
        self._next_system_ns = now_ns + int(self.config.system_period_s * 1e9)

    def tick(self, now_ns: int | None = None) -> None:
        """The sampler's work: drain the ring buffer, read the system when due, close the window when due, write."""
        with self._lock:
            if not self.enabled:
                return
            now_ns = time.time_ns() if now_ns is None else now_ns
            self._drain()
            if now_ns >= self._next_system_ns:
                self._sample_system(now_ns)
            if now_ns >= self._window_end_ns:
                self._close_window(now_ns)
            self._write()

    def flush(self) -> None:
        """Close the current window now and write it and every pending event; acknowledged once fsync'd."""
        with self._lock:
            if not self.enabled:
                return
            self._drain()
            self._sample_system(time.time_ns())
            self._close_window(time.time_ns())
            self._write()

    def swap_labels(self, **changes: str) -> None:
        """Close the window and carry on with changed labels (a model swap changes ``model_sha256``)."""
        with self._lock:
            if self.enabled:
                self._drain()
                assert self._window is not None
                if self._window.n_inferences or self._window.n_errors:
                    self._close_window(time.time_ns())
            self.labels = dataclasses.replace(self.labels, **changes)

    def _close_window(self, now_ns: int) -> None:
        w = self._window
        assert w is not None
        self._take_events()
        metrics = self._window_metrics(w)
        self._pending.append(
            Window(self.labels, self.boot_id, self._next_seq(), w.start_unix_ns, now_ns, metrics, w.raw_latency_ns, w.raw_confidence)
        )
        self._open_window(now_ns)

    def _window_metrics(self, w: _Window) -> list[MetricValue]:
        def counter(name: str, value: float, **attributes: str) -> MetricValue:
            return MetricValue(name=name, value=float(value), attributes=attributes)

        in_flight, in_flight_max = self._in_flight(reset=True)
        metrics = [
            sketch_metric(
                "edgeproof.inference.duration", w.latency_s, (w.latency_sum_ns * 1e-9, w.latency_min_ns * 1e-9, w.latency_max_ns * 1e-9)
            ),
            counter("edgeproof.inference.count", w.n_inferences),
            counter("edgeproof.inference.errors", w.n_errors),
            counter("edgeproof.inference.in_flight", in_flight),
            counter("edgeproof.inference.in_flight.max", in_flight_max),
            histogram_metric("edgeproof.inference.confidence", PROBABILITY_BOUNDS, w.top1),
            histogram_metric("edgeproof.inference.confidence.margin", PROBABILITY_BOUNDS, w.margin),
            sketch_metric("edgeproof.inference.confidence.entropy", w.entropy),
            counter("edgeproof.fallback.policy", w.n_policy_fallback),
            counter("edgeproof.telemetry.confidence.cost", w.confidence_cost_ns),
            counter("edgeproof.telemetry.confidence.samples", w.confidence_samples),
            counter("edgeproof.telemetry.input_quality.cost", w.quality_cost_ns),
            counter("edgeproof.telemetry.input_quality.samples", w.quality_samples),
            counter("edgeproof.telemetry.records.refused", self.refused_records),
        ]
        metrics += [sketch_metric(name, sketch) for name, sketch in sorted(w.quality.items())]
        metrics += [sketch_metric("edgeproof.input.statistic", sketch, statistic=name) for name, sketch in sorted(w.statistics.items())]
        metrics += [counter("edgeproof.path.count", n, path=path) for path, n in sorted(w.paths.items())]
        if self.provider_fallback_nodes is not None:
            metrics.append(counter("edgeproof.fallback.provider.nodes", self.provider_fallback_nodes))
            metrics.append(counter("edgeproof.fallback.provider.inferences", w.n_inferences if self.provider_fallback_nodes else 0))
        reading = self._last_system
        if reading is not None:
            gauges = [
                ("process.memory.usage", reading.rss_bytes),
                ("edgeproof.memory.pressure.some.avg10", reading.memory_psi_some_avg10),
                ("edgeproof.cpu.pressure.some.avg10", reading.cpu_psi_some_avg10),
                ("hw.temperature", reading.temperature_c),
            ]
            metrics += [counter(name, value) for name, value in gauges if value is not None]
        energy = self._power.next_window() if self._power is not None else None
        if energy is not None:
            metrics += [counter("hw.energy", energy[0]), counter("hw.power", energy[1])]
        # in the order a segment reads them back, so a window read from disk equals the one written
        return canonical_metrics(metrics)

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def _take_events(self) -> None:
        for _ in range(len(self._events)):
            at, type_, attributes = self._events.popleft()
            self._pending.append(Event(self.labels, self.boot_id, self._next_seq(), at, type_, attributes))

    def _write(self) -> None:
        self._take_events()
        if not self._pending or self._store is None:
            return
        if self._store.append(self._pending):
            seqs = [r.seq for r in self._pending]
            self.last_window = next((r for r in reversed(self._pending) if isinstance(r, Window)), self.last_window)
            self._pending = []
            if self.on_ack is not None:
                self.on_ack(seqs)
        else:
            # The disk headroom refused the frame: keep the newest windows for a later try, count the rest.
            keep = self._pending[-100:]
            self.refused_records += len(self._pending) - len(keep)
            self._pending = keep
