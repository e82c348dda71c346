"""Repair a log whose write-ahead log (WAL) is damaged, keeping every transaction before the damage.

DuckDB writes each committed transaction to ``PATH.wal`` before it reaches the database file, and folds
the WAL in at a checkpoint. A WAL cut short (a crash in the middle of a write) is handled by DuckDB
itself: it replays the complete transactions and drops the torn tail. A WAL damaged in the middle (a
bad sector, a bit flip) makes DuckDB refuse the whole database: "Corrupt WAL file: entry at byte
position N computed checksum ... does not match". The WAL up to byte N is intact, so
:func:`repair_log` keeps the damaged WAL aside (``PATH.wal.corrupt-<time>``), puts back its first N
bytes, which DuckDB then reads as a WAL cut short, opens the database and checkpoints it. The
transactions from the damaged one on are lost; everything before it is kept.

The service's snapshot (``PATH.snapshot``) may have learned from the lost feedback, so it is set aside
too (``PATH.snapshot.stale-<time>``): the next start rebuilds the state from what the log holds, so
that nothing it does not hold stays learned.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import duckdb

CORRUPT_AT = re.compile(r"Corrupt WAL file: entry at byte position (\d+)")
WAL_REPLAY = "Failure while replaying WAL file"


def wal_damage(err: BaseException) -> int | None:
    """The byte position of the damaged entry DuckDB reports in ``err``; -1 when it names a WAL it
    could not replay but no position; None when the error is not about the WAL."""
    text = str(err)
    match = CORRUPT_AT.search(text)
    if match:
        return int(match.group(1))
    return -1 if WAL_REPLAY in text else None


def _counts(con) -> dict[str, int]:
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("decisions", "feedback", "calls")
            if t in tables}


def repair_log(path: str) -> dict:
    """Open the log at ``path``, repairing a damaged WAL if that is why it does not open (see the
    module's docstring). Returns what was done: ``repaired`` (False: it opened as it was), the row
    counts, and for a repair the WAL's size, the bytes kept and where the damaged WAL and the stale
    snapshot were put. Raises ``ValueError`` when the log cannot be opened for another reason."""
    if not os.path.exists(path):
        raise ValueError(f"no log at {path}")
    try:
        con = duckdb.connect(path)
    except duckdb.Error as err:
        position = wal_damage(err)
        if position is None:
            raise ValueError(f"cannot open the log {path}, and not because of its write-ahead log: {err}") from None
    else:
        try:
            return {"repaired": False, "rows": _counts(con)}
        finally:
            con.close()
    wal = Path(path + ".wal")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = wal.with_name(f"{wal.name}.corrupt-{stamp}")
    wal.rename(kept)
    size = kept.stat().st_size
    salvaged = 0
    if position > 0:
        with kept.open("rb") as src, wal.open("wb") as dst:
            dst.write(src.read(position))
            dst.flush()
            os.fsync(dst.fileno())
        salvaged = position
    try:
        con = duckdb.connect(path)
    except duckdb.Error:  # the intact part does not replay either: the database file as of its last checkpoint
        wal.unlink(missing_ok=True)
        salvaged = 0
        con = duckdb.connect(path)
    try:
        con.execute("CHECKPOINT")
        rows = _counts(con)
    finally:
        con.close()
    snapshot = Path(path + ".snapshot")
    stale = None
    if snapshot.exists():
        stale = snapshot.with_name(f"{snapshot.name}.stale-{stamp}")
        snapshot.rename(stale)
    return {"repaired": True, "rows": rows, "wal_bytes": size, "kept_bytes": salvaged, "lost_bytes": size - salvaged,
            "damaged_wal": str(kept), "stale_snapshot": None if stale is None else str(stale)}
