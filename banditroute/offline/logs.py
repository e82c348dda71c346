"""Decision logs as replay reads them, in bounded memory whatever their size.

:func:`load_log` validates a log (``simulate --log``, ``export``; Parquet or JSON Lines) in one pass
over its small columns, batch by batch, and keeps per decision only what every estimator needs: the
chosen model, its propensity, the outcomes, the eligible models and which of them the logging policy
almost never chose (:class:`Log`). The features, the one wide column (``x``, about 150 numbers a
decision), are held in memory only up to :data:`IN_MEMORY_BYTES` (about 200,000 decisions); beyond,
:meth:`Log.feature_chunks` streams them from the file whenever a pass needs them (the candidate's
probabilities, the reward models; the file must stay in place while the log is used). Features are
recomputed from the logged prompts when the log's feature version is not the one replay uses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from banditroute.core.features import Featurizer
from banditroute.core.types import Context
from banditroute.log.schema import LOG_SCHEMA

REQUIRED = ("decision_id", "feature_version", "x", "input_tokens", "eligible", "probabilities", "chosen",
            "propensity", "cost_weight", "quality", "cost_usd")
SMALL_COLUMNS = ("feature_version", "input_tokens", "eligible", "probabilities", "chosen", "propensity",
                 "cost_weight", "quality", "cost_usd")
BATCH_ROWS = 65_536
IN_MEMORY_BYTES = 256 << 20  # features up to this size are held in memory; larger logs stream them
LOW_SUPPORT = 1e-3  # a logged probability below this gives importance weights too large to trust


class LogError(ValueError):
    """A decision log that cannot be replayed (unreadable, malformed, other features)."""


@dataclass
class Log:
    """A validated decision log: per-decision arrays, features streamed on demand.

    ``models`` is the union of eligible models in order of first appearance; ``eligible`` and ``rare``
    (logged probability below :data:`LOW_SUPPORT`) are (n, K) booleans over them.
    """

    models: list[str]
    input_tokens: np.ndarray
    eligible: np.ndarray
    rare: np.ndarray
    chosen: np.ndarray  # (n,) index into models
    propensity: np.ndarray
    cost_weight: np.ndarray
    quality: np.ndarray  # nan where missing
    cost: np.ndarray  # nan where missing
    policy: str
    featurizer: Featurizer
    path: Path | None = None
    recompute: bool = False  # features from the logged prompts rather than the logged x
    # a gateway fallback's row: the row of the decision whose failed call it took over (-1: none)
    replaces: np.ndarray | None = None
    X_memory: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.chosen)

    @property
    def dim(self) -> int:
        return self.featurizer.dim

    def feature_chunks(self, rows: int = BATCH_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, features of the following rows) over the whole log, in order, a chunk at a time."""
        if self.X_memory is not None:
            for start in range(0, len(self), rows):
                yield start, self.X_memory[start:start + rows]
            return
        start = 0
        column = "prompt" if self.recompute else "x"
        for batch in _batches(self.path, (column,), rows):
            if self.recompute:
                X = self.featurizer.transform_many(batch.column(0).to_pylist())
            else:
                X = _matrix(batch.column(0), self.dim, self.path, start)
            yield start, X
            start += len(X)

    @property
    def X(self) -> np.ndarray:
        """Every decision's features in memory at once: for small logs and tests only."""
        return np.vstack([X for _, X in self.feature_chunks()]) if len(self) else np.zeros((0, self.dim))

    def context(self, i: int, X: np.ndarray) -> Context:
        """Decision i's context, from a chunk ``X`` holding its features at row i - (chunk start)."""
        return Context(X, float(self.input_tokens[i]))


