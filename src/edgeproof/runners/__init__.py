"""One runner interface for every target: this host, a simulated board, a board through its agent (``device:<id>``).

with runner_for("host") as runner:
    record = runner.run(runner.prepare("model.onnx", options), settings, options)
"""

from __future__ import annotations

from pathlib import Path

from edgeproof.measure.meters._base import EnergyMeter
from edgeproof.runners._base import Progress, Runner
from edgeproof.runners.host import HostRunner
from edgeproof.runners.simulated import SimulatedRunner
from edgeproof.targets.firmware import FirmwareProfile
from edgeproof.targets.host import HOST_ID

__all__ = ["HostRunner", "Progress", "Runner", "SimulatedRunner", "runner_for"]


def runner_for(
    target: str,
    *,
    power_mode: str | None = None,
    firmware: FirmwareProfile | str | Path | None = None,
    threads: int | None = None,
    check_fitness: bool = True,
    strict: bool = False,
    catalog_dirs: tuple[str, ...] = (),
    meter: EnergyMeter | None = None,
) -> Runner:
    """The runner for a target id: ``host`` measures here; ``device:<id>`` measures on a board through its
    agent (``device:local``: an agent subprocess here); a catalog board id is simulated.

    ``power_mode``/``firmware``/``threads`` apply to a board; ``check_fitness``/``strict`` and
    ``meter`` (an energy meter to use instead of the best one found, e.g. an external CSV) to the host.
    The runner is not opened yet: use it in a ``with`` block or call ``open()``.
    """
    from edgeproof.errors import DataError

    if target.startswith("device:"):
        from edgeproof.runners.agent import AgentRunner

        if firmware is not None or meter is not None:
            raise DataError(f"--firmware and --power-csv do not apply to {target}: the board's agent reports its own firmware and meters")
        return AgentRunner(target, power_mode=power_mode)
    if target == HOST_ID:
        if power_mode is not None or firmware is not None:
            raise DataError("--power-mode and --firmware apply to a simulated board (--target BOARD), not to the host")
        return HostRunner(check_fitness=check_fitness, strict=strict, meter=meter)
    if meter is not None:
        raise DataError(f"an external power meter (--power-csv) applies to the host; {target} is simulated")
    return SimulatedRunner(target, power_mode=power_mode, firmware=firmware, threads=threads, catalog_dirs=catalog_dirs)
