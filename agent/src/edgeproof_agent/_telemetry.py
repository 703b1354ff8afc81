"""``--telemetry DIR``: each profile job's and workload's timed samples as ``edgeproof.telemetry/1`` records in segment
files, and the finished frames of those files read back for the lab to pull.

Only when ``edgeproof.telemetry`` (with pyarrow and ddsketch) is installed on the board: the agent's own
distribution does not require it, so it is imported here, when the option is given, and its absence is
a reason that ``hello`` reports. Writing never fails a job: a failure becomes a warning in its result.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgeproof_agent._fault import Fault
from edgeproof_agent._workload import WorkloadRun


class JobTelemetry:
    """Where a job's window and events go (``directory``), or why nothing is recorded (``reason``)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.reason: str | None = None
        self._telemetry: ModuleType | None = None
        self._store: Any = None
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

    def _segments(self) -> Any:
        """The segment store this connection writes, opened at its first record and kept until ``close``: one segment
        file takes every job's and workload's frames (a store opened per record would start a file per record).

        Only the connection that holds the board lock records, so no other writer moves its sequence numbers meanwhile."""
        if self._store is None:
            assert self._telemetry is not None
            self._store = self._telemetry.SegmentStore(self.directory, self._telemetry.read_boot_id())
        return self._store

    def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            store.close()

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
            self.close()  # reopened at the next record, which cuts any torn frame this left
            return [f"telemetry not written to {self.directory}: {type(exc).__name__}: {exc}"]

    def window_labels(self, labels: dict[str, str]) -> dict[str, str]:
        """``labels`` as a window carries them: the schema's label names only, the missing ones empty."""
        assert self._telemetry is not None
        return dict(self._telemetry.Labels.from_dict(labels).to_dict())

    def write_workload(self, labels: dict[str, str], run: WorkloadRun) -> list[str]:
        """One window of a workload's calls, labelled ``labels`` (names of ``LABEL_NAMES``; device_id among them).

        Returns the warnings to put in the workload's result (nothing was recorded when there are any)."""
        if not self.recording:
            return [f"telemetry not recorded: {self.reason}"]
        try:
            tm = self._telemetry
            assert tm is not None
            store = self._segments()
            metrics = self._inference_metrics(run.samples_ms, run.errors)
            labelled = tm.Labels.from_dict(labels)
            window = tm.Window(labelled, store.boot_id, store.last_seq + 1, run.start_unix_ns, run.end_unix_ns, metrics)
            if not store.append([window]):
                return [f"telemetry not written to {self.directory}: the file system is below its free-space headroom"]
            return []
        except Exception as exc:  # noqa: BLE001 - telemetry must never fail the workload it describes
            self.close()  # reopened at the next record, which cuts any torn frame this left
            return [f"telemetry not written to {self.directory}: {type(exc).__name__}: {exc}"]

    def _inference_metrics(self, samples_ms: list[float], errors: int) -> list[Any]:
        """The window's inference metrics: the latency sketch of the calls that returned, all calls counted, the errors."""
        tm, agg = self._telemetry, self._aggregate
        assert tm is not None
        metrics = [
            tm.MetricValue("edgeproof.inference.count", value=float(len(samples_ms) + errors)),
            tm.MetricValue("edgeproof.inference.errors", value=float(errors)),
        ]
        if samples_ms:
            seconds = np.asarray(samples_ms, dtype=np.float64) / 1000.0
            sketch = agg.new_sketch()
            agg.add_many(sketch, seconds)
            exact = (float(seconds.sum()), float(seconds.min()), float(seconds.max()))
            metrics.insert(0, agg.sketch_metric("edgeproof.inference.duration", sketch, exact))
        return metrics

    def segments_since(self, offsets: dict[str, int], max_bytes: int) -> tuple[list[dict[str, Any]], bool]:
        """The whole frames of each segment file past the lab's ``offsets`` (file name -> bytes it holds), oldest file
        first, about ``max_bytes`` in all; and whether that is everything (False: ask again from the new offsets).

        A frame still being written (a torn tail) is left for the next pull, so the lab's copy of a file is always a
        prefix of the board's that ends on a frame boundary."""
        if self._telemetry is None or self.directory is None:
            raise Fault("telemetry-off", f"this agent records no telemetry: {self.reason}")
        from edgeproof.telemetry._segments import _FRAME_HEAD, FILE_MAGIC, FRAME_MAGIC, segment_files

        out: list[dict[str, Any]] = []
        taken = 0  # bytes in this reply so far
        for path in segment_files(self.directory):
            start = int(offsets.get(path.name, 0))
            data = path.read_bytes()
            if start > len(data):
                raise Fault("bad-request", f"{path.name}: the lab holds {start} bytes of it, the board only {len(data)}")
            pos, full = start, False
            if pos == 0:
                if not data.startswith(FILE_MAGIC):
                    continue  # not an edgeproof segment: nothing of it is sent
                pos = len(FILE_MAGIC)
            while pos + _FRAME_HEAD.size <= len(data):
                magic, length, _crc = _FRAME_HEAD.unpack_from(data, pos)
                if magic != FRAME_MAGIC:  # not a frame head: send the rest, the lab's reader skips to the next frame
                    pos = len(data)
                    break
                frame_end = pos + _FRAME_HEAD.size + length
                if frame_end > len(data):
                    break  # a frame still being written: the next pull takes it
                if taken + frame_end - start > max_bytes and taken + pos - start > 0:
                    full = True  # one frame at least goes in every reply, however large
                    break
                pos = frame_end
            if pos > start:
                out.append({"name": path.name, "offset": start, "data": base64.b64encode(data[start:pos]).decode()})
                taken += pos - start
            if full:
                return out, False
        return out, True

    def _write(
        self,
        device_id: str,
        power_mode: str | None,
        requested_providers: list[str],
        arms: list[tuple[str, list[dict[str, Any]]]],
        start_unix_ns: int,
    ) -> list[str]:
        tm = self._telemetry
        assert tm is not None
        store = self._segments()
        boot_id = store.boot_id
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
            # a sample the agent timed ran without raising: a raising run fails the whole job instead
            metrics = self._inference_metrics(samples_ms, 0)
            records.append(tm.Window(labels, boot_id, seq + 2, start_unix_ns, end_ns, metrics))
            seq += 3
        if records and not store.append(records):
            return [f"telemetry not written to {self.directory}: the file system is below its free-space headroom"]
        return []
