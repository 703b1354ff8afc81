"""Shared plumbing for benchmarks: results go to benchmarks/results/<name>.json with the machine's fingerprint."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from edgeproof.records import write_atomic
from edgeproof.targets.host import fingerprint

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DIGITS_MODEL = ROOT / "examples" / "digits" / "model.onnx"


def write_result(name: str, result: dict) -> Path:
    """Write one benchmark's JSON result, stamped with when and where it ran."""
    payload = {
        "benchmark": name,
        "ran_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": fingerprint().model_dump(),
        **result,
    }
    path = RESULTS / f"{name}.json"
    write_atomic(path, json.dumps(payload, indent=2))
    print(f"{name}: wrote {path.relative_to(ROOT)}")
    return path
