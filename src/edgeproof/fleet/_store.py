"""The fleet store: telemetry in one DuckDB file, ingested idempotently from segment files, with a journal.

One writer. Devices, boots and label sets are interned to integer keys. Each batch is one transaction
that inserts the new windows and events (a sort of the batch's integer keys drops what repeats within
it, an anti-join on (device, boot, seq) what is already stored), the rows refused and the journal's new
committed offset of every file it read. A ``kill -9`` therefore loses
only an uncommitted batch, which the next run reads again from the journal's offsets; nothing is
counted twice because the key decides, not the journal alone. A batch is acknowledged (``on_commit``)
only after its COMMIT returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgeproof.errors import DataError
from edgeproof.fleet._flatten import EVENT_SCHEMA, REJECT_SCHEMA, WINDOW_SCHEMA, Flat, flatten
from edgeproof.fleet._frames import SUFFIX, Frame, FrameProblem, read_frames
from edgeproof.telemetry._schema import EVENT_TYPES

_SQL_TYPES = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.float64(): "DOUBLE"}


def _ddl(name: str, schema: pa.Schema, extra: str = "") -> str:
    columns = ", ".join(f"{f.name} {_SQL_TYPES[f.type]}" for f in schema)
    return f"CREATE TABLE IF NOT EXISTS {name} ({columns}{extra})"


_LABEL_COLUMNS = tuple(f.name for f in WINDOW_SCHEMA if f.type == pa.string() and f.name not in ("device_id", "boot_id"))
_WINDOW_VALUES = tuple(f.name for f in WINDOW_SCHEMA if f.type == pa.float64())
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

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(code per row, the distinct values) of a string column."""
    encoded = pc.dictionary_encode(column)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


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


