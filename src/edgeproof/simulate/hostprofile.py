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

HOST_PROFILE_SCHEMA = "edgeproof.host-profile/1"

# Fingerprint fields whose change makes a stored profile stale.
_IDENTITY = ("cpu_model", "cpu_cores", "onnxruntime")

# Micro-model sizes per op class; the quick set serves tests and smoke runs.
_CONV_SIZES: list[tuple[int, ...]] = [(8, 32), (16, 32), (32, 32), (16, 16), (32, 16), (64, 16), (64, 8), (128, 8), (160, 4)]
_NARROW_SIZES: list[tuple[int, ...]] = [(1, 16, 32), (1, 32, 32), (3, 32, 32), (1, 32, 16), (3, 16, 64)]
_GEMM_SIZES: list[tuple[int, ...]] = [(16,), (64,), (256,), (1024,)]
_POOL_SIZES: list[tuple[int, ...]] = [(8, 9), (32, 17), (32, 33), (64, 9), (160, 9)]
_ELEMENTWISE_SIZES: list[tuple[int, ...]] = [(64,), (1024,), (16384,), (262144,)]
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

Progress = Callable[[str, float], None]


def default_profile_path() -> Path:
    """Where the host profile lives: $EDGEPROOF_HOME (default .edgeproof/) /host-profile.json."""
    return Path(os.environ.get("EDGEPROOF_HOME", ".edgeproof")) / "host-profile.json"


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


class HostProfile(BaseModel):
    """What calibration measured on this machine, with the date and the machine's fingerprint."""

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
        """Profile version used in provenance labels: the calibration date."""
        return self.created_at[:10]


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
    """Run the microbenchmarks on this host and return its profile.

    Each wide op class is timed as chains of 1 and 4 identical ops in fresh ONNX Runtime sessions;
    the per-op cost is the difference over 3 ops, which cancels session and layout-conversion
    overhead. A narrow conv's cost is what a narrow+wide model takes beyond the wide conv chain's
    intercept and per-op cost at the same shape. Per op class, precision and thread count a
    linear cost model is fitted to those per-op costs (see LinearCost).

    Every micro-model is timed once per round, in rounds over all of them, and keeps its fastest
    round: a burst of background load then spoils one round of a case, not all of its sessions.
    """
    from edgeproof.targets.host import fingerprint

    report = progress or (lambda msg, frac: None)
    sizes = _QUICK if quick else _FULL
    rounds, samples = (1, 120) if quick else (3, 200)
    started = time.monotonic()
    jobs = [(case, th) for prec in precisions for case in _cases(prec, sizes) for th in threads]
    models = {case: build_case(case).SerializeToString() for case, _ in jobs}
    timed: dict[tuple[MicroCase, int], float] = {}
    cvs: list[float] = []
    for r in range(rounds):
        for i, (case, th) in enumerate(jobs):
            if i % 10 == 0:
                report(
                    f"round {r + 1}/{rounds}: {case.op_class} {case.precision}, {th} thread(s)", (r * len(jobs) + i) / (rounds * len(jobs))
                )
            us, cv = time_model(models[case], th, sessions=1, samples=samples)
            timed[(case, th)] = min(us, timed.get((case, th), us))
            cvs.append(cv)
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
    return HostProfile(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        fingerprint=fingerprint(),
        calibration_s=round(time.monotonic() - started, 1),
        threads=sorted(threads),
        precisions=list(precisions),
        base_us=base,
        costs=costs,
        jitter_cv=float(np.median(cvs)),
        memory_bandwidth_gbs=round(memory_bandwidth_gbs(), 2),
        points=points,
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
    from edgeproof.targets.host import fingerprint

    now = fingerprint()
    for key in _IDENTITY:
        if getattr(now, key) != getattr(profile.fingerprint, key):
            return f"{key} changed from {getattr(profile.fingerprint, key)!r} to {getattr(now, key)!r}"
    return None


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
