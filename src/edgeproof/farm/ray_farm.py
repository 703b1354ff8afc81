"""The matrix on Ray: one actor per board, holding that board's agent connection, placed through the
custom resource ``board:<device-id>`` so a measurement has its board alone. Ray is the ``farm`` extra."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from edgeproof.errors import DataError
from edgeproof.farm.matrix import Cell, MatrixPlan, by_device, model_evaluations, run_board_cells
from edgeproof.measure.runner import ProfileOptions
from edgeproof.records import RuntimeSettings

# A local head is kept small: the farm moves run records, not tensors.
OBJECT_STORE_BYTES = 80 * 2**20
# Ray's unix sockets must fit in 107 bytes, so its temp dir has a short path.
DEFAULT_TEMP_DIR = "/tmp/edgeproof-ray"
# What Ray workers need from this process's environment: where history and local agents live.
_PASSED_ENV = ("EDGEPROOF_HOME", "EDGEPROOF_BOARDS", "PYTHONPATH", "HOME")


def amdsmi_shim() -> str | None:
    """A directory to put first on PYTHONPATH when ``amdsmi`` (installed with zeus) is present but
    cannot load ROCm's library: its import then raises KeyError, which Ray's own guard (ImportError
    only) lets through, so ``import ray`` fails on every machine without ROCm. In the shim, importing
    amdsmi raises ImportError, as on a machine without it. None where amdsmi imports or is absent."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # amdsmi prints its failure on stdout
            import amdsmi  # noqa: F401
    except ImportError:
        return None
    except Exception as exc:  # the KeyError (or OSError) of a library that is not there
        shim = Path(tempfile.gettempdir()) / "edgeproof-amdsmi-shim"
        (shim / "amdsmi").mkdir(parents=True, exist_ok=True)
        # written beside and renamed into place: another process may import it at the same moment
        part = shim / "amdsmi" / f"__init__.py.{os.getpid()}.part"
        part.write_text(f"raise ImportError({f'amdsmi cannot load here: {exc!r}'!r})\n")
        os.replace(part, shim / "amdsmi" / "__init__.py")
        return str(shim)
    return None


def ray_environment() -> dict[str, str]:
    """Environment additions for this process, Ray's workers and ``ray start``: the amdsmi shim where needed."""
    shim = amdsmi_shim()
    if shim is None:
        return {}
    sys.modules["amdsmi"] = None  # type: ignore[assignment]  # this process: import amdsmi → ImportError
    return {"PYTHONPATH": os.pathsep.join(p for p in (shim, os.environ.get("PYTHONPATH")) if p)}


def _ray() -> Any:
    os.environ.update(ray_environment())
    try:
        import ray
    except ImportError:
        raise DataError("the farm runs on Ray: pip install 'edgeproof[farm]' (or run without --ray, one board at a time)") from None
    return ray


def board_resource(device_id: str) -> str:
    return f"board:{device_id}"


def head_options(device_ids: list[str], temp_dir: str = DEFAULT_TEMP_DIR, num_cpus: int = 2) -> dict[str, Any]:
    """``ray.init`` arguments of a local, offline head: no dashboard, a small object store, one
    ``board:<id>`` resource per board."""
    return {
        "num_cpus": num_cpus,
        "include_dashboard": False,
        "object_store_memory": OBJECT_STORE_BYTES,
        "_temp_dir": temp_dir,
        "resources": {board_resource(d): 1 for d in device_ids},
        "log_to_driver": False,
        "configure_logging": False,
    }


def start(device_ids: list[str], address: str | None = None, temp_dir: str = DEFAULT_TEMP_DIR) -> Any:
    """Join the cluster at ``address``, or start a local head with a resource per board."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = _ray()
    env = {"env_vars": {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}}
    if ray.is_initialized():
        return ray
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=False)
    else:
        Path(temp_dir).mkdir(parents=True, exist_ok=True)
        ray.init(runtime_env=env, **head_options(device_ids, temp_dir))
    return ray


def head_command(device_ids: list[str], temp_dir: str = DEFAULT_TEMP_DIR, num_cpus: int = 2) -> list[str]:
    """``ray start --head`` for `edgeproof farm up`: the same small, offline head, left running."""
    import json

    return [
        "ray",
        "start",
        "--head",
        f"--num-cpus={num_cpus}",
        "--include-dashboard=false",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        f"--resources={json.dumps({board_resource(d): 1 for d in device_ids})}",
    ]


class _BoardActor:
    """Runs one board's cells; Ray places it where ``board:<id>`` is, so no other job has that board."""

    def run(
        self,
        cells: list,
        contract: Path | None,
        settings: RuntimeSettings,
        options: ProfileOptions,
        evaluations: dict,
        allow_unverified: bool,
    ) -> list[Cell]:
        return run_board_cells(cells, contract, settings, options, evaluations, allow_unverified)


def run_matrix_on_ray(
    plan: MatrixPlan,
    settings: RuntimeSettings,
    options: ProfileOptions,
    allow_unverified: bool = False,
    address: str | None = None,
    temp_dir: str | None = None,
) -> list[Cell]:
    """Every board's cells on its own actor, all boards at once; results come back as Cells with RunRecords."""
    grouped = by_device(plan.cells())
    ray = start(list(grouped), address, temp_dir or tempfile.gettempdir() + "/edgeproof-ray")
    actor_class = ray.remote(num_cpus=0)(_BoardActor)
    evaluations = model_evaluations(plan)
    pending = []
    for device_id, cells in grouped.items():
        actor = actor_class.options(resources={board_resource(device_id): 1}, name=f"board-{device_id}").remote()
        pending.append(actor.run.remote(cells, plan.contract, settings, options, evaluations, allow_unverified))
    out: list[Cell] = []
    for result in ray.get(pending):
        out += result
    return out
