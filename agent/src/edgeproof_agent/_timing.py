"""Timing on the board: fresh ONNX Runtime sessions, single-stream and paced loops, interleaved A/B, node traces.

The lab side decides how many sessions to run and summarises the raw samples; the agent only times.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime as ort

from edgeproof_agent._board import EnergyCounter

Feeds = dict[str, np.ndarray]

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# Sleep until this close to a scheduled start, then spin: sleep() overshoots by 50-100 µs.
_SPIN_NS = 200_000
_COLD_START_TIMEOUT_S = 600


class TimingFault(Exception):
    """A model or setting the board's ONNX Runtime refuses; the reply says so in one line."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def open_session(
    path: str | Path, settings: dict[str, Any], profile_prefix: str | None = None, spinning: bool = True
) -> ort.InferenceSession:
    """A fresh session with the lab's settings, CPU behind any accelerator provider; ``spinning``
    False for sessions that take turns on the same cores (interleaved A/B)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(settings.get("intra_op_threads", 1))
    opts.inter_op_num_threads = int(settings.get("inter_op_threads", 1))
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = _OPT_LEVELS[settings.get("graph_optimization_level", "all")]
    opts.log_severity_level = 3
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    provider = settings.get("provider", "CPUExecutionProvider")
    if provider not in ort.get_available_providers():
        raise TimingFault(
            f"execution provider {provider} is not in this board's onnxruntime (have: {', '.join(ort.get_available_providers())})"
        )
    providers = ["CPUExecutionProvider"] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise TimingFault(f"onnxruntime on the board cannot load the model ({_first_line(exc)})") from None
    return session


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _checked_run(session: ort.InferenceSession, feeds: Feeds) -> None:
    try:
        session.run(None, feeds)
    except Exception as exc:  # same untyped onnxruntime errors
        raise TimingFault(f"inference failed on the board ({_first_line(exc)})") from None


def back_to_back(run: Callable[[Any, Feeds], object], feeds: list[Feeds], n: int) -> list[float]:
    """One inference after another; per-inference wall time in ms (two clock reads and one call a loop)."""
    clock = time.perf_counter_ns
    k = len(feeds)
    out = [0] * n
    for i in range(n):
        f = feeds[i % k]
        t0 = clock()
        run(None, f)
        out[i] = clock() - t0
    return [ns / 1e6 for ns in out]


def paced(
    run: Callable[[Any, Feeds], object], feeds: list[Feeds], n: int, rate_hz: float, poisson: bool, seed: int
) -> tuple[list[float], list[float]]:
    """Fixed-rate or Poisson arrivals with one worker; latency counts from the scheduled arrival."""
    rng = np.random.default_rng(seed)
    gaps_s = rng.exponential(1.0 / rate_hz, n) if poisson else np.full(n, 1.0 / rate_hz)
    arrivals_ns = (np.cumsum(gaps_s) * 1e9).astype(np.int64)
    clock = time.perf_counter_ns
    origin = clock()
    k = len(feeds)
    latency: list[float] = []
    queueing: list[float] = []
    for i in range(n):
        arrival = origin + int(arrivals_ns[i])
        remaining = arrival - clock()
        if remaining > _SPIN_NS:
            time.sleep((remaining - _SPIN_NS) / 1e9)
        while clock() < arrival:
            pass
        start = clock()
        run(None, feeds[i % k])
        done = clock()
        latency.append((done - arrival) / 1e6)
        queueing.append((start - arrival) / 1e6)
    return latency, queueing


def samples_for(scenario: dict[str, Any], samples: int, session_budget_s: float, est_ms: float) -> int:
    """Timed runs in one session: ``samples``, capped so a session fits its share of the time budget."""
    rate = scenario.get("rate_hz")
    cap = int(session_budget_s * rate) if rate else int(session_budget_s * 1000.0 / max(est_ms, 1e-3))
    return max(20, min(samples, cap))


def time_sessions(
    model: Path,
    feeds: list[Feeds],
    settings: dict[str, Any],
    job: dict[str, Any],
    energy: EnergyCounter | None,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """``job["sessions"]`` fresh sessions of one model under its scenario; raw samples per session."""
    scenario = job["scenario"]
    out = []
    for idx in range(int(job["sessions"])):
        progress(f"session {idx + 1}/{job['sessions']}")
        session = open_session(model, settings)
        _checked_run(session, feeds[0])
        warm = back_to_back(session.run, feeds, int(job["warmup"]))
        est_ms = float(np.median(warm[len(warm) // 2 :])) if warm else 1.0
        n = samples_for(scenario, int(job["samples"]), float(job["session_budget_s"]), est_ms)
        window = energy.begin() if energy else None
        queueing: list[float] = []
        if scenario.get("rate_hz"):
            seed = int(job.get("seed", 0)) + int(job.get("session_offset", 0)) + idx
            samples, queueing = paced(session.run, feeds, n, float(scenario["rate_hz"]), scenario["name"] == "server", seed)
        else:
            samples = back_to_back(session.run, feeds, n)
        joules, seconds = energy.end(window) if energy and window is not None else (None, None)
        out.append(
            {
                "warmup_ms": warm,
                "samples_ms": samples,
                "started_at": now_iso(),
                "queueing_ms": queueing,
                "energy_j": joules,
                "energy_s": seconds,
                "providers": session.get_providers(),
            }
        )
        del session
    return out


def time_interleaved(
    models: tuple[Path, Path],
    feeds: tuple[list[Feeds], list[Feeds]],
    settings: dict[str, Any],
    ab: dict[str, Any],
    energy: EnergyCounter | None,
    progress: Callable[[str], None],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A and B in pairs of fresh sessions (opened in random order), alternating blocks with the
    leading arm alternating block to block: drift on the board cannot favour either arm."""
    rng = np.random.default_rng(int(ab["seed"]))
    arms: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    for pair in range(int(ab["pairs"])):
        progress(f"pair {pair + 1}/{ab['pairs']}")
        order = [0, 1] if rng.random() < 0.5 else [1, 0]
        opened: dict[int, ort.InferenceSession] = {}
        for arm in order:
            opened[arm] = open_session(models[arm], settings, spinning=False)
            _checked_run(opened[arm], feeds[arm][0])
        warm = [back_to_back(opened[arm].run, feeds[arm], int(ab["warmup"])) for arm in (0, 1)]
        samples: list[list[float]] = [[], []]
        joules = [0.0, 0.0]
        seconds = [0.0, 0.0]
        for block in range(int(ab["blocks"])):
            lead = order[block % 2]
            for arm in (lead, 1 - lead):
                window = energy.begin() if energy else None
                samples[arm].extend(back_to_back(opened[arm].run, feeds[arm], int(ab["block_size"])))
                if energy and window is not None:
                    j, s = energy.end(window)
                    joules[arm] += j
                    seconds[arm] += s
        for arm in (0, 1):
            arms[arm].append(
                {
                    "warmup_ms": warm[arm],
                    "samples_ms": samples[arm],
                    "started_at": now_iso(),
                    "queueing_ms": [],
                    "energy_j": joules[arm] if energy else None,
                    "energy_s": seconds[arm] if energy else None,
                    "providers": opened[arm].get_providers(),
                }
            )
        del opened
    return arms


