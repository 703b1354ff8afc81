"""Names an edgeproof BOM uses beyond CycloneDX (``edgeproof:`` properties, bom-refs) and its canonical byte form."""

from __future__ import annotations

import json
from typing import Any

BOM_SCHEMA = "edgeproof.bom/1"
NS = "edgeproof:"

# bom-refs of the components every BOM may hold
MODEL_REF = "model"
SOURCE_REF = "model:source"
CONTRACT_REF = "contract"
CALIBRATION_REF = "data:calibration"
MODEL_CARD_REF = "model-card"

VALIDATION_PROPERTY = "bom.schema_validation"
VALIDATED = "valid: CycloneDX 1.6 strict JSON schema (cyclonedx-python-lib JsonStrictValidator)"

FIGURE_PREFIX = "figure:"  # figure:<target>:<key>, value: JSON of a Stated figure
NOT_APPLICABLE = "n/a"


def target_ref(target_id: str) -> str:
    return f"target:{target_id}"


def figure_property(target_id: str, key: str) -> str:
    return f"{FIGURE_PREFIX}{target_id}:{key}"


def unavailable(why: str) -> str:
    """How a BOM states a value it does not have: never a guess, always the reason."""
    return f"unavailable:{why}"


def canonical_bytes(doc: Any) -> bytes:
    """The canonical form of a BOM: JSON with sorted keys, no whitespace, UTF-8, no trailing newline.

    ``bom build`` writes exactly these bytes, so a BOM file is its own canonical form and a
    signature over it covers every byte of the file.
    """
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
