"""The team's profiling notebook: every run appended to a DuckDB file, listed with what it changed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import duckdb

from edgeproof.figures import figures_of
from edgeproof.records import RunRecord, upgrade, validated

DEFAULT_DIR = ".edgeproof"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    created_at TIMESTAMPTZ,
    kind VARCHAR,
    model_name VARCHAR,
    model_sha256 VARCHAR,
    variant VARCHAR,
    target VARCHAR,
    provider VARCHAR,
    threads INTEGER,
    scenario VARCHAR,
    p50_ms DOUBLE,
    p95_ms DOUBLE,
    p99_ms DOUBLE,
    peak_rss_mib DOUBLE,
    load_time_ms DOUBLE,
    energy_mj DOUBLE,
    energy_provenance VARCHAR,
    worst_drop_pp DOUBLE,
    record JSON
)
"""

# Figures listed by `edgeproof history`, with the column each lives in.
FIGURES = ("p50_ms", "p95_ms", "peak_rss_mib", "load_time_ms", "energy_mj", "worst_drop_pp")


def history_path(root: str | Path | None = None) -> Path:
    base = Path(root) if root else Path(os.environ.get("EDGEPROOF_HOME", DEFAULT_DIR))
    return base / "history.duckdb"


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute(_SCHEMA)
    return con


def _variant_label(record: RunRecord) -> str:
    return record.variant.name if record.variant is not None else "as-given"


def append(record: RunRecord, root: str | Path | None = None) -> Path:
    """Add one run to the history (idempotent on run_id)."""
    path = history_path(root)
    figures = figures_of(record)
    row = (
        record.run_id,
        record.created_at,
        record.kind,
        record.model.name,
        record.model.sha256,
        _variant_label(record),
        record.target.id + (f"@{record.target.power_mode}" if record.target.power_mode else ""),
        record.settings.provider,
        record.settings.intra_op_threads,
        record.scenario.name + (f":{record.scenario.rate_hz:g}" if record.scenario.rate_hz else ""),
        figures["p50_ms"].value,
        figures["p95_ms"].value,
        figures["p99_ms"].value,
        figures["peak_rss_mib"].value,
        figures["load_time_ms"].value,
        figures["energy_mj_per_inference"].value,
        figures["energy_mj_per_inference"].provenance,
        figures["accuracy_drop_pp"].value,
        record.model_dump_json(),
    )
    con = _connect(path)
    try:
        con.execute("INSERT OR REPLACE INTO runs VALUES (" + ",".join("?" * len(row)) + ")", row)
    finally:
        con.close()
    return path


def _query(root: str | Path | None, model: str | None, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
    """Rows of ``sql`` (whose ``{where}`` is filled with the model filter) as dicts; none without a history."""
    path = history_path(root)
    if not path.exists():
        return []
    con = _connect(path)
    try:
        cur = con.execute(sql.format(where="WHERE model_name = ?" if model else ""), [*([model] if model else []), *params])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        con.close()


def list_runs(root: str | Path | None = None, model: str | None = None, limit: int = 50) -> list[dict]:
    """Runs newest first, each with the relative change of every figure vs the previous run of the
    same kind (measured or simulated), model and variant on the same target (power mode included),
    settings and scenario (None where there is no earlier run)."""
    lags = ",\n".join(
        f"lag({f}) OVER (PARTITION BY kind, model_name, variant, target, provider, threads, scenario ORDER BY created_at, run_id) AS prev_{f}"
        for f in FIGURES
    )
    sql = f"""
        SELECT run_id, created_at, kind, model_name, variant, target, provider, threads, scenario,
               {", ".join(FIGURES)}, energy_provenance, {lags}
        FROM runs {{where}}
        ORDER BY created_at DESC, run_id DESC
        LIMIT ?
    """
    rows = _query(root, model, sql, (limit,))
    for row in rows:
        row["changes"] = {
            f: (row[f] / row[f"prev_{f}"] - 1.0) if row[f] is not None and row[f"prev_{f}"] not in (None, 0) else None for f in FIGURES
        }
    return rows


def load_runs(root: str | Path | None = None, model: str | None = None) -> list[RunRecord]:
    """The stored records themselves, oldest first; rows written by an older edgeproof are read
    through the same upgrade as record files (``records.upgrade``)."""
    rows = _query(root, model, "SELECT run_id, record FROM runs {where} ORDER BY created_at, run_id")
    where = history_path(root)
    return [validated(RunRecord, upgrade(RunRecord, json.loads(r["record"])), f"{where}: run {r['run_id']}") for r in rows]
