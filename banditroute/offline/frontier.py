"""Summary metrics of quality-cost frontiers.

* ``cost_at_95``: the cost, in percent of the best single model's cost, of the cheapest frontier
  point whose quality reaches 95% of that model's quality (None if no point does).
* ``quality_at_25``: the best quality, in percent of the best single model's, among points costing
  at most 25% of its cost (None if none is that cheap).
* RouteLLM's metrics for a strong/weak pair (Ong et al., 2024, "RouteLLM: Learning to Route LLMs
  with Preference Data", sec. 5.1, and ``routellm/evals/evaluate.py``): a router scores each prompt;
  thresholds at the 0, 10, ..., 100% quantiles of the scores send the prompts scoring at or above
  them (above, for the top threshold) to the strong model. PGR = (q - q_weak) / (q_strong - q_weak).
  ``CPT(x%)`` = the percentage of strong calls at which the curve reaches PGR x, by linear
  interpolation; ``APGR`` = (area under quality vs strong-call fraction - weak area) /
  (strong area - weak area), trapezoidal, over the span of strong-call fractions the curve covers.
"""

from __future__ import annotations

import numpy as np


def frontier_summary(points: list[dict], best_quality: float, best_cost: float) -> dict:
    """``cost_at_95`` and ``quality_at_25`` of ``points`` (each with ``quality`` and ``cost_usd``)."""
    reach = [p["cost_usd"] for p in points if p["quality"] >= 0.95 * best_quality]
    cheap = [p["quality"] for p in points if p["cost_usd"] <= 0.25 * best_cost]
    return {
        "cost_at_95": 100.0 * min(reach) / best_cost if reach and best_cost > 0 else None,
        "quality_at_25": 100.0 * max(cheap) / best_quality if cheap and best_quality > 0 else None,
    }


def routellm_curve(strong_score: np.ndarray, q_strong: np.ndarray, q_weak: np.ndarray,
                   num_results: int = 10) -> list[tuple[float, float]]:
    """``(strong-call %, mean quality)`` at RouteLLM's quantile thresholds, sorted by strong %."""
    strong_score = np.asarray(strong_score, dtype=float)
    thresholds = np.quantile(strong_score, np.linspace(0, 1, num_results + 1))
    curve = []
    for i, t in enumerate(thresholds):
        sel = strong_score > t if i == len(thresholds) - 1 else strong_score >= t
        q = np.where(sel, q_strong, q_weak).mean()
        curve.append((100.0 * sel.mean(), float(q)))
    return sorted(curve)


def routellm_metrics(strong_score, q_strong, q_weak, num_results: int = 10) -> dict:
    """APGR and CPT(20/50/80%) of a router's scores, as RouteLLM's evaluation computes them."""
    q_strong, q_weak = np.asarray(q_strong, float), np.asarray(q_weak, float)
    curve = routellm_curve(strong_score, q_strong, q_weak, num_results)
    pct = np.array([c[0] for c in curve])
    acc = np.array([c[1] for c in curve])
    strong, weak = float(q_strong.mean()), float(q_weak.mean())
    frac = pct / 100.0
    auc = float(np.trapezoid(acc, frac))
    span = float(frac[-1] - frac[0])
    apgr = (auc - weak * span) / ((strong - weak) * span) if span > 0 and strong != weak else float("nan")
    out = {"apgr": apgr, "curve": [{"strong_pct": float(p), "quality": float(a)} for p, a in zip(pct, acc)],
           "strong_quality": strong, "weak_quality": weak}
    for x in (20, 50, 80):
        out[f"cpt{x}"] = float(np.interp(x / 100.0 * (strong - weak) + weak, acc, pct))
    return out