def node_trace(model: Path, settings: dict[str, Any], feeds: Feeds, runs: int = 20) -> list[dict[str, Any]]:
    """ONNX Runtime's profiler events for executed nodes (a separate session: profiling slows inference)."""
    with tempfile.TemporaryDirectory(prefix="edgeproof-agent-prof-") as tmp:
        session = open_session(model, settings, profile_prefix=str(Path(tmp) / "ort"))
        for _ in range(runs + 1):
            _checked_run(session, feeds)
        trace = json.loads(Path(session.end_profiling()).read_text())
    keep = []
    for ev in trace:
        if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith("_kernel_time"):
            args = ev.get("args", {})
            keep.append(
                {
                    "cat": "Node",
                    "name": ev["name"],
                    "dur": ev.get("dur", 0),
                    "args": {"op_name": args.get("op_name"), "provider": args.get("provider")},
                }
            )
    return keep


def cold_starts(model: Path, settings: dict[str, Any], sample_npz: Path | None, repeats: int) -> list[dict[str, Any]]:
    """Session creation and first inference, each in a new interpreter on the board."""
    request = json.dumps({"model": str(model), "settings": settings, "npz": str(sample_npz) if sample_npz else None})
    out = []
    for _ in range(repeats):
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "edgeproof_agent._coldstart"],
                input=request,
                capture_output=True,
                text=True,
                timeout=_COLD_START_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise TimingFault(f"the cold-start process took over {_COLD_START_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise TimingFault(f"the cold-start process failed ({tail})")
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out