def load_log(path: str | Path, featurizer: Featurizer | None = None, rows: int = BATCH_ROWS) -> Log:
    """Read and validate a decision log (Parquet or JSON Lines), ``rows`` decisions at a time.

    Features are the logged ``x`` under the version the log was written with (v1 logs stay replayable);
    a log of several versions, or of one this installation cannot compute, is recomputed from its logged
    prompts with ``featurizer`` (default: the current features), if it holds them.
    """
    path = Path(path)
    if not path.exists():
        raise LogError(f"decision log {path} does not exist")
    names = _column_names(path)
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise LogError(f"{path}: missing columns {', '.join(missing)} (need {', '.join(REQUIRED)})")
    columns = SMALL_COLUMNS + (("policy",) if "policy" in names else ())
    models: list[str] = []
    index: dict[str, int] = {}
    versions: set[str] = set()
    parts: dict[str, list] = {k: [] for k in ("tokens", "chosen", "prop", "cw", "q", "c", "eligible", "rare")}
    policy = None
    n = 0
    for batch in _batches(path, columns, rows):
        logged_with = batch.column("feature_version")
        if logged_with.null_count:
            raise LogError(f"{path}: row {n + _first_null(logged_with)}: feature_version is missing")
        versions.update(v for v in pc.unique(logged_with).to_pylist())
        if policy is None and "policy" in columns and batch.num_rows:
            policy = batch.column("policy")[0].as_py()
        _validate_batch(batch, n, path, models, index, parts)
        n += batch.num_rows
    if n == 0:
        raise LogError(f"{path}: the decision log has no decisions")
    if featurizer is None and len(versions) == 1:  # replay under the features the log was written with
        try:
            featurizer = Featurizer.from_version(next(iter(versions)))
        except ValueError:
            pass
    f = featurizer or Featurizer()
    recompute = versions != {f.version}
    if recompute and not _has_prompts(path, names, rows):
        raise LogError(f"{path}: logged with features {sorted(versions)}, this version computes {f.version}, "
                       "and the log does not hold every prompt to recompute them from (prompts are logged with "
                       "storage.store_prompts, and erased after storage.retention_days)")
    K = len(models)
    whole = {}
    for key in list(parts):  # one array at a time, its batches freed as it is joined
        chunks = parts.pop(key)
        if key in ("eligible", "rare"):  # batches read before a model first appeared lack its column
            whole[key] = np.zeros((n, K), dtype=bool)
            start = 0
            for c in chunks:
                whole[key][start:start + len(c), :c.shape[1]] = c
                start += len(c)
        else:
            whole[key] = np.concatenate(chunks)
        del chunks
    log = Log(models, whole["tokens"], whole["eligible"], whole["rare"], whole["chosen"], whole["prop"], whole["cw"],
              whole["q"], whole["c"], policy or "unknown", f, path=path, recompute=recompute)
    if "replaces" in names:
        log.replaces = _fallback_rows(path, rows, n)
    if n * f.dim * 8 <= IN_MEMORY_BYTES:  # small enough: read (or recompute) the features once, keep them
        log.X_memory = log.X
    elif not recompute:  # the features' shape is checked up front; later batches are checked as they stream
        next(log.feature_chunks(min(rows, 1024)))
    return log


def median_cost_spread(path: str | Path) -> float | None:
    """The median over a log's decisions of the predicted price spread of their eligible models
    (``pred_cost``: most expensive minus cheapest), the spread that :mod:`banditroute.core.preference`
    measures a cost preference against; None when the log has no predicted costs."""
    path = Path(path)
    if "pred_cost" not in _column_names(path):
        return None
    spreads = []
    for batch in _batches(path, ("pred_cost",), 65_536):
        col = batch.column(0)
        if col.null_count:
            return None
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        values = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(float)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        keep = lengths > 0
        spreads.append(np.maximum.reduceat(values, starts[keep]) - np.minimum.reduceat(values, starts[keep]))
    spread = float(np.median(np.concatenate(spreads))) if spreads else 0.0
    return spread if spread > 0 else None


