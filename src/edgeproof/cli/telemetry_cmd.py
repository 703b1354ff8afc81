"""`edgeproof telemetry`: read segment folders (with what did not read back), print the schema path, export over OTLP."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
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


@telemetry_app.command("burst")
@user_errors
def burst(
    model: Annotated[Path, typer.Argument(help="The model the device runs (e.g. the chosen variant).")],
    contract: Annotated[Path, typer.Option("--contract", help="Its contract: the slices' rows are the burst's inputs, in order.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the segment files (e.g. OUTDIR/telemetry/<device>).")],
    fallback: Annotated[
        Path | None, typer.Option("--fallback", help="The confidence policy's fallback model (e.g. the fp32 model); none: no policy.")
    ] = None,
    min_confidence: Annotated[
        float, typer.Option("--min-confidence", min=0.0, max=1.0, help="Below this top-1 probability the fallback answers.")
    ] = 0.6,
    rows: Annotated[int, typer.Option("--rows", min=1, help="Rows taken from each slice.")] = 50,
    device: Annotated[str, typer.Option("--device", help="The device_id label of the windows.")] = "bench-0",
) -> None:
    """Record a short burst under the on-device recorder: each contract slice's rows in turn, one
    window per slice, with the confidence policy; then say per slice how often the policy fell back
    and the top-1 accuracy without and with it (computed offline on the same rows)."""
    from edgeproof.accuracy import contract_slices
    from edgeproof.contract import load_contract
    from edgeproof.model import Model
    from edgeproof.telemetry import Labels, record_burst

    spec = load_contract(contract)
    found = contract_slices(spec, Model.load(model))
    if found is None:
        raise DataError(f"{contract}: the contract names no data, so there are no rows to run a burst on")
    slices = [s for s in found[1] if not s.more]
    if not slices:
        raise DataError(f"{contract}: a burst feeds one input; the model's slices carry several")
    picked = [(s, s.x[:rows], s.y[:rows]) for s in slices]
    x = np.concatenate([p[1] for p in picked])
    done = record_burst(
        model, x, out, Labels(device_id=device, cohort="bench"), fallback=fallback, min_confidence=min_confidence, windows=len(picked)
    )
    console.print(
        f"recorded {done.inferences} inferences in {done.windows} windows to {out} "
        f"(measured:telemetry:{device}); policy fallback {done.policy_fallbacks} time(s)"
    )
    if fallback is None:
        return
    table = Table(title=f"confidence policy: fallback below {min_confidence:g} (offline on the same rows)")
    for col in ("slice", "kind", "rows", "fallback rate", "top-1 without", "top-1 with policy"):
        table.add_column(col)
    for s, xs, ys in picked:
        rate, plain, with_policy = _policy_on(model, fallback, xs, ys, min_confidence)
        table.add_row(s.name, s.kind, str(len(xs)), f"{rate:.1%}", f"{plain:.1%}", f"{with_policy:.1%}")
    console.print(table)


def _policy_on(model: Path, fallback: Path, x, y, threshold: float) -> tuple[float, float, float]:
    """Share of rows whose top-1 probability is under ``threshold``, and top-1 accuracy without and with the fallback answering them."""
    from edgeproof.evaluate import infer, policy_outcome, top1

    out = infer(model, x)
    outcome = policy_outcome(out, infer(fallback, x), y, threshold, "")
    return outcome.fallback_rate, top1(out, y), outcome.accuracy
