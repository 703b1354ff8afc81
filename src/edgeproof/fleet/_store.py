"""The fleet store: telemetry in one DuckDB file, ingested idempotently from segment files, with a journal.

One writer. Devices, boots and label sets are interned to integer keys. Each batch is one transaction
that inserts the new windows and events (a sort of each chunk's integer keys drops what repeats within
it, an anti-join on (device, boot, seq) what is already stored, this transaction's earlier chunks
included), the rows refused and the journal's new committed offset of every file it read. A thread
reads, checks and flattens the next chunk (~200k rows) while DuckDB stores the one before, so a batch
of ``batch_rows`` is stored in several overlapping steps and still committed once. A ``kill -9`` therefore loses
only an uncommitted batch, which the next run reads again from the journal's offsets; nothing is
counted twice because the key decides, not the journal alone. A batch is acknowledged (``on_commit``)
only after its COMMIT returned.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgeproof.errors import DataError
from edgeproof.fleet._flatten import EVENT_SCHEMA, REJECT_SCHEMA, STORED_LABELS, WINDOW_SCHEMA, Flat, flatten
from edgeproof.fleet._frames import SUFFIX, Frame, FrameProblem, read_frames
from edgeproof.fleet._phases import Phases
from edgeproof.telemetry._schema import EVENT_TYPES

_SQL_TYPES = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.float64(): "DOUBLE"}


def _ddl(name: str, schema: pa.Schema, extra: str = "") -> str:
    columns = ", ".join(f"{f.name} {_SQL_TYPES[f.type]}" for f in schema)
    return f"CREATE TABLE IF NOT EXISTS {name} ({columns}{extra})"


_LABEL_COLUMNS = STORED_LABELS
_WINDOW_VALUES = tuple(f.name for f in WINDOW_SCHEMA if f.type == pa.float64())
# The stored tables' columns, in their order.
_STORED_COLUMNS = {
    "window_rows": ("device_key", "boot_key", "seq", "start_ns", "end_ns", "label_key", *_WINDOW_VALUES),
    "event_rows": ("device_key", "boot_key", "seq", "time_ns", "label_key", "type_code", "attributes_json"),
}
_EVENT_TYPE_LIST = "[" + ", ".join(f"'{t}'" for t in EVENT_TYPES) + "]"
# Rows keep integer keys: devices, boots and label sets are interned, so the dedupe anti-join and the
# alarms' GROUP BY work on integers; the views ``windows`` and ``events`` show the rows with their names.
_SCHEMA_SQL = [
    "CREATE TABLE IF NOT EXISTS devices (device_key BIGINT PRIMARY KEY, device_id VARCHAR UNIQUE)",
    "CREATE TABLE IF NOT EXISTS boots (boot_key BIGINT PRIMARY KEY, boot_id VARCHAR UNIQUE)",
    "CREATE TABLE IF NOT EXISTS label_sets (label_key BIGINT PRIMARY KEY, " + ", ".join(f"{c} VARCHAR" for c in _LABEL_COLUMNS) + ")",
    "CREATE TABLE IF NOT EXISTS window_rows (device_key BIGINT, boot_key BIGINT, seq BIGINT, start_ns BIGINT, end_ns BIGINT, "
    "label_key BIGINT, " + ", ".join(f"{c} DOUBLE" for c in _WINDOW_VALUES) + ")",
    "CREATE TABLE IF NOT EXISTS event_rows (device_key BIGINT, boot_key BIGINT, seq BIGINT, time_ns BIGINT, label_key BIGINT, "
    "type_code UTINYINT, attributes_json VARCHAR)",
    "CREATE OR REPLACE VIEW windows AS SELECT d.device_id, b.boot_id, w.seq, w.start_ns, w.end_ns, "
    + ", ".join(f"l.{c}" for c in _LABEL_COLUMNS)
    + ", "
    + ", ".join(f"w.{c}" for c in _WINDOW_VALUES)
    + " FROM window_rows w JOIN devices d USING (device_key) JOIN boots b USING (boot_key) JOIN label_sets l USING (label_key)",
    "CREATE OR REPLACE VIEW events AS SELECT d.device_id, b.boot_id, e.seq, e.time_ns, "
    + ", ".join(f"l.{c}" for c in _LABEL_COLUMNS)
    + f", ({_EVENT_TYPE_LIST})[e.type_code + 1] AS type, e.attributes_json FROM event_rows e JOIN devices d USING (device_key) JOIN boots b USING (boot_key) "
    "JOIN label_sets l USING (label_key)",
    _ddl("rejects", REJECT_SCHEMA),
    "CREATE TABLE IF NOT EXISTS ingest_journal (file VARCHAR PRIMARY KEY, committed_offset BIGINT, committed_at_ns BIGINT)",
    "CREATE TABLE IF NOT EXISTS frame_problems (file VARCHAR, frame_offset BIGINT, what VARCHAR)",
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value BIGINT)",
]


@dataclass
class Commit:
    """What one committed batch did: files and the offsets now committed, rows inserted, duplicates dropped, rows refused."""

    offsets: dict[str, int]
    windows: int
    events: int
    duplicates: int
    rejected: int


@dataclass
class IngestReport:
    """Totals of one ingest run."""

    files: int = 0
    frames: int = 0
    rows_read: int = 0
    windows: int = 0
    events: int = 0
    duplicates: int = 0
    rejected: int = 0
    seconds: float = 0.0
    problems: list[FrameProblem] = field(default_factory=list)
    # time in each phase, summed over batches (reading and storing overlap: their wall seconds add up to more than ``seconds``)
    phases: Phases = field(default_factory=Phases)

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


def _names(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(code per row, the distinct names used) of a name column whose chunks share one dictionary."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    chunks = [c for c in column.chunks if len(c)]
    if not chunks:
        return np.zeros(0, np.int64), pa.array([], pa.string())
    dictionary = chunks[0].dictionary
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in chunks]).astype(np.int64, copy=False)
    used = np.bincount(codes, minlength=len(dictionary)) > 0
    if used.all():
        return codes, dictionary
    return (np.cumsum(used) - 1)[codes], dictionary.filter(pa.array(used))


def _distinct(combined: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a row holding each distinct value, the distinct value's number per row) of non-negative integers."""
    top = int(combined.max()) + 1 if combined.size else 0
    if top <= 4 * combined.size + 1024:
        # a small code space: mark and rank, without sorting the rows
        present = np.zeros(top, bool)
        present[combined] = True
        holder = np.zeros(top, np.int64)
        holder[combined] = np.arange(combined.size)
        return holder[present], (np.cumsum(present) - 1)[combined]
    _, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    return first, inverse.ravel()


