"""The host profile: calibrated kernel-time models per op class, precision and thread count."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeproof.errors import TargetError
from edgeproof.records import EnvFingerprint, write_atomic
from edgeproof.simulate.kernels import Kernel, KernelGraph
from edgeproof.simulate.microbench import MicroCase, build_case, case_features, memory_bandwidth_gbs, time_model
from edgeproof.targets.host import HostLoad, fingerprint, host_load

HOST_PROFILE_SCHEMA = "edgeproof.host-profile/1"

# Fingerprint fields whose change makes a stored profile stale.
_IDENTITY = ("cpu_model", "cpu_cores", "onnxruntime")

# Micro-model sizes per op class: shapes of the small CNN layers host predictions are made for,
# few enough that a calibration takes seconds (see calibrate); the quick set serves tests.
_CONV_SIZES: list[tuple[int, ...]] = [(16, 32), (32, 32), (64, 16), (128, 8)]
_NARROW_SIZES: list[tuple[int, ...]] = [(1, 32, 32), (3, 16, 32)]
_GEMM_SIZES: list[tuple[int, ...]] = [(64,), (512,)]
_POOL_SIZES: list[tuple[int, ...]] = [(32, 17), (64, 9)]
_ELEMENTWISE_SIZES: list[tuple[int, ...]] = [(64,), (16384,)]
_QUICK: dict[str, list[tuple[int, ...]]] = {
    "conv": [(16, 16), (32, 32), (64, 8)],
    "conv-narrow": [(1, 32, 32)],
    "gemm": [(64,), (256,)],
    "pool": [(32, 17)],
    "elementwise": [(64,), (16384,)],
}
_FULL: dict[str, list[tuple[int, ...]]] = {
    "conv": _CONV_SIZES,
    "conv-narrow": _NARROW_SIZES,
    "gemm": _GEMM_SIZES,
    "pool": _POOL_SIZES,
    "elementwise": _ELEMENTWISE_SIZES,
}
_CHAIN = (1, 4)
_MIN_US = 0.2
# Rounds over every micro-model and timed runs per session: each case's cost is the median of its
# rounds' session medians, the statistic `simulate --validate-host` measures a model by.
_ROUNDS, _SAMPLES = 5, 60
_QUICK_ROUNDS, _QUICK_SAMPLES = 1, 60
# A profile older than this, or calibrated while the machine's contention (see _contention) was
# this many times lower or higher than now, is flagged: its kernel costs describe another moment
# of a shared machine.
STALE_AFTER_H = 24.0
CONTENTION_DRIFT = 1.25

Progress = Callable[[str, float], None]


def default_profile_path() -> Path:
    """Where the host profile lives: ``$EDGEPROOF_HOME/host-profile.json`` where that is set, else the
    user's cache (``$XDG_CACHE_HOME``, default ``~/.cache``) ``/edgeproof/host-profile.json``.

    A profile describes a machine, not a project: it stays out of the project tree, and a checkout
    copied to another machine does not carry it along.
    """
    home = os.environ.get("EDGEPROOF_HOME")
    if home:
        return Path(home) / "host-profile.json"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "edgeproof" / "host-profile.json"


# Features each op class's time is modelled on (plus a constant per-kernel cost).
FEATURES = {
    "conv": ("kpixels", "mflops"),
    "conv-narrow": ("kpixels", "mflops"),
    "gemm": ("mflops",),
    "pool": ("mflops",),
    "elementwise": ("mbytes",),
}


class LinearCost(BaseModel):
    """Kernel time in µs = intercept + Σ coef × feature, fitted with non-negative coefficients.

    Convolutions pay per output pixel as well as per FLOP (im2col and layout work scale with
    pixels, which is why a narrow first layer costs far more than its FLOPs suggest).
    """

    model_config = ConfigDict(extra="forbid")

    intercept_us: float
    coef_us: dict[str, float]
    residual_rel: float

    def __call__(self, features: dict[str, float]) -> float:
        return self.intercept_us + sum(c * features.get(k, 0.0) for k, c in self.coef_us.items())


class CalibrationConditions(BaseModel):
    """Under what load a calibration ran, and how it timed: a shared host's kernel costs hold for a
    moment like this one, not for every moment."""

    model_config = ConfigDict(extra="forbid")

    load_at_start: HostLoad
    load_at_end: HostLoad
    rounds: int
    samples_per_session: int
    statistic: str

    @property
    def load_avg_1m(self) -> float:
        """The 1-minute load average during calibration: the mean of its two ends'."""
        return (self.load_at_start.load_avg_1m + self.load_at_end.load_avg_1m) / 2

    def describe(self) -> str:
        start = self.load_at_start
        clock = f", {start.cpu_mhz:.0f} MHz" if start.cpu_mhz else ""
        governor = f", governor {start.governor}" if start.governor else ""
        return f"1-minute load average {start.load_avg_1m:.2f} → {self.load_at_end.load_avg_1m:.2f} on {start.cores} cores{clock}{governor}"


