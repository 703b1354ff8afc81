"""A short recorded burst: a model run over given rows under the recorder, with a confidence policy,
so a demo or a bring-up check writes real windows and events (``make demo`` uses it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeproof.telemetry._recorder import FallbackPolicy, Recorder, TelemetryConfig
from edgeproof.telemetry._schema import Labels
from edgeproof.telemetry._segments import read_segments
from edgeproof.telemetry._session import RecordedSession, load_fallback


@dataclass(frozen=True)
class Burst:
    """What a burst did: inferences run, windows written, and how often the policy's fallback answered."""

    directory: Path
    inferences: int
    windows: int
    policy_fallbacks: int


def record_burst(
    model: str | Path,
    rows: np.ndarray,
    directory: str | Path,
    labels: Labels,
    *,
    fallback: str | Path | None = None,
    min_confidence: float = 0.6,
    windows: int = 4,
    sample_every: int = 4,
) -> Burst:
    """Run ``model`` on every row of ``rows`` (one row per inference) under the recorder, closing
    ``windows`` windows evenly; below ``min_confidence`` the ``fallback`` model answers (counted)."""
    directory = Path(directory)
    config = TelemetryConfig(directory=directory, labels=labels, sample_every=sample_every, min_free_bytes=0)
    rec = Recorder(config, read_power=True)
    rec.enable(start_thread=False)
    policy = FallbackPolicy(min_confidence, load_fallback(str(fallback), Path.cwd())) if fallback is not None else None
    session = RecordedSession(rec, model, policy=policy)
    name = session.get_inputs()[0].name
    chunks = np.array_split(np.arange(len(rows)), max(1, windows))
    try:
        for chunk in chunks:
            for i in chunk:
                session.run(None, {name: rows[i : i + 1]})
            rec.flush()
    finally:
        rec.close()
    # what the windows on disk say, not what this process believes it did
    read = read_segments(directory)
    fell = sum(m.value or 0 for w in read.windows for m in w.metrics if m.name == "edgeproof.fallback.policy")
    return Burst(directory, len(rows), len(read.windows), int(fell))
