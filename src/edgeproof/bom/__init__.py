"""Inference bill of materials: a CycloneDX 1.6 ML-BOM of a release, its signature, verification and rebuild."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from edgeproof.bom._build import build_document
from edgeproof.bom._figures import Stated, figure_for_clause, run_figures
from edgeproof.bom._inputs import BomInputs, FileRef, gather_inputs, recipe_of
from edgeproof.bom._read import BomFacts, TargetFacts, facts_of, read_bom
from edgeproof.bom._rebuild import Rebuild, rebuild_variant
from edgeproof.bom._schema import BOM_SCHEMA, canonical_bytes
from edgeproof.bom._sign import (
    KeyFileError,
    Verification,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    sign_bom,
    signature_path,
    verify_bom,
)
from edgeproof.records import write_atomic


def build_bom(
    run_paths: Sequence[str | Path],
    out: str | Path,
    verdict_paths: Sequence[str | Path] = (),
    contract_path: str | Path | None = None,
    model_path: str | Path | None = None,
) -> BomFacts:
    """Build the BOM of one model's runs (and verdicts, contract), write it to ``out`` in canonical form, return its facts."""
    doc = build_document(gather_inputs(run_paths, verdict_paths, contract_path, model_path))
    write_atomic(out, canonical_bytes(doc))
    return facts_of(out, doc)


__all__ = [
    "BOM_SCHEMA",
    "BomFacts",
    "BomInputs",
    "FileRef",
    "KeyFileError",
    "Rebuild",
    "Stated",
    "TargetFacts",
    "Verification",
    "build_bom",
    "build_document",
    "canonical_bytes",
    "figure_for_clause",
    "gather_inputs",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "read_bom",
    "rebuild_variant",
    "recipe_of",
    "run_figures",
    "sign_bom",
    "signature_path",
    "verify_bom",
]
