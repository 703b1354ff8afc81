"""Contract commands: init (a commented template, or a draft from the model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edgeproof.cli._app import app, console, user_errors
from edgeproof.cli.core import ShapeOpt, progress_bar
from edgeproof.contract import write_template


@app.command()
@user_errors
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the contract.")] = Path("edgeproof.toml"),
    model: Annotated[
        Path | None, typer.Option("--model", help="Draft the contract from this ONNX model (a quick run proposes budgets).")
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="With --model: the dataset (.npz or file.py:function) to feed and propose slices from.")
    ] = None,
    target: Annotated[
        list[str] | None, typer.Option("--target", help="With --model: host or a board id (repeatable); the first runs the quick profile.")
    ] = None,
    shape: ShapeOpt = None,
) -> None:
    """Write a commented starter contract, or with --model a draft of one from the model; an existing file is never overwritten."""
    if model is None:
        if data is not None or target or shape:
            from edgeproof.errors import DataError

            raise DataError("--data, --target and --shape draft from a model: add --model M.onnx")
        written = write_template(path)
        console.print(f"wrote {written}: set its budgets, slices and data for your model and boards")
        return
    from edgeproof.contract import load_contract
    from edgeproof.contract._draft import PROPOSAL, draft_contract, write_draft
    from edgeproof.errors import ContractError
    from edgeproof.model import parse_shape_overrides

    if path.exists():
        raise ContractError(f"{path}: already exists; edgeproof will not overwrite it (remove it or choose another path)")
    with progress_bar(f"drafting a contract from {model.name}") as update:
        draft = draft_contract(model, path, data, tuple(target or ()), parse_shape_overrides(shape), update)
    written = write_draft(path, draft)
    load_contract(written)  # a draft that does not load is our bug, not the user's: say so now
    console.print(f"wrote {written}: a draft; review every value marked {PROPOSAL!r}", highlight=False)
    if draft.record is None:
        console.print(f"[yellow]no budgets proposed from a run:[/] {escape(draft.why_no_record)}", highlight=False, soft_wrap=True)
