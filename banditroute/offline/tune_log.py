"""Tune the cost weight on logged traffic: sweep it, estimate each point off-policy, recommend one.

For each cost weight the candidate is replayed (:mod:`banditroute.offline.evaluate`) and one
estimator gives its mean quality and cost per request with 95% intervals. The recommendation
reads the conservative end of the intervals:

* ``target_quality``: among weights whose quality interval's *low* end reaches the target, the one
  with the lowest estimated cost;
* ``budget``: among weights whose cost interval's *high* end is within the budget, the one with
  the highest estimated quality.

The default grid is 0 plus 15 weights spaced geometrically from 0.01 to 1 divided by the spread of
mean logged cost between the dearest and the cheapest model.
"""

from __future__ import annotations

import numpy as np

from banditroute.offline.evaluate import candidate_probabilities, evaluate, load_log
from banditroute.offline.progress import progress as show_progress


def log_grid(log, n_points: int = 16) -> list[float]:
    means = [np.nanmean(log.cost[log.chosen == k]) for k in range(len(log.models)) if np.any(log.chosen == k)]
    means = [m for m in means if np.isfinite(m)]
    gap = (max(means) - min(means)) if len(means) > 1 else 0.0
    if gap <= 0:
        return [0.0]
    return [0.0] + [float(f"{w:.4g}") for w in np.geomspace(0.01 / gap, 1.0 / gap, n_points - 1)]


def tune_on_log(path: str, policy: str = "lints", cost_weights=None, state: str | None = None,
                estimator: str = "dr", target_quality: float | None = None, budget: float | None = None,
                seed: int = 0, n_boot: int = 300, progress: bool = False) -> dict:
    log = load_log(path)
    grid = log_grid(log) if cost_weights is None else list(cost_weights)
    points = []
    for cw in show_progress(grid, len(grid), "cost weights", progress, unit="point"):
        pi = candidate_probabilities(log, policy, cw, state=state, seed=seed)
        est = evaluate(log, pi, cw, (estimator,), n_boot=n_boot, seed=seed)
        e = est["estimates"][estimator]
        points.append({"cost_weight": cw, "quality": e["quality"], "cost_usd": e["cost_usd"], "ess": est["ess"]})
    rec = None
    if target_quality is not None:
        ok = [p for p in points if p["quality"]["low"] >= target_quality]
        if ok:
            best = min(ok, key=lambda p: p["cost_usd"]["value"])
            rec = {"cost_weight": best["cost_weight"],
                   "reason": f"cheapest whose quality 95% interval starts at or above {target_quality}"}
    elif budget is not None:
        ok = [p for p in points if p["cost_usd"]["high"] <= budget]
        if ok:
            best = max(ok, key=lambda p: p["quality"]["value"])
            rec = {"cost_weight": best["cost_weight"],
                   "reason": f"best quality whose cost 95% interval ends at or below {budget} USD per request"}
    return {"policy": policy if state is None else f"state:{state}", "estimator": estimator, "n": len(log),
            "points": points, "target_quality": target_quality, "budget_usd_per_request": budget,
            "recommendation": rec,
            "logged": {"quality": float(np.nanmean(log.quality)), "cost_usd": float(np.nanmean(log.cost))}}


def plot_log_frontier(result: dict, path: str) -> None:
    """Estimated quality against estimated cost per request, with 95% intervals on both axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted(result["points"], key=lambda p: p["cost_usd"]["value"])
    x = np.array([p["cost_usd"]["value"] for p in pts])
    y = np.array([p["quality"]["value"] for p in pts])
    xerr = np.array([[p["cost_usd"]["value"] - p["cost_usd"]["low"], p["cost_usd"]["high"] - p["cost_usd"]["value"]]
                     for p in pts]).T
    yerr = np.array([[p["quality"]["value"] - p["quality"]["low"], p["quality"]["high"] - p["quality"]["value"]]
                     for p in pts]).T
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.errorbar(x, y, xerr=np.maximum(xerr, 0), yerr=np.maximum(yerr, 0), fmt="o-", capsize=3,
                label=f"{result['policy']} ({result['estimator']}, 95% CI)")
    for p, xi, yi in zip(pts, x, y):
        ax.annotate(f"{p['cost_weight']:g}", (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    lg = result["logged"]
    ax.scatter([lg["cost_usd"]], [lg["quality"]], marker="s", color="k", label="logged traffic", zorder=3)
    if result.get("target_quality") is not None:
        ax.axhline(result["target_quality"], color="red", ls="--", lw=0.8, label="target quality")
    if result.get("budget_usd_per_request") is not None:
        ax.axvline(result["budget_usd_per_request"], color="red", ls="--", lw=0.8, label="budget")
    ax.set_xlabel("estimated cost per request (USD)")
    ax.set_ylabel("estimated mean quality")
    ax.set_title("Cost weight sweep on logged traffic (labels: cost weight)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