def _first_of_each_key(device: np.ndarray, boot: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """Rows that are the first of their (device, boot, seq) in the batch, in batch order."""
    n = seq.size
    if n == 0:
        return np.zeros(0, np.int64)
    span_boot, span_seq = int(boot.max()) + 1, int(seq.max()) + 1
    if (int(device.max()) + 1) * span_boot * span_seq < (1 << 62):
        # one integer per key: a stable sort of one column instead of a three-column lexsort
        order = np.argsort((device * span_boot + boot) * span_seq + seq, kind="stable")
        key = ((device * span_boot + boot) * span_seq + seq)[order]
        repeat = np.zeros(n, bool)
        repeat[1:] = key[1:] == key[:-1]
    else:
        order = np.lexsort((np.arange(n), seq, boot, device))
        repeat = np.zeros(n, bool)
        a, b = order[1:], order[:-1]
        repeat[1:] = (device[a] == device[b]) & (boot[a] == boot[b]) & (seq[a] == seq[b])
    first = np.zeros(n, bool)
    first[order[~repeat]] = True
    return np.flatnonzero(first)


@dataclass
class _Rows:
    """One kind of row of a chunk, each (device, boot, seq) once, with names as codes until the store interns them."""

    table: str
    time_column: str
    devices: pa.Array
    device_code: np.ndarray
    boots: pa.Array
    boot_code: np.ndarray
    label_sets: pa.Table
    label_code: np.ndarray
    columns: dict[str, pa.Array | pa.ChunkedArray]
    read: int


def _prepared(rows: pa.Table, table: str, time_column: str) -> _Rows | None:
    """The part of storing rows that needs no store: names to codes, label sets to one code, repeats within the rows dropped."""
    if rows.num_rows == 0:
        return None
    rows = rows.unify_dictionaries()
    device_code, devices = _names(rows.column("device_id"))
    boot_code, boots = _names(rows.column("boot_id"))
    # a label set's code: mixed radix over each label's code
    combined = np.zeros(rows.num_rows, dtype=np.int64)
    space = 1
    dictionaries = []
    for name in _LABEL_COLUMNS:
        codes, values = _names(rows.column(name))
        if space * len(values) >= 1 << 62:  # renumber what is there before the radix overflows
            _, combined = _distinct(combined)
            space = int(combined.max()) + 1
        combined = combined * len(values) + codes
        space *= len(values)
        dictionaries.append((codes, values))
    first, label_code = _distinct(combined)
    label_sets = pa.table({name: values.take(pa.array(codes[first])) for name, (codes, values) in zip(_LABEL_COLUMNS, dictionaries)})
    seq = rows.column("seq").to_numpy()
    keep = _first_of_each_key(device_code, boot_code, seq)
    every = keep.size == rows.num_rows
    take = pa.array(keep)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for name in rows.column_names:
        if name in ("device_id", "boot_id") or name in _LABEL_COLUMNS:
            continue
        column = rows.column(name) if every else rows.column(name).take(take)
        if name == "type":  # an event's type by its index in EVENT_TYPES (flatten refused the others)
            columns["type_code"] = pc.index_in(column, pa.array(EVENT_TYPES)).cast(pa.uint8())
        else:
            columns[name] = column
    return _Rows(
        table, time_column, devices, device_code[keep], boots, boot_code[keep], label_sets, label_code[keep], columns, rows.num_rows
    )


def _intern(con: duckdb.DuckDBPyConnection, table: str, key: str, rows: pa.Table) -> np.ndarray:
    """The key of each (distinct) row of ``rows`` in ``table``, adding the rows not there yet."""
    con.register("incoming_names", rows)
    columns = ", ".join(rows.column_names)
    on = " AND ".join(f"t.{c} IS NOT DISTINCT FROM i.{c}" for c in rows.column_names)
    con.execute(
        f"""INSERT INTO {table} SELECT (SELECT coalesce(max({key}), -1) FROM {table}) + row_number() OVER (), {columns}
        FROM (SELECT {columns} FROM incoming_names i ANTI JOIN {table} t ON {on})"""
    )
    keys = con.execute(
        f"SELECT t.{key} FROM (SELECT *, row_number() OVER () AS pos FROM incoming_names) i JOIN {table} t ON {on} ORDER BY i.pos"
    ).fetchnumpy()[key]
    con.unregister("incoming_names")
    return np.asarray(keys, dtype=np.int64)


class _Interned:
    """Keys already interned, by table and name, so a chunk asks DuckDB only about names it has not seen.

    Forgotten when a transaction rolls back: the keys it handed out went with it.
    """

    def __init__(self) -> None:
        self.known: dict[str, dict[object, int]] = {}

    def keys(self, con: duckdb.DuckDBPyConnection, table: str, key: str, rows: pa.Table) -> np.ndarray:
        known = self.known.setdefault(table, {})
        columns = [rows.column(c).to_pylist() for c in rows.column_names]
        names: list[object] = columns[0] if len(columns) == 1 else list(zip(*columns))
        keys = np.fromiter((known.get(name, -1) for name in names), np.int64, len(names))
        missing = np.flatnonzero(keys < 0)
        if missing.size:
            found = _intern(con, table, key, rows.take(pa.array(missing)))
            keys[missing] = found
            known.update(zip([names[i] for i in missing.tolist()], found.tolist()))
        return keys

    def forget(self) -> None:
        self.known.clear()


def _keyed(con: duckdb.DuckDBPyConnection, interned: _Interned, rows: _Rows) -> pa.Table:
    """The rows as the store keeps them: devices, boots and label sets replaced by their interned keys."""
    device_key = interned.keys(con, "devices", "device_key", pa.table({"device_id": rows.devices}))[rows.device_code]
    boot_key = interned.keys(con, "boots", "boot_key", pa.table({"boot_id": rows.boots}))[rows.boot_code]
    label_key = interned.keys(con, "label_sets", "label_key", rows.label_sets)[rows.label_code]
    keys = {"device_key": pa.array(device_key), "boot_key": pa.array(boot_key), "label_key": pa.array(label_key)}
    return pa.table({name: keys[name] if name in keys else rows.columns[name] for name in _STORED_COLUMNS[rows.table]})


def _insert_new(con: duckdb.DuckDBPyConnection, table: str, incoming: str, rows: pa.Table, time_column: str, cutoff: int) -> int:
    """Insert the rows of ``incoming`` (registered ``rows``, each key once) whose key is not stored yet; return how many."""
    bounds = pc.min_max(rows.column(time_column))
    lo, hi = int(bounds["min"].as_py()), int(bounds["max"].as_py())
    # Duplicates are the same record sent again, so they carry the same time: only stored rows in the
    # batch's time range can match, and DuckDB's min/max zone maps skip the rest of the table.
    row = con.execute(
        f"""
        INSERT INTO {table}
        SELECT i.* FROM {incoming} i
        ANTI JOIN (SELECT device_key, boot_key, seq FROM {table} WHERE {time_column} BETWEEN {int(lo)} AND {int(hi)}) s
          ON s.device_key = i.device_key AND s.boot_key = i.boot_key AND s.seq = i.seq
        WHERE i.{time_column} >= {int(cutoff)}
        """
    ).fetchone()
    return int(row[0]) if row else 0


class FleetStore:
    """Fleet telemetry in a DuckDB file (``":memory:"`` for a throwaway one); the only writer while open."""

    def __init__(self, path: str | Path, threads: int | None = None, read_only: bool = False) -> None:
        """``read_only``: for readers (the report, alarms over a copy) — no file is created, nothing written,
        and the writer may keep its own connection elsewhere."""
        self.path = path
        try:
            self.con = duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            mode = "read-only " if read_only else ""
            raise DataError(f"{path}: cannot open the fleet store {mode}({str(exc).splitlines()[0]})") from None
        if threads is not None:
            self.con.execute(f"SET threads = {int(threads)}")
        if not read_only:
            for sql in _SCHEMA_SQL:
                self.con.execute(sql)
        self._interned = _Interned()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> FleetStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ingest ------------------------------------------------------------------------------------

    def committed_offsets(self) -> dict[str, int]:
        return dict(self.con.execute("SELECT file, committed_offset FROM ingest_journal").fetchall())

    def _meta(self, key: str, default: int = 0) -> int:
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return int(row[0]) if row else default

    def ingest(
        self,
        sources: Iterable[str | Path],
        batch_rows: int = 1_000_000,
        on_commit: Callable[[Commit], None] | None = None,
    ) -> IngestReport:
        """Ingest every segment file under ``sources`` (folders or files) from where the journal left each one.

        Rows are committed in batches of about ``batch_rows``; ``on_commit`` hears of each batch once it
        is durable. Frames that do not check out are reported and skipped; malformed rows are refused
        (``rejects``) without stopping the run. A thread reads and flattens the next rows while this one
        stores the last ones (Arrow, numpy and DuckDB let go of the GIL while they work).
        """
        t0 = time.perf_counter()
        report = IngestReport()
        paths = _segment_paths(sources)
        report.files = len(paths)
        # three stages, each in its own thread: map + check + decode, flatten, store
        frames = _ahead(_frames(paths, self.committed_offsets(), report.phases), 8, "fleet-ingest-read")
        self._store(_ahead(_chunks(frames, batch_rows, report.phases), 1, "fleet-ingest-flatten"), report, on_commit)
        report.seconds = time.perf_counter() - t0
        return report

    def ingest_flat(self, flats: list[Flat], on_commit: Callable[[Commit], None] | None = None) -> IngestReport:
        """Ingest rows already flattened (the simulator's in-memory path); idempotent the same way."""
        report = IngestReport(rows_read=sum(f.windows.num_rows + f.events.num_rows + f.rejects.num_rows for f in flats))
        t0 = time.perf_counter()
        self._store(iter([_Chunk(flats, {}, [], 0, 0, prepared=_prepared_rows(flats))]), report, on_commit)
        report.seconds = time.perf_counter() - t0
        return report

    def _store(self, chunks: Iterator[_Chunk], report: IngestReport, on_commit: Callable[[Commit], None] | None) -> None:
        """Store each chunk; commit (rows, refused rows, frame problems and the journal's offsets together) where one says so."""
        con = self.con
        phase = report.phases
        cutoff = self._meta("retained_from_ns", -(1 << 62))
        open_batch: Commit | None = None
        try:
            while True:
                with phase("store_waits_for_reader"):
                    chunk = next(chunks, None)
                if chunk is None:
                    break
                report.frames += chunk.frames
                report.rows_read += chunk.rows_read
                report.problems += chunk.problems
                if open_batch is None:
                    con.begin()
                    open_batch = Commit(offsets={}, windows=0, events=0, duplicates=0, rejected=0)
                for rows in chunk.prepared:
                    with phase("intern"):
                        keyed = _keyed(con, self._interned, rows)
                    with phase("dedupe_insert"):
                        con.register("incoming_rows", keyed)
                        try:
                            stored = _insert_new(con, rows.table, "incoming_rows", keyed, rows.time_column, cutoff)
                        finally:
                            con.unregister("incoming_rows")
                    if rows.table == "window_rows":
                        open_batch.windows += stored
                    else:
                        open_batch.events += stored
                    open_batch.duplicates += rows.read - stored
                rejects = pa.concat_tables([f.rejects for f in chunk.flats]) if chunk.flats else REJECT_SCHEMA.empty_table()
                with phase("rejects_problems_journal"):
                    self._refused(rejects, chunk.problems)
                open_batch.rejected += rejects.num_rows
                open_batch.offsets.update(chunk.offsets)
                if not chunk.commit:
                    continue
                with phase("commit"):
                    if open_batch.offsets:
                        now = time.time_ns()
                        con.executemany(
                            "INSERT OR REPLACE INTO ingest_journal VALUES (?, ?, ?)",
                            [(name, end, now) for name, end in open_batch.offsets.items()],
                        )
                    con.commit()
                done, open_batch = open_batch, None
                report.windows += done.windows
                report.events += done.events
                report.duplicates += done.duplicates
                report.rejected += done.rejected
                if on_commit is not None:
                    on_commit(done)
        except BaseException:
            if open_batch is not None:
                con.rollback()
                self._interned.forget()
            raise
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _refused(self, rejects: pa.Table, problems: list[FrameProblem]) -> None:
        """Record refused rows and the frames that did not check out (in the open transaction)."""
        if rejects.num_rows:
            self.con.register("incoming_rejects", rejects)
            try:
                self.con.execute("INSERT INTO rejects SELECT * FROM incoming_rejects")
            finally:
                self.con.unregister("incoming_rejects")
        if problems:
            self.con.executemany("INSERT INTO frame_problems VALUES (?, ?, ?)", [(str(p.path), p.offset, p.what) for p in problems])

    # -- retention, deletion, export -----------------------------------------------------------------

    def retain(self, keep_from_ns: int) -> tuple[int, int]:
        """Delete windows and events before ``keep_from_ns`` and refuse such old rows from now on; (windows, events) deleted."""
        con = self.con
        con.begin()
        w = con.execute("DELETE FROM window_rows WHERE end_ns < ?", [keep_from_ns]).fetchone()
        e = con.execute("DELETE FROM event_rows WHERE time_ns < ?", [keep_from_ns]).fetchone()
        con.execute(
            "INSERT OR REPLACE INTO meta VALUES ('retained_from_ns', ?)", [max(keep_from_ns, self._meta("retained_from_ns", keep_from_ns))]
        )
        con.commit()
        return int(w[0]) if w else 0, int(e[0]) if e else 0

    def delete_device(self, device_id: str) -> int:
        """Delete every stored row of one device (windows, events, refused rows); how many rows went."""
        con = self.con
        con.begin()
        total = 0
        for table in ("window_rows", "event_rows"):
            row = con.execute(
                f"DELETE FROM {table} WHERE device_key IN (SELECT device_key FROM devices WHERE device_id = ?)", [device_id]
            ).fetchone()
            total += int(row[0]) if row else 0
        row = con.execute("DELETE FROM rejects WHERE device_id = ?", [device_id]).fetchone()
        total += int(row[0]) if row else 0
        con.commit()
        return total

    def export_parquet(self, directory: str | Path) -> list[Path]:
        """Windows and events as Parquet partitioned by day (UTC) and chip revision, for any engine that reads Parquet."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for table, column in (("windows", "start_ns"), ("events", "time_ns")):
            target = out / table
            self.con.execute(
                f"""COPY (SELECT *, strftime(make_timestamp({column} // 1000), '%Y-%m-%d') AS day FROM {table})
                TO '{_sql_path(target)}' (FORMAT parquet, PARTITION_BY (day, chip_revision), OVERWRITE_OR_IGNORE true)"""
            )
            written.append(target)
        return written

    # -- reading -------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rows per table (windows, events, rejects, frame_problems)."""
        out = {}
        for table in ("windows", "events", "rejects", "frame_problems"):
            row = self.con.execute(f"SELECT count(*) FROM {table}").fetchone()
            out[table] = int(row[0]) if row else 0
        return out

    def rejects_by_reason(self, limit: int = 20) -> list[tuple[str, str, int]]:
        """(device, reason, rows) of refused rows, most first."""
        return [
            (str(d), str(r), int(n))
            for d, r, n in self.con.execute(
                "SELECT coalesce(device_id, '?'), reason, count(*) n FROM rejects GROUP BY ALL ORDER BY n DESC, 1, 2 LIMIT ?", [limit]
            ).fetchall()
        ]


@dataclass
class _Chunk:
    """Rows of consecutive frames, flattened, with where their files' committed offsets move; ``commit``: a batch ends here."""

    flats: list[Flat]
    offsets: dict[str, int]
    problems: list[FrameProblem]
    frames: int
    rows_read: int
    commit: bool = True
    # the rows ready to store (names to codes, repeats within the chunk dropped), made in the flattening thread
    prepared: list[_Rows] = field(default_factory=list)


# Rows handed from the flattening thread to the storing one at a time: small enough that the two overlap
# within a batch, large enough that DuckDB's per-statement costs stay small.
_CHUNK_ROWS = 200_000
_FLATTENERS = 2  # threads flattening chunks at once (this machine's cores; more only wait for the GIL)


def _prepared_rows(flats: list[Flat]) -> list[_Rows]:
    rows = [
        _prepared(pa.concat_tables([f.windows for f in flats]) if flats else WINDOW_SCHEMA.empty_table(), "window_rows", "start_ns"),
        _prepared(pa.concat_tables([f.events for f in flats]) if flats else EVENT_SCHEMA.empty_table(), "event_rows", "time_ns"),
    ]
    return [r for r in rows if r is not None]


def _flatten_frames(frames: list[tuple[str, Frame]], phases: Phases) -> list[Flat]:
    """Flatten runs of frames of one file and one schema together (one call per run, not per frame)."""
    flats = []
    i = 0
    with phases("flatten"):
        while i < len(frames):
            name, first = frames[i]
            j = i + 1
            while j < len(frames) and frames[j][0] == name and frames[j][1].table.schema.equals(first.table.schema, check_metadata=True):
                j += 1
            run = [frame for _, frame in frames[i:j]]
            table = run[0].table if len(run) == 1 else pa.concat_tables([frame.table for frame in run])
            offsets = np.repeat([frame.offset for frame in run], [frame.table.num_rows for frame in run])
            flats.append(flatten(table, name, offsets, phases))
            i = j
    return flats


def _frames(paths: list[Path], committed: dict[str, int], phases: Phases) -> Iterator[tuple[str, Frame | FrameProblem]]:
    """(file, frame or problem) of every segment file from its committed offset on."""
    for path in paths:
        name = str(path.resolve())
        start = committed.get(name, 0)
        if start and path.stat().st_size < start:
            start = 0  # the file was replaced by a shorter one: read it all again; the key drops what is known
        for item in read_frames(path, start, phases):
            yield name, item


def _chunks(items: Iterator[tuple[str, Frame | FrameProblem]], batch_rows: int, phases: Phases) -> Iterator[_Chunk]:
    """Frames flattened in chunks of about ``_CHUNK_ROWS`` rows, a batch ending every ``batch_rows``.

    Two chunks are flattened at once, in two threads (most of flattening runs in Arrow and numpy, outside
    the GIL), and handed on in file order.
    """
    chunk_rows = min(batch_rows, _CHUNK_ROWS)
    frames: list[tuple[str, Frame]] = []
    offsets: dict[str, int] = {}
    problems: list[FrameProblem] = []
    in_chunk = in_batch = 0

    def chunk_of(frames: list[tuple[str, Frame]], offsets: dict[str, int], problems: list[FrameProblem], rows: int, commit: bool) -> _Chunk:
        flats = _flatten_frames(frames, phases)
        with phases("codes_and_batch_dedupe"):
            prepared = _prepared_rows(flats)
        return _Chunk(flats, offsets, problems, len(frames), rows, commit, prepared)

    with ThreadPoolExecutor(_FLATTENERS, thread_name_prefix="fleet-ingest-flatten") as pool:
        pending: deque[Future[_Chunk]] = deque()
        for name, item in items:
            if isinstance(item, FrameProblem):
                problems.append(item)
                continue
            frames.append((name, item))
            offsets[name] = item.end
            in_chunk += item.table.num_rows
            in_batch += item.table.num_rows
            if in_batch >= batch_rows or in_chunk >= chunk_rows:
                commit = in_batch >= batch_rows
                in_batch = 0 if commit else in_batch
                pending.append(pool.submit(chunk_of, frames, offsets, problems, in_chunk, commit))
                frames, offsets, problems, in_chunk = [], {}, [], 0
                if len(pending) >= _FLATTENERS:
                    yield pending.popleft().result()
        if frames or problems:
            pending.append(pool.submit(chunk_of, frames, offsets, problems, in_chunk, True))
        while pending:
            yield pending.popleft().result()


_END = object()
T = TypeVar("T")


def _ahead(items: Iterator[T], depth: int, name: str) -> Iterator[T]:
    """``items``, made in a thread of their own while the caller works on earlier ones (``depth`` made ahead at most)."""
    handoff: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand(item: object, error: BaseException | None = None) -> bool:
        while not stop.is_set():
            try:
                handoff.put((item, error), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def make() -> None:
        try:
            for item in items:
                if not hand(item):
                    return
            hand(_END)
        except BaseException as exc:  # handed to the caller, raised there
            hand(_END, exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator's own threads stop with it

    worker = threading.Thread(target=make, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item, error = handoff.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _segment_paths(sources: Iterable[str | Path]) -> list[Path]:
    paths: list[Path] = []
    for source in sources:
        p = Path(source)
        if p.is_dir():
            paths += sorted(p.rglob(f"*{SUFFIX}"))
        elif p.is_file():
            paths.append(p)
        else:
            raise DataError(f"{p}: no such segment file or folder")
    return paths
