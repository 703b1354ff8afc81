"""The host runner: ONNX Runtime on this machine, fresh sessions, cold start in a fresh process, real meters."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from edgeproof.measure import energy, thermal
from edgeproof.measure.interleaved import ArmSettings, Decided, InterleaveOptions, measure_ab_prepared
from edgeproof.measure.runner import TIMER, Prepared, ProfileOptions, host_fitness, measure_prepared, prepare
from edgeproof.model import Model
from edgeproof.records import HostFitness, RunRecord, RuntimeSettings
from edgeproof.runners._base import Progress, Runner
from edgeproof.targets.host import HOST_ID


class HostRunner(Runner):
    """Measures on this host. Fitness is checked once when the runner opens (``strict`` refuses an
    unfit host) and attached to every record; the energy meter stays open until ``close``.
    ``meter`` is an energy meter to use instead of the best one found here (e.g. an
    ``ExternalCsvMeter`` reading an external power meter's log); the runner closes it."""

    kind = "measured"

    def __init__(self, check_fitness: bool = True, strict: bool = False, meter: energy.EnergyMeter | None = None) -> None:
        super().__init__(HOST_ID)
        self.check_fitness = check_fitness
        self.strict = strict
        self.fitness: HostFitness | None = None
        self._meter: energy.EnergyMeter | None = None
        self._given_meter = meter
        self._stack = ExitStack()

    def _open(self) -> None:
        if self.check_fitness:
            self.fitness = host_fitness(self.strict)
        if self._given_meter is not None:
            self._meter = self._given_meter
            self._stack.callback(self._given_meter.close)
        else:
            self._meter = self._stack.enter_context(energy.opened_meter())

    def _prepare(self, model: Model | str | Path, options: ProfileOptions) -> Prepared:
        return prepare(model, options)

    def _run(self, prepared: Prepared, settings: RuntimeSettings, options: ProfileOptions, progress: Progress) -> RunRecord:
        return measure_prepared(prepared, settings, options, self._meter, self.fitness, progress)

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
        return measure_ab_prepared((a, b), settings, options, ab, self._meter, self.fitness, progress, decided)

    def _meters(self) -> dict[str, str]:
        no_energy = f"unavailable:{energy.why_unavailable()}"
        return {
            "latency": f"measured:{TIMER}",
            "load_time": "measured:fresh-process:session+first-inference",
            "peak_rss": "measured:fresh-process:VmHWM",
            "energy": f"measured:{self._meter.name}" if self._meter is not None else no_energy,
            "power": f"measured:{self._meter.name}" if self._meter is not None else no_energy,
            "temperature": "measured:thermal-sensors-peak"
            if thermal.max_temperature_c() is not None
            else "unavailable:no temperature sensor readable on this host",
        }

    def _close(self) -> None:
        self._stack.close()
        self._meter = None
