"""GPU (NVML / AMD SMI) and CPU (RAPL) energy through Zeus's ZeusMonitor, which says why when it finds no meter."""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field

from edgeproof.measure.meters._base import EnergyMeter, MeterError, Probe


@dataclass(frozen=True)
class ZeusDevices:
    """What Zeus can measure here: GPU and RAPL CPU indices, and phrases for what it cannot."""

    gpu_indices: list[int] = field(default_factory=list)
    gpu_backend: str = ""
    cpu_indices: list[int] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def find_zeus_devices() -> ZeusDevices:
    """Ask Zeus which GPUs and RAPL packages it can read, translating its errors into reasons.

    An absent RAPL is left out of ``missing`` (the powercap probe reports it); a RAPL that
    exists but cannot be read is kept, since that one the user can fix.
    """
    from zeus.device import get_cpus, get_gpus
    from zeus.device.cpu.common import ZeusCPUNoPermissionError
    from zeus.exception import ZeusBaseError

    missing = []
    gpu_indices: list[int] = []
    backend = ""
    try:
        gpus = get_gpus()
        gpu_indices = list(range(len(gpus)))
        backend = "nvml" if type(gpus).__name__.startswith("NVIDIA") else "amdsmi"
        if not gpu_indices:
            missing.append(f"no NVML/AMD GPU ({backend} sees no device)")
    except (ZeusBaseError, ImportError) as err:
        missing.append(f"no NVML/AMD GPU ({err})")
    cpu_indices: list[int] = []
    try:
        cpu_indices = list(range(len(get_cpus())))
    except ZeusCPUNoPermissionError as err:
        missing.append(f"zeus cannot read RAPL ({err})")
    except ZeusBaseError:
        pass
    return ZeusDevices(gpu_indices, backend, cpu_indices, missing)


class ZeusMeter(EnergyMeter):
    """Sum of GPU, CPU package and DRAM joules over each window, as Zeus measures them.

    Windows never synchronise a framework (no torch): ORT calls return when their work is done.
    Raises MeterError when Zeus finds nothing to measure.
    """

    def __init__(self, gpu_indices: list[int] | None = None, cpu_indices: list[int] | None = None) -> None:
        devices = find_zeus_devices()
        gpus = devices.gpu_indices if gpu_indices is None else gpu_indices
        cpus = devices.cpu_indices if cpu_indices is None else cpu_indices
        if not gpus and not cpus:
            raise MeterError(", ".join(devices.missing) or "zeus found no GPU or RAPL meter")
        parts = [f"{devices.gpu_backend}-gpu{i}" for i in gpus] + [f"rapl-cpu{i}" for i in cpus]
        super().__init__("zeus:" + "+".join(parts))

        from zeus.exception import ZeusBaseError
        from zeus.monitor import ZeusMonitor

        try:
            self._monitor = ZeusMonitor(gpu_indices=gpus, cpu_indices=cpus)
        except (ZeusBaseError, RuntimeError, ValueError) as err:
            raise MeterError(f"zeus cannot measure {self.name}: {err}") from err
        self._keys = (f"edgeproof-{n}" for n in itertools.count())

    def _begin(self) -> str:
        key = next(self._keys)
        self._monitor.begin_window(key, sync_execution=False)
        return key

    def _end(self, key: str) -> tuple[float, float]:
        with warnings.catch_warnings():
            # Zeus warns on zero GPU energy; that case is raised below instead.
            warnings.simplefilter("ignore")
            measurement = self._monitor.end_window(key, sync_execution=False)
        if any(j == 0.0 for j in measurement.gpu_energy.values()):
            raise MeterError(
                f"{self.name}: a {measurement.time:.3f} s window is shorter than the GPU energy counter's "
                "update period; measure a longer window"
            )
        energy_j = sum(measurement.gpu_energy.values())
        energy_j += sum((measurement.cpu_energy or {}).values()) + sum((measurement.dram_energy or {}).values())
        return energy_j, measurement.time

    def _release(self) -> None:
        self._monitor.reset_windows()


def probe_zeus() -> Probe:
    """A Zeus meter when Zeus finds a GPU or readable RAPL, else why not (never raises for absent hardware)."""
    try:
        return Probe([ZeusMeter()])
    except MeterError as err:
        return Probe([], str(err))