class HostValidation(BaseModel):
    """The profile's last check against measurement (``simulate --validate-host``): its error is the
    interval every host-simulated latency carries."""

    model_config = ConfigDict(extra="forbid")

    at: str
    cases: int
    mape: float
    max_abs_error: float
    load_avg_1m: float

    def interval_basis(self, version: str) -> str:
        return (
            f"±{self.max_abs_error:.0%}: the largest error of host@{version}'s predictions of {self.cases} digits cases "
            f"measured at {self.at} (MAPE {self.mape:.1%}, 1-minute load average {self.load_avg_1m:.2f}; simulate --validate-host)"
        )


class HostProfile(BaseModel):
    """What calibration measured on this machine, with the date, the machine's fingerprint and the
    load it ran under (``conditions``; None in profiles written before it was kept)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: str = HOST_PROFILE_SCHEMA
    created_at: str
    fingerprint: EnvFingerprint
    calibration_s: float
    threads: list[int]
    precisions: list[str]
    # Fixed cost of one session.run() call, per precision and threads ("fp32/1").
    base_us: dict[str, float]
    # Kernel cost models keyed "op_class/precision/threads".
    costs: dict[str, LinearCost]
    # Median relative spread (IQR/1.349/median) of timed runs: the profile's jitter.
    jitter_cv: float
    # Large-buffer copy bandwidth, kept for reference; element-wise costs are calibrated directly.
    memory_bandwidth_gbs: float
    points: list[dict] = Field(default_factory=list)
    conditions: CalibrationConditions | None = None
    validation: HostValidation | None = None

    def cost(self, op_class: str, precision: str, threads: int) -> tuple[LinearCost, str]:
        """The cost model for a kernel, and a note when a stand-in had to be used."""
        threads = min(self.threads, key=lambda t: (abs(t - threads), t))
        for cls in (op_class, "conv" if op_class == "conv-narrow" else op_class):
            for prec in (precision, "fp32"):
                key = f"{cls}/{prec}/{threads}"
                if key in self.costs:
                    note = "" if (cls, prec) == (op_class, precision) else f"{op_class}/{precision} not calibrated; used {cls}/{prec}"
                    return self.costs[key], note
        raise TargetError(f"host profile has no cost model for {op_class}/{precision}/{threads}; run `edgeproof targets --calibrate-host`")

    def base(self, precision: str, threads: int) -> float:
        threads = min(self.threads, key=lambda t: (abs(t - threads), t))
        return self.base_us.get(f"{precision}/{threads}", self.base_us[f"fp32/{threads}"])

    @property
    def version(self) -> str:
        """Profile version used in provenance labels: the calibration's UTC time to the second (a
        calibration takes seconds, so one day may see several, each its own profile)."""
        return self.created_at[:19]


def kernel_features(kernel: Kernel, graph: KernelGraph) -> dict[str, float]:
    """A model kernel's features in the units calibration uses (see microbench.case_features)."""
    features = {"mflops": kernel.flops / 1e6, "mbytes": (graph.bytes_in(kernel) + graph.bytes_out(kernel)) / 1e6}
    if kernel.out_channels:
        features["kpixels"] = kernel.out_elements / kernel.out_channels / 1e3
    return features


def _fit(points: list[tuple[dict[str, float], float]], features: tuple[str, ...]) -> LinearCost:
    """Non-negative least squares of per-op time on [1, features...], weighted by 1/time so that
    small kernels are fitted in relative terms as well as large ones."""
    from scipy.optimize import nnls

    ys = np.array([max(us, _MIN_US) for _, us in points])
    design = np.array([[1.0] + [f.get(name, 0.0) for name in features] for f, _ in points])
    weights = 1.0 / ys
    coef, _ = nnls(design * weights[:, None], ys * weights)
    rel = np.abs(design @ coef - ys) / ys
    return LinearCost(
        intercept_us=float(coef[0]), coef_us={n: float(c) for n, c in zip(features, coef[1:])}, residual_rel=float(np.median(rel))
    )


def _cases(precision: str, sizes: dict[str, list[tuple[int, ...]]]) -> list[MicroCase]:
    """Every micro-model one precision needs: 1- and 4-op chains per size, and narrow convs
    together with the wide chains at their shape."""
    cases = [MicroCase(cls, precision, size, n) for cls in ("conv", "gemm", "pool", "elementwise") for size in sizes[cls] for n in _CHAIN]
    for size in sizes["conv-narrow"]:
        cin, c, side = size
        cases += [MicroCase("conv", precision, (c, side), n) for n in _CHAIN]
        cases.append(MicroCase("conv-narrow", precision, size, 2))
    return list(dict.fromkeys(cases))


