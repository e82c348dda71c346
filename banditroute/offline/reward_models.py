"""Reward models for the direct method and doubly robust estimates: cross-fitted per-model ridge
regressions of the logged outcomes on the logged features (Chernozhukov et al., 2018, "Double/debiased
machine learning": the model that predicts row i never saw row i).
"""

from __future__ import annotations

import numpy as np

from banditroute.offline.logs import Log


def _ridge_per_arm(X: np.ndarray, y: np.ndarray, arm: np.ndarray, K: int, lam: float) -> tuple[np.ndarray, np.ndarray]:
    d = X.shape[1]
    W = np.zeros((K, d))
    fallback = np.full(K, float(y.mean()) if y.size else 0.0)
    for k in range(K):
        m = arm == k
        if m.sum() == 0:
            continue
        Xk, yk = X[m], y[m]
        W[k] = np.linalg.solve(Xk.T @ Xk + lam * np.eye(d), Xk.T @ (yk - yk.mean()))
        fallback[k] = yk.mean()
    return W, fallback


def cross_fit(log: Log, y: np.ndarray, folds: int = 5, lam: float = 1.0, seed: int = 0,
              with_tokens: bool = False) -> np.ndarray:
    """rhat(x_i, a) for every decision and model, each row predicted by models fit on other folds.

    Per-model ridge regression of the outcome on the logged features (plus input tokens for cost),
    centred on the model's mean outcome; rows with a missing outcome are not used for fitting.
    """
    n, K = log.eligible.shape
    X = log.X if not with_tokens else np.hstack([log.X, log.input_tokens[:, None] / 1000.0])
    fold = np.random.default_rng(seed).permutation(n) % max(2, min(folds, n))
    out = np.zeros((n, K))
    observed = ~np.isnan(y)
    for f in np.unique(fold):
        train = (fold != f) & observed
        W, mean = _ridge_per_arm(X[train], y[train], log.chosen[train], K, lam)
        test = fold == f
        out[test] = X[test] @ W.T + mean
    return out


def reward_models(log: Log, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted quality and cost predictions for every decision and model (for DM and DR)."""
    return cross_fit(log, log.quality, seed=seed), cross_fit(log, log.cost, seed=seed, with_tokens=True)
