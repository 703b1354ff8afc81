"""Rebuild a BOM's variant from its recipe, source model and calibration data, and say whether the hash reproduces."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgeproof.accuracy import contract_dataset
from edgeproof.bom._read import BomFacts, read_bom
from edgeproof.data.dataset import CALIBRATION, EVALUATION
from edgeproof.data.slices import CalibrationSet, calibration_set
from edgeproof.errors import ContractError, DataError, ModelError
from edgeproof.model import sha256_file
from edgeproof.records import write_atomic
from edgeproof.variants import Recipe, build_variant


@dataclass(frozen=True)
class Rebuild:
    """What a rebuild found: ``identity`` when there was nothing to build (fp32 or no recipe)."""

    identity: bool
    reproduced: bool
    expected_sha256: str
    rebuilt_sha256: str
    # the model file checked (identity) or the rebuilt copy kept with ``out``; None when the copy was not kept
    file: Path | None
    message: str


def rebuild_variant(
    bom_path: str | Path,
    source: str | Path | None = None,
    contract: str | Path | None = None,
    out: str | Path | None = None,
) -> Rebuild:
    """Regenerate the variant a BOM describes and compare its sha256 with the BOM's model hash.

    The fp32 source model comes from ``source`` or the path the BOM recorded; static INT8
    calibration data from ``contract`` (its ``[data]`` and slices) or the BOM's contract. The
    build runs in a fresh cache, so nothing is reused from an earlier build. ``out`` keeps a
    copy of the rebuilt model.
    """
    facts = read_bom(bom_path)
    recipe = facts.recipe
    if recipe is None or recipe.precision == "fp32":
        return _identity(facts, recipe, source)
    source_path = _source_path(facts, recipe, source)
    calibration = _calibration(facts, recipe, contract) if recipe.precision == "int8-static" else None
    with tempfile.TemporaryDirectory(prefix="edgeproof-rebuild-") as cache:
        variant = build_variant(source_path, Recipe.model_validate(recipe.request()), calibration, cache)
        if out is not None:
            write_atomic(out, Path(variant.path).read_bytes())
    same = variant.sha256 == facts.model_sha256
    verdict = "reproduced: same sha256" if same else "NOT reproduced: the rebuilt model differs"
    return Rebuild(
        identity=False,
        reproduced=same,
        expected_sha256=facts.model_sha256,
        rebuilt_sha256=variant.sha256,
        file=Path(out) if out is not None else None,
        message=f"{recipe.label()} rebuilt from {source_path}: {verdict} (BOM {facts.model_sha256[:12]}…, rebuilt {variant.sha256[:12]}…)",
    )


def _identity(facts: BomFacts, recipe: Recipe | None, source: str | Path | None) -> Rebuild:
    """fp32 (or a model measured as given): the variant is the model file itself; check its bytes."""
    path = Path(source if source is not None else facts.model_path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file; pass --source with its current location")
    sha = sha256_file(path)
    same = sha == facts.model_sha256
    what = "fp32 reference" if recipe is not None else "no recipe (the model was measured as given)"
    verdict = "same sha256" if same else f"sha256 differs ({sha[:12]}… vs BOM {facts.model_sha256[:12]}…)"
    return Rebuild(
        identity=True,
        reproduced=same,
        expected_sha256=facts.model_sha256,
        rebuilt_sha256=sha,
        file=path,
        message=f"{what}: rebuild is the identity; {path}: {verdict}",
    )


def _source_path(facts: BomFacts, recipe: Recipe, source: str | Path | None) -> Path:
    recorded = facts.recipe_props.get("recipe.source_path", "unavailable:")
    if source is None and recorded.startswith("unavailable:"):
        raise ModelError(f"{facts.path}: the BOM does not know where the fp32 source model is; pass --source")
    path = Path(source if source is not None else recorded)
    if not path.is_file():
        raise ModelError(f"{path}: no such source model file; pass --source with its current location")
    sha = sha256_file(path)
    if sha != recipe.source_sha256:
        raise ModelError(f"{path}: sha256 {sha[:12]}… is not the source the recipe was built from ({recipe.source_sha256[:12]}…)")
    return path


def _calibration(facts: BomFacts, recipe: Recipe, contract_path: str | Path | None) -> CalibrationSet:
    """Regenerate the calibration set from the contract's data and slices; its content ID must match the recipe's."""
    from edgeproof.contract import load_contract

    recorded = facts.contract_path
    if contract_path is None and recorded.startswith("unavailable:"):
        raise ContractError(f"{facts.path}: static INT8 rebuild needs the calibration data; pass --contract naming [data] and slices")
    contract = load_contract(contract_path if contract_path is not None else recorded)
    if contract.data is None:
        raise ContractError(f"{contract.path}: no [data] section; the recipe calibrated on {recipe.calibration_id}")
    specs = contract.slice_specs()
    extra_parts = sorted({spec.part for spec in specs} - {CALIBRATION, EVALUATION})
    # as the search made it: through the contract's [pipeline] and with its [model.feeds]
    dataset = contract_dataset(contract, extra_parts)
    assert dataset is not None
    # The ID covers the row cap the builder was given: none (the whole part) or the recorded row count.
    candidate = None
    for max_rows in (None, recipe.calibration_rows):
        candidate = calibration_set(dataset, specs, recipe.calibration_kinds, max_rows)
        if candidate.id == recipe.calibration_id:
            return candidate
    assert candidate is not None
    raise DataError(
        f"{contract.path}: its calibration data has ID {candidate.id[:12]}…, "
        f"not the data the recipe calibrated on ({str(recipe.calibration_id)[:12]}…)"
    )
