"""What a BOM is built from: run records, verdicts, contract and model file, loaded and checked to agree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeproof.bom._lineage import Lineage
from edgeproof.errors import ModelError, RecordError
from edgeproof.model import sha256_file
from edgeproof.records import RunRecord, Verdict, load_record, load_verdicts
from edgeproof.variants.recipe import Recipe


@dataclass(frozen=True)
class FileRef:
    """A file a BOM names: where it was (absolute, or None where unknown) and the sha256 of its bytes."""

    path: Path | None
    sha256: str


@dataclass(frozen=True)
class BomInputs:
    """Everything one release BOM states, already checked to describe one model."""

    runs: tuple[RunRecord, ...]
    verdicts: tuple[Verdict, ...]
    model: FileRef
    model_size_bytes: int
    recipe: Recipe | None
    contract: FileRef | None
    source: FileRef | None
    lineage: Lineage | None = None


def recipe_of(record: RunRecord) -> Recipe | None:
    """The recipe a run's variant was built from; None when the run measured a model as given."""
    return record.variant.recipe if record.variant is not None else None


def check_runs(runs: Sequence[RunRecord]) -> Recipe | None:
    """Refuse runs that do not describe one model built by one recipe, once per target; return that recipe."""
    if not runs:
        raise RecordError("a BOM needs at least one run record (--run)")
    first = runs[0]
    seen: dict[str, str] = {}
    for run in runs:
        if run.model.sha256 != first.model.sha256:
            raise RecordError(
                f"run {run.run_id} measured model sha256 {run.model.sha256[:12]}…, run {first.run_id} {first.model.sha256[:12]}…; "
                "a BOM describes one model"
            )
        if run.target.id in seen:
            raise RecordError(f"runs {seen[run.target.id]} and {run.run_id} are both for target {run.target.id!r}; give one run per target")
        seen[run.target.id] = run.run_id
    recipes = [recipe_of(run) for run in runs]
    requests = {None if r is None else r.cache_key() for r in recipes}
    if len(requests) > 1:
        raise RecordError(f"runs {', '.join(r.run_id for r in runs)} name different recipes for the same model")
    return recipes[0]


def check_verdicts(verdicts: Sequence[Verdict], contract: FileRef | None) -> FileRef | None:
    """Refuse verdicts judged against another contract or twice for one target; return the contract they name."""
    targets: set[str] = set()
    for verdict in verdicts:
        if verdict.target in targets:
            raise RecordError(f"two verdicts for target {verdict.target!r}; give one per target")
        targets.add(verdict.target)
    shas = {v.contract_sha256 for v in verdicts if v.contract_sha256 is not None}
    if contract is not None:
        other = shas - {contract.sha256}
        if other:
            raise RecordError(
                f"a verdict was judged against contract sha256 {sorted(other)[0][:12]}…, not the given contract "
                f"{contract.path} ({contract.sha256[:12]}…)"
            )
        return contract
    if len(shas) > 1:
        raise RecordError("the verdicts were judged against different contracts")
    return FileRef(path=None, sha256=shas.pop()) if shas else None


def gather_inputs(
    run_paths: Sequence[str | Path],
    verdict_paths: Sequence[str | Path] = (),
    contract_path: str | Path | None = None,
    model_path: str | Path | None = None,
) -> BomInputs:
    """Load and cross-check the files a BOM is built from; every disagreement is one error line.

    The model file (``model_path``, else the path the first run recorded) must hash to the
    sha256 the runs measured. The recipe's fp32 source model is looked for at the contract's
    ``[model] path`` and kept only if its bytes match the recipe's ``source_sha256``.
    """
    runs = tuple(load_record(p, RunRecord) for p in run_paths)
    verdicts = tuple(v for p in verdict_paths for v in load_verdicts(p))
    recipe = check_runs(runs)
    contract = None
    source = None
    if contract_path is not None:
        from edgeproof.contract import load_contract

        loaded = load_contract(contract_path)
        contract = FileRef(path=Path(loaded.path), sha256=loaded.sha256)
        if loaded.model.path is not None:
            source = _matching_file(loaded.resolve(loaded.model.path), recipe.source_sha256 if recipe else None)
    contract = check_verdicts(verdicts, contract)
    model = Path(model_path if model_path is not None else runs[0].model.path)
    if not model.is_file():
        hint = "" if model_path is not None else "; pass --model"
        raise ModelError(f"{model}: no such model file{hint}")
    sha = sha256_file(model)
    if sha != runs[0].model.sha256:
        raise ModelError(f"{model}: sha256 {sha[:12]}… is not the model the runs measured ({runs[0].model.sha256[:12]}…)")
    model_ref = FileRef(path=model.resolve(), sha256=sha)
    if recipe is not None and recipe.precision == "fp32" and source is None and recipe.source_sha256 == sha:
        source = model_ref
    return BomInputs(
        runs=runs,
        verdicts=verdicts,
        model=model_ref,
        model_size_bytes=model.stat().st_size,
        recipe=recipe,
        contract=contract,
        source=source,
    )


def _matching_file(path: Path, sha256: str | None) -> FileRef | None:
    if sha256 is None or not path.is_file():
        return None
    return FileRef(path=path, sha256=sha256) if sha256_file(path) == sha256 else None
