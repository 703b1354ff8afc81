"""Check the host profile against measurement: digits variants × thread counts, per-case error and MAPE."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edgeproof.errors import ModelError
from edgeproof.records import RuntimeSettings
from edgeproof.runners import Runner, runner_for
from edgeproof.simulate.hostprofile import HostValidation, calibration_drift, host_profile, save_profile
from edgeproof.simulate.run import simulate_run
from edgeproof.targets.host import HOST_ID, host_load

# The bundled example lives beside the package in a source checkout (src/edgeproof/simulate → repo root).
DIGITS_MODEL = Path(__file__).resolve().parents[3] / "examples" / "digits" / "model.onnx"
TARGET_MAPE = 0.15

Progress = Callable[[str, float], None]


@dataclass
class Case:
    variant: str
    threads: int
    predicted_ms: float
    measured_p50_ms: float
    measured_sessions_p50_ms: list[float]
    load_avg_1m: float

    @property
    def error(self) -> float:
        """Signed relative error of the prediction against the measured median."""
        return (self.predicted_ms - self.measured_p50_ms) / self.measured_p50_ms

    def to_dict(self) -> dict:
        return {**self.__dict__, "error": self.error}


def digits_variants(out_dir: str | Path, model: str | Path = DIGITS_MODEL) -> dict[str, Path]:
    """fp32, fp16 and static INT8 (QDQ, per-channel, MinMax) of the digits model, built by
    edgeproof.variants with the example's own calibration split (realistic calibration data)."""
    import importlib.util

    import numpy as np

    from edgeproof.data.ids import content_id
    from edgeproof.data.slices import CalibrationSet
    from edgeproof.variants import Recipe, build_variant

    model = Path(model)
    if not model.is_file():
        raise ModelError(f"{model}: no such file (the digits example model; run examples/digits/train.py)")
    spec = importlib.util.spec_from_file_location("digits_dataset", model.parent / "dataset.py")
    if spec is None or spec.loader is None:
        raise ModelError(f"{model.parent / 'dataset.py'}: the digits example's data loader is missing")
    digits_dataset = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(digits_dataset)
    x_cal, _ = digits_dataset.load("calibration")
    x_cal = np.ascontiguousarray(x_cal, dtype=np.float32)
    calibration = CalibrationSet(
        x=x_cal, kinds=("nominal",), id=content_id([("x", x_cal)], {"source": "examples/digits calibration split"})
    )
    fp16 = build_variant(model, Recipe(precision="fp16"), cache_dir=out_dir)
    int8 = build_variant(model, Recipe(precision="int8-static", per_channel=True), calibration, cache_dir=out_dir)
    return {"fp32": model, "fp16": Path(fp16.path), "int8-static": Path(int8.path)}


def measure_session_p50(runner: Runner, model: Path, threads: int, samples: int = 300) -> float:
    """Median latency of one fresh session, measured by the host runner (as `edgeproof profile` does)."""
    from edgeproof.measure.runner import ProfileOptions

    options = ProfileOptions(
        min_sessions=1,
        max_sessions=1,
        samples_per_session=samples,
        time_budget_s=60.0,
        cold_start_repeats=1,
        profile_nodes=False,
        check_fitness=False,
    )
    record = runner.run(runner.prepare(model, options), RuntimeSettings(intra_op_threads=threads), options)
    return record.latency.p50_ms


