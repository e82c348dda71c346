"""The policy interface shared by every router policy.

A policy maps a prompt's :class:`~banditroute.core.policies.cost.Context` and a set of eligible models
to a probability vector over those models, and learns from ``(context, model, quality, cost)``.
Scores follow one formula everywhere (DESIGN.md, decision 1):

    score_k(x) = q_k(x) - cost_weight * c_k(x)

with ``q_k`` the predicted quality in [0, 1] and ``c_k`` the predicted cost in USD. After a policy
computes its raw probabilities ``p``, :func:`apply_floor` mixes in the exploration floor ``f``:

    p'_k = f + (1 - K f) p_k,    K = number of eligible models,

so every eligible model keeps probability at least ``f`` (needed by IPS and DR estimators) and the
vector still sums to one.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from banditroute.core.policies.cost import Context, CostModel

STATE_FORMAT = 1


@dataclass
class Scores:
    """A policy's view of one decision, aligned with the eligible arms."""

    probabilities: np.ndarray
    quality: np.ndarray
    cost: np.ndarray

    def net(self, cost_weight: float) -> np.ndarray:
        """score_k = quality_k - cost_weight * cost_k."""
        return self.quality - cost_weight * self.cost


def apply_floor(p: np.ndarray, floor: float) -> np.ndarray:
    """Mix ``p`` with the uniform floor: ``f + (1 - K f) p``; uniform when ``K f >= 1``.

    ``p`` is one probability vector over K models, or a (B, K) array of them (one per row).
    """
    k = p.shape[-1]
    if floor <= 0:
        return p
    if k * floor >= 1.0:
        return np.full(p.shape, 1.0 / k)
    return floor + (1.0 - k * floor) * p


def write_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def one_hot(k: int, i: int) -> np.ndarray:
    p = np.zeros(k)
    p[i] = 1.0
    return p


class Policy:
    """Base class: arms, the shared cost model, the floor, greedy choice and persistence.

    Subclasses implement :meth:`predict_quality` (mean predicted quality per arm),
    :meth:`_raw_probabilities` and :meth:`_update_quality`.

    Parameters
    ----------
    models
        Model names; arm ``i`` is ``models[i]``.
    dim
        Feature dimension.
    prices
        Optional ``(input, output)`` USD per 1M tokens per model, for the cost model's prior.
    floor
        Minimum probability of every eligible model.
    expected_output_tokens
        Output length assumed by list-price cost estimates.
    """

    name = "base"

    def __init__(self, models, dim: int, prices=None, floor: float = 0.01, expected_output_tokens: float = 256.0):
        self.models = list(models)
        self.dim = int(dim)
        self.floor = float(floor)
        self.cost_model = CostModel(self.models, prices, expected_output_tokens)
        self.quality_observations = np.zeros(len(self.models), dtype=np.int64)
        self.feature_version: str | None = None

    # -- subclass hooks -------------------------------------------------------------------------
    def predict_quality(self, ctx: Context, arms: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _raw_probabilities(self, ctx: Context, arms: np.ndarray, scores: Scores, cost_weight: float, rng) -> np.ndarray:
        raise NotImplementedError

    def _update_quality(self, ctx: Context, arm: int, quality: float, weight: float) -> None:
        raise NotImplementedError

    def predict_quality_many(self, X: np.ndarray, input_tokens: np.ndarray) -> np.ndarray:
        """Mean predicted quality of every model for each row of ``X`` (n, models)."""
        arms = np.arange(len(self.models))
        return np.stack([self.predict_quality(Context(x, t), arms) for x, t in zip(X, input_tokens)])

    # -- the policy verbs -----------------------------------------------------------------------
    def scores(self, ctx: Context, arms) -> Scores:
        """Predicted quality and cost (no probabilities yet) for ``arms``."""
        arms = np.asarray(arms, dtype=np.intp)
        return Scores(np.empty(0), self.predict_quality(ctx, arms), self.cost_model.predict(ctx, arms))

    def probabilities(self, ctx: Context, arms, cost_weight: float, rng: np.random.Generator) -> Scores:
        """Probabilities over ``arms`` (with the floor), plus the predictions behind them."""
        arms = np.asarray(arms, dtype=np.intp)
        s = self.scores(ctx, arms)
        p = self._raw_probabilities(ctx, arms, s, cost_weight, rng)
        s.probabilities = apply_floor(p, self.floor)
        return s

    def probabilities_many(self, X: np.ndarray, input_tokens: np.ndarray, arms: np.ndarray,
                           cost_weights: np.ndarray, rng: np.random.Generator) -> Scores:
        """:meth:`probabilities` for a batch of contexts with the same number of eligible arms.

        ``X`` is (B, d), ``arms`` (B, n) and ``cost_weights`` (B,); the returned :class:`Scores`
        hold (B, n) arrays. This default calls :meth:`probabilities` row by row; vectorised
        policies override it for batches of more than one.
        """
        rows = [self.probabilities(Context(x, t), a, cw, rng)
                for x, t, a, cw in zip(X, input_tokens, arms, cost_weights)]
        return Scores(*(np.stack([getattr(r, f) for r in rows]) for f in ("probabilities", "quality", "cost")))

    def greedy(self, ctx: Context, arms, cost_weight: float) -> Scores:
        """The exploitation choice: all mass on the highest mean score, no floor."""
        arms = np.asarray(arms, dtype=np.intp)
        s = self.scores(ctx, arms)
        s.probabilities = one_hot(len(arms), int(np.argmax(s.net(cost_weight))))
        return s

    def update(self, ctx: Context, arm: int, quality: float | None = None, cost_usd: float | None = None,
               weight: float = 1.0) -> None:
        """Learn from one outcome of model ``arm``; either part may be missing."""
        if quality is not None:
            self._update_quality(ctx, arm, float(quality), float(weight))
            self.quality_observations[arm] += 1
        if cost_usd is not None:
            self.cost_model.update(ctx, arm, float(cost_usd))

    # -- persistence ----------------------------------------------------------------------------
    def dumps(self, **extra) -> bytes:
        """The policy state as bytes: a pickle with a header (load only states you trust)."""
        header = {"format": STATE_FORMAT, "policy": self.describe(), "models": self.models,
                  "dim": self.dim, "feature_version": self.feature_version, **extra}
        return pickle.dumps((header, self), protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loads(data: bytes, source: str = "<bytes>") -> tuple[dict, Policy]:
        """``(header, policy)`` from :meth:`dumps` bytes."""
        try:
            header, policy = pickle.loads(data)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
            raise ValueError(f"cannot read policy state {source}: {err}") from None
        if not isinstance(header, dict) or header.get("format") != STATE_FORMAT or not isinstance(policy, Policy):
            raise ValueError(f"{source} is not a banditroute policy state (format {STATE_FORMAT})")
        return header, policy

    def save(self, path: str | Path, **extra) -> None:
        """Write the state to ``path`` atomically (temporary file, fsync, rename)."""
        write_atomic(path, self.dumps(**extra))

    @staticmethod
    def load(path: str | Path) -> Policy:
        """Read a state written by :meth:`save`."""
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise ValueError(f"cannot read policy state {path}: {err.strerror}") from None
        return Policy.loads(data, str(path))[1]

    def describe(self) -> str:
        return self.name
