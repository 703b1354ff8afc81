"""Read an edgeproof BOM back: model, recipe, contract, and per target its runtime, figures and gate verdict."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from edgeproof.bom import _schema as s
from edgeproof.bom._figures import Stated
from edgeproof.errors import RecordError
from edgeproof.records import GateRegression, WaiverUse, _Record, read_bytes, validated
from edgeproof.variants.recipe import Recipe

R = TypeVar("R", bound=_Record)
# how a BOM of a model measured as given (built from no recipe) names its recipe
NO_RECIPE = "no recipe (the model as given)"


class StatedClause(_Record):
    """One judged clause as a BOM's ``gate.clauses`` states it: the verdict's clause result, less its waiver and interval."""

    clause: str
    status: Literal["pass", "fail", "unverified", "waived"]
    value: float | None
    budget: float | None
    unit: str
    margin: float | None = None
    provenance: str
    note: str = ""


@dataclass(frozen=True)
class TargetFacts:
    """One target as a BOM states it; ``props`` are its ``edgeproof:`` properties without the prefix."""

    id: str
    props: dict[str, str]
    figures: dict[str, Stated]
    clauses: list[StatedClause]
    # the gate's tests against a baseline release (also among ``clauses``), with their ratios and intervals
    regressions: list[GateRegression]
    waivers: list[WaiverUse]

    @property
    def kind(self) -> str:
        return self.props.get("target.kind", s.unavailable("not stated"))

    @property
    def run_kind(self) -> str | None:
        """measured or simulated; None where the BOM holds no run for the target."""
        return self.props.get("run.kind")

    @property
    def verdict(self) -> str:
        """pass, fail or undecided, or why the target was not gated."""
        return self.props.get("gate.verdict", "not gated")

    @property
    def gated(self) -> bool:
        return self.verdict in ("pass", "fail", "undecided")

    @property
    def binding_clause(self) -> str | None:
        return self.props.get("gate.binding_clause")

    def waiver_of(self, clause: str) -> WaiverUse | None:
        return next((w for w in self.waivers if w.clause == clause), None)


@dataclass(frozen=True)
class BomFacts:
    """What change records, signing and rebuilds need from a BOM file."""

    path: Path
    sha256: str  # of the file's bytes
    doc: dict[str, Any]
    meta: dict[str, str]
    model_name: str
    recipe: Recipe | None
    # the recipe field by field, as text (``n/a`` where a field does not apply): what a diff compares
    recipe_props: dict[str, str]
    targets: dict[str, TargetFacts]
    caveats: list[str]

    @property
    def recipe_label(self) -> str:
        return NO_RECIPE if self.recipe is None else self.recipe_props.get("recipe.label", self.recipe.label())

    @property
    def schema_validation(self) -> str:
        return self.meta.get(s.VALIDATION_PROPERTY, "not stated")

    @property
    def model_sha256(self) -> str:
        return self.meta["model.sha256"]

    @property
    def model_path(self) -> str:
        return self.meta["model.path"]

    @property
    def contract_sha256(self) -> str:
        return self.meta["contract.sha256"]

    @property
    def contract_path(self) -> str:
        return self.meta["contract.path"]


def parse_json(path: str | Path, raw: bytes | None = None) -> tuple[bytes, Any]:
    """A file's bytes (read here unless given) and its parsed JSON; a missing or non-JSON file is one RecordError line."""
    path = Path(path)
    raw = read_bytes(path) if raw is None else raw
    try:
        return raw, json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: not JSON ({exc})") from None


def _edgeproof_props(items: Any) -> dict[str, str]:
    if not isinstance(items, list):
        return {}
    return {
        p["name"].removeprefix(s.NS): p["value"]
        for p in items
        if isinstance(p, dict) and str(p.get("name", "")).startswith(s.NS) and isinstance(p.get("value"), str)
    }