def validate_host(
    variants: Mapping[str, Path],
    threads: Iterable[int] = (1, 2),
    profile_path: str | Path | None = None,
    progress: Progress | None = None,
    rounds: int = 3,
) -> dict:
    """Predict each variant × thread count with the host profile, measure it, and compare.

    The prediction is the profile's noise-free latency; the measurement is the median over
    ``rounds`` fresh sessions, one per case per round, interleaved so that a burst of background
    load does not fall on every session of one case. Returns the cases, MAPE, whether it meets 15%,
    the profile's calibration time and load, the load during this validation, and ``drift``: why
    the profile may not describe this moment (see ``calibration_drift``). The result is stored in
    the profile (``HostProfile.validation``): host-simulated latencies carry its error as their interval.
    """
    import statistics

    report = progress or (lambda msg, frac: None)
    profile = host_profile(profile_path, progress)
    load_at_start = host_load()
    jobs = [(name, Path(path), t) for name, path in variants.items() for t in threads]
    predicted = {
        (name, t): simulate_run(
            path, "host", threads=t, host_profile_path=profile_path, sessions=1, samples_per_session=1
        ).simulation.latency_model_ms  # type: ignore[union-attr]
        for name, path, t in jobs
    }
    measured: dict[tuple[str, int], list[float]] = {(name, t): [] for name, _, t in jobs}
    loads: dict[tuple[str, int], list[float]] = {(name, t): [] for name, _, t in jobs}
    with runner_for(HOST_ID, check_fitness=False) as runner:
        for r in range(rounds):
            for i, (name, path, t) in enumerate(jobs):
                report(f"round {r + 1}/{rounds}: {name} with {t} thread(s)", (r * len(jobs) + i) / (rounds * len(jobs)))
                measured[(name, t)].append(measure_session_p50(runner, path, t))
                loads[(name, t)].append(os.getloadavg()[0])
    cases = [
        Case(
            variant=name,
            threads=t,
            predicted_ms=predicted[(name, t)],
            measured_p50_ms=statistics.median(measured[(name, t)]),
            measured_sessions_p50_ms=measured[(name, t)],
            load_avg_1m=max(loads[(name, t)]),
        )
        for name, _, t in jobs
    ]
    mape = sum(abs(c.error) for c in cases) / len(cases)
    worst = max(cases, key=lambda c: abs(c.error))
    notes = _contention_notes(cases, os.cpu_count() or 1)
    load_at_end = host_load()
    cond = profile.conditions
    checked = HostValidation(
        at=load_at_end.at,
        cases=len(cases),
        mape=mape,
        max_abs_error=abs(worst.error),
        load_avg_1m=(load_at_start.load_avg_1m + load_at_end.load_avg_1m) / 2,
    )
    save_profile(profile.model_copy(update={"validation": checked}), profile_path)
    return {
        "profile": {
            "created_at": profile.created_at,
            "cpu_model": profile.fingerprint.cpu_model,
            "onnxruntime": profile.fingerprint.onnxruntime,
            "cores": profile.fingerprint.cpu_cores,
            "calibration_s": profile.calibration_s,
            "conditions": None if cond is None else cond.model_dump(),
            "calibration_load_avg_1m": None if cond is None else cond.load_avg_1m,
        },
        "load_at_start": load_at_start.model_dump(),
        "load_at_end": load_at_end.model_dump(),
        "load_avg_1m": (load_at_start.load_avg_1m + load_at_end.load_avg_1m) / 2,
        "drift": calibration_drift(profile, load_at_start),
        "cases": [c.to_dict() for c in cases],
        "mape": mape,
        "target_mape": TARGET_MAPE,
        "meets_target": mape <= TARGET_MAPE,
        "worst_case": worst.to_dict(),
        "notes": notes,
    }


def _contention_notes(cases: list[Case], cores: int) -> list[str]:
    """Say where more threads bought no speed while the machine was loaded: the extra thread then
    waited for a core that other processes held, which no profile of this host can predict."""
    by_key = {(c.variant, c.threads): c for c in cases}
    notes = []
    for c in cases:
        single = by_key.get((c.variant, 1))
        if c.threads > 1 and single is not None and c.measured_p50_ms >= 0.95 * single.measured_p50_ms and c.load_avg_1m > cores - 1:
            notes.append(
                f"{c.variant} with {c.threads} threads measured {c.measured_p50_ms:.3f} ms vs {single.measured_p50_ms:.3f} ms with 1 "
                f"while the 1-minute load average was {c.load_avg_1m:.1f} on {cores} cores: the extra thread found no free core"
            )
    return notes
