"""Decision logs as replay reads them: :func:`load_log` validates a log (``simulate --log``, ``export``)
and turns it into arrays (:class:`Log`), recomputing features from stored prompts when the log's
feature version is not the current one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from banditroute.core.features import Featurizer
from banditroute.core.types import Context
from banditroute.offline.tables import read_table

REQUIRED = ("decision_id", "feature_version", "x", "input_tokens", "eligible", "probabilities", "chosen",
            "propensity", "cost_weight", "quality", "cost_usd")


class LogError(ValueError):
    """A decision log that cannot be replayed (unreadable, malformed, other features)."""


@dataclass
class Log:
    """A validated decision log as arrays; ``models`` is the union of eligible models, in order."""

    decision_ids: list[str]
    X: np.ndarray
    input_tokens: np.ndarray
    models: list[str]
    eligible: np.ndarray  # (n, K) bool
    mu: np.ndarray  # (n, K) logging probabilities, 0 where not eligible
    chosen: np.ndarray  # (n,) index into models
    propensity: np.ndarray
    cost_weight: np.ndarray
    quality: np.ndarray  # nan where missing
    cost: np.ndarray  # nan where missing
    policy: str

    def __len__(self) -> int:
        return len(self.decision_ids)

    def context(self, i: int) -> Context:
        return Context(self.X[i], float(self.input_tokens[i]))

    def arms(self, i: int) -> np.ndarray:
        return np.flatnonzero(self.eligible[i])


def load_log(path: str | Path, featurizer: Featurizer | None = None) -> Log:
    """Read and validate a decision log (Parquet or JSON Lines).

    Features are the logged ``x`` under the version the log was written with (v1 logs stay replayable);
    a log of several versions, or of one this installation cannot compute, is recomputed from its logged
    prompts with ``featurizer`` (default: the current features), if it holds them.
    """
    path = Path(path)
    t = read_table(path, "decision log", LogError, REQUIRED, "decisions")
    cols = {c: t.column(c).to_pylist() for c in REQUIRED}
    versions = set(cols["feature_version"])
    if featurizer is None and len(versions) == 1:  # replay under the features the log was written with
        try:
            featurizer = Featurizer.from_version(next(iter(versions)))
        except ValueError:
            pass
    f = featurizer or Featurizer()
    if versions != {f.version}:
        if "prompt" in t.column_names and all(p for p in t.column("prompt").to_pylist()):
            cols["x"] = f.transform_many(t.column("prompt").to_pylist()).tolist()
        else:
            raise LogError(
                f"{path}: logged with features {sorted(versions)}, this version computes {f.version}, "
                "and the log holds no prompts to recompute them from"
            )
    n = t.num_rows
    X = np.asarray(cols["x"], dtype=float)
    if X.shape != (n, f.dim):
        raise LogError(f"{path}: x must have {f.dim} features per decision")
    models: list[str] = []
    index: dict[str, int] = {}
    for el in cols["eligible"]:
        for m in el:
            if m not in index:
                index[m] = len(models)
                models.append(m)
    K = len(models)
    eligible = np.zeros((n, K), dtype=bool)
    mu = np.zeros((n, K))
    chosen = np.empty(n, dtype=np.intp)
    for i, (el, probs, ch) in enumerate(zip(cols["eligible"], cols["probabilities"], cols["chosen"])):
        if len(el) != len(probs):
            raise LogError(f"{path}: row {i}: eligible and probabilities differ in length")
        if ch not in el:
            raise LogError(f"{path}: row {i}: chosen model {ch!r} is not among the eligible models")
        ks = [index[m] for m in el]
        eligible[i, ks] = True
        mu[i, ks] = probs
        chosen[i] = index[ch]
    prop = np.asarray(cols["propensity"], dtype=float)
    bad = np.flatnonzero(~np.isfinite(prop) | (prop <= 0) | (prop > 1))
    if bad.size:
        raise LogError(f"{path}: propensities must be in (0, 1]; row {bad[0]} has {prop[bad[0]]}")
    if not np.allclose(mu[np.arange(n), chosen], prop, rtol=1e-6, atol=1e-12):
        raise LogError(f"{path}: propensity differs from the logged probability of the chosen model")
    if not np.allclose(mu.sum(axis=1), 1.0, atol=1e-6):
        raise LogError(f"{path}: logged probabilities must sum to 1 per decision")
    q = np.array([np.nan if v is None else v for v in cols["quality"]], dtype=float)
    c = np.array([np.nan if v is None else v for v in cols["cost_usd"]], dtype=float)
    if np.any((q < 0) | (q > 1)):
        raise LogError(f"{path}: quality must be in [0, 1]")
    if np.any(c < 0):
        raise LogError(f"{path}: cost_usd must be >= 0")
    policy = t.column("policy")[0].as_py() if "policy" in t.column_names else "unknown"
    return Log(list(cols["decision_id"]), X, np.asarray(cols["input_tokens"], dtype=float), models, eligible, mu,
               chosen, prop, np.asarray(cols["cost_weight"], dtype=float), q, c, policy)
