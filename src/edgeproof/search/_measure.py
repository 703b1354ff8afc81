"""The search's runners: one opened runner per (target, power mode), so a candidate's target is just data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgeproof.errors import TargetError
from edgeproof.measure.runner import Prepared, ProfileOptions
from edgeproof.model import Model
from edgeproof.records import RunRecord, RuntimeSettings
from edgeproof.runners import Runner, runner_for
from edgeproof.search._records import Stage
from edgeproof.search._space import RunPoint

Progress = Callable[[str, float], None]
# A screening run: one session after a few warm-ups, of up to SCREEN_SAMPLES samples or about
# SCREEN_SESSION_S seconds, whichever is fewer (at least 20): a few dozen samples of a 224² model,
# 200 of a small one, where a session costs more to open than to time.
SCREEN_SAMPLES = 200
SCREEN_WARMUP = 10
SCREEN_SESSION_S = 1.0


@dataclass
class SearchRunners:
    """Runners for the points of one search, each opened on first use and all closed together.

    The host's fitness is checked once, when its runner opens, and attached to every record,
    rather than re-probed before each of dozens of short candidates. A board is simulated at the
    contract's scenario (a periodic or server rate included) in the point's power mode.
    """

    scenario: str
    provider: str = "CPUExecutionProvider"
    sessions: int = 3
    samples: int = 200
    warmup: int = 30
    cold_start_repeats: int = 2
    session_budget_s: float = 20.0
    catalog_dirs: tuple[str, ...] = ()
    # what every candidate is fed (``edgeproof.measure.runner.input_feeds``): declared shapes, the
    # user's --inputs, the data's rows, the contract's [model.feeds]
    feeds: ProfileOptions = field(default_factory=ProfileOptions)
    _open: dict[tuple[str, str | None], Runner] = field(default_factory=dict)
    _prepared: dict[tuple[str, str, str | None], Prepared] = field(default_factory=dict)

    def runner(self, target: str, power_mode: str | None = None) -> Runner:
        key = (target, power_mode)
        if key not in self._open:
            self._open[key] = runner_for(target, power_mode=power_mode, catalog_dirs=self.catalog_dirs).open()
        return self._open[key]

    def options(self) -> ProfileOptions:
        return replace(
            self.feeds,
            scenario=self.scenario,
            min_sessions=self.sessions,
            max_sessions=self.sessions,
            samples_per_session=self.samples,
            warmup=self.warmup,
            time_budget_s=self.session_budget_s,
            cold_start_repeats=self.cold_start_repeats,
        )

    def options_for(self, stage: Stage) -> ProfileOptions:
        """How hard a race stage measures: ``screened`` is one short session (a few dozen samples, no
        cold start, no node profile), ``timed`` the full fresh sessions without cold start and node
        profile, ``full`` everything."""
        full = self.options()
        if stage == "full":
            return full
        if stage == "timed":
            return replace(full, cold_start_repeats=0, profile_nodes=False)
        return replace(
            full,
            min_sessions=1,
            max_sessions=1,
            samples_per_session=min(SCREEN_SAMPLES, self.samples),
            warmup=min(SCREEN_WARMUP, self.warmup),
            time_budget_s=SCREEN_SESSION_S,
            cold_start_repeats=0,
            profile_nodes=False,
        )

    def settings(self, point: RunPoint) -> RuntimeSettings:
        """The runtime settings of a run point (a board's threads come from its power mode)."""
        return RuntimeSettings(
            provider=self.provider, intra_op_threads=point.threads or 1, graph_optimization_level=point.opt_level or "all"
        )

    def prepared(self, variant: Model | str | Path, point: RunPoint, options: ProfileOptions | None = None) -> Prepared:
        """The variant prepared on the point's runner, once per (variant file, runner): every stage
        of the race and the interleaved confirmation reuse it."""
        runner = self.runner(point.target, None if point.on_host else point.power_mode)
        key = (str(variant.path if isinstance(variant, Model) else variant), point.target, None if point.on_host else point.power_mode)
        if key not in self._prepared:
            self._prepared[key] = runner.prepare(variant, options or self.options())
        return self._prepared[key]

    def measure(self, variant: Model | str | Path, point: RunPoint, progress: Progress, stage: Stage = "full") -> RunRecord:
        """Measure (host) or simulate (board) one variant at one run point, as hard as ``stage`` says."""
        runner = self.runner(point.target, None if point.on_host else point.power_mode)
        options = self.options_for(stage)
        return runner.run(self.prepared(variant, point, options), self.settings(point), options, progress)

    def close(self) -> None:
        for runner in self._open.values():
            runner.close()
        self._open.clear()
        self._prepared.clear()

    def __enter__(self) -> SearchRunners:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