def _fallback_rows(path: Path, rows: int, n: int) -> np.ndarray | None:
    """For each decision, the row of the decision its call replaced (gateway fallbacks), else -1; None
    when the log has no fallback. Two passes over two narrow columns; the ids kept in memory are
    only those of replaced decisions."""
    replacing: dict[int, str] = {}
    start = 0
    for batch in _batches(path, ("replaces",), rows):
        col = batch.column(0)
        if col.null_count < len(col):
            for i in np.flatnonzero(col.is_valid().to_numpy(zero_copy_only=False)).tolist():
                replacing[start + i] = col[i].as_py()
        start += len(col)
    if not replacing:
        return None
    wanted = set(replacing.values())
    row_of: dict[str, int] = {}
    start = 0
    for batch in _batches(path, ("decision_id",), rows):
        mask = pc.is_in(batch.column(0), value_set=pa.array(list(wanted), pa.string()))
        for i in np.flatnonzero(mask.to_numpy(zero_copy_only=False)).tolist():
            row_of[batch.column(0)[i].as_py()] = start + i
        start += batch.num_rows
    out = np.full(n, -1, dtype=np.int64)
    for row, replaced in replacing.items():
        j = row_of.get(replaced)
        if j is None:
            raise LogError(f"{path}: row {row} replaces decision {replaced!r}, which is not in the log")
        if j >= row:
            raise LogError(f"{path}: row {row} replaces decision {replaced!r} logged after it")
        out[row] = j
    return out


def _validate_batch(batch: pa.RecordBatch, offset: int, path: Path, models: list[str], index: dict[str, int],
                    parts: dict[str, list]) -> None:
    """Check one batch's decisions and append their arrays to ``parts`` (models grow into ``models``)."""
    m = batch.num_rows
    el, probs = batch.column("eligible"), batch.column("probabilities")
    lengths = _lengths(el, path, "eligible", offset)
    bad = np.flatnonzero(lengths != _lengths(probs, path, "probabilities", offset))
    if bad.size:
        raise LogError(f"{path}: row {offset + bad[0]}: eligible and probabilities differ in length")
    names = pc.list_flatten(el)
    for name in pc.unique(names).to_pylist():
        if name not in index:
            index[name] = len(models)
            models.append(name)
    value_set = pa.array(models)
    arm = pc.index_in(names, value_set=value_set).to_numpy(zero_copy_only=False).astype(np.int32)
    p = pc.list_flatten(probs).to_numpy(zero_copy_only=False).astype(float)
    row = np.repeat(np.arange(m), lengths)
    chosen = pc.fill_null(pc.index_in(batch.column("chosen"), value_set=value_set), -1)
    chosen = chosen.to_numpy(zero_copy_only=False).astype(np.int32)
    hit = arm == chosen[row]
    hits = np.bincount(row[hit], minlength=m)
    bad = np.flatnonzero(hits == 0)
    if bad.size:
        raise LogError(f"{path}: row {offset + bad[0]}: chosen model {batch.column('chosen')[int(bad[0])].as_py()!r} "
                       "is not among the eligible models")
    prop = _floats(batch.column("propensity"))
    bad = np.flatnonzero(~np.isfinite(prop) | (prop <= 0) | (prop > 1))
    if bad.size:
        raise LogError(f"{path}: propensities must be in (0, 1]; row {offset + bad[0]} has {prop[bad[0]]}")
    logged = np.zeros(m)
    np.add.at(logged, row[hit], p[hit])
    if not np.allclose(logged, prop, rtol=1e-6, atol=1e-12):
        raise LogError(f"{path}: propensity differs from the logged probability of the chosen model")
    if not np.allclose(np.bincount(row, weights=p, minlength=m), 1.0, atol=1e-6):
        raise LogError(f"{path}: logged probabilities must sum to 1 per decision")
    q, c = _floats(batch.column("quality")), _floats(batch.column("cost_usd"))  # NaN: no feedback (yet)
    tokens, cw = _floats(batch.column("input_tokens")), _floats(batch.column("cost_weight"))
    for name, values, bad in (("quality", q, (q < 0) | (q > 1)), ("cost_usd", c, (c < 0) | np.isinf(c)),
                              ("input_tokens", tokens, ~np.isfinite(tokens) | (tokens < 0)),
                              ("cost_weight", cw, ~np.isfinite(cw) | (cw < 0))):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            need = "in [0, 1]" if name == "quality" else "a finite number >= 0"
            raise LogError(f"{path}: row {offset + i}: {name} must be {need}, got {values[i]}")
    eligible = np.zeros((m, len(models)), dtype=bool)
    eligible[row, arm] = True
    rare = np.zeros((m, len(models)), dtype=bool)
    rare[row, arm] = p < LOW_SUPPORT
    for key, value in (("tokens", tokens), ("chosen", chosen), ("prop", prop),
                       ("cw", cw), ("q", q), ("c", c), ("eligible", eligible),
                       ("rare", rare)):
        parts[key].append(value)


