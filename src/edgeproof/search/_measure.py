"""Measurers: one call shape for the host runner and the board simulator, so a candidate's target is just data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from edgeproof.contract import parse_scenario
from edgeproof.errors import TargetError
from edgeproof.measure.runner import ProfileOptions, profile_model
from edgeproof.records import HostFitness, RunRecord, RuntimeSettings
from edgeproof.search._space import RunPoint

Progress = Callable[[str, float], None]


class Measurer(Protocol):
    """Measure or simulate one variant at one run point; the record's figures carry their provenance."""

    def __call__(self, variant_path: Path, point: RunPoint, progress: Progress) -> RunRecord: ...


@dataclass
class HostMeasurer:
    """The real ONNX Runtime runner: fixed fresh sessions, cold start in a fresh process, placement.

    The host's fitness is checked once per search (``fitness``) and attached to every record,
    rather than re-probed before each of dozens of short candidates.
    """

    scenario: str
    provider: str = "CPUExecutionProvider"
    sessions: int = 3
    samples: int = 200
    warmup: int = 30
    cold_start_repeats: int = 2
    session_budget_s: float = 20.0
    fitness: HostFitness | None = None

    def __call__(self, variant_path: Path, point: RunPoint, progress: Progress) -> RunRecord:
        settings = RuntimeSettings(
            provider=self.provider, intra_op_threads=point.threads or 1, graph_optimization_level=point.opt_level or "all"  # type: ignore[arg-type]
        )
        options = ProfileOptions(
            scenario=self.scenario,
            min_sessions=self.sessions,
            max_sessions=self.sessions,
            samples_per_session=self.samples,
            warmup=self.warmup,
            time_budget_s=self.session_budget_s,
            cold_start_repeats=self.cold_start_repeats,
            check_fitness=False,
        )
        record = profile_model(variant_path, settings, options, progress=progress)
        if self.fitness is not None:
            record = record.model_copy(update={"fitness": self.fitness, "extras": {**record.extras, "fitness_checked": "once, at search start"}})
        return record


@dataclass
class SimulatedMeasurer:
    """The board simulator (``edgeproof.simulate.simulate_run``) at the point's power mode.

    A periodic contract scenario is simulated at its rate; other scenarios run back to back.
    """

    scenario: str
    sessions: int = 3
    samples: int = 200
    catalog_dirs: tuple[str, ...] = field(default_factory=tuple)

    def __call__(self, variant_path: Path, point: RunPoint, progress: Progress) -> RunRecord:
        from edgeproof.simulate import simulate_run

        kind, rate_hz = parse_scenario(self.scenario)
        return simulate_run(
            variant_path,
            point.target,
            power_mode=point.power_mode,
            rate_hz=rate_hz if kind == "periodic" else None,
            sessions=self.sessions,
            samples_per_session=self.samples,
            catalog_dirs=self.catalog_dirs,
            progress=progress,
        )


def board_modes(target_id: str, wanted: tuple[str, ...] | None, catalog_dirs: tuple[str, ...] = ()) -> list[str]:
    """The power modes to try on a board: every mode in its catalog entry, or those of ``wanted`` it has."""
    from edgeproof.targets import get_target

    target = get_target(target_id, catalog_dirs)
    if wanted is None:
        return list(target.power_modes)
    modes = [m for m in wanted if m in target.power_modes]
    if not modes:
        raise TargetError(f"--power-modes {','.join(wanted)}: target {target_id!r} has none of them; it has {sorted(target.power_modes)}")
    return modes
