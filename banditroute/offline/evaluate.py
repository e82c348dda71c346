"""Counterfactual evaluation of a candidate policy on a decision log (``simulate --log`` or ``export``).

The log (:mod:`.logs`) gives, per decision, the features x_i, the eligible models, the logging
policy's exact probabilities mu(. | x_i), the chosen model a_i and its outcome (quality, cost). A
candidate yields pi(. | x_i) over the same eligible models (:mod:`.candidates`). The estimators of :mod:`banditroute.offline.estimators` then give quality, cost per decision and
reward = quality - cost_weight * cost, each with a bootstrap 95% interval. Decisions without a
quality (or cost) are left out of that outcome's estimate and counted in ``missing``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from banditroute.core.types import net_score
from banditroute.offline.candidates import candidate_probabilities
from banditroute.offline.estimators import ESTIMATORS, IPS, bootstrap_ci, effective_sample_size, estimate
from banditroute.offline.logs import Log, load_log
from banditroute.offline.reward_models import reward_models

LOW_SUPPORT = 1e-3


def evaluate(log: Log, pi: np.ndarray, cost_weight: float, estimators=("ips", "snips", "dm", "dr"),
             clip: float = np.inf, n_boot: int = 500, seed: int = 0, models=None) -> dict:
    """Estimates of quality, cost per decision and reward under ``pi``, with 95% intervals.

    ``models`` takes :func:`~.reward_models.reward_models` of the log, to share them between
    candidates; they are fitted here only when an estimator needs them (DM, DR).
    """
    n = len(log)
    rows = np.arange(n)
    w = pi[rows, log.chosen] / log.propensity
    rng = np.random.default_rng(seed)
    chosen = [IPS(clip=clip) if name == "ips" else ESTIMATORS[name]() for name in estimators]
    if any(est.needs_model for est in chosen):
        q_hat, c_hat = models if models is not None else reward_models(log, seed)
        r_hat = net_score(q_hat, c_hat, cost_weight)
    else:
        q_hat = c_hat = r_hat = None
    outcomes = {
        "quality": (log.quality, q_hat),
        "cost_usd": (log.cost, c_hat),
        "reward": (net_score(log.quality, log.cost, cost_weight), r_hat),
    }
    result: dict[str, dict] = {}
    for est in chosen:
        result[est.name] = {}
        for outcome, (y, yhat) in outcomes.items():
            keep = ~np.isnan(y)
            dm_pi = dm_logged = None
            if est.needs_model:
                dm_pi = (pi[keep] * yhat[keep]).sum(axis=1)
                dm_logged = yhat[rows[keep], log.chosen[keep]]
            terms, denom = est.terms(w[keep], y[keep], dm_pi, dm_logged)
            low, high = bootstrap_ci(terms, denom, n_boot=n_boot, rng=rng)
            result[est.name][outcome] = {"value": estimate(terms, denom), "low": low, "high": high}
    support = float((pi * (log.mu < LOW_SUPPORT)).sum() / n)
    ess = effective_sample_size(w)
    warnings = []
    if support > 0.01:
        warnings.append(f"the candidate puts {support:.1%} of its probability on models the log chose with "
                        f"probability below {LOW_SUPPORT}: IPS, SNIPS and DR are unreliable there")
    if ess < 0.1 * n:
        warnings.append(f"effective sample size {ess:.0f} is under 10% of the {n} decisions: wide intervals")
    missing_q = int(np.isnan(log.quality).sum())
    if missing_q:
        warnings.append(f"{missing_q} decisions have no quality feedback and are left out of quality and reward")
    return {"n": n, "ess": ess, "max_weight": float(w.max()), "low_support_mass": support,
            "missing": {"quality": missing_q, "cost_usd": int(np.isnan(log.cost).sum())},
            "estimates": result, "warnings": warnings}


def logged_value(log: Log, cost_weight: float) -> dict:
    """The logging policy's own mean outcomes (on-policy, no estimation)."""
    q, c = log.quality, log.cost
    return {"quality": float(np.nanmean(q)), "cost_usd": float(np.nanmean(c)),
            "reward": float(np.nanmean(net_score(q, c, cost_weight)))}


def replay(path: str, policy: str = "lints", cost_weight: float | None = None, state: str | None = None,
           estimators=("ips", "snips", "dm", "dr"), clip: float = np.inf, greedy: bool = False, seed: int = 0,
           n_boot: int = 500, progress: bool = False, log: Log | None = None) -> dict:
    """The ``replay --json`` result for one candidate."""
    log = log or load_log(path)
    cw = float(np.median(log.cost_weight)) if cost_weight is None else float(cost_weight)
    if not (np.isfinite(cw) and cw >= 0):
        raise ValueError(f"cost weight must be a finite number >= 0, got {cw}")
    pi = candidate_probabilities(log, policy, cw, state=state, greedy=greedy, seed=seed, progress=progress)
    name = f"state:{Path(state).name}" if state else policy
    out = {"policy": name + (" (greedy)" if greedy else ""), "cost_weight": cw, "logging_policy": log.policy}
    out.update(evaluate(log, pi, cw, estimators, clip=clip, n_boot=n_boot, seed=seed))
    out["logged"] = logged_value(log, cw)
    return out
