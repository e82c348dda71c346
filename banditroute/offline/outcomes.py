"""Full-information outcome tables: one row per (prompt, model).

Columns: ``prompt_id, prompt, model, quality`` (in [0, 1]), ``cost_usd`` (>= 0), ``task``,
``split`` (``train`` or ``test``). :func:`load_outcomes` validates the table and pivots it into
dense ``(prompts x models)`` quality and cost matrices; any defect raises :class:`OutcomeTableError`
with a message that names the column and, where it helps, an offending row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from banditroute.offline.tables import read_table

REQUIRED = ("prompt_id", "prompt", "model", "quality", "cost_usd", "task", "split")


class OutcomeTableError(ValueError):
    """An outcome table is missing, unreadable or malformed."""


@dataclass
class Outcomes:
    """A validated outcome table, pivoted: row i is ``prompt_ids[i]``, column k is ``models[k]``."""

    prompt_ids: np.ndarray
    prompts: list[str]
    tasks: np.ndarray
    splits: np.ndarray
    models: list[str]
    quality: np.ndarray
    cost: np.ndarray

    def subset(self, split: str) -> Outcomes:
        idx = np.flatnonzero(self.splits == split)
        return Outcomes(self.prompt_ids[idx], [self.prompts[i] for i in idx], self.tasks[idx],
                        self.splits[idx], self.models, self.quality[idx], self.cost[idx])

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def reference(self) -> dict:
        """The best single model (by mean quality, ties to the cheaper) and the oracle's quality."""
        mean_q = self.quality.mean(axis=0)
        total_c = self.cost.sum(axis=0)
        best = min(range(len(self.models)), key=lambda k: (-mean_q[k], total_c[k]))
        return {
            "best_model": self.models[best],
            "best_quality": float(mean_q[best]),
            "best_cost_usd": float(total_c[best]),
            "oracle_quality": float(self.quality.max(axis=1).mean()),
        }


def load_outcomes(path: str | Path) -> Outcomes:
    """Read and validate an outcome table (Parquet, or JSON Lines)."""
    path = Path(path)
    t = read_table(path, "outcome table", OutcomeTableError, REQUIRED, "rows")
    cols = {}
    for c in ("prompt_id", "prompt", "model", "task", "split"):
        col = t.column(c)
        if col.null_count:
            raise OutcomeTableError(f"{path}: column {c} has {col.null_count} null values")
        cols[c] = np.asarray(pc.cast(col, pa.string()).to_pylist(), dtype=object)
    for c in ("quality", "cost_usd"):
        try:
            cols[c] = np.asarray(pc.cast(t.column(c), pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise OutcomeTableError(f"{path}: column {c} must be numeric") from None
    q, c = cols["quality"], cols["cost_usd"]
    bad = np.flatnonzero(~np.isfinite(q) | (q < 0) | (q > 1))
    if bad.size:
        raise OutcomeTableError(f"{path}: quality must be in [0, 1]; row {bad[0]} has {q[bad[0]]}")
    bad = np.flatnonzero(~np.isfinite(c) | (c < 0))
    if bad.size:
        raise OutcomeTableError(f"{path}: cost_usd must be finite and >= 0; row {bad[0]} has {c[bad[0]]}")
    bad_split = sorted(set(cols["split"]) - {"train", "test"})
    if bad_split:
        raise OutcomeTableError(f"{path}: split must be 'train' or 'test', found {bad_split}")
    if any(not p.strip() for p in cols["prompt"]):
        raise OutcomeTableError(f"{path}: column prompt has empty prompts")

    models = sorted(set(cols["model"]))
    ids, first = np.unique(cols["prompt_id"], return_index=True)
    order = np.sort(first)  # keep the file's prompt order
    ids = cols["prompt_id"][order]
    row_of = {pid: i for i, pid in enumerate(ids)}
    col_of = {m: k for k, m in enumerate(models)}
    Q = np.full((len(ids), len(models)), np.nan)
    C = np.full((len(ids), len(models)), np.nan)
    ri = np.fromiter((row_of[p] for p in cols["prompt_id"]), dtype=np.intp, count=len(q))
    ki = np.fromiter((col_of[m] for m in cols["model"]), dtype=np.intp, count=len(q))
    if len(set(zip(ri.tolist(), ki.tolist()))) != len(q):
        raise OutcomeTableError(f"{path}: duplicate (prompt_id, model) rows")
    Q[ri, ki] = q
    C[ri, ki] = c
    holes = np.argwhere(np.isnan(Q))
    if holes.size:
        i, k = holes[0]
        raise OutcomeTableError(
            f"{path}: not full information: prompt {ids[i]!r} has no row for model {models[k]!r} "
            f"({len(holes)} (prompt, model) pairs missing)"
        )
    return Outcomes(ids, list(cols["prompt"][order]), cols["task"][order], cols["split"][order], models, Q, C)
