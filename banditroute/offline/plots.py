"""Plots of the offline commands (matplotlib, imported only when a plot is asked for)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from banditroute.core.state import write_atomic


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    """The figure, in the format its path's suffix names (PNG by default), written whole or not at all."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".").lower() or "png", dpi=120)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def plot_frontier(result: dict, path: str, title: str = "") -> None:
    """Quality against cost (% of the best model's cost) for the sweep and every single model."""
    plt = _pyplot()
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
    _save(fig, path)


def plot_log_frontier(result: dict, path: str) -> None:
    """Estimated quality against estimated cost per request, with 95% intervals on both axes."""
    plt = _pyplot()
    pts = sorted((p for p in result["points"] if p["cost_usd"]["value"] is not None and p["quality"]["value"] is not None),
                 key=lambda p: p["cost_usd"]["value"])
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
    _save(fig, path)
