"""Cold start and peak memory, measured in a fresh Python process so nothing is warm or shared
(the child is ``_coldstart_child``: ONNX Runtime and numpy only, as a deployed application)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgeproof.errors import ModelError
from edgeproof.model import InputSpec
from edgeproof.records import ColdStart, RuntimeSettings

_RUNS_AFTER_LOAD = 20


_CHILD_TIMEOUT_S = 600


def measure_cold_start(
    model_path: str | Path, settings: RuntimeSettings, specs: list[InputSpec], npz: str | None = None, repeats: int = 3
) -> list[ColdStart]:
    """Run the cold start ``repeats`` times, each in a new interpreter that imports only ONNX Runtime
    and numpy (``_coldstart_child``), as a deployed application would; one record per run."""
    from edgeproof.measure.session import providers_for

    request = {
        "model": str(Path(model_path).resolve()),
        "intra_op_threads": settings.intra_op_threads,
        "inter_op_threads": settings.inter_op_threads,
        "graph_optimization_level": settings.graph_optimization_level,
        "providers": providers_for(settings),
        "runs_after_load": _RUNS_AFTER_LOAD,
        "inputs": [{"name": s.name, "dtype": s.dtype.str, "shape": list(s.shape)} for s in specs],
        "npz": str(Path(npz).resolve()) if npz else None,
    }
    results = []
    for _ in range(repeats):
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "edgeproof.measure._coldstart_child"],
                input=json.dumps(request),
                capture_output=True,
                text=True,
                timeout=_CHILD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise ModelError(
                f"{model_path}: cold-start process took over {_CHILD_TIMEOUT_S} s (session creation or first inference hangs)"
            ) from None
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ModelError(f"{model_path}: cold-start process failed ({tail})")
        try:
            results.append(ColdStart.model_validate_json(proc.stdout.strip().splitlines()[-1]))
        except (IndexError, ValueError):
            raise ModelError(f"{model_path}: cold-start process printed no result (stdout: {proc.stdout.strip()[:120]!r})") from None
    return results
