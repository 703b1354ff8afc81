"""`edgeproof fleet`: ingest telemetry segments into the fleet store, judge alarms per stratum, simulate a fleet, export Parquet."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgeproof.cli._app import app, console, err_console, user_errors
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


token_app = typer.Typer(help="Per-device tokens of the fleet receiver (the file keeps only their SHA-256).", no_args_is_help=True)
fleet_app.add_typer(token_app, name="token")
TokensOption = Annotated[Path, typer.Option("--tokens", help="Tokens file: device id → sha256 of its token (JSON; TOML is read too).")]


@token_app.command("add")
@user_errors
def token_add(device_id: Annotated[str, typer.Argument(help="The device the token is for.")], tokens: TokensOption) -> None:
    """Make a fresh token for a device (replacing any it had), store only its hash and print the token, this once."""
    from edgeproof.fleet._tokens import add_token

    token = add_token(tokens, device_id)
    typer.echo(token)
    err_console.print(
        f"the token above is {device_id}'s; {tokens} keeps only its SHA-256, so it is not shown again", highlight=False, soft_wrap=True
    )


@token_app.command("remove")
@user_errors
def token_remove(device_id: Annotated[str, typer.Argument(help="The device whose token is revoked.")], tokens: TokensOption) -> None:
    """Revoke a device's token; the receiver refuses it from its next request on."""
    from edgeproof.fleet._tokens import remove_token

    if not remove_token(tokens, device_id):
        raise DataError(f"{tokens}: {device_id!r} has no token")
    console.print(f"revoked the token of {device_id}", highlight=False)


@fleet_app.command("serve")
@user_errors
def serve(
    spool: Annotated[Path, typer.Option("--spool", help="Folder uploads are spooled in (durably) until ingested.")],
    tokens: TokensOption,
    store: StoreOption = DEFAULT_STORE,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0 picks a free one).")] = 4318,
    ingest_every_s: Annotated[float, typer.Option("--ingest-every-s", help="Seconds between ingest passes when no upload wakes it.")] = 2.0,
) -> None:
    """Receive telemetry: POST /v1/segments (segment frames) and /v1/metrics (OTLP/HTTP), each with its device's Bearer token.

    An upload is answered 200 once it is in the spool durably; the one ingest thread moves it into the
    store, idempotent by (device, boot, sequence). Ctrl-C stops taking uploads and ingests what is spooled.
    """
    import signal

    from edgeproof.fleet._receiver import Receiver

    if not 0 <= port <= 65535:
        raise DataError(f"--port must be within 0..65535, got {port}")
    if ingest_every_s <= 0:
        raise DataError(f"--ingest-every-s must be > 0, got {ingest_every_s}")
    receiver = Receiver(store, spool, tokens, host=host, port=port, ingest_every_s=ingest_every_s)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    receiver.start()
    console.print(
        f"receiving on {receiver.url} (POST /v1/segments, /v1/metrics; GET /v1/status) for {receiver.tokens.devices} devices; "
        f"spool {spool}, store {store}",
        highlight=False,
        soft_wrap=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    receiver.close()
    counts = receiver.status()["counts"]
    console.print(
        "stopped; " + ", ".join(f"{k} {v}" for k, v in counts.items()) if counts else "stopped; nothing received", highlight=False
    )


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
