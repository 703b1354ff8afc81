"""Read an edgeproof BOM back: model, recipe, contract, and per target its runtime, figures and gate verdict."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgeproof.bom import _schema as s
from edgeproof.bom._figures import Stated
from edgeproof.errors import RecordError
from edgeproof.records import read_bytes


@dataclass(frozen=True)
class TargetFacts:
    """One target as a BOM states it; ``props`` are its ``edgeproof:`` properties without the prefix."""

    id: str
    props: dict[str, str]
    figures: dict[str, Stated]
    clauses: list[dict[str, Any]]
    regressions: list[dict[str, Any]]

    @property
    def kind(self) -> str:
        return self.props.get("target.kind", s.unavailable("not stated"))

    @property
    def gated(self) -> bool:
        return self.props.get("gate.verdict") in ("pass", "fail")


@dataclass(frozen=True)
class BomFacts:
    """What change records, signing and rebuilds need from a BOM file."""

    path: Path
    doc: dict[str, Any]
    meta: dict[str, str]
    model_name: str
    recipe: dict[str, Any] | None
    recipe_props: dict[str, str]
    targets: dict[str, TargetFacts]
    caveats: list[str]

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


def facts_of(path: str | Path, doc: Any) -> BomFacts:
    """Check ``doc`` is an edgeproof CycloneDX BOM of this schema and pull out its facts."""
    path = Path(path)
    if not isinstance(doc, dict) or doc.get("bomFormat") != "CycloneDX":
        raise RecordError(f"{path}: not a CycloneDX BOM (no bomFormat 'CycloneDX')")
    metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
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
                clauses=_gate_list(path, props, "gate.clauses"),
                regressions=_gate_list(path, props, "gate.regressions"),
            )
    considerations = model["modelCard"].get("considerations", {})
    return BomFacts(
        path=path,
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
    _, doc = parse_json(path)
    return facts_of(path, doc)


def _recipe(path: Path, text: str | None) -> dict[str, Any] | None:
    if text is None:
        raise RecordError(f"{path}: modelCard.properties: {s.NS}recipe is missing")
    if text.startswith("none:"):
        return None
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError:
        raise RecordError(f"{path}: modelCard.properties: {s.NS}recipe is not JSON") from None
    if not isinstance(recipe, dict):
        raise RecordError(f"{path}: modelCard.properties: {s.NS}recipe is not a JSON object")
    return recipe


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


def _gate_list(path: Path, props: dict[str, str], key: str) -> list[dict[str, Any]]:
    """A gate list property (clauses, regressions) of a target: JSON objects, each naming its clause and status."""
    try:
        items = json.loads(props.get(key, "[]"))
    except json.JSONDecodeError:
        items = None
    if not isinstance(items, list) or not all(isinstance(i, dict) and {"clause", "status"} <= i.keys() for i in items):
        raise RecordError(f"{path}: {s.NS}{key} is not a list of clause results")
    return items
