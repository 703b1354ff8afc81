"""`edgeproof fleet`: ingest telemetry segments into the fleet store, judge alarms per stratum, simulate a fleet, export Parquet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgeproof.cli._app import app, console, user_errors
from edgeproof.errors import DataError

fleet_app = typer.Typer(
    help="Fleet telemetry: idempotent ingest, alarms per stratum vs a control cohort, playbooks, a simulator.", no_args_is_help=True
)
app.add_typer(fleet_app, name="fleet")

DEFAULT_STORE = Path(".edgeproof/fleet.duckdb")
StoreOption = Annotated[Path, typer.Option("--store", help="The fleet's DuckDB file (one writer at a time).")]


def _open(store: Path):
    from edgeproof.fleet import FleetStore

    store.parent.mkdir(parents=True, exist_ok=True)
    return FleetStore(store)


@fleet_app.command("ingest")
@user_errors
def ingest(
    sources: Annotated[list[Path], typer.Argument(help="Segment files (*.eptseg) or folders of them.")],
    store: StoreOption = DEFAULT_STORE,
    batch_rows: Annotated[int, typer.Option("--batch-rows", help="Rows per committed transaction.")] = 1_000_000,
) -> None:
    """Ingest segment files from where the journal left each one; re-sent rows count once, malformed rows are refused with why."""
    if batch_rows < 1:
        raise DataError(f"--batch-rows must be at least 1, got {batch_rows}")
    with _open(store) as fleet:
        report = fleet.ingest(sources, batch_rows=batch_rows)
        rejects = fleet.rejects_by_reason()
    console.print(
        f"{report.files} files, {report.frames} frames, {report.rows_read} rows in {report.seconds:.2f} s "
        f"({report.rows_per_s:,.0f} rows/s, measured:wall-clock): {report.windows} windows and {report.events} events new, "
        f"{report.duplicates} duplicates dropped, {report.rejected} refused",
        highlight=False,
        soft_wrap=True,
    )
    for problem in report.problems:
        console.print(f"[yellow]skipped[/] {problem}", highlight=False, soft_wrap=True)
    if report.rejected:
        console.print("refused rows in the store (device, reason, rows):", highlight=False)
        for device, reason, n in rejects:
            console.print(f"  {device}: {reason} ({n})", highlight=False, soft_wrap=True)


@fleet_app.command("alarms")
@user_errors
def alarms(
    store: StoreOption = DEFAULT_STORE,
    cohort: Annotated[str, typer.Option("--cohort", help="The cohort on the new release.")] = "canary",
    control: Annotated[str, typer.Option("--control", help="The concurrent control cohort.")] = "control",
    contract: Annotated[Path | None, typer.Option("--contract", help="Contract whose [rollback] table holds the thresholds.")] = None,
    playbook: Annotated[Path | None, typer.Option("--playbook", help="Playbook TOML (default: the bundled one).")] = None,
    window_h: Annotated[
        float | None, typer.Option("--window-h", help="Hours judged, up to the newest window (default: [rollback].window_h, else 24).")
    ] = None,
    looks: Annotated[int, typer.Option("--looks", help="How many times this stage is judged in all (alpha is split over them).")] = 1,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every verdict with its evidence as JSON.")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="List every verdict, not only the ones that are not passing.")] = False,
) -> None:
    """Judge every alarm in every stratum; print the firing ones with their playbook step. Exit 1: an alarm fires; 3: could not decide."""
    from edgeproof.contract import load_contract
    from edgeproof.fleet import DEFAULT_PLAYBOOK, evaluate_alarms, load_playbook
    from edgeproof.fleet._text import evidence, firing_lines, summary_line
    from edgeproof.outcome import OUTCOME_WORDS, exit_code
    from edgeproof.records import write_atomic

    if looks < 1:
        raise DataError(f"--looks must be at least 1, got {looks}")
    rollback = load_contract(contract).rollback if contract is not None else None
    steps = load_playbook(playbook or DEFAULT_PLAYBOOK)
    if not store.is_file():
        raise DataError(f"{store}: no fleet store here; run `edgeproof fleet ingest` first")
    with _open(store) as fleet:
        report = evaluate_alarms(fleet, cohort, control, rollback, window_h=window_h, looks=looks)
    if not report.verdicts:
        raise DataError(f"{store}: no windows of cohort {cohort!r} in the window judged")
    table = Table("alarm", "stratum", "verdict", "evidence")
    for v in report.verdicts:
        if show_all or v.verdict != "pass":
            table.add_row(v.alarm, v.stratum_label, v.verdict, evidence(v) if v.verdict != "nodata" else v.reason)
    if table.row_count:
        console.print(table)
    for line in firing_lines(report, steps):
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    console.print(summary_line(report), highlight=False, soft_wrap=True)
    outcome = report.outcome()
    console.print(f"fleet alarms: {OUTCOME_WORDS[outcome]}", highlight=False)
    if json_out is not None:
        write_atomic(json_out, json.dumps(report.to_dict(), indent=2))
    raise typer.Exit(exit_code(outcome))


@fleet_app.command("simulate")
@user_errors
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Folder the simulated devices' segment files land in.")],
    scenario: Annotated[Path | None, typer.Option("--scenario", help="Scenario TOML: [fleet], [sending], [[fault]].")] = None,
    devices: Annotated[int | None, typer.Option("--devices", help="Devices (default: the scenario's, else 10,000).")] = None,
    hours: Annotated[float, typer.Option("--hours", help="Hours of telemetry to simulate.")] = 24.0,
    canary_share: Annotated[float, typer.Option("--canary-share", help="Share of devices on the candidate release (cohort canary).")] = 0.5,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (default: the scenario's, else 0).")] = None,
) -> None:
    """Simulate a fleet (board simulator per board and region, per-device noise, realistic sending) and write its segments, labelled simulated."""
    import dataclasses

    import numpy as np

    from edgeproof.fleet import FleetSimulator, FleetSpec, Release, load_scenario

    if not 0.0 <= canary_share <= 1.0:
        raise DataError(f"--canary-share must be within 0..1, got {canary_share}")
    if hours <= 0:
        raise DataError(f"--hours must be > 0, got {hours}")
    spec = load_scenario(scenario) if scenario is not None else FleetSpec()
    if devices is not None:
        spec = dataclasses.replace(spec, devices=devices)
    if seed is not None:
        spec = dataclasses.replace(spec, seed=seed)
    sim = FleetSimulator(spec)
    canary = np.flatnonzero(np.random.default_rng(spec.seed + 1).random(spec.devices) < canary_share)
    sim.set_release(canary, Release("candidate", "ca" * 32, "fw-1"), "canary")
    paths = sim.write(out, hours)
    faults = ", ".join(f.kind for f in spec.faults) or "none"
    console.print(
        f"simulated {spec.devices} devices ({canary.size} canary on release 'candidate') for {hours:g} h, faults: {faults}; "
        f"wrote {', '.join(map(str, paths))} (every window labelled simulated:<board profile>)",
        highlight=False,
        soft_wrap=True,
    )


@fleet_app.command("export")
@user_errors
def export(
    out: Annotated[Path, typer.Option("--out", help="Folder for the Parquet partitions.")],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Export windows and events as Parquet partitioned by day and chip revision."""
    if not store.is_file():
        raise DataError(f"{store}: no fleet store here; run `edgeproof fleet ingest` first")
    with _open(store) as fleet:
        written = fleet.export_parquet(out)
    console.print(f"wrote {', '.join(map(str, written))}", highlight=False, soft_wrap=True)


