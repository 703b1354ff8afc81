"""Boards met: a board profile's predictions against a device's agent measurements (validate), and a
new profile version fitted to the device's microbenchmarks (calibrate).

Both compare the simulator's noise-free latency on the device's board profile (at the device's power
mode, one thread) with the median of per-session p50s measured through the agent, so the error is
the profile's, not the jitter model's. Calibration refits the CPU's per-class efficiencies and its
per-kernel overhead (the profile's free parameters) by bounded least squares on relative error and
reports its leave-one-case-out error as the new version's validation.
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.analysis import analyze
from edgeproof.errors import DataError
from edgeproof.farm.inventory import Device
from edgeproof.measure.runner import ProfileOptions
from edgeproof.model import Model
from edgeproof.records import RuntimeSettings, write_atomic
from edgeproof.simulate.kernels import KernelGraph, build_kernels
from edgeproof.targets.spec import Target

Progress = Callable[[str, float], None]

# The microbenchmarks a calibration measures by default: the host calibration's quick set, fp32,
# four ops per chain (op class, size as in ``simulate.microbench.build_case``).
CALIBRATION_CASES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("conv", (16, 16)),
    ("conv", (32, 32)),
    ("conv", (64, 8)),
    ("conv-narrow", (1, 32, 32)),
    ("gemm", (64,)),
    ("gemm", (256,)),
    ("pool", (32, 17)),
    ("elementwise", (16384,)),
)
_CHAIN = 4


@dataclass
class Case:
    """One model on the device: the profile's prediction against the agent's measurement."""

    name: str
    predicted_ms: float
    measured_p50_ms: float
    measured_sessions_p50_ms: list[float]

    @property
    def error(self) -> float:
        """Signed relative error of the prediction against the measured median."""
        return (self.predicted_ms - self.measured_p50_ms) / self.measured_p50_ms

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "error": self.error}


@dataclass
class Validation:
    """A board profile against one device: every case, the MAPE and where each figure came from."""

    device: str
    profile: str  # simulated:<board>@<version>, what predicted
    measured_by: str  # measured:agent:<device>, what measured
    power_mode: str
    threads: int
    cases: list[Case]

    @property
    def mape(self) -> float:
        return sum(abs(c.error) for c in self.cases) / len(self.cases)

    @property
    def worst(self) -> Case:
        return max(self.cases, key=lambda c: abs(c.error))

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "profile": self.profile,
            "measured_by": self.measured_by,
            "power_mode": self.power_mode,
            "threads": self.threads,
            "cases": [c.to_dict() for c in self.cases],
            "mape": self.mape,
            "worst_case": self.worst.to_dict(),
        }


@dataclass
class Calibration:
    """A new profile version fitted to a device: the fit, its held-out error, and where it was written."""

    device: str
    base: str  # the profile it started from, <board>@<version>
    target: Target  # the new profile
    path: Path
    before: Validation  # the base profile on the microbenchmarks
    after: list[Case]  # the new profile on the same microbenchmarks (in-sample)
    held_out_errors: list[float]  # leave-one-case-out relative errors
    efficiency: dict[str, tuple[float, float]]  # class → (before, after)
    op_overhead_us: tuple[float, float]  # (before, after)
    clamped: list[str] = field(default_factory=list)  # classes the fit wanted above 100% of peak


def _profile(board: str | None, device: Device, catalog_dirs: Iterable[str | Path]) -> Target:
    from edgeproof.targets import get_target

    if board is None:
        raise DataError(
            f"{device.target_id} declares no board: set board = '<catalog board>' in {device.source} "
            "(or start its agent with --board), or name a profile with --target"
        )
    return get_target(board, catalog_dirs)


def _power_mode(target: Target, device: Device, fingerprint: dict[str, Any]) -> str:
    """The device's mode as the profile names it: what the board reports, else the inventory's first, else the default."""
    for mode in (fingerprint.get("power_mode"), *device.power_modes):
        if mode in target.power_modes:
            return str(mode)
    return target.default_power_mode


def _measure(runner: Any, model: Model, threads: int, sessions: int, samples: int) -> list[float]:
    """Per-session p50 (ms) of ``model`` on the agent, ``sessions`` fresh sessions."""
    options = ProfileOptions(
        min_sessions=sessions,
        max_sessions=sessions,
        samples_per_session=samples,
        warmup=10,
        time_budget_s=120.0,
        cold_start_repeats=0,
        profile_nodes=False,
        check_fitness=False,
    )
    record = runner.run(runner.prepare(model, options), RuntimeSettings(intra_op_threads=threads), options)
    return [float(np.median(s.samples_ms)) for s in record.sessions]


def _predict_ms(model: Model, target: Target, mode: str, threads: int, catalog_dirs: Iterable[str | Path]) -> float:
    from edgeproof.simulate import simulate_run

    record = simulate_run(model, target.id, power_mode=mode, threads=threads, sessions=1, samples_per_session=1, catalog_dirs=catalog_dirs)
    assert record.simulation is not None
    return record.simulation.latency_model_ms


def validate_device(
    device: Device,
    models: Sequence[Path],
    profile: str | None = None,
    catalog_dirs: Iterable[str | Path] = (),
    threads: int = 1,
    sessions: int = 3,
    samples: int = 200,
    progress: Progress | None = None,
) -> Validation:
    """Each model predicted on the device's board profile (or ``profile``) and measured on the device."""
    from edgeproof.runners.agent import AgentRunner

    report = progress or (lambda message, fraction: None)
    catalog_dirs = list(catalog_dirs)
    with AgentRunner(device) as runner:
        assert runner.hello is not None
        target = _profile(profile or runner.board, device, catalog_dirs)
        mode = _power_mode(target, device, runner.hello.fingerprint)
        cases = []
        for i, model in enumerate(models):
            report(f"{model.name} on {device.target_id}", i / len(models))
            loaded = Model.load(model)
            measured = _measure(runner, loaded, threads, sessions, samples)
            predicted = _predict_ms(loaded, target, mode, threads, catalog_dirs)
            cases.append(Case(model.name, predicted, statistics.median(measured), measured))
    return Validation(device.target_id, f"simulated:{target.id}@{target.version}", runner.provenance, mode, threads, cases)


