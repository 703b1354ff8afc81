"""``--telemetry DIR``: each profile job's timed samples as ``edgeproof.telemetry/1`` records in segment files.

Only when ``edgeproof.telemetry`` (with pyarrow and ddsketch) is installed on the board: the agent's own
distribution does not require it, so it is imported here, when the option is given, and its absence is
a reason that ``hello`` reports. Writing never fails a job: a failure becomes a warning in its result.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np


class JobTelemetry:
    """Where a job's window and events go (``directory``), or why nothing is recorded (``reason``)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.reason: str | None = None
        self._telemetry: ModuleType | None = None
        if directory is None:
            self.reason = "not asked for (start the agent with --telemetry DIR)"
            return
        try:
            import edgeproof.telemetry as telemetry
            from edgeproof.telemetry import _aggregate
        except ImportError as exc:
            self.reason = f"edgeproof.telemetry is not installed on the board ({exc})"
            return
        self._telemetry = telemetry
        self._aggregate = _aggregate

    @property
    def recording(self) -> bool:
        return self._telemetry is not None

    def status(self) -> dict[str, Any]:
        """What ``hello`` says: recording into which directory, or not and why."""
        if self._telemetry is not None:
            return {"recording": True, "directory": str(self.directory), "schema": self._telemetry.SCHEMA_VERSION}
        return {"recording": False, "reason": self.reason}

    def write_job(
        self,
        device_id: str,
        power_mode: str | None,
        requested_providers: list[str],
        arms: list[tuple[str, list[dict[str, Any]]]],
        start_unix_ns: int,
    ) -> list[str]:
        """One window (and its ``model_load`` / ``provider_placement`` events) per arm that ran timed samples.

        ``arms`` holds each arm's model sha256 and its sessions as the profile reply carries them
        (``samples_ms``, ``providers``). Returns the warnings to put in the job's result."""
        if not self.recording:
            return []
        try:
            return self._write(device_id, power_mode, requested_providers, arms, start_unix_ns)
        except Exception as exc:  # noqa: BLE001 - telemetry must never fail the job it describes
            return [f"telemetry not written to {self.directory}: {type(exc).__name__}: {exc}"]

    def _write(
        self,
        device_id: str,
        power_mode: str | None,
        requested_providers: list[str],
        arms: list[tuple[str, list[dict[str, Any]]]],
        start_unix_ns: int,
    ) -> list[str]:
        tm, agg = self._telemetry, self._aggregate
        assert tm is not None
        boot_id = tm.read_boot_id()
        store = tm.SegmentStore(self.directory, boot_id)
        try:
            seq = store.last_seq + 1
            records: list[Any] = []
            end_ns = time.time_ns()
            for model_sha, sessions in arms:
                samples_ms = [x for s in sessions for x in s["samples_ms"]]
                if not samples_ms:
                    continue
                active = list(sessions[0].get("providers") or [])
                labels = tm.Labels(
                    device_id=device_id,
                    model_sha256=model_sha,
                    accelerator=active[0] if active else (requested_providers[0] if requested_providers else ""),
                    power_mode=power_mode or "",
                )
                seconds = np.asarray(samples_ms, dtype=np.float64) / 1000.0
                sketch = agg.new_sketch()
                agg.add_many(sketch, seconds)
                exact = (float(seconds.sum()), float(seconds.min()), float(seconds.max()))
                records.append(tm.Event(labels, boot_id, seq, start_unix_ns, "model_load", {"model_sha256": model_sha}))
                records.append(
                    tm.Event(
                        labels,
                        boot_id,
                        seq + 1,
                        start_unix_ns,
                        "provider_placement",
                        {"requested": list(requested_providers), "active": active},
                    )
                )
                metrics = [
                    agg.sketch_metric("edgeproof.inference.duration", sketch, exact),
                    tm.MetricValue("edgeproof.inference.count", value=float(seconds.size)),
                    # a sample the agent timed ran without raising: a raising run fails the whole job instead
                    tm.MetricValue("edgeproof.inference.errors", value=0.0),
                ]
                records.append(tm.Window(labels, boot_id, seq + 2, start_unix_ns, end_ns, metrics))
                seq += 3
            if records and not store.append(records):
                return [f"telemetry not written to {self.directory}: the file system is below its free-space headroom"]
            return []
        finally:
            store.close()
