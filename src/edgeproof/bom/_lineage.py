"""Release lineage: each BOM names its predecessor's BOM and model, and the anchor release that drift is judged against."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from edgeproof.bom._read import BomFacts
from edgeproof.errors import DataError, RecordError

FIRST = "none: the first release of its lineage"


@dataclass(frozen=True)
class ReAnchor:
    """A named owner's dated decision that a release becomes the new anchor (its drift accepted)."""

    owner: str
    reason: str
    day: date

    def sentence(self) -> str:
        return f"re-anchored by {self.owner} on {self.day.isoformat()}: {self.reason}"


@dataclass(frozen=True)
class Lineage:
    """Where a release sits in its lineage. The anchor is the lineage's first release, or the latest
    one re-anchored; ``anchor_bom_sha256`` is None when the release is its own anchor."""

    predecessor_bom_sha256: str | None
    predecessor_model_sha256: str | None
    anchor_model_sha256: str
    anchor_model_path: str | None
    anchor_bom_sha256: str | None
    re_anchor: ReAnchor | None
    position: int  # 1 for the first release

    def properties(self) -> dict[str, str]:
        """The lineage as BOM metadata properties (``lineage.*``), signed with the rest of the BOM."""
        re_anchor = (
            "none"
            if self.re_anchor is None
            else json.dumps(
                {"owner": self.re_anchor.owner, "reason": self.re_anchor.reason, "date": self.re_anchor.day.isoformat()}, sort_keys=True
            )
        )
        return {
            "lineage.predecessor_bom_sha256": self.predecessor_bom_sha256 or FIRST,
            "lineage.predecessor_model_sha256": self.predecessor_model_sha256 or FIRST,
            "lineage.anchor_model_sha256": self.anchor_model_sha256,
            "lineage.anchor_model_path": self.anchor_model_path or "unavailable: not known",
            "lineage.anchor_bom_sha256": self.anchor_bom_sha256 or "this release",
            "lineage.re_anchor": re_anchor,
            "lineage.position": str(self.position),
        }


def lineage_of(facts: BomFacts) -> Lineage | None:
    """The lineage a BOM states; None for a BOM built before lineages were recorded (or without one)."""
    meta = facts.meta
    if "lineage.anchor_model_sha256" not in meta:
        return None

    def known(key: str) -> str | None:
        value = meta.get(key, "")
        return None if value.startswith(("none", "unavailable", "this release")) or not value else value

    re_anchor = None
    if meta.get("lineage.re_anchor", "none") != "none":
        try:
            data = json.loads(meta["lineage.re_anchor"])
            re_anchor = ReAnchor(owner=data["owner"], reason=data["reason"], day=date.fromisoformat(data["date"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise RecordError(f"{facts.path}: lineage.re_anchor is not an owner, reason and date") from None
    return Lineage(
        predecessor_bom_sha256=known("lineage.predecessor_bom_sha256"),
        predecessor_model_sha256=known("lineage.predecessor_model_sha256"),
        anchor_model_sha256=meta["lineage.anchor_model_sha256"],
        anchor_model_path=known("lineage.anchor_model_path"),
        anchor_bom_sha256=known("lineage.anchor_bom_sha256"),
        re_anchor=re_anchor,
        position=int(meta.get("lineage.position", "1")),
    )


def anchor_of(facts: BomFacts) -> tuple[str, str | None, str]:
    """The anchor a successor of this release is judged against: (model sha256, model path if known,
    anchor BOM sha256). A release that is its own anchor (first, re-anchored, or older than lineages) names itself."""
    lineage = lineage_of(facts)
    if lineage is None or lineage.anchor_bom_sha256 is None:
        return facts.model_sha256, facts.model_path, facts.sha256
    return lineage.anchor_model_sha256, lineage.anchor_model_path, lineage.anchor_bom_sha256


def next_lineage(model_sha256: str, model_path: Path, predecessor: BomFacts | None, re_anchor: ReAnchor | None) -> Lineage:
    """The lineage of a new release: after ``predecessor`` (None: the first), re-anchored or not."""
    if predecessor is None:
        return Lineage(None, None, model_sha256, str(model_path), None, re_anchor, 1)
    if predecessor.model_sha256 == model_sha256:
        raise DataError(f"{predecessor.path}: the predecessor is the same model (sha256 {model_sha256[:12]}…), not an earlier release")
    before = lineage_of(predecessor)
    position = (before.position if before else 1) + 1
    if re_anchor is not None:
        return Lineage(predecessor.sha256, predecessor.model_sha256, model_sha256, str(model_path), None, re_anchor, position)
    sha, path, bom_sha = anchor_of(predecessor)
    return Lineage(predecessor.sha256, predecessor.model_sha256, sha, path, bom_sha, None, position)
