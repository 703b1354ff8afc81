"""Simulator commands: targets (catalog and host calibration), simulate, compat."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edgeproof.cli._app import app, console, user_errors
from edgeproof.cli.core import InputsOpt, ShapeOpt, progress_bar
from edgeproof.errors import TargetError
from edgeproof.records import RunRecord, save_record, write_atomic

CatalogOpt = Annotated[list[Path] | None, typer.Option("--catalog", help="Extra directory of board TOML files (repeatable).")]
HostProfileOpt = Annotated[
    Path | None,
    typer.Option(
        "--host-profile", help="Host profile file (default: $EDGEPROOF_HOME/host-profile.json, else ~/.cache/edgeproof/host-profile.json)."
    ),
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")
_SECONDS = {"ms": 1e-3, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration_s(text: str) -> float:
    """``10m``, ``90s``, ``1.5h`` or plain seconds → seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise TargetError(f"--soak {text!r}: expected a positive duration such as 90s, 10m or 1h")
    return float(match.group(1)) * _SECONDS[match.group(2)]


@app.command()
@user_errors
def targets(
    show: Annotated[str | None, typer.Option("--show", help="Print one board's full profile with its sources.")] = None,
    calibrate_host: Annotated[
        bool,
        typer.Option(
            "--calibrate-host", help="Run the host microbenchmarks (seconds) and store the host profile with the load they ran under."
        ),
    ] = False,
    calibrate_device: Annotated[
        str | None,
        typer.Option("--calibrate", help="device:<id>: fit its board profile to microbenchmarks its agent measures (a new version)."),
    ] = None,
    catalog: CatalogOpt = None,
    host_profile: HostProfileOpt = None,
) -> None:
    """List the board catalog (every board is a simulated profile built from cited public specs)."""
    if calibrate_device is not None:
        from edgeproof.cli import device_cmd

        device_cmd.calibrate(calibrate_device, catalog or [])
        return
    from edgeproof.simulate.hostprofile import calibrate, default_profile_path, load_profile, save_profile
    from edgeproof.targets import get_target, load_catalog

    host_profile = host_profile or default_profile_path()
    if calibrate_host:
        with progress_bar("calibrating host") as update:
            profile = calibrate(progress=update)
        save_profile(profile, host_profile)
        cond = profile.conditions
        assert cond is not None  # calibrate() always records them
        console.print(
            f"host profile written to {host_profile} ({profile.calibration_s:.0f} s, {profile.fingerprint.cpu_model}, "
            f"onnxruntime {profile.fingerprint.onnxruntime}; calibrated {profile.created_at} under {cond.describe()})",
            highlight=False,
        )
        return
    if show is not None:
        target = get_target(show, catalog or ())
        console.print(f"[bold]{target.id}[/] — {target.name} [yellow](simulated profile {target.version})[/]")
        console.print(target.model_dump_json(indent=2, exclude={"sources", "validation"}), highlight=False, soft_wrap=True)
        console.print(f"[bold]validation against published figures[/]: {escape(_validation_line(target))}", highlight=False, soft_wrap=True)
        console.print("[bold]sources[/]")
        for key, text in target.sources.items():
            console.print(f"  {key}: {text}", highlight=False, soft_wrap=True)
        return
    table = Table(title="Board catalog (all simulated)")
    table.add_column("id", no_wrap=True)  # the id is what users type: never cut it
    for col in ("board", "accelerator", "peak TOPS", "power modes", "cooling", "profile", "sources"):
        table.add_column(col)
    for t in load_catalog(catalog or ()).values():
        acc = t.accelerator
        tops = ", ".join(f"{p} {v:g}" for p, v in acc.peak_tops.items()) if acc else "—"
        assumed = sum(1 for s in t.sources.values() if s.startswith("assumed:"))
        table.add_row(
            t.id,
            t.name,
            acc.name if acc else f"none ({t.cpu.name} CPU)",
            tops,
            ", ".join(t.power_modes),
            t.thermal.cooling,
            f"simulated:{t.version}",
            f"{len(t.sources)} ({assumed} assumed)",
        )
    table.add_row("host", "this machine", "none", "—", "—", "—", _host_status(host_profile, load_profile), "calibrated")
    console.print(table)


def _validation_line(target) -> str:
    v = target.validation
    if v is None:
        return "none: this profile was never compared with published latencies (intervals shown at ±100%)"

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.0%}"

    return (
        f"median |error| {pct(v.held_out_median_abs_error)} on {v.held_out_rows} held-out row(s) "
        f"(worst {pct(v.held_out_max_abs_error)}), leave-one-model-out {pct(v.leave_one_model_out_median_abs_error)}; "
        f"{v.rows} comparable rows, {v.fit_rows} used to fit {', '.join(v.free_parameters)} on {v.fitted_on}; "
        f"latency intervals ±{v.interval_rel:.0%} ({v.source})"
    )


