"""Counterfactual evaluation of a candidate policy on a decision log (``simulate --log`` or ``export``).

The log (:mod:`.logs`) gives, per decision, the features x_i, the eligible models, the logging
policy's exact probabilities mu(. | x_i), the chosen model a_i and its outcome (quality, cost). A
candidate yields pi(. | x_i) over the same eligible models (:mod:`.candidates`). The estimators of :mod:`banditroute.offline.estimators` then give quality, cost per decision and
reward = quality - cost_weight * cost, each with a bootstrap 95% interval. Decisions without a
quality (or cost) are left out of that outcome's estimate and counted in ``missing``.

Gateway fallbacks: a decision whose call failed has no outcome, and the decision that took its call
over was drawn from the first one's probabilities renormalised over the models left. Each such chain
is one request, and its importance weight is the product of the weights of its decisions,
W = prod_t pi(a_t | x, E_t) / mu(a_t | x, E_t) (the failure's own probability is the same under both
policies and cancels), with the candidate also falling back over the models left, as the gateway
does (:func:`chain_weights`). IPS and SNIPS are then unbiased for the candidate's quality per
request; DR scales its direct term by the weight of the chain before the last decision. DM and DR
assume the candidate's choices are served: where it puts probability on a failing provider they
count that model's predicted quality, not the fallback's.

Small logs: where the bootstrap cannot see the variance (an effective sample under
:data:`SMALL_ESS`, constant outcomes, or models the candidate needs chosen fewer than
:data:`FEW_OUTCOMES` times) the interval is widened to contain Wilson's interval for a bounded
outcome at the effective sample size; quality intervals stay inside [0, 1]. A candidate that puts
more than :data:`UNSEEN_MASS` of its probability on models the log never chose with an outcome is
not estimable: every estimate is null, with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from banditroute.core.types import net_score
from banditroute.offline.candidates import candidate_probabilities
from banditroute.offline.estimators import (
    ESTIMATORS,
    IPS,
    bootstrap_ci,
    bootstrap_groups,
    effective_sample_size,
    estimate,
    wilson_interval,
)
from banditroute.offline.logs import LOW_SUPPORT, Log, load_log
from banditroute.offline.reward_models import RewardModels, reward_models

SMALL_ESS = 500  # effective decisions below which the bootstrap interval alone is not trusted
FEW_OUTCOMES = 10  # logged outcomes of a model below which its part of the estimate is thin
UNSEEN_MASS = 0.01  # candidate probability on never-observed models beyond which nothing is estimable
SMALL_LOG = 100  # decisions below which replay warns that the log is too small to judge


def evaluate(log: Log, pi: np.ndarray, cost_weight: float, estimators=("ips", "snips", "dm", "dr"),
             clip: float = np.inf, n_boot: int = 500, seed: int = 0, models: RewardModels | None = None,
             widen: bool = True) -> dict:
    """Estimates of quality, cost per decision and reward under ``pi``, with 95% intervals.

    ``widen=False`` keeps the bare bootstrap intervals on small samples (for comparison only).

    ``models`` takes :func:`~.reward_models.reward_models` of the log, to share them between
    candidates; they are fitted here only when an estimator needs them (DM, DR).
    """
    n = len(log)
    pi, w, prefix = chain_weights(pi, log)
    rng = np.random.default_rng(seed)
    chosen = [IPS(clip=clip) if name == "ips" else ESTIMATORS[name]() for name in estimators]
    direct = None
    if any(est.needs_model for est in chosen):
        direct = _direct_terms(log, pi, models if models is not None else reward_models(log, seed), cost_weight)
    groups = bootstrap_groups(n, rng)
    outcomes = {"quality": log.quality, "cost_usd": log.cost,
                "reward": net_score(log.quality, log.cost, cost_weight)}
    result: dict[str, dict] = {}
    warnings = []
    for outcome, y in outcomes.items():
        keep = ~np.isnan(y)
        kept = max(int(keep.sum()), 1)
        if kept == n:
            keep = slice(None)  # a view, not a copy of every per-decision array
        observed = np.bincount(log.chosen[keep], minlength=len(log.models))
        unseen_row = pi @ (observed == 0)
        unseen = float(unseen_row[keep].sum() / kept)
        thin = float((pi @ (observed < FEW_OUTCOMES))[keep].sum() / kept)
        ess_kept = effective_sample_size(w[keep])
        bounds = _bounds(outcome, log, cost_weight)
        small = ess_kept < SMALL_ESS or thin > UNSEEN_MASS or (y[keep].size and np.ptp(y[keep]) == 0)
        if unseen > UNSEEN_MASS:
            never = [m for k, m in enumerate(log.models) if observed[k] == 0 and pi[keep, k].sum() > 0]
            reason = (f"the candidate puts {unseen:.1%} of its probability on models with no logged {outcome} "
                      f"({', '.join(never)}): not estimable from this log")
            warnings.append(reason)
        for est in chosen:
            if unseen > UNSEEN_MASS:
                result.setdefault(est.name, {})[outcome] = {"value": None, "low": None, "high": None,
                                                            "not_estimable": reason}
                continue
            dm_pi = dm_logged = None
            if est.needs_model:
                dm_pi, dm_logged = (v[keep] for v in direct[outcome])
                if prefix is not None and est.name == "dr":
                    dm_pi = dm_pi * prefix[keep]
            terms, denom = est.terms(w[keep], y[keep], dm_pi, dm_logged)
            value = estimate(terms, denom)
            low, high = bootstrap_ci(terms, denom, n_boot=n_boot, rng=rng,
                                     groups=None if groups is None else groups[keep])
            if widen and small and bounds is not None:
                w_low, w_high = wilson_interval(value, *bounds, max(ess_kept, 1.0))
                low, high = _widest(low, w_low, min), _widest(high, w_high, max)
            if outcome == "quality":  # a bounded outcome's interval stays inside its bounds
                low, high = (None if v is None else min(max(v, 0.0), 1.0) for v in (low, high))
            result.setdefault(est.name, {})[outcome] = {"value": _finite(value), "low": _finite(low),
                                                        "high": _finite(high)}
    support = _mass(pi, log.rare) / n
    ess = effective_sample_size(w)
    if support > 0.01:
        warnings.append(f"the candidate puts {support:.1%} of its probability on models the log chose with "
                        f"probability below {LOW_SUPPORT}: IPS, SNIPS and DR are unreliable there")
    if ess < 0.1 * n:
        warnings.append(f"effective sample size {ess:.0f} is under 10% of the {n} decisions: wide intervals")
    if n < SMALL_LOG:
        warnings.append(f"only {n} decisions: too few to judge a candidate; intervals are wide and estimates rough")
    missing_q = int(np.isnan(log.quality).sum())
    if missing_q:
        warnings.append(f"{missing_q} decisions have no quality feedback and are left out of quality and reward")
    return {"n": n, "ess": ess, "max_weight": float(w.max()) if n else 0.0, "low_support_mass": support,
            "missing": {"quality": missing_q, "cost_usd": int(np.isnan(log.cost).sum())},
            "estimates": result, "warnings": warnings}


def _direct_terms(log: Log, pi: np.ndarray, models: RewardModels, cost_weight: float) -> dict:
    """Per outcome, sum_a pi(a | x_i) rhat(x_i, a) and rhat(x_i, a_i) for every decision, computed a
    chunk of the log at a time (the (n, K) predictions are never held whole)."""
    n = len(log)
    out = {k: (np.empty(n), np.empty(n)) for k in ("quality", "cost_usd", "reward")}
    for start, X in log.feature_chunks():
        rows = slice(start, start + len(X))
        q_hat, c_hat = models.predict(start, X, log.input_tokens[rows])
        at = (np.arange(len(X)), log.chosen[rows])
        for outcome, yhat in (("quality", q_hat), ("cost_usd", c_hat), ("reward", net_score(q_hat, c_hat, cost_weight))):
            out[outcome][0][rows] = (pi[rows] * yhat).sum(axis=1)
            out[outcome][1][rows] = yhat[at]
    return out


def _mass(pi: np.ndarray, mask: np.ndarray, rows: int = 1 << 16) -> float:
    """sum of pi where mask is set, a block of rows at a time (no (n, K) temporary)."""
    return float(sum((pi[i:i + rows] * mask[i:i + rows]).sum() for i in range(0, len(pi), rows)))


def chain_weights(pi: np.ndarray, log: Log) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The candidate's probabilities and importance weights on a log with gateway fallbacks.

    At a fallback the candidate, like the gateway, takes its probabilities at the chain's first
    decision renormalised over the models left (``log.eligible`` of the fallback's row; uniform when it
    gave them none, as :meth:`Router.fallback` does); a fallback's
    weight is its own times that of the chain of decisions it took over (``log.replaces``), which is
    also returned alone as the prefix (1 without fallback). Without fallbacks: ``(pi, w, None)``.
    """
    n = len(log)
    if log.replaces is None:
        return pi, pi[np.arange(n), log.chosen] / log.propensity, None
    pi = pi.copy()
    rows = np.flatnonzero(log.replaces >= 0)
    root = np.arange(n)
    for i in rows.tolist():  # rows are in time order: a chain's earlier links come first
        root[i] = root[log.replaces[i]]
        p = np.where(log.eligible[i], pi[root[i]], 0.0)
        total = p.sum()
        pi[i] = p / total if total > 0 else log.eligible[i] / log.eligible[i].sum()
    w = pi[np.arange(n), log.chosen] / log.propensity
    prefix = np.ones(n)
    for i in rows.tolist():
        prefix[i] = w[log.replaces[i]]
        w[i] *= prefix[i]
    return pi, w, prefix


