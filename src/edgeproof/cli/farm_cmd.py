"""`edgeproof farm`: the board matrix (model × device × power mode → one verdict per cell), and a local Ray head."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edgeproof.cli._app import app, console, user_errors
from edgeproof.cli.core import OptLevelOpt, ProviderOpt, SamplesOpt, SessionsOpt, ThreadsOpt
from edgeproof.errors import DataError
from edgeproof.measure.runner import ProfileOptions
from edgeproof.measure.session import provider_name
from edgeproof.outcome import OUTCOME_WORDS, exit_code
from edgeproof.records import RuntimeSettings

farm_app = typer.Typer(help="Board farm: run the model × device × mode matrix on boards through their agents.", no_args_is_help=True)
app.add_typer(farm_app, name="farm")

InventoryOpt = Annotated[Path | None, typer.Option("--inventory", help="boards.toml (default: $EDGEPROOF_BOARDS, else ./boards.toml).")]


@farm_app.command("check")
@user_errors
def farm_check(
    models: Annotated[list[Path] | None, typer.Argument(help="ONNX models (or give --matrix).")] = None,
    contract: Annotated[Path | None, typer.Option("--contract", help="Budget contract (TOML) every cell is judged by.")] = None,
    targets: Annotated[str, typer.Option("--targets", help="all-devices, or device ids separated by commas.")] = "all-devices",
    matrix: Annotated[Path | None, typer.Option("--matrix", help="A matrix file: models, devices, contract, [modes].")] = None,
    inventory: InventoryOpt = None,
    use_ray: Annotated[bool, typer.Option("--ray", help="Run boards side by side on Ray (the farm extra).")] = False,
    address: Annotated[str | None, typer.Option("--address", help="Join this Ray cluster (implies --ray).")] = None,
    allow_unverified: Annotated[bool, typer.Option("--allow-unverified", help="Count unverified hard clauses as passing.")] = False,
    threads: ThreadsOpt = 1,
    provider: ProviderOpt = "cpu",
    opt_level: OptLevelOpt = "all",
    sessions: SessionsOpt = 3,
    samples: SamplesOpt = 300,
) -> None:
    """One verdict per model × device × power mode: exit 0 all pass, 1 a cell fails, 3 a cell could not be measured."""
    from edgeproof.farm.matrix import MatrixPlan, load_matrix, matrix_outcome, run_matrix, select_devices

    if matrix is not None:
        plan = load_matrix(matrix, inventory)
        if models:
            raise DataError("give models on the command line or in --matrix, not both")
        plan.contract = contract.resolve() if contract else plan.contract
    else:
        if not models:
            raise DataError("no models: give MODEL... or --matrix FILE")
        plan = MatrixPlan(models=[m.resolve() for m in models], devices=select_devices(targets, inventory), contract=contract)
    for model in plan.models:
        if not model.exists():
            raise DataError(f"{model}: no such model file")
    settings = RuntimeSettings(provider=provider_name(provider), intra_op_threads=threads, graph_optimization_level=opt_level)
    options = ProfileOptions(min_sessions=sessions, max_sessions=max(sessions, 8), samples_per_session=samples)
    if use_ray or address:
        from edgeproof.farm.ray_farm import run_matrix_on_ray

        cells = run_matrix_on_ray(plan, settings, options, allow_unverified, address)
    else:
        cells = run_matrix(
            plan, settings, options, allow_unverified, on_cell=lambda c: console.print(f"{c.model.name} on {c.target_id}: {c.outcome}")
        )
    from edgeproof import history

    table = Table(title=f"matrix: {len(plan.models)} model(s) × {len(plan.devices)} device(s)")
    for col in ("model", "device", "mode", "outcome", "p95 ms", "binding clause / error"):
        table.add_column(col)
    for cell in cells:
        if cell.record is not None:
            history.append(cell.record)
        p95 = f"{cell.record.latency.p95_ms:.3f}" if cell.record else "—"
        why = cell.error or (cell.verdict.binding_clause if cell.verdict and cell.verdict.binding_clause else "")
        colour = {"pass": "green", "fail": "red", "undecided": "yellow", "error": "red"}[cell.outcome]
        table.add_row(cell.model.name, cell.target_id, cell.power_mode or "as is", f"[{colour}]{cell.outcome}[/]", p95, escape(why or ""))
    console.print(table)
    outcome = matrix_outcome(cells)
    console.print(f"matrix: {OUTCOME_WORDS[outcome]}")
    raise typer.Exit(exit_code(outcome))


@farm_app.command("up")
@user_errors
def farm_up(
    inventory: InventoryOpt = None,
    temp_dir: Annotated[
        str, typer.Option("--temp-dir", help="Ray's temp dir (a short path: its sockets must fit 107 bytes).")
    ] = "/tmp/edgeproof-ray",
    num_cpus: Annotated[int, typer.Option("--num-cpus", min=1)] = 2,
) -> None:
    """Start a local Ray head (offline: no dashboard, no usage stats, a small object store) with a
    ``board:<id>`` resource per inventory device; `farm check --address auto` then uses it."""
    from edgeproof.farm.inventory import load_inventory
    from edgeproof.farm.ray_farm import head_command, ray_environment

    devices = sorted(load_inventory(inventory))
    command = head_command(devices, temp_dir, num_cpus)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, **ray_environment(), "RAY_USAGE_STATS_ENABLED": "0"}
        )
    except FileNotFoundError:
        raise DataError("the farm runs on Ray: pip install 'edgeproof[farm]'") from None
    if done.returncode != 0:
        raise DataError(f"ray start failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    console.print(f"Ray head up with boards {', '.join(devices)}; run `edgeproof farm check --address auto ...`; stop it with `ray stop`")