def _host_status(path: Path, load) -> str:
    if not path.exists():
        return "not calibrated"
    try:
        profile = load(path)
    except TargetError as exc:
        return f"unreadable ({exc})"
    cond = profile.conditions
    return f"calibrated {profile.created_at}" + ("" if cond is None else f" at load {cond.load_avg_1m:.1f}")


@app.command()
@user_errors
def simulate(
    model: Annotated[Path | None, typer.Argument(help="ONNX model file.")] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Board id from `edgeproof targets`, or host (default raspberry-pi-5).")
    ] = None,
    power_mode: Annotated[str | None, typer.Option("--power-mode", help="A power mode of the board (default: firmware boot mode).")] = None,
    firmware: Annotated[Path | None, typer.Option("--firmware", help="Firmware profile TOML (default: the board's stock one).")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="What-if: run float kernels as fp16, int8 or int16.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads (default: all online cores; host: 1).")] = None,
    soak: Annotated[
        str | None, typer.Option("--soak", help="Thermal soak duration, e.g. 10m; latency samples then follow the soak.")
    ] = None,
    ambient: Annotated[float | None, typer.Option("--ambient", help="Ambient temperature in °C for the soak.")] = None,
    rate: Annotated[float | None, typer.Option("--rate", help="Periodic load in inferences/s (default: back to back).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the jitter model.")] = 0,
    shape: ShapeOpt = None,
    inputs: InputsOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the RunRecord (or validation report) as JSON here.")] = None,
    validate_host: Annotated[
        bool, typer.Option("--validate-host", help="Measure the digits variants on this host and compare with the host profile.")
    ] = False,
    validate: Annotated[
        str | None,
        typer.Option(
            "--validate", help="device:<id>: measure MODEL (default: the digits example) there; report its board profile's error."
        ),
    ] = None,
    catalog: CatalogOpt = None,
    host_profile: HostProfileOpt = None,
) -> None:
    """Simulate a model on a board: latency, energy, memory, load time, partitions and a thermal soak."""
    if validate is not None:
        from edgeproof.cli import device_cmd
        from edgeproof.simulate.validate import DIGITS_MODEL

        device_cmd.validate(validate, [model or DIGITS_MODEL], target, catalog or [], json_out)
        return
    target = target or "raspberry-pi-5"
    if validate_host:
        _validate(host_profile, json_out)
        return
    if model is None:
        raise TargetError("give a MODEL to simulate (or --validate-host)")
    from edgeproof.measure.runner import ProfileOptions, input_feeds
    from edgeproof.model import Model, parse_shape_overrides
    from edgeproof.simulate import simulate_run

    loaded = Model.load(model)
    fed: dict[str, list[int]] = {}
    if shape or inputs:
        # the board is simulated at the shapes given (free dims fixed by --shape or by the arrays)
        specs, _ = input_feeds(loaded, ProfileOptions(shapes=parse_shape_overrides(shape), inputs_npz=str(inputs) if inputs else None))
        fed = {spec.name: list(spec.shape) for spec in specs}
        loaded = loaded.with_input_shapes({name: tuple(dims) for name, dims in fed.items()})
    with progress_bar(f"simulating {model.name} on {target}") as update:
        record = simulate_run(
            loaded,
            target,
            power_mode=power_mode,
            firmware=firmware,
            precision=precision,
            threads=threads,
            soak_s=parse_duration_s(soak) if soak else None,
            ambient_c=ambient,
            rate_hz=rate,
            seed=seed,
            catalog_dirs=catalog or (),
            host_profile_path=host_profile,
            progress=update,
        )
    if fed:
        record = record.model_copy(update={"inputs": fed})
    _print_record(record)
    if json_out is not None:
        save_record(record, json_out)
        console.print(f"record written to {json_out}")