@fleet_app.command("delete-device")
@user_errors
def delete_device(
    device_id: Annotated[str, typer.Argument(help="The device whose rows are deleted.")], store: StoreOption = DEFAULT_STORE
) -> None:
    """Delete every stored row of one device."""
    with _open(store) as fleet:
        n = fleet.delete_device(device_id)
    console.print(f"deleted {n} rows of {device_id}", highlight=False)


@fleet_app.command("retain")
@user_errors
def retain(
    days: Annotated[float, typer.Option("--days", help="Keep this many days back from the newest window.")],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Delete windows and events older than the retention period (and refuse such old rows from now on)."""
    if days <= 0:
        raise DataError(f"--days must be > 0, got {days}")
    with _open(store) as fleet:
        newest = fleet.con.execute("SELECT max(end_ns) FROM windows").fetchone()
        if not newest or newest[0] is None:
            raise DataError(f"{store}: no windows stored")
        w, e = fleet.retain(int(newest[0]) - int(days * 86400e9))
    console.print(f"deleted {w} windows and {e} events older than {days:g} days before the newest window", highlight=False)


@fleet_app.command("demo")
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's segments and store.")] = Path("out/demo/fleet"),
    devices: Annotated[int, typer.Option("--devices", help="Simulated devices.")] = 3000,
) -> None:
    """A short simulated fleet where an injected silent fallback on one chip revision fires its alarm, with its playbook step."""
    from edgeproof.fleet.demo import run_fleet_demo

    if devices < 100:
        raise DataError(f"--devices must be at least 100 for strata with enough devices, got {devices}")
    raise typer.Exit(run_fleet_demo(out, devices))
