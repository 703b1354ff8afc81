"""Find the records in an output folder and sort them by what their content says they are, not by file name."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgeproof.bom import SIGNATURE_FORMAT, BomFacts, load_signature, read_bom
from edgeproof.change_record import CHANGE_RECORD_SCHEMA, CHANGE_RECORD_SCHEMA_V1, load_change_record
from edgeproof.errors import EdgeproofError, RecordError, first_line
from edgeproof.records import RUN_SCHEMA, VERDICT_SCHEMA, RunRecord, Verdict, load_record

SEARCH_PREFIX = "edgeproof.search/"
# Where the report finds a fleet store and a rollout journal in the folder when none is given: where
# `edgeproof fleet demo --out OUTDIR/fleet` and `edgeproof rollout start --journal OUTDIR/rollout` put them.
# A rollout's folder holds the store its gates read: it is the last place looked.
FLEET_STORE_PLACES = ("fleet.duckdb", "fleet/fleet.duckdb")
ROLLOUT_PLACE = "rollout"


@dataclass(frozen=True)
class Found:
    """One record and the file it came from, relative to the folder the report covers."""

    rel: str
    item: Any


@dataclass(frozen=True)
class GateResult:
    """What ``edgeproof gate --out`` writes to gate.json: the overall outcome and one verdict per target."""

    passed: bool
    verdicts: list[Verdict]


@dataclass
class Inputs:
    """Every record found under ``root``, by kind; ``skipped`` holds files that could not be read, with why."""

    root: Path
    runs: list[Found] = field(default_factory=list)
    verdicts: list[Found] = field(default_factory=list)
    gates: list[Found] = field(default_factory=list)
    searches: list[Found] = field(default_factory=list)
    boms: list[Found] = field(default_factory=list)
    signatures: list[Found] = field(default_factory=list)
    change_records: list[Found] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    fleet_store: Path | None = None  # a fleet's DuckDB store, for the fleet page
    rollout: Path | None = None  # a rollout's journal folder, for the rollout section

    @property
    def read(self) -> list[tuple[str, str]]:
        """(file, kind) of every record read."""
        kinds = (
            ("run record", self.runs),
            ("contract verdict", self.verdicts),
            ("gate result", self.gates),
            ("search result", self.searches),
            ("CycloneDX BOM", self.boms),
            ("BOM signature", self.signatures),
            ("change record", self.change_records),
        )
        found = [(f.rel, kind) for kind, items in kinds for f in items]
        if self.fleet_store is not None:
            found.append((self.shown(self.fleet_store), "fleet store (DuckDB, opened read-only)"))
        if self.rollout is not None:
            from edgeproof.rollout._journal import JOURNAL_NAME

            found.append((self.shown(self.rollout / JOURNAL_NAME), "rollout journal"))
        return sorted(found)

    def shown(self, path: Path) -> str:
        """A path beside the records as the report names them: relative to the folder when inside it."""
        return path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)

    @property
    def empty(self) -> bool:
        return not self.read


def record_files(root: Path) -> list[Path]:
    """Every *.json (and detached *.sig) under ``root``, in a stable order; hidden folders (caches, history) are not walked."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / name for name in sorted(files) if name.endswith((".json", ".sig")) and not name.startswith(".")]
    return found


def collect(root: str | Path, fleet: str | Path | None = None, rollout: str | Path | None = None) -> Inputs:
    """Read every record under ``root``; a file that cannot be read is listed in ``skipped``, never fatal.

    ``fleet`` (a fleet store) and ``rollout`` (a rollout's journal folder) default to the places in
    ``FLEET_STORE_PLACES`` and ``ROLLOUT_PLACE`` under ``root``; one given that is not there raises RecordError.
    """
    root = Path(root)
    if not root.is_dir():
        raise RecordError(f"{root}: no such folder (give the folder a profile / optimize / simulate / gate run wrote to)")
    inputs = Inputs(root=root, rollout=_rollout_folder(root, rollout))
    inputs.fleet_store = _fleet_store(root, fleet, inputs.rollout)
    seen_runs: set[str] = set()
    for path in record_files(root):
        rel = path.relative_to(root).as_posix()
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            inputs.skipped.append((rel, f"not readable JSON ({first_line(exc)})"))
            continue
        try:
            _classify(inputs, path, rel, doc, seen_runs)
        except (EdgeproofError, ValidationError) as exc:
            inputs.skipped.append((rel, first_line(exc)))
    return inputs


def _classify(inputs: Inputs, path: Path, rel: str, doc: Any, seen_runs: set[str]) -> None:
    if not isinstance(doc, dict):
        inputs.ignored.append(rel)
        return
    schema = doc.get("schema_version")
    if schema == RUN_SCHEMA:
        record: RunRecord = load_record(path)
        if record.run_id in seen_runs:
            inputs.skipped.append((rel, f"run {record.run_id} already read from another file"))
            return
        seen_runs.add(record.run_id)
        inputs.runs.append(Found(rel, record))
    elif schema == VERDICT_SCHEMA:
        inputs.verdicts.append(Found(rel, load_record(path, Verdict)))
    elif isinstance(schema, str) and schema.startswith(SEARCH_PREFIX):
        inputs.searches.append(Found(rel, _search_result(path)))
    elif schema == CHANGE_RECORD_SCHEMA or doc.get("schema") == CHANGE_RECORD_SCHEMA_V1:
        inputs.change_records.append(Found(rel, load_change_record(path)))
    elif isinstance(schema, str) and schema.startswith("edgeproof."):
        inputs.skipped.append((rel, f"schema_version {schema!r} is not one this report reads"))
    elif isinstance(doc.get("passed"), bool) and isinstance(doc.get("verdicts"), list):
        verdicts = [Verdict.model_validate(v) for v in doc["verdicts"]]
        inputs.gates.append(Found(rel, GateResult(passed=doc["passed"], verdicts=verdicts)))
    elif doc.get("bomFormat") == "CycloneDX":
        facts: BomFacts = read_bom(path)
        inputs.boms.append(Found(rel, facts))
    elif doc.get("format") == SIGNATURE_FORMAT:
        inputs.signatures.append(Found(rel, load_signature(path)))
    else:
        inputs.ignored.append(rel)


def _rollout_folder(root: Path, given: str | Path | None) -> Path | None:
    from edgeproof.rollout._journal import JOURNAL_NAME

    if given is not None:
        if not (Path(given) / JOURNAL_NAME).is_file():
            raise RecordError(f"{given}: no rollout journal ({JOURNAL_NAME}) in this folder (give the folder of `rollout start --journal`)")
        return Path(given)
    return root / ROLLOUT_PLACE if (root / ROLLOUT_PLACE / JOURNAL_NAME).is_file() else None


def _fleet_store(root: Path, given: str | Path | None, rollout: Path | None) -> Path | None:
    if given is not None:
        if not Path(given).is_file():
            raise RecordError(f"{given}: no such fleet store (give the DuckDB file `edgeproof fleet ingest --store` wrote)")
        return Path(given)
    places = [root / place for place in FLEET_STORE_PLACES] + ([rollout / "fleet.duckdb"] if rollout is not None else [])
    return next((p for p in places if p.is_file()), None)


def _search_result(path: Path) -> Any:
    from edgeproof.search import load_search

    return load_search(path)