def _print_record(record: RunRecord) -> None:
    from edgeproof.simulate.run import latency_interval_ms

    label = record.latency_provenance
    lat = record.latency
    console.print(f"[bold]{record.model.name}[/] on [bold]{record.target.id}[/] [yellow]({label})[/]", highlight=False)
    console.print(
        f"  latency p50 {lat.p50_ms:.3f} ms  p95 {lat.p95_ms:.3f} ms  p99 {lat.p99_ms:.3f} ms  ({lat.n_samples} simulated samples)"
    )
    band = latency_interval_ms(record, "p50_ms")
    if band is not None and record.simulation is not None:
        console.print(
            f"  p50 interval {band[0]:.3f}–{band[1]:.3f} ms (profile error {record.simulation.latency_interval_basis})", highlight=False
        )
    for name in ("load_time_ms", "peak_rss_mib", "energy_mj_per_inference", "sustained_w", "temperature_c"):
        console.print(f"  {name}: {getattr(record, name).label()}", highlight=False)
    sim = record.simulation
    if sim is not None and sim.partitions.accelerator:
        parts = sim.partitions
        console.print(
            f"  partitions: {parts.segment_count} segment(s), {parts.accelerator_nodes} nodes on {parts.accelerator}, "
            f"{parts.cpu_nodes} on CPU, {parts.bytes_copied:.0f} B copied ({parts.copy_ms:.3f} ms)"
        )
        for fb in parts.fallback[:8]:
            console.print(f"    fallback {fb.kernel} ({fb.op_type}, {fb.precision}): {fb.reason}", highlight=False)
    soak = sim.soak if sim is not None else None
    if soak is not None:
        head = f"  soak {soak.duration_s:.0f} s at {soak.ambient_c:g} °C: peak {soak.peak_temperature_c:.1f} °C, sustained {soak.sustained_w:.2f} W, "
        if soak.first_trip_s is None:
            console.print(head + "no throttling")
        else:
            before, after = soak.mean_latency_before_trip_ms, soak.mean_latency_after_trip_ms
            shift = (
                f"latency {before:.3f} → {after:.3f} ms"
                if before is not None
                else f"throttled from the start (idle already above the trip point), latency {after:.3f} ms"
            )
            console.print(
                head
                + f"first throttle at {soak.first_trip_s:.0f} s, throttled {soak.throttled_s:.0f} s, {len(soak.throttle_events)} governor events, {shift}"
            )
    for warning in record.warnings:
        console.print(f"  [yellow]warning:[/] {warning}", highlight=False)


def _validate(host_profile: Path | None, json_out: Path | None) -> None:
    from edgeproof.simulate.validate import digits_variants, validate_host

    with progress_bar("validating host profile") as update:
        variants = digits_variants(Path(os.environ.get("EDGEPROOF_HOME", ".edgeproof")) / "variants")
        report = validate_host(variants, (1, 2), host_profile, progress=update)
    prof = report["profile"]
    then = "load not recorded" if prof["conditions"] is None else f"1-minute load average {prof['calibration_load_avg_1m']:.2f}"
    console.print(
        f"host profile calibrated {prof['created_at']} ({then}, {prof['calibration_s']:.0f} s); measured now at 1-minute load "
        f"average {report['load_at_start']['load_avg_1m']:.2f} → {report['load_at_end']['load_avg_1m']:.2f} on {prof['cores']} cores",
        highlight=False,
    )
    for warning in report["drift"]:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    table = Table(title="Host profile vs measurement (p50)")
    for col in ("variant", "threads", "predicted ms", "measured ms", "error"):
        table.add_column(col)
    for c in report["cases"]:
        table.add_row(c["variant"], str(c["threads"]), f"{c['predicted_ms']:.3f}", f"{c['measured_p50_ms']:.3f}", f"{c['error']:+.1%}")
    console.print(table)
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    verdict = "meets" if report["meets_target"] else "misses"
    console.print(
        f"MAPE {report['mape']:.1%} ({verdict} the {report['target_mape']:.0%} target); worst: {report['worst_case']['variant']} × {report['worst_case']['threads']} thread(s) at {report['worst_case']['error']:+.1%}"
    )
    if json_out is not None:
        write_atomic(json_out, json.dumps(report, indent=2))
        console.print(f"report written to {json_out}")


@app.command()
@user_errors
def compat(
    model: Annotated[Path, typer.Argument(help="ONNX model file.")],
    targets_: Annotated[str, typer.Option("--targets", help="all, or comma-separated board ids.")] = "all",
    precisions: Annotated[
        str | None,
        typer.Option(
            "--precisions", help="Comma-separated: native, fp32, fp16, int8, int16 (default: native + each accelerator precision)."
        ),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the matrix as JSON here.")] = None,
    catalog: CatalogOpt = None,
) -> None:
    """Compatibility matrix: per board and precision, ops that fall back, partitions, bytes copied, fragmentation cost."""
    from edgeproof.simulate import compat_matrix

    ids = None if targets_ == "all" else [t.strip() for t in targets_.split(",") if t.strip()]
    precs = None if precisions is None else [p.strip() for p in precisions.split(",") if p.strip()]
    rows = compat_matrix(model, ids, precs, catalog or ())
    table = Table(title=f"Compatibility of {model.name} (simulated)")
    for col in ("board", "precision", "on accel", "falls back", "partitions", "bytes copied", "copy ms", "latency ms", "fragmentation ms"):
        table.add_column(col)
    for r in rows:
        fb = ", ".join(f"{op}×{n}" for op, n in r.fallback_ops.items()) or "—"
        frag = "n/a" if r.fragmentation_ms is None else f"{r.fragmentation_ms:.3f}"
        table.add_row(
            r.target,
            r.precision,
            f"{r.accelerator_kernels}/{r.kernels}" if r.accelerator else "no accel",
            fb,
            str(r.partitions),
            str(r.bytes_copied),
            f"{r.copy_ms:.3f}",
            f"{r.latency_ms:.3f}",
            frag,
        )
    console.print(table)
    if json_out is not None:
        write_atomic(json_out, json.dumps([r.to_dict() for r in rows], indent=2))
        console.print(f"matrix written to {json_out}")
