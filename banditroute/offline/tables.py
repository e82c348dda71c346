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


def read_table(path: str | Path, what: str, error: type[Exception]) -> pa.Table:
    """The whole table at ``path``; a missing or unreadable file raises ``error`` naming ``what``."""
    path = Path(path)
    if not path.exists():
        raise error(f"{what} {path} does not exist")
    try:
        return pj.read_json(path) if _is_jsonl(path) else pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise error(f"cannot read {what} {path}: {err}") from None


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
