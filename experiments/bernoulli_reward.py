"""Does a Bernoulli-aware quality model route better than the linear one, with full information?

Usage::

    python experiments/bernoulli_reward.py [--name bernoulli_reward]

Issue 11, item 3: where quality is 0/1, a logistic model, ``P(correct | x, k) = sigmoid(theta_k . x)``,
is the natural one (a hard prompt lowers every model's log-odds, as in item response theory, instead
of every model's probability by the same amount, which saturates). Measured here with every train
outcome revealed, so that the model class is compared apart from the bandit's exploration: if it does
not help with full information, an online Laplace-approximated logistic Thompson sampler (Chapelle &
Li, 2011, "An Empirical Evaluation of Thompson Sampling") cannot be expected to help either.

For every shared table, on banditroute's own features:

* ``linear``: banditroute's quality model fitted on every outcome (``pretrain``: the pooled Bayesian
  ridge of the default policy);
* ``logistic, C``: one L2-regularised logistic regression per model (scikit-learn), for C in 0.1
  (the default prior's strength 10) and 1; a model whose train outcomes are not all 0/1 (MT-Bench's
  scores) keeps a ridge of the same strength, a model never or always right its mean.

All use the same cost predictions (the pretrained policy's cost model), and are swept over the same
fine grid of cost weights on the test split; qauc and cost_at_95 in % of the best single model's.
Writes ``experiments/results/<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import frontier_from_predictions
from suite import DATA, RESULTS, fine_grid, fmt, mean_ranks

from banditroute.core.features import Featurizer
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.pretrain import pretrain

C_VALUES = (0.1, 1.0)


def never(v: float | None) -> float:
    """A cost_at_95 that is never reached, as :func:`suite.fmt` prints it."""
    return float("inf") if v is None else v


def logistic_quality(Xtr: np.ndarray, Ytr: np.ndarray, Xte: np.ndarray, C: float) -> np.ndarray:
    """Predicted P(quality = 1) per test row and model: a logistic regression per model (ridge where a
    model's outcomes are not 0/1; the mean where they are constant)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    out = np.empty((len(Xte), Ytr.shape[1]))
    for k in range(Ytr.shape[1]):
        y = Ytr[:, k]
        if np.ptp(y) == 0:
            out[:, k] = y[0]
        elif np.isin(y, (0.0, 1.0)).all():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = LogisticRegression(C=C, max_iter=5000).fit(Xtr[:, 1:], y.astype(int))
            out[:, k] = fit.predict_proba(Xte[:, 1:])[:, 1]
        else:
            out[:, k] = Ridge(alpha=1.0 / C).fit(Xtr[:, 1:], y).predict(Xte[:, 1:])
    return out


def one_table(path: str) -> dict:
    outcomes = load_outcomes(path)
    train, test = outcomes.subset("train"), outcomes.subset("test")
    ref = test.reference()
    grid = fine_grid(test.cost.mean(axis=0))
    f = Featurizer()
    Xtr, Xte = f.transform_many(train.prompts), f.transform_many(test.prompts)
    policy = pretrain(outcomes)
    q_lin, cost = policy.predict(Xte, [f.input_tokens(p) for p in test.prompts])
    predictions = {"linear (pretrain)": q_lin}
    for C in C_VALUES:
        predictions[f"logistic, C {C:g}"] = logistic_quality(Xtr, train.quality, Xte, C)
    rows = {}
    for name, q in predictions.items():
        s = frontier_summary(frontier_from_predictions(test, q, cost, grid), ref["best_quality"], ref["best_cost_usd"])
        brier = float(np.mean((np.clip(q, 0.0, 1.0) - test.quality) ** 2))
        rows[name] = {"qauc": s["qauc"], "cost_at_95": s["cost_at_95"], "brier": brier}
    binary = float(np.isin(train.quality, (0.0, 1.0)).mean())
    print(f"{Path(path).stem}: done", file=sys.stderr, flush=True)
    return {"table": Path(path).stem, "binary_share": binary, "rows": rows}


def markdown(results: list[dict], command: str) -> str:
    names = list(results[0]["rows"])
    lines = ["# A Bernoulli-aware quality model, with full information", "",
             (f"Command: `{command}`. Every train outcome revealed; banditroute's features; the same cost "
             "predictions (the pretrained cost model) and the same fine sweep of cost weights for every "
             "quality model. Cells: qauc / cost_at_95 (% of the best single model; higher / lower is "
             "better), then the Brier score of the predicted quality on test (lower is better). The last "
             "column ranks the quality models by qauc on each table and takes the median."), "",
             "| quality model | " + " | ".join(r["table"] for r in results) + " | median rank |",
             "| --- |" + " --- |" * (len(results) + 1)]
    ranks = {n: [] for n in names}
    for r in results:
        for n, rank in mean_ranks({n: r["rows"][n]["qauc"] for n in names}).items():
            ranks[n].append(rank)
    for n in names:
        cells = [f"{fmt(r['rows'][n]['qauc'])} / {fmt(never(r['rows'][n]['cost_at_95']))}, {r['rows'][n]['brier']:.4f}"
                 for r in results]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {statistics.median(ranks[n]):g} |")
    lines += ["", "Share of 0/1 outcomes in the train split: " + ", ".join(
        f"{r['table']} {r['binary_share']:.2f}" for r in results) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="bernoulli_reward")
    args = ap.parse_args()
    paths = sorted(str(p) for p in DATA.glob("*.parquet"))
    if not paths:
        sys.exit(f"no outcome tables in {DATA}")
    with Pool(args.workers) as pool:
        results = pool.map(one_table, paths)
    command = "python experiments/bernoulli_reward.py" + (f" --name {args.name}" if args.name != "bernoulli_reward" else "")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"command": command, "tables": results}, indent=1))
    (RESULTS / f"{args.name}.md").write_text(markdown(results, command))
    print(markdown(results, command))


if __name__ == "__main__":
    main()
