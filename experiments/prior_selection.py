"""Can the quality model's prior strength be chosen per pool from the data, rather than fixed at 10?

Usage::

    python experiments/prior_selection.py [--strengths 1 3 10 30 100 300]

With every train outcome revealed, the pooled quality model of :mod:`banditroute.core.policies.bayes_linear`
is fitted in closed form on banditroute's default features for each deviation strength ``lambda`` (the
prior precision of a model's weights around the pooled fit ``beta``; ``beta`` itself barely depends on
its own prior with full information):

    theta_k = (lambda I + X^T X)^{-1} (X^T y_k + lambda beta)

and three criteria a deployment could compute from its own data are set beside the test split's qauc
(routing on the predicted quality and the true costs, so that only the quality model differs):

- ``evidence``: the log marginal likelihood of every model's residuals from the pooled fit under the prior
  ``N(0, sigma^2 / lambda I)``, maximised over the noise variance (type-II maximum likelihood; MacKay,
  1992, "Bayesian Interpolation"; Bishop, 2006, eq. 3.86);
- ``loo_mse``: the leave-one-out squared error of the quality predictions, exact for ridge regression
  from the hat matrix's diagonal, ``r_i / (1 - h_ii)`` (Allen, 1974, the PRESS statistic);
- ``loo_qauc``: the qauc on the train split of routing on those leave-one-out predictions: the
  criterion aligned with what the router does with them.

Then a strength per block of the feature vector (the bias and signals, the hashed words, the
embedding), every combination of :data:`BLOCK_GRID`: ``Lambda = diag(lambda_block)`` in place of
``lambda I``, the test split's qauc of each, to see whether any is at or above the single default on
every table (the v3 features' half-norm hashed block is one such choice, made through the features).

Writes ``experiments/results/prior_selection.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import frontier_from_predictions
from suite import full_information_setup, per_table, save_results

from banditroute.core.features import SIGNALS, Featurizer
from banditroute.offline.frontier import frontier_summary

DEFAULT = 10.0
POOL_PRIOR = 10.0
NOISE_GRID = np.linspace(0.02, 0.3, 57)  # noise variances the evidence is maximised over
BLOCK_GRID = (3.0, 10.0, 30.0)


def log_evidence(X: np.ndarray, R: np.ndarray, strength: float, S: np.ndarray, eig: np.ndarray) -> float:
    """``sum_k ln p(r_k | alpha, b)`` with prior precision ``alpha = strength / s2`` and noise precision
    ``b = 1 / s2``, at the noise variance ``s2`` of :data:`NOISE_GRID` that maximises it (Bishop eq. 3.86);
    ``S = X^T X`` and ``eig`` its eigenvalues."""
    n, d = X.shape
    xtr = X.T @ R
    best = -np.inf
    for s2 in NOISE_GRID:
        a, b = strength / s2, 1.0 / s2
        m = b * np.linalg.solve(a * np.eye(d) + b * S, xtr)
        fit = b / 2 * ((R - X @ m) ** 2).sum() + a / 2 * (m * m).sum()
        per_model = d / 2 * np.log(a) + n / 2 * np.log(b) - 0.5 * np.log(a + b * eig).sum() - n / 2 * np.log(2 * np.pi)
        best = max(best, R.shape[1] * per_model - fit)
    return float(best)


def qauc(split, q_pred: np.ndarray, grid) -> float:
    """qauc of routing ``split`` on the predicted quality ``q_pred`` and its true costs, against its own best model."""
    ref = split.reference()
    return frontier_summary(frontier_from_predictions(split, q_pred, split.cost, grid), ref["best_quality"],
                            ref["best_cost_usd"])["qauc"]


def one_table(job) -> dict:
    path, strengths = job
    outcomes, test, _, grid = full_information_setup(path)
    train = outcomes.subset("train")
    f = Featurizer()
    X, X_test = f.transform_many(train.prompts), f.transform_many(test.prompts)
    Y = train.quality - 0.5  # the quality model's prior mean
    d = X.shape[1]
    S = X.T @ X
    eig = np.linalg.eigvalsh(S)
    beta = np.linalg.solve(POOL_PRIOR * np.eye(d) + Y.shape[1] * S, (X.T @ Y).sum(axis=1))
    R = Y - (X @ beta)[:, None]
    rows = []
    for strength in strengths:
        print(f"{path.stem}: strength {strength:g}", file=sys.stderr, flush=True)
        A_inv = np.linalg.inv(strength * np.eye(d) + S)
        M = A_inv @ (X.T @ R)  # theta_k - beta
        h = np.einsum("nd,de,ne->n", X, A_inv, X)
        loo_residual = (R - X @ M) / (1.0 - h)[:, None]
        q_loo = train.quality - loo_residual
        q_test = 0.5 + (X_test @ beta)[:, None] + X_test @ M
        rows.append({
            "strength": strength,
            "test_qauc": qauc(test, q_test, grid),
            "evidence": log_evidence(X, R, strength, S, eig),
            "loo_mse": float((loo_residual ** 2).mean()),
            "loo_qauc": qauc(train, q_loo, grid),
        })
    blocks = [slice(0, 1 + len(SIGNALS)), slice(1 + len(SIGNALS), 1 + len(SIGNALS) + f.hash_dim),
              slice(1 + len(SIGNALS) + f.hash_dim, d)]
    per_block = {}
    for combo in itertools.product(BLOCK_GRID, repeat=len(blocks)):
        lam = np.empty(d)
        for block, strength in zip(blocks, combo):
            lam[block] = strength
        theta = np.linalg.solve(np.diag(lam) + S, X.T @ Y + (lam * beta)[:, None])
        per_block[",".join(f"{c:g}" for c in combo)] = qauc(test, 0.5 + X_test @ theta, grid)
    picks = {"evidence": max(rows, key=lambda r: r["evidence"]), "loo_mse": min(rows, key=lambda r: r["loo_mse"]),
             "loo_qauc": max(rows, key=lambda r: r["loo_qauc"]),
             "best on test": max(rows, key=lambda r: r["test_qauc"])}
    return {"table": path.stem, "rows": rows, "picks": {k: r["strength"] for k, r in picks.items()},
            "pick_test_qauc": {k: r["test_qauc"] for k, r in picks.items()},
            "default_test_qauc": next((r["test_qauc"] for r in rows if r["strength"] == DEFAULT), None),
            "per_block": per_block}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strengths", type=float, nargs="+", default=[1, 3, 10, 30, 100, 300])
    args = ap.parse_args()
    tables = per_table(one_table, (args.strengths,))
    command = "python experiments/prior_selection.py " + " ".join(sys.argv[1:])
    lines = ["# Choosing the prior strength per pool from the data", "",
             (f"Command: `{command.strip()}`. Full information; banditroute's default features and pooled quality "
              "model in closed form at each deviation strength (the default is 10); routing on the predicted quality "
              "and the true costs. Per strength: the test split's qauc, the log evidence (relative to its maximum), "
              "the leave-one-out squared error and the train split's qauc routing on leave-one-out predictions."), ""]
    for t in tables:
        lines += [f"## {t['table']}", "", "| strength | test qauc | log evidence | LOO squared error | LOO qauc |",
                  "| --- | --- | --- | --- | --- |"]
        top = max(r["evidence"] for r in t["rows"])
        lines += [f"| {r['strength']:g} | {r['test_qauc']:.1f} | {r['evidence'] - top:.1f} | {r['loo_mse']:.5f} | "
                  f"{r['loo_qauc']:.1f} |" for r in t["rows"]]
        lines.append("")
    lines += ["## What each criterion picks, and the test qauc there", "",
              "| table | default (10) | " + " | ".join(tables[0]["picks"]) + " |",
              "| --- | --- | " + " | ".join("---" for _ in tables[0]["picks"]) + " |"]
    for t in tables:
        default = "" if t["default_test_qauc"] is None else f"{t['default_test_qauc']:.1f}"
        lines.append(f"| {t['table']} | {default} | " + " | ".join(
            f"{t['picks'][k]:g}: {t['pick_test_qauc'][k]:.1f}" for k in t["picks"]) + " |")
    default = ",".join(f"{DEFAULT:g}" for _ in range(3))
    gap = {c: min(t["per_block"][c] - t["per_block"][default] for t in tables) for c in tables[0]["per_block"]}
    lines += ["", "## A strength per block: bias and signals, hashed words, embedding", "",
              ("Test qauc of each combination, ordered by its worst difference from the single default over the "
               "tables (positive: at or above it everywhere)."), "",
              "| signals, words, embedding | " + " | ".join(t["table"] for t in tables) + " | worst difference |",
              "| --- | " + " | ".join("---" for _ in tables) + " | --- |"]
    lines += [f"| {c} | " + " | ".join(f"{t['per_block'][c]:.1f}" for t in tables) + f" | {gap[c]:+.2f} |"
              for c in sorted(gap, key=gap.get, reverse=True)]
    save_results("prior_selection", {"command": command, "tables": tables}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
