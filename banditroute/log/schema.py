"""The decision log schema, written by the simulator and the server and read by replay.

One row per decision, with the feedback joined to it:

====================  ========================  =================================================
column                type                      meaning
====================  ========================  =================================================
decision_id           string                    unique id returned by ``/route``
ts                    timestamp[us, UTC]        when the decision was taken (int microseconds in rows)
policy                string                    policy that decided (``lints``, ``fixed:M``, ...)
feature_version       string                    :attr:`Featurizer.version` of ``x``
x                     list<float64>             feature vector
input_tokens          float64                   estimated input tokens of the prompt
prompt_hash           string                    SHA-256 of the prompt (hex)
prompt                string (nullable)         the prompt itself, only where configured
eligible              list<string>              models the policy chose among
probabilities         list<float64>             the policy's probabilities, aligned with eligible
chosen                string                    the sampled model
propensity            float64                   probability of ``chosen`` (exact, > 0)
cost_weight           float64                   quality points per USD used for the decision
pred_quality          list<float64>             predicted quality, aligned with eligible
pred_cost             list<float64>             predicted cost in USD, aligned with eligible
quality               float64 (nullable)        weighted mean of the normalised feedback signals
cost_usd              float64 (nullable)        reported or derived cost of the call
n_signals             int32                     number of quality signals received
====================  ========================  =================================================
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("policy", pa.string()),
        ("feature_version", pa.string()),
        ("x", pa.list_(pa.float64())),
        ("input_tokens", pa.float64()),
        ("prompt_hash", pa.string()),
        ("prompt", pa.string()),
        ("eligible", pa.list_(pa.string())),
        ("probabilities", pa.list_(pa.float64())),
        ("chosen", pa.string()),
        ("propensity", pa.float64()),
        ("cost_weight", pa.float64()),
        ("pred_quality", pa.list_(pa.float64())),
        ("pred_cost", pa.list_(pa.float64())),
        ("quality", pa.float64()),
        ("cost_usd", pa.float64()),
        ("n_signals", pa.int32()),
    ]
)
COLUMNS = tuple(SCHEMA.names)


def to_table(rows: list[dict]) -> pa.Table:
    """Rows (dicts keyed by :data:`COLUMNS`) as an Arrow table with the log schema."""
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write_log(rows: list[dict], path: str | Path) -> None:
    """Write rows as Parquet (``.parquet``) or JSON Lines (any other suffix)."""
    write_table(to_table(rows), path)


def write_table(table: pa.Table, out, fmt: str | None = None) -> None:
    """Write a decision-log table to a path or a binary file object.

    ``fmt`` is ``parquet`` or ``jsonl``; by default a path ending in ``.parquet`` gives Parquet and
    anything else JSON Lines.
    """
    if fmt is None:
        fmt = "parquet" if str(out).endswith(".parquet") else "jsonl"
    if fmt == "parquet":
        pq.write_table(table, out, compression="zstd")
        return
    lines = []
    for row in table.to_pylist():
        row["ts"] = row["ts"].isoformat()
        lines.append(json.dumps(row) + "\n")
    data = "".join(lines).encode("utf-8")
    if hasattr(out, "write"):
        out.write(data)
    else:
        Path(out).write_bytes(data)
