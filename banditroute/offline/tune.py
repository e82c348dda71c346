"""Sweeping the cost weight: on an outcome table (the frontier a deployment would get) or on a decision
log (off-policy estimates, and a recommended weight).

* :func:`tune`: for each weight the policy learns online over the table's train split at that weight
  (as :func:`~banditroute.offline.simulate.simulate` does, same seed) and is evaluated greedily on
  the test split.
* :func:`tune_on_log`: for each weight the candidate is replayed (:mod:`.candidates`) and one
  estimator gives its mean quality and cost per request with 95% intervals. The recommendation reads
  the conservative end of the intervals: with ``target_quality``, the cheapest weight whose quality
  interval's *low* end reaches it; with ``budget``, the best-quality weight whose cost interval's
  *high* end fits it.

Both default to :func:`cost_weight_grid` over the spread of mean cost between the dearest and the
cheapest model, so the sweep spans "cost barely matters" to "cost dominates any plausible quality
difference".
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from tqdm import tqdm

from banditroute.config import PolicyConfig, Settings
from banditroute.core.preference import preference_for_weight
from banditroute.offline.candidates import candidate_probabilities
from banditroute.offline.estimators import ESTIMATORS
from banditroute.offline.evaluate import evaluate, logged_value
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.logs import Log, load_log, median_cost_spread
from banditroute.offline.outcomes import Outcomes
from banditroute.offline.reward_models import reward_models
from banditroute.offline.simulate import simulate

EXTEND = 6  # at most this many tripled weights past the default grid
REFINE = 3  # rounds of midpoints where the frontier crosses 95% of the best model's quality
FILL = 3  # rounds of midpoints where neighbouring points' costs are far apart
FILL_GAP = 0.05  # ... more than this share of the best model's cost (qauc's budget step) apart


def cost_weight_grid(mean_costs, n_points: int) -> list[float]:
    """0 plus ``n_points - 1`` weights spaced geometrically from ``0.01 / gap`` to ``1 / gap`` quality
    points per USD, ``gap`` being the spread of ``mean_costs`` (mean cost per request of each model)."""
    means = [float(m) for m in mean_costs if np.isfinite(m)]
    gap = (max(means) - min(means)) if len(means) > 1 else 0.0
    if gap <= 0:
        return [0.0]
    return [0.0] + [float(f"{w:.4g}") for w in np.geomspace(0.01 / gap, 1.0 / gap, n_points - 1)]


def default_grid(outcomes: Outcomes, n_points: int = 20) -> list[float]:
    """:func:`cost_weight_grid` over the mean cost of each model on the table's train split."""
    return cost_weight_grid(outcomes.subset("train").cost.mean(axis=0), n_points)


def log_grid(log: Log, n_points: int = 16) -> list[float]:
    """:func:`cost_weight_grid` over the mean logged cost of each model the log chose."""
    return cost_weight_grid([np.nanmean(log.cost[log.chosen == k]) for k in range(len(log.models))
                             if np.any(log.chosen == k)], n_points)


def extend_upward(run, top: float, cheapest_cost: float) -> None:
    """Triple the cost weight past ``top`` (at most :data:`EXTEND` times) until ``run(weight)["cost_usd"]``
    is within 5% of ``cheapest_cost``, the cheapest single model's; ``run`` must cache its points."""
    for _ in range(EXTEND):
        if top <= 0 or run(top)["cost_usd"] <= 1.05 * cheapest_cost:
            return
        top = float(f"{3 * top:.4g}")
        run(top)


def midpoint(a: float, b: float) -> float:
    """The weight between ``a < b`` that a refinement tries: their geometric mean (half of ``b`` when
    ``a`` is 0)."""
    return float(f"{(np.sqrt(a * b) if a > 0 else b / 2):.6g}")


