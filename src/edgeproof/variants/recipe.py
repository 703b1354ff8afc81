"""Variant records: the artifact a recipe made (the Recipe itself lives in ``edgeproof.recipe``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from edgeproof.recipe import (
    PRECISIONS,
    Calibrator,
    ExcludedNode,
    ExclusionReason,
    IntType,
    Precision,
    QuantFormatName,
    Recipe,
)

__all__ = ["PRECISIONS", "Calibrator", "ExcludedNode", "ExclusionReason", "IntType", "Precision", "QuantFormatName", "Recipe", "Variant"]


class Variant(BaseModel):
    """A runnable model artifact, its recipe and content hash; ``cache_hit`` says it was reused."""

    model_config = ConfigDict(extra="forbid")
    path: str
    sha256: str
    size_bytes: int
    recipe: Recipe
    cache_hit: bool = False
