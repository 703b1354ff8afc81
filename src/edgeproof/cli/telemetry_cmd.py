"""`edgeproof telemetry`: read segment folders (with what did not read back), print the schema path, export over OTLP."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from edgeproof.cli._app import app, console, user_errors
from edgeproof.errors import DataError

if TYPE_CHECKING:
    from edgeproof.telemetry import Window

telemetry_app = typer.Typer(help="Field telemetry: read segment files, the schema, export.", no_args_is_help=True)
app.add_typer(telemetry_app, name="telemetry")


@telemetry_app.command("read")
@user_errors
def read(directory: Annotated[Path, typer.Argument(help="A folder of telemetry segments (*.eptseg).")]) -> None:
    """Per device: windows, inferences, latency p50/p95 (merged sketches), policy fallback rate, events; and every frame skipped."""
    from edgeproof.telemetry import merged_sketch, quantile, read_segments, segment_files

    if not directory.is_dir() or not segment_files(directory):
        raise DataError(f"{directory}: no telemetry segments (*.eptseg) here")
    result = read_segments(directory)
    table = Table("device", "cohort", "windows", "inferences", "p50 ms", "p95 ms", "policy fallback", "events")
    for device in sorted({r.labels.device_id for r in result.records}):
        windows = [w for w in result.windows if w.labels.device_id == device]
        n = sum(_value(w, "edgeproof.inference.count") for w in windows)
        fallbacks = sum(_value(w, "edgeproof.fallback.policy") for w in windows)
        sketch = merged_sketch(m for w in windows if (m := w.metric("edgeproof.inference.duration")) is not None)
        p50, p95 = quantile(sketch, 0.5), quantile(sketch, 0.95)
        table.add_row(
            device,
            windows[0].labels.cohort if windows else "",
            str(len(windows)),
            f"{n:.0f}",
            "—" if p50 is None else f"{p50 * 1e3:.3f}",
            "—" if p95 is None else f"{p95 * 1e3:.3f}",
            "—" if not n else f"{fallbacks / n:.1%}",
            str(sum(1 for e in result.events if e.labels.device_id == device)),
        )
    console.print(table)
    for problem in result.problems:
        console.print(f"[yellow]skipped[/] {problem}", highlight=False, soft_wrap=True)


@telemetry_app.command("schema")
def schema() -> None:
    """Print the path of the JSON Schema of edgeproof.telemetry/1 records."""
    from edgeproof.telemetry import SCHEMA_FILE

    console.print(str(SCHEMA_FILE), highlight=False, soft_wrap=True)


@telemetry_app.command("export")
@user_errors
def export(
    directory: Annotated[Path, typer.Argument(help="A folder of telemetry segments.")],
    otlp: Annotated[str, typer.Option("--otlp", help="OTLP/HTTP metrics endpoint, e.g. http://127.0.0.1:4318/v1/metrics.")],
) -> None:
    """Send every window of the folder to an OTLP/HTTP receiver."""
    from edgeproof.telemetry import export_otlp, read_segments

    windows = read_segments(directory).windows
    if not windows:
        raise DataError(f"{directory}: no telemetry windows to export")
    if not export_otlp(windows, otlp):
        raise DataError(f"{otlp}: the receiver did not accept {len(windows)} windows")
    console.print(f"exported {len(windows)} windows to {otlp}")


def _value(window: Window, name: str) -> float:
    """A counter's value in a window; 0 when the window lacks it (it counted nothing)."""
    metric = window.metric(name)
    return metric.value or 0.0 if metric is not None else 0.0