def tune(outcomes: Outcomes, policy: str = "lints", seed: int = 0, cost_weights=None,
         pool: Settings | None = None, settings: PolicyConfig | None = None, progress: bool = False,
         featurizer=None, per_prompt: bool = False) -> dict:
    """The frontier as in the ``tune --json`` contract, plus single-model reference points.

    Without ``cost_weights`` the sweep spans the whole frontier: :func:`default_grid`, extended upward
    (:data:`EXTEND`) until the router spends little more than the cheapest model, then refined
    (:data:`REFINE` rounds of geometric midpoints) where quality crosses 95% of the best model's, and
    filled (:data:`FILL` rounds) wherever two neighbouring weights' test costs are more than
    :data:`FILL_GAP` of the best model's cost apart: a budget that falls in such a gap would otherwise
    get the cheaper point's quality, and the frontier would show a step where the router has a slope.
    ``per_prompt``: each point also holds every test prompt's quality and cost (``per_prompt``, not JSON).
    """
    test = outcomes.subset("test")
    ref = test.reference()
    target = 0.95 * ref["best_quality"]
    cheapest = float(test.cost.sum(axis=0).min())
    points: dict[float, dict] = {}
    bar = tqdm(desc="cost weights", unit="point", disable=not progress, leave=False)

    def run(cw: float) -> dict:
        if cw not in points:
            res = simulate(outcomes, policy, cw, seed, pool=pool, settings=settings, featurizer=featurizer,
                           per_prompt=per_prompt)
            points[cw] = {"cost_weight": cw, "quality": res["test"]["quality"], "cost_usd": res["test"]["cost_usd"],
                          "online_quality": res["online"]["quality"], "online_cost_usd": res["online"]["cost_usd"],
                          "online_regret_vs_best_fixed": res["online"]["regret"]["vs_best_fixed"],
                          "online_regret_vs_oracle": res["online"]["regret"]["vs_oracle"],
                          "online_passes_best_fixed_at": res["online"]["regret"]["passes_best_fixed_at"],
                          "policy": res["policy"]}
            if per_prompt:
                points[cw]["per_prompt"] = res["test"]["per_prompt"]
            bar.update()
        return points[cw]

    for cw in default_grid(outcomes) if cost_weights is None else list(cost_weights):
        run(float(cw))
    if cost_weights is None:
        extend_upward(run, max(points), cheapest)
        for _ in range(REFINE):
            ws = sorted(points)
            crossings = [(a, b) for a, b in pairwise(ws)
                         if (points[a]["quality"] >= target) != (points[b]["quality"] >= target)]
            if not crossings:
                break
            for a, b in crossings:
                run(midpoint(a, b))
        for _ in range(FILL):
            ws = sorted(points)
            gaps = [(a, b) for a, b in pairwise(ws)
                    if abs(points[a]["cost_usd"] - points[b]["cost_usd"]) > FILL_GAP * ref["best_cost_usd"]
                    and midpoint(a, b) not in points]
            if not gaps:
                break
            for a, b in gaps:
                run(midpoint(a, b))
    bar.close()
    ordered = [points[w] for w in sorted(points)]
    name = ordered[0].pop("policy")
    for p in ordered[1:]:
        p.pop("policy")
    summary = frontier_summary(ordered, ref["best_quality"], ref["best_cost_usd"])
    models = {m: {"quality": float(test.quality[:, k].mean()), "cost_usd": float(test.cost[:, k].sum())}
              for k, m in enumerate(test.models)}
    # the same trade-off as a cost_preference, at the table's median price spread per prompt
    spread = float(np.median(test.cost.max(axis=1) - test.cost.min(axis=1))) if len(test) else 0.0
    scale = (settings or (pool.policy if pool is not None else PolicyConfig())).preference_scale
    for p in ordered:
        p["cost_preference"] = round(preference_for_weight(p["cost_weight"], spread, scale), 4) if spread > 0 else None
    return {"policy": name, "seed": seed, "points": ordered, **summary, "reference": ref, "models": models,
            "median_cost_spread_usd": spread}


def tune_on_log(path: str, policy: str = "lints", cost_weights=None, state: str | None = None,
                estimator: str = "dr", target_quality: float | None = None, budget: float | None = None,
                seed: int = 0, n_boot: int = 300, progress: bool = False) -> dict:
    """The ``tune LOG --json`` result: the off-policy frontier over the grid and a recommendation."""
    log = load_log(path)
    grid = log_grid(log) if cost_weights is None else list(cost_weights)
    points = []
    models = reward_models(log, seed) if ESTIMATORS[estimator].needs_model else None  # shared by every weight
    for cw in tqdm(grid, "cost weights", unit="point", disable=not progress, leave=False):
        pi = candidate_probabilities(log, policy, cw, state=state, seed=seed)
        est = evaluate(log, pi, cw, (estimator,), n_boot=n_boot, seed=seed, models=models)
        e = est["estimates"][estimator]
        points.append({"cost_weight": cw, "quality": e["quality"], "cost_usd": e["cost_usd"], "ess": est["ess"]})
    rec = None
    if target_quality is not None:
        ok = [p for p in points if p["quality"]["low"] is not None and p["quality"]["low"] >= target_quality]
        if ok:
            best = min(ok, key=lambda p: p["cost_usd"]["value"])
            rec = {"cost_weight": best["cost_weight"],
                   "reason": f"cheapest whose quality 95% interval starts at or above {target_quality}"}
    elif budget is not None:
        ok = [p for p in points if p["cost_usd"]["high"] is not None and p["cost_usd"]["high"] <= budget]
        if ok:
            best = max(ok, key=lambda p: p["quality"]["value"])
            rec = {"cost_weight": best["cost_weight"],
                   "reason": f"best quality whose cost 95% interval ends at or below {budget} USD per request"}
    spread = median_cost_spread(path)
    scale = PolicyConfig().preference_scale
    for p in points:  # the same trade-off as a cost_preference, at the log's typical price spread
        p["cost_preference"] = None if spread is None else round(preference_for_weight(p["cost_weight"], spread, scale), 4)
    if rec is not None:
        rec["cost_preference"] = None if spread is None else round(preference_for_weight(rec["cost_weight"], spread,
                                                                                          scale), 4)
    return {"policy": policy if state is None else f"state:{state}", "estimator": estimator, "n": len(log),
            "points": points, "target_quality": target_quality, "budget_usd_per_request": budget,
            "recommendation": rec, "median_cost_spread_usd": spread,
            "logged": {k: v for k, v in logged_value(log, 0.0).items() if k != "reward"}}