def _bounds(outcome: str, log: Log, cost_weight: float) -> tuple[float, float] | None:
    """The range an outcome's mean lies in: quality [0, 1]; cost [0, the largest logged cost];
    reward [-cost_weight * that cost, 1]."""
    if outcome == "quality":
        return 0.0, 1.0
    top = float(np.nanmax(log.cost)) if np.isfinite(log.cost).any() else 0.0
    if outcome == "cost_usd":
        return (0.0, top) if top > 0 else None
    return -cost_weight * top, 1.0


def _widest(a: float, b: float, pick) -> float:
    """``pick`` (min or max) of two interval ends, ignoring a missing one."""
    ends = [v for v in (a, b) if v is not None and np.isfinite(v)]
    return pick(ends) if ends else float("nan")


def _finite(v: float | None) -> float | None:
    """None for a missing or undefined number (strict JSON has no NaN)."""
    return float(v) if v is not None and np.isfinite(v) else None


def logged_value(log: Log, cost_weight: float) -> dict:
    """The logging policy's own mean outcomes (on-policy, no estimation)."""
    q, c = log.quality, log.cost
    with np.errstate(all="ignore"):
        return {"quality": _mean(q), "cost_usd": _mean(c), "reward": _mean(net_score(q, c, cost_weight))}


def _mean(values: np.ndarray) -> float | None:
    return _finite(float(np.nanmean(values))) if np.isfinite(values).any() else None


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
