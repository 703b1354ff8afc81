"""Inference bill of materials: a CycloneDX 1.6 ML-BOM of a release, its signature, verification and rebuild."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from edgeproof.bom._build import build_document
from edgeproof.bom._figures import Stated, figure_for_clause, run_figures
from edgeproof.bom._inputs import BomInputs, FileRef, gather_inputs, recipe_of
from edgeproof.bom._lineage import Lineage, ReAnchor, anchor_of, lineage_of, next_lineage
from edgeproof.bom._read import NO_RECIPE, BomFacts, StatedClause, TargetFacts, facts_of, read_bom
from edgeproof.bom._rebuild import Rebuild, rebuild_variant
from edgeproof.bom._schema import BOM_SCHEMA, canonical_bytes
from edgeproof.bom._sign import (
    SIGNATURE_FORMAT,
    BomSignature,
    KeyFileError,
    Verification,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    load_signature,
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
    predecessor: str | Path | None = None,
    re_anchor: ReAnchor | None = None,
) -> BomFacts:
    """Build the BOM of one model's runs (and verdicts, contract), write it to ``out`` in canonical form, return its facts.

    ``predecessor`` is the BOM of the release before this one (None: the first of its lineage);
    ``re_anchor`` makes this release the anchor later releases' drift is judged against.
    """
    inputs = gather_inputs(run_paths, verdict_paths, contract_path, model_path)
    before = read_bom(predecessor) if predecessor is not None else None
    assert inputs.model.path is not None
    inputs = replace(inputs, lineage=next_lineage(inputs.model.sha256, inputs.model.path, before, re_anchor))
    doc = build_document(inputs)
    raw = canonical_bytes(doc)
    write_atomic(out, raw)
    return facts_of(out, doc, raw)


__all__ = [
    "BOM_SCHEMA",
    "BomFacts",
    "BomInputs",
    "Lineage",
    "ReAnchor",
    "anchor_of",
    "lineage_of",
    "BomSignature",
    "FileRef",
    "KeyFileError",
    "NO_RECIPE",
    "SIGNATURE_FORMAT",
    "Rebuild",
    "Stated",
    "StatedClause",
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
    "load_signature",
    "read_bom",
    "rebuild_variant",
    "recipe_of",
    "run_figures",
    "sign_bom",
    "signature_path",
    "verify_bom",
]
