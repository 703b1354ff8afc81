"""Device targets in the shared commands: `simulate --validate device:<id>`, `targets --calibrate
device:<id>` and `doctor --target device:<id>` (the commands call these; they print)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from edgeproof.cli._app import console
from edgeproof.cli.core import progress_bar
from edgeproof.farm.boards_met import Case, Validation, calibrate_device, validate_device
from edgeproof.records import write_atomic


def _device(target: str):
    from edgeproof.farm.inventory import get_device

    return get_device(target if target.startswith("device:") else f"device:{target}")


def _cases_table(title: str, cases: list[Case], predicted_by: str, measured_by: str) -> Table:
    table = Table(title=title)
    for col in ("model", f"predicted ms ({predicted_by})", f"measured p50 ms ({measured_by})", "error"):
        table.add_column(escape(col))
    for c in cases:
        table.add_row(c.name, f"{c.predicted_ms:.3f}", f"{c.measured_p50_ms:.3f}", f"{c.error:+.1%}")
    return table


def _mape(cases: list[Case]) -> float:
    return sum(abs(c.error) for c in cases) / len(cases)


def validate(target: str, models: list[Path], profile: str | None, catalog: list[Path], json_out: Path | None) -> None:
    """The board profile's error against the device's measurements, per model and as MAPE."""
    device = _device(target)
    with progress_bar(f"validating against {device.target_id}") as update:
        report: Validation = validate_device(device, models, profile, catalog, progress=update)
    console.print(
        _cases_table(
            f"{report.profile} vs {device.target_id} ({report.power_mode}, 1 thread)", report.cases, report.profile, report.measured_by
        )
    )
    worst = report.worst
    console.print(
        f"MAPE {report.mape:.1%} of {report.profile} against {report.measured_by} over {len(report.cases)} model(s); "
        f"worst {worst.name} at {worst.error:+.1%}",
        highlight=False,
    )
    if json_out is not None:
        write_atomic(json_out, json.dumps(report.to_dict(), indent=2))
        console.print(f"report written to {json_out}")


def calibrate(target: str, catalog: list[Path]) -> None:
    """Fit the device's board profile to its microbenchmarks; write the new version beside the history."""
    device = _device(target)
    out_dir = Path(os.environ.get("EDGEPROOF_HOME", ".edgeproof")) / "calibrated"
    with progress_bar(f"calibrating on {device.target_id}") as update:
        cal = calibrate_device(device, out_dir, catalog_dirs=catalog, progress=update)
    before = cal.before
    console.print(
        _cases_table(f"microbenchmarks on {device.target_id}: {before.profile}", before.cases, before.profile, before.measured_by)
    )
    label = f"simulated:{cal.target.id}@{cal.target.version}"
    console.print(_cases_table(f"the same with {label} (in-sample)", cal.after, label, before.measured_by))
    for cls, (old, new) in cal.efficiency.items():
        console.print(escape(f"  cpu.class_efficiency[{cls}]: {old:.3g} → {new:.3g}"), highlight=False)
    console.print(f"  cpu.op_overhead_us: {cal.op_overhead_us[0]:.3g} → {cal.op_overhead_us[1]:.3g}", highlight=False)
    if cal.clamped:
        console.print(
            f"[yellow]note:[/] the fit wanted more than 100% of {cal.base}'s peak for {', '.join(cal.clamped)}: "
            f"{device.target_id} is faster than that board's spec allows (is it really one?); held at 100%",
            highlight=False,
        )
    assert cal.target.validation is not None
    console.print(
        f"MAPE {before.mape:.1%} → {_mape(cal.after):.1%} in-sample; leave-one-out median |error| "
        f"{cal.target.validation.held_out_median_abs_error:.1%} (worst {cal.target.validation.held_out_max_abs_error:.1%})",
        highlight=False,
    )
    console.print(
        f"profile {cal.target.id}@{cal.target.version} written to {cal.path}; use it with "
        f"`--catalog {cal.path.parent} --target {cal.target.id}`",
        highlight=False,
        soft_wrap=True,
    )


def doctor(target: str) -> NoReturn:
    """The device's fingerprint, lock state, disk budget and bring-up checklist: exit 0 fit, 1 a check failed."""
    from edgeproof.runners.agent import AgentRunner

    device = _device(target)
    with AgentRunner(device) as runner:
        assert runner.hello is not None
        hello = runner.hello
        checks = runner.bring_up()
    fp = hello.fingerprint
    table = Table(title=f"{device.target_id}: agent fingerprint (protocol {hello.protocol})")
    for col in ("field", "value"):
        table.add_column(col)
    rows = {
        "board": f"{runner.board} ({'boards.toml' if device.board else 'declared by the agent'})" if runner.board else "none declared",
        "transport": device.transport,
        **{k: fp.get(k) for k in ("agent", "device_tree_model", "cpu_model", "cpu_cores", "ram_gib", "onnxruntime", "power_mode")},
        "providers": ", ".join(fp.get("providers") or []),
        "firmware_release": fp.get("firmware_release"),
        "meters": ", ".join(f"{k}={v}" for k, v in (fp.get("meters") or {}).items()),
    }
    for key, value in rows.items():
        table.add_row(key, escape(str(value)))
    cache = hello.cache
    used, budget = int(cache.get("used_bytes", 0)), int(cache.get("budget_bytes", 0))
    table.add_row(
        "model cache",
        escape(
            f"{used / 2**20:.1f} of {budget / 2**20:.0f} MiB used ({cache.get('dir')}); models up to {int(cache.get('max_model_bytes', 0)) / 2**20:.0f} MiB"
        ),
    )
    busy = hello.busy
    table.add_row("board lock", escape(f"held by {busy.get('job')} (pid {busy.get('pid')}, since {busy.get('since')})") if busy else "free")
    console.print(table)
    failed = print_checks(device.target_id, checks)
    console.print(f"{device.target_id}: {'UNFIT (' + ', '.join(failed) + ')' if failed else 'fit'}{', busy' if busy else ''}")
    raise typer.Exit(1 if failed else 0)


def print_checks(target_id: str, checks: list[dict[str, str]]) -> list[str]:
    """The bring-up checklist as a table, then what could not be checked; returns the failed checks."""
    table = Table(title=f"bring-up on {target_id}")
    for col in ("check", "status", "detail"):
        table.add_column(col)
    colours = {"pass": "green", "fail": "red", "unchecked": "yellow"}
    for check in checks:
        table.add_row(check["name"], f"[{colours.get(check['status'], 'white')}]{check['status']}[/]", escape(check["detail"]))
    console.print(table)
    unchecked = [c["name"] for c in checks if c["status"] == "unchecked"]
    if unchecked:
        console.print(f"could not be checked here: {', '.join(unchecked)}")
    return [c["name"] for c in checks if c["status"] == "fail"]
