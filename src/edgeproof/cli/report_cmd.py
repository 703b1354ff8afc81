"""`edgeproof report`: one self-contained HTML file from the records of an output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeproof.cli._app import app, console, user_errors


@app.command()
@user_errors
def report(
    outdir: Annotated[Path, typer.Argument(help="Folder a profile / optimize / simulate / gate / bom run wrote its records to.")],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="HTML file to write (default: OUTDIR/report.html).")] = None,
    fleet: Annotated[
        Path | None,
        typer.Option(
            "--fleet",
            help="Fleet store (DuckDB) for the fleet page (default: OUTDIR/fleet.duckdb, OUTDIR/fleet/fleet.duckdb, else the rollout's).",
        ),
    ] = None,
    rollout: Annotated[
        Path | None, typer.Option("--rollout", help="Rollout journal folder for the rollout section (default: OUTDIR/rollout).")
    ] = None,
) -> None:
    """Write a self-contained HTML report (plots embedded, opens offline) of every record under OUTDIR."""
    from edgeproof.report import build_report

    written = build_report(outdir, out if out is not None else outdir / "report.html", fleet, rollout)
    console.print(f"report written to {written.resolve()}", highlight=False, soft_wrap=True)
