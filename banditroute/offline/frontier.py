"""Summary metrics of quality-cost frontiers.

* ``cost_at_95``: the cost, in percent of the best single model's cost, of the cheapest frontier
  point whose quality reaches 95% of that model's quality (None if no point does).
* ``quality_at_25``: the best quality, in percent of the best single model's, among points costing
  at most 25% of its cost (None if none is that cheap).
* ``qauc``: the mean, over cost budgets of 5%, 10%, ..., 100% of the best single model's cost, of the
  best quality (in percent of that model's) among the points within the budget, 0 where none fits.
  It reads the whole frontier, where ``cost_at_95`` reads one threshold off it, so it varies far less
  between seeds and test splits.
* ``aiq``: RouterBench's average improvement in quality (Hu et al., 2024, "RouterBench: A Benchmark for
  Multi-LLM Routing System", sec. 3): the area under the non-decreasing upper convex hull of the
  (cost, quality) points, divided by the cost range the points span.
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

BUDGETS = np.arange(1, 21) / 20  # qauc's cost budgets: 5%, 10%, ..., 100% of the best model's cost


def frontier_summary(points: list[dict], best_quality: float, best_cost: float) -> dict:
    """``cost_at_95``, ``quality_at_25``, ``qauc`` and ``aiq`` of ``points`` (each with ``quality`` and
    ``cost_usd``), against the best single model's quality and cost."""
    reach = [p["cost_usd"] for p in points if p["quality"] >= 0.95 * best_quality]
    cheap = [p["quality"] for p in points if p["cost_usd"] <= 0.25 * best_cost]
    return {
        "cost_at_95": 100.0 * min(reach) / best_cost if reach and best_cost > 0 else None,
        "quality_at_25": 100.0 * max(cheap) / best_quality if cheap and best_quality > 0 else None,
        "qauc": qauc(points, best_quality, best_cost),
        "aiq": aiq(points),
    }


def qauc(points: list[dict], best_quality: float, best_cost: float) -> float | None:
    """Mean over :data:`BUDGETS` of the best quality (% of ``best_quality``) within ``budget x best_cost``.

    >>> qauc([{"quality": 0.9, "cost_usd": 1.0}, {"quality": 0.6, "cost_usd": 0.1}], 0.9, 1.0)
    65.0
    """
    if best_quality <= 0 or best_cost <= 0 or not points:
        return None
    cost = np.array([p["cost_usd"] for p in points])
    quality = np.array([p["quality"] for p in points])
    fits = cost[None, :] <= BUDGETS[:, None] * best_cost
    best = np.where(fits, quality[None, :], -np.inf).max(axis=1)
    return float(100.0 * np.where(np.isfinite(best), best, 0.0).mean() / best_quality)


def aiq(points: list[dict]) -> float | None:
    """Area under the non-decreasing upper convex hull of the (cost, quality) points over their cost
    range, divided by that range (the quality of the best point when all cost the same).

    >>> aiq([{"quality": 0.5, "cost_usd": 0.0}, {"quality": 0.7, "cost_usd": 1.0}, {"quality": 0.9, "cost_usd": 2.0}])
    0.7
    """
    if not points:
        return None
    pts = sorted({(float(p["cost_usd"]), float(p["quality"])) for p in points})
    lo, hi = pts[0][0], pts[-1][0]
    if hi <= lo:
        return max(q for _, q in pts)
    hull: list[tuple[float, float]] = []  # upper hull, Andrew's monotone chain
    for c, q in pts:
        while len(hull) >= 2:
            (c1, q1), (c2, q2) = hull[-2], hull[-1]
            if (c2 - c1) * (q - q1) - (q2 - q1) * (c - c1) >= 0:  # hull[-1] is on or below the chord
                hull.pop()
            else:
                break
        hull.append((c, q))
    c = np.array([h[0] for h in hull])
    q = np.maximum.accumulate(np.array([h[1] for h in hull]))  # a router can always spend more for no less
    return float(np.trapezoid(q, c) / (hi - lo))


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