def _decompose(graph: KernelGraph, target: Target, mode: str, threads: int, classes: list[str]) -> tuple[float, np.ndarray]:
    """One inference's predicted time (µs) as fixed + Σ column × scale: a column per class (CPU
    kernels' roofline time, scaled by old/new efficiency) and a last one for their dispatch
    overhead (scaled by new/old overhead); copies and accelerator kernels stay fixed."""
    from edgeproof.simulate.partition import CPU
    from edgeproof.simulate.point import operating_point
    from edgeproof.simulate.run import board_state
    from edgeproof.targets.firmware import resolve_firmware

    op = operating_point(target, resolve_firmware(target, None), mode, threads)
    _, timeline = board_state(graph, target, op)
    by_name = {k.name: k for k in graph.kernels}
    fixed = 0.0
    roof = np.zeros(len(classes) + 1)
    for phase in timeline.phases:
        if phase.kind == "kernel" and phase.device == CPU and by_name[phase.name].board_class in classes:
            roof[classes.index(by_name[phase.name].board_class)] += max(phase.compute_us, phase.memory_us)
            roof[-1] += phase.overhead_us
        else:
            fixed += phase.duration_us
    return fixed, roof


def _fit(fixed: np.ndarray, roof: np.ndarray, measured_us: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Scale per column minimising relative error, each at least its floor (no class above 100% of peak)."""
    from scipy.optimize import lsq_linear

    a = roof / measured_us[:, None]
    b = (measured_us - fixed) / measured_us
    used = roof.sum(axis=0) > 0
    scale = floor.copy()
    if used.any():
        scale[used] = lsq_linear(a[:, used], b, bounds=(floor[used], np.inf)).x
    return scale


def calibrate_device(
    device: Device,
    out_dir: Path,
    profile: str | None = None,
    catalog_dirs: Iterable[str | Path] = (),
    cases: Sequence[tuple[str, tuple[int, ...]]] = CALIBRATION_CASES,
    threads: int = 1,
    sessions: int = 3,
    samples: int = 200,
    progress: Progress | None = None,
) -> Calibration:
    """Measure the microbenchmarks on the device, fit the board profile's CPU class efficiencies to
    them and write the result as a new profile version ``<board>-<device>`` in ``out_dir``."""
    import onnx

    from edgeproof.runners.agent import AgentRunner
    from edgeproof.simulate.microbench import MicroCase, build_case
    from edgeproof.targets.catalog import load_target_file
    from edgeproof.targets.firmware import default_firmware

    report = progress or (lambda message, fraction: None)
    catalog_dirs = list(catalog_dirs)
    micro = [MicroCase(op_class, "fp32", size, _CHAIN) for op_class, size in cases]
    with tempfile.TemporaryDirectory(prefix="edgeproof-calibrate-") as tmp, AgentRunner(device) as runner:
        assert runner.hello is not None
        target = _profile(profile or runner.board, device, catalog_dirs)
        mode = _power_mode(target, device, runner.hello.fingerprint)
        paths = []
        for case in micro:
            path = Path(tmp) / f"{case.name}.onnx"
            onnx.save(build_case(case), path)
            paths.append(path)
        models = [Model.load(path) for path in paths]
        measured: list[list[float]] = []
        for i, path in enumerate(paths):
            report(f"{path.stem} on {device.target_id}", i / len(paths))
            measured.append(_measure(runner, models[i], threads, sessions, samples))
        predicted = [_predict_ms(m, target, mode, threads, catalog_dirs) for m in models]
        before = Validation(
            device.target_id,
            f"simulated:{target.id}@{target.version}",
            runner.provenance,
            mode,
            threads,
            [Case(p.stem, pred, statistics.median(m), m) for p, pred, m in zip(paths, predicted, measured)],
        )
        graphs = [build_kernels(analyze(m.proto, simplify=True)) for m in models]
        classes = sorted({k.board_class for g in graphs for k in g.kernels})
        parts = [_decompose(g, target, mode, threads, classes) for g in graphs]
        fingerprint = runner.hello.fingerprint
    fixed = np.array([f for f, _ in parts])
    roof = np.array([r for _, r in parts])
    measured_us = np.array([c.measured_p50_ms * 1e3 for c in before.cases])
    old = np.array([target.cpu.efficiency_for(c, "fp32") for c in classes])
    floor = np.append(old, 0.0)
    scale = _fit(fixed, roof, measured_us, floor)
    held_out = []
    for i in range(len(paths)):
        keep = np.arange(len(paths)) != i
        loo = _fit(fixed[keep], roof[keep], measured_us[keep], floor)
        held_out.append(float((fixed[i] + roof[i] @ loo) / measured_us[i] - 1.0))
    new = old / scale[:-1]
    used = roof[:, :-1].sum(axis=0) > 0
    efficiency = {c: (float(o), float(n)) for c, o, n, u in zip(classes, old, new, used) if u}
    overhead = (target.cpu.op_overhead_us, float(target.cpu.op_overhead_us * scale[-1]))
    clamped = [c for c, (_, n) in efficiency.items() if n >= 1.0 - 1e-9]
    calibrated = _calibrated_target(target, device, efficiency, overhead, held_out, fingerprint, len(paths))
    path = out_dir / f"{calibrated.id}.toml"
    # the new version boots with the base board's stock firmware, beside it as the catalog expects
    firmware = default_firmware(target).model_dump(exclude={"file"}) | {"board": calibrated.id}
    write_atomic(
        out_dir / "firmware" / f"{calibrated.id}.toml", _dump_toml(firmware, f"stock firmware of {target.id}, for {calibrated.id}")
    )
    write_atomic(path, dump_target_toml(calibrated))
    calibrated = load_target_file(path)  # the file as written must load (and cite a source for every number)
    after = [
        Case(c.name, float(f + r @ scale) / 1e3, c.measured_p50_ms, c.measured_sessions_p50_ms)
        for c, f, r in zip(before.cases, fixed, roof)
    ]
    base = f"{target.id}@{target.version}"
    return Calibration(device.target_id, base, calibrated, path, before, after, held_out, efficiency, overhead, clamped)


def _calibrated_target(
    target: Target,
    device: Device,
    efficiency: dict[str, tuple[float, float]],
    overhead: tuple[float, float],
    held_out: list[float],
    fingerprint: dict[str, Any],
    rows: int,
) -> Target:
    now = datetime.now(UTC)
    errors = sorted(abs(e) for e in held_out)
    interval = float(np.quantile(errors, 0.9))
    fitted = ", ".join(f"{c} {o:.3g}→{n:.3g}" for c, (o, n) in efficiency.items()) + f", op_overhead_us {overhead[0]:.3g}→{overhead[1]:.3g}"
    where = f"measured:agent:{device.id} (onnxruntime {fingerprint.get('onnxruntime', '?')} on {fingerprint.get('cpu_model', '?')})"
    data = target.model_dump(exclude={"file", "validation"})
    data["id"] = f"{target.id}-{device.id}"
    data["name"] = f"{target.name}, calibrated on {device.target_id}"
    data["version"] = f"{target.version}+{device.id}.{now:%Y%m%d%H%M}"
    data["cpu"]["class_efficiency"] = {**target.cpu.class_efficiency, **{c: n for c, (_, n) in efficiency.items()}}
    data["cpu"]["op_overhead_us"] = overhead[1]
    data["validation"] = {
        "source": f"edgeproof targets --calibrate {device.target_id}",
        "fitted_on": now.date().isoformat(),
        "rows": rows,
        "fit_rows": rows,
        "held_out_rows": rows,
        "held_out_median_abs_error": float(statistics.median(errors)),
        "held_out_max_abs_error": float(errors[-1]),
        "interval_rel": max(interval, float(np.finfo(float).eps)),  # must be positive; a perfect fit is not
        "free_parameters": [f"cpu.class_efficiency[{c}]" for c in efficiency] + ["cpu.op_overhead_us"],
    }
    data["sources"] = {
        **target.sources,
        "cpu.class_efficiency": f"derived: edgeproof targets --calibrate {device.target_id} on {now:%Y-%m-%d}: least-squares fit "
        f"(relative error, fp32, {rows} microbenchmarks, 1 thread) to p50s {where}; {fitted}",
        "cpu.op_overhead_us": f"derived: the same fit as cpu.class_efficiency ({device.target_id}, {now:%Y-%m-%d})",
        "validation": f"derived: leave-one-microbenchmark-out errors of the fit, {where}",
    }
    return Target.model_validate(data)


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_lines(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[str]:
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items() if v is not None and not isinstance(v, dict)]
    for key, table in data.items():
        if isinstance(table, dict):
            lines += ["", "[" + ".".join(_toml_key(p) for p in (*prefix, key)) + "]", *_toml_lines(table, (*prefix, key))]
    return lines


def _dump_toml(data: dict[str, Any], what: str) -> str:
    return f"# {what}: written by edgeproof targets --calibrate\n" + "\n".join(_toml_lines(data)) + "\n"


def dump_target_toml(target: Target) -> str:
    """A board profile as a catalog TOML file (what ``targets.catalog.load_target_file`` reads back)."""
    return _dump_toml(target.model_dump(exclude={"file"}), f"{target.name}; see [sources] and [validation]")
