"""`edgeproof inspect`: per-node cost of a model (MACs, FLOPs, bytes, dtype, arithmetic intensity) and totals."""

from __future__ import annotations

import json

from rich.table import Table

from edgeproof.cli._app import app, console, user_errors
from edgeproof.cli.core import JsonOpt, ModelArg
from edgeproof.records import write_atomic


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


@app.command()
@user_errors
def inspect(model: ModelArg, json_out: JsonOpt = None) -> None:
    """Per-node cost after shape inference: MACs, FLOPs, bytes read and written, dtype, intensity; and totals."""
    from edgeproof.analysis import analyze
    from edgeproof.model import load_model

    cost = analyze(load_model(model))
    table = Table(title=f"{model.name}: cost per node (estimated:shape-inference counts, batch 1)")
    for col, just in (
        ("node", "left"),
        ("op", "left"),
        ("dtype", "left"),
        ("MACs", "right"),
        ("FLOPs", "right"),
        ("read B", "right"),
        ("written B", "right"),
        ("FLOP/B", "right"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for node in cost.nodes.values():
        table.add_row(
            node.name,
            node.op_type + (" (folded)" if node.folded else ""),
            node.dtype,
            _si(node.macs),
            _si(node.flops),
            _si(node.bytes_read),
            _si(node.activation_write_bytes),
            f"{node.intensity:.2f}",
        )
    table.add_row(
        "[bold]total[/]",
        f"{len(cost.nodes)} nodes",
        "",
        _si(cost.total_macs),
        _si(cost.total_flops),
        _si(cost.total("bytes_read")),
        _si(cost.total("activation_write_bytes")),
        f"{cost.intensity:.2f}",
    )
    console.print(table)
    console.print(f"weights {cost.weight_bytes / 2**20:.3f} MiB; arithmetic intensity {cost.intensity:.2f} FLOP/B", highlight=False)
    for note in cost.assumptions:
        console.print(f"assumed: {note}", highlight=False)
    if json_out:
        payload = {
            "model": str(model),
            "provenance": "estimated:shape-inference counts",
            "totals": {
                "macs": cost.total_macs,
                "flops": cost.total_flops,
                "weight_bytes": cost.weight_bytes,
                "bytes_read": cost.total("bytes_read"),
                "bytes_written": cost.total("activation_write_bytes"),
                "intensity_flop_per_byte": cost.intensity,
            },
            "nodes": [{**n.model_dump(mode="json"), "intensity_flop_per_byte": n.intensity} for n in cost.nodes.values()],
            "assumptions": cost.assumptions,
        }
        write_atomic(json_out, json.dumps(payload, indent=2))
        console.print(f"written to {json_out}")