def _lengths(column: pa.Array, path: Path, name: str, offset: int) -> np.ndarray:
    if column.null_count:
        raise LogError(f"{path}: row {offset + _first_null(column)}: {name} is missing")
    return pc.list_value_length(column).to_numpy(zero_copy_only=False)


def _first_null(column: pa.Array) -> int:
    return int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])


def _floats(column: pa.Array) -> np.ndarray:
    """A numeric column as float64, nulls as NaN."""
    if pa.types.is_null(column.type):
        return np.full(len(column), np.nan)
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)


def _matrix(column: pa.Array, dim: int, path: Path, offset: int) -> np.ndarray:
    """A list column of ``dim`` numbers per row as an (n, dim) float matrix."""
    lengths = _lengths(column, path, "x", offset)
    bad = np.flatnonzero(lengths != dim)
    if bad.size:
        raise LogError(f"{path}: x must have {dim} features per decision (row {offset + bad[0]} has {lengths[bad[0]]})")
    values = pc.list_flatten(column)
    return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False).reshape(len(column), dim)


def _has_prompts(path: Path, names: list[str], rows: int) -> bool:
    if "prompt" not in names:
        return False
    for batch in _batches(path, ("prompt",), rows):
        col = batch.column(0)
        if col.null_count or (len(col) and pc.min(pc.utf8_length(col)).as_py() == 0):
            return False
    return True


def _is_jsonl(path: Path) -> bool:
    return path.suffix in (".jsonl", ".json")


def _column_names(path: Path) -> list[str]:
    try:
        if _is_jsonl(path):
            with path.open() as fh:
                first = json.loads(fh.readline() or "{}")
            if not isinstance(first, dict):
                raise ValueError("the first line is not a JSON object")
            return list(first)
        return pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError, ValueError) as err:
        raise LogError(f"cannot read decision log {path}: {err}") from None


def _batches(path: Path, columns: tuple[str, ...], rows: int) -> Iterator[pa.RecordBatch]:
    """The log's ``columns``, ``rows`` decisions at a time (a JSON Lines log is parsed block by block)."""
    try:
        if _is_jsonl(path):
            names = set(_column_names(path))
            # typed up front: a first block whose outcomes are all null must not fix their type as null
            schema = pa.schema([f for f in LOG_SCHEMA if f.name in names and f.name != "ts"])
            reader = pj.open_json(path, read_options=pj.ReadOptions(block_size=max(1 << 20, rows * 512)),
                                  parse_options=pj.ParseOptions(explicit_schema=schema,
                                                                unexpected_field_behavior="infer"))
            for batch in reader:
                yield batch.select(list(columns))
            return
        yield from pq.ParquetFile(path).iter_batches(batch_size=rows, columns=list(columns))
    except (pa.ArrowInvalid, OSError) as err:
        raise LogError(f"cannot read decision log {path}: {err}") from None
