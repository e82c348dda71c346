"""Writing the joined decision log (:data:`~banditroute.log.schema.JOINED_LOG_SQL`) to a file.

Parquet (zstd) is written batch by batch through pyarrow with the exact :data:`LOG_SCHEMA` types;
JSON Lines by DuckDB's own ``COPY ... (FORMAT json)``. Neither holds the whole log in memory. The
server's ``/export``, ``banditroute export`` and ``simulate --log`` all come through here.

A file is written whole or not at all: into a sibling ``.partial`` file, renamed once complete, removed
when the writing fails (a full disk, say), which raises :class:`ExportError`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from banditroute.log.schema import JOINED_LOG_SQL, LOG_SCHEMA

FORMATS = ("parquet", "jsonl")
BATCH_ROWS = 65_536


class ExportError(OSError):
    """The log could not be written to its file; nothing is left at the path."""


def format_of(path: str | Path) -> str:
    """``parquet`` for a path ending in ``.parquet``, ``jsonl`` otherwise."""
    return "parquet" if str(path).endswith(".parquet") else "jsonl"


def export_log(con, path: str | Path, fmt: str | None = None) -> int:
    """Write the joined decision log of connection ``con`` to ``path``; returns the number of decisions."""
    fmt = fmt or format_of(path)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    partial = f"{path}.partial"
    try:
        n = _write(con, partial, fmt)
        os.replace(partial, path)
    except (OSError, duckdb.IOException) as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise ExportError(f"cannot write {path}: {failure_reason(err)}") from None
    return n


def _write(con, path: str, fmt: str) -> int:
    if fmt == "jsonl":
        escaped = path.replace("'", "''")
        con.execute(f"COPY ({JOINED_LOG_SQL}) TO '{escaped}' (FORMAT json)")
        return int(con.execute("SELECT count(*) FROM decisions").fetchone()[0])
    n = 0
    reader = con.sql(JOINED_LOG_SQL).to_arrow_reader(BATCH_ROWS)
    with pq.ParquetWriter(path, LOG_SCHEMA, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch.cast(LOG_SCHEMA))
            n += batch.num_rows
    return n


def failure_reason(err: Exception) -> str:
    """What went wrong with a file's writing, in a line (DuckDB's message carries a JSON description)."""
    if isinstance(err, OSError) and err.errno:  # pyarrow's strerror adds its own words around the system's
        return os.strerror(err.errno).lower()
    text = str(err)
    if "No space left on device" in text:
        return "no space left on device"
    return text.splitlines()[0][:200] if text else type(err).__name__


def export_db(path: str, out: str | Path) -> int:
    """Export a stopped server's database (opened read-only: DuckDB allows one writing process)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no database at {path}")
    try:
        con = duckdb.connect(path, read_only=True)
    except duckdb.IOException as err:
        raise RuntimeError(f"cannot open {path} (is a server running on it? use GET /export): {err}") from None
    try:
        return export_log(con, out)
    finally:
        con.close()
