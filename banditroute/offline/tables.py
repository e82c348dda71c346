"""Reading the two kinds of table the offline tools take: outcome tables and decision logs.

Both are Parquet, or JSON Lines for any file ending in ``.jsonl``/``.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq


def _is_jsonl(path: Path) -> bool:
    return path.suffix in (".jsonl", ".json")


def read_table(path: str | Path, what: str, error: type[Exception], required: tuple[str, ...],
               rows: str) -> pa.Table:
    """The whole table at ``path``, with at least one of its ``rows`` and every ``required`` column.

    A missing, unreadable, incomplete or empty file raises ``error`` naming ``what``.
    """
    path = Path(path)
    if not path.exists():
        raise error(f"{what} {path} does not exist")
    try:
        t = pj.read_json(path) if _is_jsonl(path) else pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise error(f"cannot read {what} {path}: {err}") from None
    missing = [c for c in required if c not in t.column_names]
    if missing:
        raise error(f"{path}: missing columns {', '.join(missing)} (need {', '.join(required)})")
    if t.num_rows == 0:
        raise error(f"{path}: the {what} has no {rows}")
    return t


def column_names(path: str | Path) -> list[str]:
    """The columns of the table at ``path``, reading only its schema (or first line); [] if unreadable."""
    path = Path(path)
    try:
        if _is_jsonl(path):
            with path.open() as fh:
                return list(json.loads(fh.readline() or "{}"))
        return pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError, ValueError):
        return []