def _fit_precision(timed: dict[MicroCase, float], precision: str, sizes: dict[str, list[tuple[int, ...]]]) -> tuple[dict[str, list], float]:
    """Per-op costs of every class from the timed chains, and the run() overhead."""

    def chain(cls: str, size: tuple[int, ...]) -> tuple[float, float]:
        runs = {n: timed[MicroCase(cls, precision, size, n)] for n in _CHAIN}
        per_op = (runs[_CHAIN[1]] - runs[_CHAIN[0]]) / (_CHAIN[1] - _CHAIN[0])
        return runs[_CHAIN[0]] - per_op * _CHAIN[0], per_op

    per_class: dict[str, list[tuple[dict[str, float], float]]] = {}
    for cls in ("conv", "gemm", "pool", "elementwise"):
        for size in sizes[cls]:
            per_class.setdefault(cls, []).append((case_features(MicroCase(cls, precision, size, _CHAIN[1])), chain(cls, size)[1]))
    for size in sizes["conv-narrow"]:
        cin, c, side = size
        intercept, wide_us = chain("conv", (c, side))
        narrow_us = timed[MicroCase("conv-narrow", precision, size, 2)] - intercept - wide_us
        per_class.setdefault("conv-narrow", []).append((case_features(MicroCase("conv-narrow", precision, size, 1)), narrow_us))
    smallest = min(sizes["elementwise"])
    return per_class, chain("elementwise", smallest)[0]


