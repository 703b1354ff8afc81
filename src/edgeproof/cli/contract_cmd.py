"""Contract commands: init."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeproof.cli._app import app, console, user_errors
from edgeproof.contract import write_template


@app.command()
@user_errors
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the contract.")] = Path("edgeproof.toml"),
) -> None:
    """Write a commented starter budget contract; an existing file is never overwritten."""
    written = write_template(path)
    console.print(f"wrote {written}: set its budgets, slices and data for your model and boards")