def facts_of(path: str | Path, doc: Any, raw: bytes) -> BomFacts:
    """Check ``doc`` (parsed from the bytes ``raw``) is an edgeproof CycloneDX BOM of this schema and pull out its facts."""
    path = Path(path)
    if not isinstance(doc, dict) or doc.get("bomFormat") != "CycloneDX":
        raise RecordError(f"{path}: not a CycloneDX BOM (no bomFormat 'CycloneDX')")
    metadata = doc["metadata"] if isinstance(doc.get("metadata"), dict) else {}
    meta = _edgeproof_props(metadata.get("properties"))
    schema = meta.get("bom.schema")
    if schema is None:
        raise RecordError(f"{path}: not an edgeproof BOM (no {s.NS}bom.schema property); build one with `edgeproof bom build`")
    if schema != s.BOM_SCHEMA:
        raise RecordError(f"{path}: BOM schema {schema!r}, this edgeproof reads {s.BOM_SCHEMA!r}")
    for key in ("model.sha256", "model.path", "contract.sha256", "contract.path"):
        if key not in meta:
            raise RecordError(f"{path}: metadata.properties: {s.NS}{key} is missing")
    model = metadata.get("component")
    if not isinstance(model, dict) or not isinstance(model.get("modelCard"), dict):
        raise RecordError(f"{path}: metadata.component: no machine-learning-model with a modelCard")
    card = _edgeproof_props(model["modelCard"].get("properties"))
    recipe_props = {k: v for k, v in card.items() if k == "recipe" or k.startswith("recipe.")}
    recipe = _recipe(path, recipe_props.get("recipe"))
    targets = {}
    for component in doc.get("components", []):
        if isinstance(component, dict) and str(component.get("bom-ref", "")).startswith("target:"):
            tid = component["bom-ref"].removeprefix("target:")
            props = _edgeproof_props(component.get("properties"))
            targets[tid] = TargetFacts(
                id=tid,
                props=props,
                figures=_figures(path, card, tid),
                clauses=_gate_list(path, props, "gate.clauses", StatedClause),
                regressions=_gate_list(path, props, "gate.regressions", GateRegression),
                waivers=_gate_list(path, props, "gate.waivers_applied", WaiverUse),
            )
    considerations = model["modelCard"].get("considerations", {})
    return BomFacts(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        doc=doc,
        meta=meta,
        model_name=str(model.get("name", "")),
        recipe=recipe,
        recipe_props=recipe_props,
        targets=targets,
        caveats=list(considerations.get("technicalLimitations", [])),
    )


def read_bom(path: str | Path) -> BomFacts:
    """Load an edgeproof BOM file; a missing, non-JSON, foreign or other-schema file is one RecordError line."""
    raw, doc = parse_json(path)
    return facts_of(path, doc, raw)


def _recipe(path: Path, text: str | None) -> Recipe | None:
    where = f"{path}: modelCard.properties: {s.NS}recipe"
    if text is None:
        raise RecordError(f"{where} is missing")
    if text.startswith("none:"):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise RecordError(f"{where} is not JSON") from None
    return validated(Recipe, data, where)


def _figures(path: Path, card: dict[str, str], target_id: str) -> dict[str, Stated]:
    prefix = s.figure_property(target_id, "")
    figures: dict[str, Stated] = {}
    for name, text in card.items():
        if not name.startswith(prefix):
            continue
        try:
            figures[name.removeprefix(prefix)] = Stated.from_json(json.loads(text))
        except (json.JSONDecodeError, ValidationError, TypeError, AttributeError):
            raise RecordError(f"{path}: modelCard.properties: {s.NS}{name} is not a figure") from None
    return figures


def _gate_list(path: Path, props: dict[str, str], key: str, cls: type[R]) -> list[R]:
    """A gate list property of a target (clauses, regressions, waivers applied); none where it was not gated."""
    where = f"{path}: {s.NS}{key}"
    try:
        items = json.loads(props.get(key, "[]"))
    except json.JSONDecodeError:
        raise RecordError(f"{where} is not JSON") from None
    if not isinstance(items, list):
        raise RecordError(f"{where} is not a list")
    return [validated(cls, item, f"{where}.{i}") for i, item in enumerate(items)]
