"""Reward models for the direct method and doubly robust estimates: cross-fitted per-model ridge
regressions of the logged outcomes on the logged features (Chernozhukov et al., 2018, "Double/debiased
machine learning": the model that predicts row i never saw row i).

Fitted in one streaming pass from sufficient statistics, so a log of any length fits in memory: for
each fold f and model k, over the decisions of that fold that chose k with an observed outcome,
A = sum z z^T, b = sum z y, s = sum z, S = sum y and N, with z the features (plus input tokens / 1000
for cost). The model that scores fold f uses the other folds' sums (totals minus fold f's):
W = (A + lam I)^-1 (b - ybar s), ybar = S / N, and predicts rhat(x, k) = z^T W + ybar, the ridge
regression of the centred outcome (a model never chosen in the other folds predicts their mean
outcome over every model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from banditroute.core.policies.bayes_linear import single_threaded_blas
from banditroute.offline.logs import Log


@dataclass
class _Fit:
    W: np.ndarray  # (folds, K, d)
    mean: np.ndarray  # (folds, K)


@dataclass
class RewardModels:
    """Cross-fitted quality and cost models of a log; :meth:`predict` scores a chunk of it."""

    fold: np.ndarray  # (n,) the fold of each decision
    quality: _Fit
    cost: _Fit

    def predict(self, start: int, X: np.ndarray, input_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rhat for quality and cost, (m, K) each, for the decisions start..start + m - 1 with features X."""
        Z = _design(X, input_tokens)
        fold = self.fold[start:start + len(X)]
        q = np.empty((len(X), self.quality.W.shape[1]))
        c = np.empty_like(q)
        for f in np.unique(fold):
            rows = fold == f
            q[rows] = Z[rows, :-1] @ self.quality.W[f].T + self.quality.mean[f]
            c[rows] = Z[rows] @ self.cost.W[f].T + self.cost.mean[f]
        return q, c


def _design(X: np.ndarray, input_tokens: np.ndarray) -> np.ndarray:
    return np.hstack([X, input_tokens[:, None] / 1000.0])


class _Sums:
    """The sufficient statistics of per-fold, per-model ridge regressions, accumulated chunk by chunk."""

    def __init__(self, folds: int, K: int, d: int):
        self.A = np.zeros((folds, K, d, d))
        self.b = np.zeros((folds, K, d))
        self.s = np.zeros((folds, K, d))
        self.S = np.zeros((folds, K))
        self.N = np.zeros((folds, K))

    def add(self, Z: np.ndarray, y: np.ndarray, fold: np.ndarray, arm: np.ndarray) -> None:
        keep = ~np.isnan(y)
        if not keep.all():
            Z, y, fold, arm = Z[keep], y[keep], fold[keep], arm[keep]
        K = self.N.shape[1]
        group = fold * K + arm
        order = np.argsort(group, kind="stable")
        bounds = np.flatnonzero(np.diff(group[order])) + 1
        for rows in np.split(order, bounds):
            if rows.size == 0:
                continue
            f, k = divmod(int(group[rows[0]]), K)
            Zg, yg = Z[rows], y[rows]
            self.A[f, k] += Zg.T @ Zg
            self.b[f, k] += Zg.T @ yg
            self.s[f, k] += Zg.sum(axis=0)
            self.S[f, k] += yg.sum()
            self.N[f, k] += len(rows)

    def fit(self, lam: float, d: int | None = None) -> _Fit:
        """The per-fold models on the first ``d`` columns of z (default: all)."""
        folds, K, d_all = self.b.shape
        d = d or d_all
        W = np.zeros((folds, K, d))
        mean = np.zeros((folds, K))
        for f in range(folds):
            A, b, s = (t.sum(axis=0) - t[f] for t in (self.A, self.b, self.s))
            A, b, s = A[:, :d, :d], b[:, :d], s[:, :d]  # quality: without the input-tokens column
            S, N = self.S.sum(axis=0) - self.S[f], self.N.sum(axis=0) - self.N[f]
            mean[f] = S.sum() / N.sum() if N.sum() else 0.0
            for k in np.flatnonzero(N):
                ybar = S[k] / N[k]
                W[f, k] = np.linalg.solve(A[k] + lam * np.eye(d), b[k] - ybar * s[k])
                mean[f, k] = ybar
        return _Fit(W, mean)


def reward_models(log: Log, seed: int = 0, folds: int = 5, lam: float = 1.0) -> RewardModels:
    """Cross-fitted quality and cost models for every decision and model (for DM and DR), in one pass."""
    n, K = log.eligible.shape
    n_folds = max(2, min(folds, n))
    fold = (np.random.default_rng(seed).permutation(n) % n_folds).astype(np.int8)
    quality, cost = _Sums(n_folds, K, log.dim + 1), _Sums(n_folds, K, log.dim + 1)
    with single_threaded_blas():  # hundreds of small products per chunk: threads cost more than they save
        for start, X in log.feature_chunks():
            rows = slice(start, start + len(X))
            Z = _design(X, log.input_tokens[rows])
            quality.add(Z, log.quality[rows], fold[rows], log.chosen[rows])
            cost.add(Z, log.cost[rows], fold[rows], log.chosen[rows])
    return RewardModels(fold, quality.fit(lam, d=log.dim), cost.fit(lam))