def calibrate(
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8"),
    threads: tuple[int, ...] = (1, 2),
    quick: bool = False,
    progress: Progress | None = None,
) -> HostProfile:
    """Run the microbenchmarks on this host and return its profile (seconds, not minutes: run it
    right before a host prediction that matters).

    Each wide op class is timed as chains of 1 and 4 identical ops in fresh ONNX Runtime sessions;
    the per-op cost is the difference over 3 ops, which cancels session and layout-conversion
    overhead. A narrow conv's cost is what a narrow+wide model takes beyond the wide conv chain's
    intercept and per-op cost at the same shape. Per op class, precision and thread count a
    linear cost model is fitted to those per-op costs (see LinearCost).

    Every micro-model is timed in one fresh session per round, in rounds over all of them, and
    its time is the median of its rounds' session medians: the statistic validation measures a
    model by, so a profile calibrated under some load predicts what a model measures under that
    load (the quietest round instead would predict a quiet machine, optimistic whenever it is not).
    The load, clock and governor at both ends are kept in ``conditions``.
    """
    report = progress or (lambda msg, frac: None)
    sizes = _QUICK if quick else _FULL
    rounds, samples = (_QUICK_ROUNDS, _QUICK_SAMPLES) if quick else (_ROUNDS, _SAMPLES)
    started = time.monotonic()
    load_at_start = host_load()
    jobs = [(case, th) for prec in precisions for case in _cases(prec, sizes) for th in threads]
    models = {case: build_case(case).SerializeToString() for case, _ in jobs}
    runs: dict[tuple[MicroCase, int], list[float]] = {job: [] for job in jobs}
    cvs: list[float] = []
    for r in range(rounds):
        for i, (case, th) in enumerate(jobs):
            if i % 10 == 0:
                report(
                    f"round {r + 1}/{rounds}: {case.op_class} {case.precision}, {th} thread(s)", (r * len(jobs) + i) / (rounds * len(jobs))
                )
            us, cv = time_model(models[case], th, sessions=1, samples=samples, warmup=min(30, samples // 3))
            runs[(case, th)].append(us)
            cvs.append(cv)
    timed = {job: float(np.median(us)) for job, us in runs.items()}
    costs: dict[str, LinearCost] = {}
    base: dict[str, float] = {}
    points: list[dict] = []
    for prec in precisions:
        for th in threads:
            per_class, overhead = _fit_precision({c: us for (c, t), us in timed.items() if t == th}, prec, sizes)
            for cls, pts in per_class.items():
                costs[f"{cls}/{prec}/{th}"] = _fit(pts, FEATURES[cls])
                points += [{"class": cls, "precision": prec, "threads": th, **f, "us": round(us, 3)} for f, us in pts]
            # The run() overhead: the smallest chain's intercept, less the quantize/cast kernels that
            # an int8 or fp16 chain has at each end (a model's own graph lists those as kernels).
            small = case_features(MicroCase("elementwise", prec, min(sizes["elementwise"]), 1))
            ends = 0.0 if prec == "fp32" else 2 * costs[f"elementwise/{prec}/{th}"](small)
            base[f"{prec}/{th}"] = max(overhead - ends, _MIN_US)
    report("memory bandwidth", 0.99)
    bandwidth = round(memory_bandwidth_gbs(mib=16 if quick else 64, repeats=3), 2)
    return HostProfile(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        fingerprint=fingerprint(),
        calibration_s=round(time.monotonic() - started, 1),
        threads=sorted(threads),
        precisions=list(precisions),
        base_us=base,
        costs=costs,
        jitter_cv=float(np.median(cvs)),
        memory_bandwidth_gbs=bandwidth,
        points=points,
        conditions=CalibrationConditions(
            load_at_start=load_at_start,
            load_at_end=host_load(),
            rounds=rounds,
            samples_per_session=samples,
            statistic=f"median over {rounds} round(s) of one fresh session's median of {samples} runs",
        ),
    )


def save_profile(profile: HostProfile, path: str | Path | None = None) -> Path:
    return write_atomic(path or default_profile_path(), profile.model_dump_json(indent=2))


def load_profile(path: str | Path | None = None) -> HostProfile:
    """Load a stored host profile; a malformed file is one TargetError naming it."""
    path = Path(path or default_profile_path())
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise TargetError(f"{path}: no host profile (run `edgeproof targets --calibrate-host`)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise TargetError(f"{path}: not a readable host profile ({exc})") from None
    if isinstance(raw, dict) and raw.get("schema_version") != HOST_PROFILE_SCHEMA:
        raise TargetError(f"{path}: schema_version {raw.get('schema_version')!r}, expected {HOST_PROFILE_SCHEMA!r}")
    try:
        return HostProfile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise TargetError(f"{path}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None


def is_stale(profile: HostProfile) -> str | None:
    """Why the profile no longer describes this machine (None when it still does)."""
    now = fingerprint()
    for key in _IDENTITY:
        if getattr(now, key) != getattr(profile.fingerprint, key):
            return f"{key} changed from {getattr(profile.fingerprint, key)!r} to {getattr(now, key)!r}"
    return None


def _contention(load_avg: float, cores: int) -> float:
    """How many runnable threads share each core once ours runs too (at least 1: an idle core is
    no faster for being idler)."""
    return max(1.0, (load_avg + 1.0) / cores)


def calibration_drift(profile: HostProfile, now: HostLoad) -> list[str]:
    """Why ``profile``'s kernel costs may not hold at the moment ``now``: calibrated long ago, under
    a contention more than ``CONTENTION_DRIFT`` times off today's, at another clock or governor, or
    under a load it never recorded. Empty when it was calibrated under conditions like these."""
    fix = "recalibrate right before the prediction: edgeproof targets --calibrate-host"
    out = []
    age_h = (datetime.fromisoformat(now.at) - datetime.fromisoformat(profile.created_at)).total_seconds() / 3600
    if age_h > STALE_AFTER_H:
        out.append(f"the host profile was calibrated {age_h:.0f} h ago ({profile.created_at}); {fix}")
    cond = profile.conditions
    if cond is None:
        out.append(f"the host profile does not record the load it was calibrated under (written before edgeproof kept it); {fix}")
        return out
    then_c, now_c = _contention(cond.load_avg_1m, now.cores), _contention(now.load_avg_1m, now.cores)
    if max(then_c, now_c) / min(then_c, now_c) > CONTENTION_DRIFT:
        direction = "busier" if now_c > then_c else "quieter"
        out.append(
            f"the machine is {direction} than at calibration: 1-minute load average {now.load_avg_1m:.2f} now vs "
            f"{cond.load_avg_1m:.2f} then on {now.cores} cores (a core's share {now_c / then_c:.2f}x as contended); kernel times on a "
            f"shared host follow its load, so predictions are {'optimistic' if direction == 'busier' else 'pessimistic'}; {fix}"
        )
    then_mhz = cond.load_at_start.cpu_mhz
    if then_mhz and now.cpu_mhz and abs(now.cpu_mhz / then_mhz - 1) > 0.1:
        out.append(f"the CPU clock is {now.cpu_mhz:.0f} MHz now vs {then_mhz:.0f} MHz at calibration; {fix}")
    if cond.load_at_start.governor != now.governor:
        out.append(f"the cpufreq governor is {now.governor} now vs {cond.load_at_start.governor} at calibration; {fix}")
    return out


def host_profile(path: str | Path | None = None, progress: Progress | None = None) -> HostProfile:
    """The stored profile, or a fresh calibration (saved to ``path``) when it is missing or stale."""
    path = Path(path or default_profile_path())
    if path.exists():
        profile = load_profile(path)
        if is_stale(profile) is None:
            return profile
    profile = calibrate(progress=progress)
    save_profile(profile, path)
    return profile
