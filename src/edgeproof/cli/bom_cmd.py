"""BOM commands: bom build / sign / verify / rebuild, keygen, change-record."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edgeproof.bom import build_bom, generate_keypair, rebuild_variant, sign_bom, verify_bom
from edgeproof.change_record import write_change_record
from edgeproof.cli._app import app, console, err_console, user_errors

bom_app = typer.Typer(help="Inference bill of materials: build, sign, verify, rebuild.", no_args_is_help=True)
app.add_typer(bom_app, name="bom")

BomArg = Annotated[Path, typer.Argument(help="BOM JSON file written by `edgeproof bom build`.")]
ModelOpt = Annotated[Path | None, typer.Option("--model", help="The model file, where it is not at the path the BOM records.")]
SigOpt = Annotated[Path | None, typer.Option("--sig", help="Signature file (default: BOM.sig next to the BOM).")]


def _outcome(ok: bool, message: str, failure: str) -> None:
    """Print a check's one-line outcome; a failed check (not bad input) exits 1."""
    if not ok:
        err_console.print(f"[bold red]{failure}:[/] {escape(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(message, markup=False, highlight=False, soft_wrap=True)


@bom_app.command("build")
@user_errors
def build(
    run: Annotated[list[Path], typer.Option("--run", help="Run record JSON (repeatable: one per target).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Where to write the BOM.")],
    verdict: Annotated[
        list[Path] | None, typer.Option("--verdict", help="A verdict JSON, or the gate.json of `edgeproof gate` (repeatable).")
    ] = None,
    contract: Annotated[Path | None, typer.Option("--contract", help="The budget contract (TOML) the release was gated on.")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="The model file (default: the path the run recorded).")] = None,
    predecessor: Annotated[
        Path | None, typer.Option("--predecessor", help="BOM of the release this one follows (its lineage: predecessor and anchor).")
    ] = None,
    re_anchor_owner: Annotated[
        str | None,
        typer.Option("--re-anchor-owner", help="Make this release the lineage's new anchor: who decides (with --re-anchor-reason)."),
    ] = None,
    re_anchor_reason: Annotated[
        str | None, typer.Option("--re-anchor-reason", help="Why the drift up to this release is accepted.")
    ] = None,
) -> None:
    """Build a CycloneDX 1.6 ML-BOM (model card, recipe, runtime, firmware, contract, evaluation, verdicts, lineage)."""
    from datetime import date

    from edgeproof.bom import ReAnchor
    from edgeproof.errors import DataError

    if (re_anchor_owner is None) != (re_anchor_reason is None) or (re_anchor_owner is not None and not re_anchor_owner.strip()):
        raise DataError("re-anchoring needs both --re-anchor-owner NAME and --re-anchor-reason TEXT")
    anchor = None if re_anchor_owner is None else ReAnchor(re_anchor_owner, re_anchor_reason or "", date.today())
    facts = build_bom(run, out, verdict or [], contract, model, predecessor, anchor)
    console.print(
        f"wrote {out}: CycloneDX 1.6 ML-BOM of {facts.model_name} (sha256 {facts.model_sha256[:12]}…), "
        f"{len(facts.targets)} target(s); schema check: {facts.schema_validation}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@app.command("keygen")
@user_errors
def keygen(out: Annotated[Path, typer.Option("-o", "--out", help="Folder for the key pair.")]) -> None:
    """Make an Ed25519 key pair for signing BOMs: private key (mode 0600) and public key, as PEM."""
    private, public = generate_keypair(out)
    console.print(f"wrote {private} (private, keep it secret) and {public} (public, give it to verifiers)")


@bom_app.command("sign")
@user_errors
def sign(
    bom: BomArg,
    key: Annotated[Path, typer.Option("--key", help="Ed25519 private key PEM (from `edgeproof keygen`).")],
    model: ModelOpt = None,
    sig: SigOpt = None,
) -> None:
    """Sign a BOM and the model file it names; the signature goes into a detached BOM.sig file."""
    written = sign_bom(bom, key, model, sig)
    console.print(f"wrote {written}: Ed25519 signature over {bom} and the model it names")


@bom_app.command("verify")
@user_errors
def verify(
    bom: BomArg,
    pub: Annotated[Path, typer.Option("--pub", help="Ed25519 public key PEM you trust.")],
    model: ModelOpt = None,
    sig: SigOpt = None,
) -> None:
    """Check a BOM's signature and that neither the BOM nor its model changed by one byte (exit 1 if either did)."""
    result = verify_bom(bom, pub, model, sig)
    _outcome(result.ok, result.message, "verify FAILED")


@bom_app.command("rebuild")
@user_errors
def rebuild(
    bom: BomArg,
    source: Annotated[Path | None, typer.Option("--source", help="The fp32 source model (default: the path the BOM records).")] = None,
    contract: Annotated[Path | None, typer.Option("--contract", help="Contract naming the calibration data (default: BOM's).")] = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Keep the rebuilt model here.")] = None,
) -> None:
    """Regenerate the variant from its recipe and report whether its sha256 matches the BOM (exit 1 if not)."""
    result = rebuild_variant(bom, source, contract, out)
    _outcome(result.reproduced, result.message, "not reproducible")


@app.command("change-record")
@user_errors
def change_record(
    from_bom: Annotated[Path, typer.Option("--from", help="BOM of the release in the field (the rollback target).")],
    to_bom: Annotated[Path, typer.Option("--to", help="BOM of the candidate release.")],
    why: Annotated[str | None, typer.Option("--why", help="Why the change is made (else a placeholder to fill in).")] = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Write OUT.md and OUT.json (else print the Markdown).")] = None,
    rollout: Annotated[
        Path | None, typer.Option("--rollout", help="The candidate's rollout journal folder: adds its waves, gate verdicts and rollbacks.")
    ] = None,
) -> None:
    """Write the change record a release board reviews: BOM diff, why, budgets, tests, rollback, telemetry, caveats (and the rollout)."""
    markdown, _, written = write_change_record(from_bom, to_bom, why, out, rollout)
    if written:
        console.print(f"wrote {', '.join(str(p) for p in written)}")
    else:
        console.print(markdown, markup=False, highlight=False, soft_wrap=True)