def _keyed(con: duckdb.DuckDBPyConnection, table: pa.Table, time_column: str) -> pa.Table:
    """``table`` with devices, boots and label sets replaced by their interned keys; each (device, boot, seq) once."""
    device_codes, device_names = _codes(table.column("device_id"))
    boot_codes, boot_names = _codes(table.column("boot_id"))
    device_key = _intern(con, "devices", "device_key", pa.table({"device_id": device_names}))[device_codes]
    boot_key = _intern(con, "boots", "boot_key", pa.table({"boot_id": boot_names}))[boot_codes]
    # a label set's code: mixed radix over each label's dictionary code
    combined = np.zeros(table.num_rows, dtype=np.int64)
    dictionaries = []
    for name in _LABEL_COLUMNS:
        codes, values = _codes(table.column(name))
        combined = combined * (len(values) + 1) + codes
        dictionaries.append((codes, values))
    distinct, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    label_rows = pa.table({name: values.take(pa.array(codes[first])) for name, (codes, values) in zip(_LABEL_COLUMNS, dictionaries)})
    label_key = _intern(con, "label_sets", "label_key", label_rows)[inverse.ravel()]
    seq = table.column("seq").to_numpy()
    order = np.lexsort((np.arange(table.num_rows), seq, boot_key, device_key))
    repeat = np.zeros(order.size, bool)
    if order.size > 1:
        a, b = order[1:], order[:-1]
        repeat[1:] = (device_key[a] == device_key[b]) & (boot_key[a] == boot_key[b]) & (seq[a] == seq[b])
    keep = np.sort(order[~repeat])
    columns = {"device_key": device_key[keep], "boot_key": boot_key[keep], "seq": seq[keep]}
    rest = table.take(pa.array(keep)) if repeat.any() else table
    out = pa.table({**{k: pa.array(v) for k, v in columns.items()}})
    for name in table.column_names:
        if name == "type":  # an event's type by its index in EVENT_TYPES (flatten refused the others)
            out = out.append_column("type_code", pc.index_in(rest.column(name), pa.array(EVENT_TYPES)).cast(pa.uint8()))
        elif name not in ("device_id", "boot_id", "seq") and name not in _LABEL_COLUMNS:
            out = out.append_column(name, rest.column(name))
    position = 3 + (2 if time_column == "start_ns" else 1)
    return out.add_column(position, "label_key", pa.array(label_key[keep]))


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

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = path
        try:
            self.con = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            raise DataError(f"{path}: cannot open the fleet store ({str(exc).splitlines()[0]})") from exc
        if threads is not None:
            self.con.execute(f"SET threads = {int(threads)}")
        for sql in _SCHEMA_SQL:
            self.con.execute(sql)

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
        (``rejects``) without stopping the run.
        """
        t0 = time.perf_counter()
        report = IngestReport()
        offsets = self.committed_offsets()
        pending: list[Flat] = []
        pending_offsets: dict[str, int] = {}
        pending_problems: list[FrameProblem] = []
        rows = 0
        for path in _segment_paths(sources):
            report.files += 1
            name = str(path.resolve())
            start = offsets.get(name, 0)
            if start and path.stat().st_size < start:
                start = 0  # the file was replaced by a shorter one: read it all again; the key drops what is known
            for item in read_frames(path, start):
                if isinstance(item, FrameProblem):
                    pending_problems.append(item)
                    report.problems.append(item)
                    continue
                frame: Frame = item
                report.frames += 1
                report.rows_read += frame.table.num_rows
                rows += frame.table.num_rows
                pending.append(flatten(frame.table, name, frame.offset))
                pending_offsets[name] = frame.end
                if rows >= batch_rows:
                    self._commit(pending, pending_offsets, pending_problems, report, on_commit)
                    pending, pending_offsets, pending_problems, rows = [], {}, [], 0
        if pending or pending_problems:
            self._commit(pending, pending_offsets, pending_problems, report, on_commit)
        report.seconds = time.perf_counter() - t0
        return report

    def ingest_flat(self, flats: list[Flat], on_commit: Callable[[Commit], None] | None = None) -> IngestReport:
        """Ingest rows already flattened (the simulator's in-memory path); idempotent the same way."""
        report = IngestReport(rows_read=sum(f.windows.num_rows + f.events.num_rows + f.rejects.num_rows for f in flats))
        t0 = time.perf_counter()
        self._commit(flats, {}, [], report, on_commit)
        report.seconds = time.perf_counter() - t0
        return report

    def _commit(
        self,
        flats: list[Flat],
        offsets: dict[str, int],
        problems: list[FrameProblem],
        report: IngestReport,
        on_commit: Callable[[Commit], None] | None,
    ) -> None:
        windows = pa.concat_tables([f.windows for f in flats]) if flats else WINDOW_SCHEMA.empty_table()
        events = pa.concat_tables([f.events for f in flats]) if flats else EVENT_SCHEMA.empty_table()
        rejects = pa.concat_tables([f.rejects for f in flats]) if flats else REJECT_SCHEMA.empty_table()
        read = windows.num_rows + events.num_rows
        con = self.con
        registered: list[str] = []

        def register(name: str, table: pa.Table) -> None:
            con.register(name, table)
            registered.append(name)

        cutoff = self._meta("retained_from_ns", -(1 << 62))
        con.begin()
        try:
            n_windows = n_events = 0
            if windows.num_rows:
                keyed = _keyed(con, windows, "start_ns")
                register("incoming_windows", keyed)
                n_windows = _insert_new(con, "window_rows", "incoming_windows", keyed, "start_ns", cutoff)
            if events.num_rows:
                keyed = _keyed(con, events, "time_ns")
                register("incoming_events", keyed)
                n_events = _insert_new(con, "event_rows", "incoming_events", keyed, "time_ns", cutoff)
            register("incoming_rejects", rejects)
            con.execute("INSERT INTO rejects SELECT * FROM incoming_rejects")
            if problems:
                con.executemany("INSERT INTO frame_problems VALUES (?, ?, ?)", [(str(p.path), p.offset, p.what) for p in problems])
            if offsets:
                now = time.time_ns()
                con.executemany(
                    "INSERT OR REPLACE INTO ingest_journal VALUES (?, ?, ?)", [(name, end, now) for name, end in offsets.items()]
                )
            con.commit()
        except BaseException:
            con.rollback()
            raise
        finally:
            for name in registered:
                con.unregister(name)
        commit = Commit(
            offsets=dict(offsets),
            windows=n_windows,
            events=n_events,
            duplicates=read - n_windows - n_events,
            rejected=rejects.num_rows,
        )
        report.windows += commit.windows
        report.events += commit.events
        report.duplicates += commit.duplicates
        report.rejected += commit.rejected
        if on_commit is not None:
            on_commit(commit)

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
