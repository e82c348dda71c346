"""Sweep the cost weight and report the quality-cost frontier on an outcome table's test split.

Each point is what a deployment at that cost weight would get: the policy learns online over the
train split at that weight (as :func:`~banditroute.offline.simulate.simulate` does, same seed) and
is then evaluated greedily on the test split. The default grid is data-driven: 0 plus
``n_points - 1`` weights spaced geometrically from ``0.01 / gap`` to ``1 / gap`` quality points per
USD, where ``gap`` is the difference between the most and least expensive model's mean cost per
prompt on the train split, so the sweep spans "cost barely matters" to "cost dominates any
plausible quality difference".
"""

from __future__ import annotations

import numpy as np

from banditroute.config import PolicyConfig, Settings
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.outcomes import Outcomes
from banditroute.offline.progress import progress as show_progress
from banditroute.offline.simulate import simulate


def default_grid(outcomes: Outcomes, n_points: int = 20) -> list[float]:
    """0 plus a geometric grid over the table's range of meaningful cost weights."""
    mean_cost = outcomes.subset("train").cost.mean(axis=0)
    gap = float(mean_cost.max() - mean_cost.min())
    if gap <= 0:
        return [0.0]
    grid = np.geomspace(0.01 / gap, 1.0 / gap, n_points - 1)
    return [0.0] + [float(f"{w:.4g}") for w in grid]


def tune(outcomes: Outcomes, policy: str = "lints", seed: int = 0, cost_weights=None,
         pool: Settings | None = None, settings: PolicyConfig | None = None, progress: bool = False,
         featurizer=None) -> dict:
    """The frontier as in the ``tune --json`` contract, plus single-model reference points."""
    grid = default_grid(outcomes) if cost_weights is None else list(cost_weights)
    points = []
    for cw in show_progress(grid, len(grid), "cost weights", progress, unit="point"):
        res = simulate(outcomes, policy, cw, seed, pool=pool, settings=settings, featurizer=featurizer)
        points.append({"cost_weight": cw, "quality": res["test"]["quality"], "cost_usd": res["test"]["cost_usd"],
                       "online_quality": res["online"]["quality"], "online_cost_usd": res["online"]["cost_usd"]})
    test = outcomes.subset("test")
    ref = test.reference()
    summary = frontier_summary(points, ref["best_quality"], ref["best_cost_usd"])
    models = {m: {"quality": float(test.quality[:, k].mean()), "cost_usd": float(test.cost[:, k].sum())}
              for k, m in enumerate(test.models)}
    return {"policy": res["policy"], "seed": seed, "points": points, **summary, "reference": ref, "models": models}


def plot_frontier(result: dict, path: str, title: str = "") -> None:
    """Quality against cost (% of the best model's cost) for the sweep and every single model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = result["reference"]
    base = ref["best_cost_usd"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = sorted(result["points"], key=lambda p: p["cost_usd"])
    ax.plot([100 * p["cost_usd"] / base for p in pts], [p["quality"] for p in pts], "o-",
            label=f"{result['policy']} (online-learned, seed {result['seed']})")
    for m, v in result["models"].items():
        ax.scatter(100 * v["cost_usd"] / base, v["quality"], marker="x", color="grey")
        ax.annotate(m.split("/")[-1], (100 * v["cost_usd"] / base, v["quality"]), fontsize=7, color="grey")
    ax.axhline(ref["oracle_quality"], color="green", ls=":", label="oracle")
    ax.axhline(0.95 * ref["best_quality"], color="red", ls="--", lw=0.8, label="95% of best model")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel(f"test cost, % of {ref['best_model']}")
    ax.set_ylabel("mean test quality")
    ax.set_title(title or "Quality-cost frontier")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
