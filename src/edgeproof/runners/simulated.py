"""The simulated-board runner: the board simulator behind the same life cycle as a real board."""

from __future__ import annotations

from pathlib import Path

from edgeproof.measure.interleaved import ArmSettings, Decided, InterleaveOptions, pair_records
from edgeproof.measure.runner import Prepared, ProfileOptions, prepare
from edgeproof.model import Model
from edgeproof.records import InterleaveLayout, RunRecord, RuntimeSettings
from edgeproof.runners._base import Progress, Runner
from edgeproof.targets.firmware import FirmwareProfile, resolve_firmware


class SimulatedRunner(Runner):
    """Simulates a catalog board in one power mode and firmware: every figure is ``simulated:<profile>``.

    A periodic or server scenario is simulated at its rate (arrivals evenly spaced); the rest back
    to back. Sessions and samples follow ``ProfileOptions`` (``min_sessions`` × ``samples_per_session``),
    drawn from the board's seeded jitter model.
    """

    kind = "simulated"

    def __init__(
        self,
        target_id: str,
        power_mode: str | None = None,
        firmware: FirmwareProfile | str | Path | None = None,
        threads: int | None = None,
        catalog_dirs: tuple[str, ...] = (),
    ) -> None:
        super().__init__(target_id)
        self.power_mode = power_mode
        self.firmware = firmware
        self.threads = threads
        self.catalog_dirs = catalog_dirs
        self.profile: str | None = None

    def _open(self) -> None:
        from edgeproof.simulate.point import operating_point
        from edgeproof.simulate.run import profile_label
        from edgeproof.targets import get_target

        # resolve the board, its firmware and power mode now, so a wrong one fails before any model is read
        target = get_target(self.target_id, self.catalog_dirs)
        fw = resolve_firmware(target, self.firmware)
        operating_point(target, fw, self.power_mode, self.threads)
        self.target_id = target.id
        self.profile = profile_label(target, fw)

    def _prepare(self, model: Model | str | Path, options: ProfileOptions) -> Prepared:
        return prepare(model, options)

    def _simulate(self, prepared: Prepared, options: ProfileOptions, sessions: int, samples: int, progress: Progress) -> RunRecord:
        from edgeproof.simulate import simulate_run
        from edgeproof.simulate.pipeline import with_simulated_stages

        # the board is simulated at the shapes the run is fed (a free dim fixed by data or a declared shape)
        model = prepared.model.with_input_shapes({spec.name: spec.shape for spec in prepared.specs})
        record = simulate_run(
            model,
            self.target_id,
            power_mode=self.power_mode,
            firmware=self.firmware,
            threads=self.threads,
            rate_hz=prepared.scenario.rate_hz,
            sessions=sessions,
            samples_per_session=samples,
            seed=options.seed,
            catalog_dirs=self.catalog_dirs,
            progress=progress,
        )
        # the record names the model as it is (its free dims free), not the copy fixed at the fed shapes
        record = record.model_copy(update={"model": prepared.ref, "inputs": {spec.name: list(spec.shape) for spec in prepared.specs}})
        # the contract's pipeline, costed on the same board: built-in and ONNX steps can run there, a Python step cannot
        return with_simulated_stages(
            record, options.pipeline, options.pipeline_rows, prepared.path, prepared.feeds[0], self.firmware, self.catalog_dirs
        )

    def _run(self, prepared: Prepared, settings: RuntimeSettings, options: ProfileOptions, progress: Progress) -> RunRecord:
        return self._simulate(prepared, options, options.min_sessions, options.samples_per_session, progress)

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
        # Both arms draw from the same seeded jitter, session for session: the ratio between them is the
        # model's, exactly, so more pairs would add nothing and ``decided`` is not consulted.
        records = []
        for arm, prepared in (("A", a), ("B", b)):
            rec = self._simulate(prepared, options, ab.pairs, ab.blocks * ab.block_size, progress)
            layout = InterleaveLayout(arm=arm, block_size=ab.block_size, blocks=ab.blocks, pairs=ab.pairs, seed=options.seed)
            records.append(rec.model_copy(update={"interleave": layout}))
        return pair_records(records[0], records[1])

    def _meters(self) -> dict[str, str]:
        sim = f"simulated:{self.profile}"
        return {key: sim for key in ("latency", "load_time", "peak_rss", "energy", "power", "temperature")}
