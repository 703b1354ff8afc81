"""Short human names for runs, variants and targets, shared by every section of the report."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from edgeproof.records import RunRecord
from edgeproof.variants import Recipe

AS_GIVEN = "as given"


def variant_label(variant: dict[str, Any] | None) -> str:
    """The recipe's short name (``int8-static/QDQ/per-channel/minmax/U8S8``), or "as given" for the model itself."""
    if not variant:
        return AS_GIVEN
    for key in ("label", "name"):
        if isinstance(variant.get(key), str) and variant[key]:
            return variant[key]
    recipe = variant.get("recipe", variant)
    if isinstance(recipe, dict):
        try:
            return Recipe.model_validate(recipe).label()
        except ValidationError:
            if isinstance(recipe.get("precision"), str):
                return recipe["precision"]
    return "variant (recipe not readable)"


def target_label(record: RunRecord) -> str:
    mode = f" @{record.target.power_mode}" if record.target.power_mode else ""
    return f"{record.target.id}{mode}"


def model_variant(record: RunRecord) -> str:
    """Model name and variant, with a simulator what-if precision where one was asked for."""
    label = f"{record.model.name} · {variant_label(record.variant)}"
    override = record.extras.get("precision_override") if record.kind == "simulated" else None
    return f"{label} · as {override} (what-if)" if override else label


def run_label(record: RunRecord) -> str:
    """``model · variant · target``: what a legend or a table row calls one run."""
    return f"{model_variant(record)} · {target_label(record)}"


def simulated(record: RunRecord) -> bool:
    return record.kind == "simulated"


def unique_labels(labels: list[str], files: list[str]) -> list[str]:
    """Labels, each followed by its file where two runs would otherwise share a name."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return [f"{label} ({rel})" if counts[label] > 1 else label for label, rel in zip(labels, files)]
