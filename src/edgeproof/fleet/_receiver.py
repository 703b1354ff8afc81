"""The fleet receiver: devices POST segment frames or OTLP/HTTP metrics with their own token; bodies go to a spool, one writer ingests it.

::

    receiver = Receiver("fleet.duckdb", "spool/", "tokens.json", port=0)
    receiver.start()                      # HTTP threads + the one ingest thread
    ...                                   # devices: POST /v1/segments, POST /v1/metrics
    receiver.close()                      # stops taking uploads, ingests what is spooled, closes the store

A body is acknowledged (200) only once it is in the spool durably: written under a temporary name,
fsync'd, renamed in and the folder fsync'd. The ingest thread then feeds spooled files to
``FleetStore.ingest``, which is idempotent by (device, boot, sequence), and deletes a file once the
store has committed all of it; a crash between the two re-ingests the file and counts nothing twice.
Every row of an upload must name the device its token belongs to (403 otherwise); a token nobody holds
is 401; a body that is not segment frames or OTLP is 400 with one line saying why. Nothing a device
sends stops the server.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from edgeproof.errors import DataError
from edgeproof.fleet._frames import SUFFIX, Frame, encode_table_frame, read_frames
from edgeproof.fleet._otlp import decode_request, windows_table
from edgeproof.fleet._store import FleetStore
from edgeproof.fleet._tokens import TokenBook
from edgeproof.telemetry._segments import FILE_MAGIC, _fsync_dir

# An upload is a device's batch of windows; a body this large is a mistake or an attack, not telemetry.
MAX_BODY_BYTES = 64 << 20
# How long the ingest thread waits for an upload before it looks at the spool anyway.
INGEST_EVERY_S = 2.0


class Refused(Exception):
    """An upload refused: the HTTP status, the counter it adds to and one line for the device."""

    def __init__(self, status: int, counter: str, why: str) -> None:
        super().__init__(why)
        self.status, self.counter, self.why = status, counter, why


def _foreign_devices(table: pa.Table, device_id: str) -> list[str]:
    """Device ids in ``table`` other than ``device_id``: the row key (a row without one counts as foreign) or a label that names one."""
    if "device_id" not in table.column_names:
        return ["<no device_id column>"]
    named = set(pc.unique(pc.fill_null(table.column("device_id"), "")).to_pylist())
    labels = table.column("labels") if "labels" in table.column_names else None
    if labels is not None and labels.type.get_field_index("device_id") >= 0:
        named |= set(pc.unique(pc.fill_null(pc.struct_field(labels, "device_id"), "")).to_pylist()) - {""}
    return sorted(str(v or "<none>") for v in named - {device_id})


class Spool:
    """A folder of segment files as devices uploaded them, each complete before it appears under its final name."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # staged uploads a crash left behind were never acknowledged (the 200 comes after the rename):
        # the device sends them again, so they go (one receiver per spool)
        self.stale_removed = 0
        for stale in self.directory.glob(".*.part"):
            stale.unlink(missing_ok=True)
            self.stale_removed += 1

    def stage(self, body: bytes) -> Path:
        """``body`` (segment frames, with or without the file magic) under a temporary name, fsync'd; not yet ingestible."""
        staging = self.directory / f".{uuid.uuid4().hex}.part"
        with staging.open("wb") as f:
            if not body.startswith(FILE_MAGIC):
                f.write(FILE_MAGIC)
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        return staging

    def commit(self, staging: Path, device_id: str) -> Path:
        """Rename a staged file in, durably; from here on ingest sees it."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in device_id)[:64]
        final = self.directory / f"{safe}-{time.time_ns()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        staging.rename(final)
        _fsync_dir(self.directory)
        return final

    def files(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{SUFFIX}"))


def check_segment_upload(path: Path, device_id: str) -> tuple[int, int]:
    """(windows, events) of a staged upload; Refused when it is not whole segment frames or names another device."""
    frames: list[Frame] = []
    size = path.stat().st_size
    for item in read_frames(path):
        if not isinstance(item, Frame):
            raise Refused(400, "malformed", f"frame at byte {item.offset}: {item.what}")
        frames.append(item)
    if not frames:
        raise Refused(400, "malformed", "no segment frames in the body")
    if frames[-1].end != size:
        raise Refused(400, "malformed", f"a frame is cut off at byte {frames[-1].end} of {size}")
    windows = events = 0
    for frame in frames:
        foreign = _foreign_devices(frame.table, device_id)
        if foreign:
            raise Refused(403, "forbidden", f"rows name device {', '.join(foreign[:3])}; this token is {device_id}'s")
        kinds = frame.table.column("kind") if "kind" in frame.table.column_names else pa.chunked_array([], pa.string())
        n_windows = int(pc.sum(pc.equal(kinds, "window")).as_py() or 0)
        windows += n_windows
        events += frame.table.num_rows - n_windows
    return windows, events


def ingest_spool(store: FleetStore, spool: Spool) -> dict[str, int]:
    """Ingest every spooled file; delete the ones the store has committed in full. Totals of the pass."""
    paths = spool.files()
    if not paths:
        return {}
    report = store.ingest(paths)
    committed = store.committed_offsets()
    for path in paths:
        name = str(path.resolve())
        if committed.get(name) == path.stat().st_size:
            path.unlink()
            # the file's name is never used again, so its journal row has nothing left to guard
            store.con.execute("DELETE FROM ingest_journal WHERE file = ?", [name])
    return {
        "files": report.files,
        "windows": report.windows,
        "events": report.events,
        "duplicates": report.duplicates,
        "rejected": report.rejected,
        "frame_problems": len(report.problems),
    }


class Receiver:
    """The HTTP receiver and its one ingest thread; ``port=0`` picks a free port (``self.port`` says which)."""

    def __init__(
        self,
        store: str | Path,
        spool: str | Path,
        tokens: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        ingest_every_s: float = INGEST_EVERY_S,
    ) -> None:
        self.tokens = TokenBook.load(tokens)
        self.spool = Spool(spool)
        self.store_path = Path(store)
        self.ingest_every_s = ingest_every_s
        self.counts: Counter[str] = Counter()
        self.last_ingest_error = ""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        # One pass is due at start: what a previous run acknowledged but did not ingest is in the spool.
        self._requested = 1
        self._done = 0
        self._stopping = False
        # Opened here, so a store another process holds fails before the port is bound.
        self.store_path.parent.mkdir(parents=True, exist_ok=True)
        self._store = FleetStore(self.store_path)
        try:
            self._server = http.server.ThreadingHTTPServer((host, port), _handler(self))
        except BaseException:  # the port is taken or the address is not ours: leave the store as it was
            self._store.close()
            raise
        self._server.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counts": dict(sorted(self.counts.items())),
                "spooled_files": len(self.spool.files()),
                "last_ingest_error": self.last_ingest_error,
            }

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve and ingest on background threads."""
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="fleet-receiver-http", daemon=True),
            threading.Thread(target=self._ingest_loop, name="fleet-receiver-ingest", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def uploaded(self) -> None:
        """An upload was spooled: wake the ingest thread."""
        with self._wake:
            self._requested += 1
            self._wake.notify_all()

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until an ingest pass that started after this call has finished; False on timeout."""
        with self._wake:
            self._requested += 1
            target = self._requested
            self._wake.notify_all()
            return self._wake.wait_for(lambda: self._done >= target or self._stopping, timeout=timeout_s)

    def close(self) -> None:
        """Stop taking uploads, ingest everything spooled, close the store."""
        self._server.shutdown()
        self._server.server_close()
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        for t in self._threads:
            if t.name == "fleet-receiver-ingest":
                t.join()
        if not self._threads:
            self._ingest_once()
        self._store.close()

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ingest_loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._requested > self._done or self._stopping, timeout=self.ingest_every_s)
                target, stopping = self._requested, self._stopping
            self._ingest_once()
            with self._wake:
                self._done = max(self._done, target)
                self._wake.notify_all()
            if stopping:
                return

    def _ingest_once(self) -> None:
        try:
            totals = ingest_spool(self._store, self.spool)
        except Exception as exc:  # a broken store or disk: keep the spool, say so in the status, try again next pass
            with self._lock:
                self.counts["ingest_errors"] += 1
                self.last_ingest_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            return
        with self._lock:
            for key, n in totals.items():
                self.counts[f"ingested_{key}"] += n
            if totals:
                self.counts["ingest_passes"] += 1

    # -- uploads ----------------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, "unauthorized", "send Authorization: Bearer <the device's token>")
        device = self.tokens.device_of(token.strip())
        if device is None:
            raise Refused(401, "unauthorized", "unknown token")
        return device

    def receive_segments(self, device_id: str, body: bytes) -> dict[str, Any]:
        staging = self.spool.stage(body)
        try:
            windows, events = check_segment_upload(staging, device_id)
            final = self.spool.commit(staging, device_id)
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        return {"device_id": device_id, "windows": windows, "events": events, "spooled": final.name}

    def receive_otlp(self, device_id: str, body: bytes, content_type: str, content_encoding: str) -> dict[str, Any]:
        try:
            tables = windows_table(decode_request(body, content_type, content_encoding))
        except DataError as exc:
            raise Refused(400, "malformed", str(exc)) from None
        for table in tables.values():
            foreign = _foreign_devices(table, device_id)
            if foreign:
                raise Refused(403, "forbidden", f"resources name device {', '.join(foreign[:3])}; this token is {device_id}'s")
        return self.receive_segments(device_id, b"".join(encode_table_frame(t) for t in tables.values()))


def _handler(receiver: Receiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "edgeproof-fleet-receiver"
        protocol_version = "HTTP/1.1"
        timeout = 30  # a device that stops sending mid-body does not hold a thread for ever

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

        def _reply(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="edgeproof-fleet"')
            self.end_headers()
            self.wfile.write(payload)

        def _json(self, status: int, data: dict[str, Any]) -> None:
            self._reply(status, (json.dumps(data) + "\n").encode())

        def _body(self) -> bytes:
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self.close_connection = True
                raise Refused(411, "malformed", "send a Content-Length")
            n = int(length)
            if n > MAX_BODY_BYTES:
                self.close_connection = True
                raise Refused(413, "too_large", f"body of {n} bytes is over the {MAX_BODY_BYTES} bytes an upload may hold")
            body = self.rfile.read(n)
            if len(body) != n:
                self.close_connection = True
                raise Refused(400, "malformed", f"body ended after {len(body)} of {n} bytes")
            return body

        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/v1/status":
                self._json(200, receiver.status())
            else:
                self._json(404, {"error": f"no such endpoint {self.path}"})

        def do_POST(self) -> None:
            route = self.path.split("?")[0]
            try:
                if route not in ("/v1/segments", "/v1/metrics"):
                    raise Refused(404, "not_found", f"no such endpoint {route} (POST /v1/segments or /v1/metrics)")
                device = receiver.authenticate(self.headers.get("Authorization"))
                body = self._body()
                if route == "/v1/segments":
                    result = receiver.receive_segments(device, body)
                    receiver.count("accepted_segment_uploads")
                else:
                    result = receiver.receive_otlp(
                        device, body, self.headers.get("Content-Type", ""), self.headers.get("Content-Encoding", "")
                    )
                    receiver.count("accepted_otlp_uploads")
                receiver.count("accepted_windows", result["windows"])
                receiver.count("accepted_events", result["events"])
            except Refused as refused:
                # the body may be unread: the connection cannot carry another request
                self.close_connection = True
                receiver.count(refused.counter)
                self._json(refused.status, {"error": refused.why})
                return
            except Exception as exc:  # our bug, not the device's: say so, count it, keep serving
                receiver.count("internal_errors")
                self.close_connection = True
                self._json(500, {"error": f"receiver error: {type(exc).__name__}"})
                return
            receiver.uploaded()
            if route == "/v1/metrics":
                from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

                if self.headers.get("Content-Type", "").startswith("application/json"):
                    self._json(200, {})
                else:
                    self._reply(200, ExportMetricsServiceResponse().SerializeToString(), "application/x-protobuf")
            else:
                self._json(200, {**result, "acknowledged": "spooled durably; ingest counts each (device, boot, seq) once"})

    return Handler
