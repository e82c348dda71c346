"""Counterfactual evaluation of a candidate policy on a decision log (``simulate --log`` or ``export``).

The log gives, per decision, the features x_i, the eligible models, the logging policy's exact
probabilities mu(. | x_i), the chosen model a_i and its outcome (quality, cost). A candidate yields
pi(. | x_i) over the same eligible models:

* ``fixed:MODEL``, ``random`` and a saved state (``--state``, frozen): their own probabilities, in
  batches (``greedy=True``: the greedy rule, all mass on the best mean score for a learning policy);
* ``lints`` / ``linucb`` / ``egreedy`` from scratch: progressive validation (Blum, Kalai & Langford,
  1999): decision i is scored by the candidate *before* it learns from the logged outcome of i,
  so it never peeks at what it is evaluated on.

The estimators of :mod:`banditroute.offline.estimators` then give quality, cost per decision and
reward = quality - cost_weight * cost, each with a bootstrap 95% interval. Decisions without a
quality (or cost) are left out of that outcome's estimate and counted in ``missing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from banditroute.config import PolicyConfig
from banditroute.core.features import Featurizer
from banditroute.core.policies import Policy, make_policy
from banditroute.core.state import load_state
from banditroute.core.types import Context
from banditroute.offline.estimators import ESTIMATORS, IPS, bootstrap_ci, effective_sample_size, estimate
from banditroute.offline.progress import progress as show_progress
from banditroute.offline.tables import read_table

REQUIRED = ("decision_id", "feature_version", "x", "input_tokens", "eligible", "probabilities", "chosen",
            "propensity", "cost_weight", "quality", "cost_usd")
LOW_SUPPORT = 1e-3


class LogError(ValueError):
    """A decision log that cannot be replayed (unreadable, malformed, other features)."""


@dataclass
class Log:
    """A validated decision log as arrays; ``models`` is the union of eligible models, in order."""

    decision_ids: list[str]
    X: np.ndarray
    input_tokens: np.ndarray
    models: list[str]
    eligible: np.ndarray  # (n, K) bool
    mu: np.ndarray  # (n, K) logging probabilities, 0 where not eligible
    chosen: np.ndarray  # (n,) index into models
    propensity: np.ndarray
    cost_weight: np.ndarray
    quality: np.ndarray  # nan where missing
    cost: np.ndarray  # nan where missing
    policy: str

    def __len__(self) -> int:
        return len(self.decision_ids)

    def context(self, i: int) -> Context:
        return Context(self.X[i], float(self.input_tokens[i]))

    def arms(self, i: int) -> np.ndarray:
        return np.flatnonzero(self.eligible[i])


def load_log(path: str | Path, featurizer: Featurizer | None = None) -> Log:
    """Read and validate a decision log (Parquet or JSON Lines)."""
    path = Path(path)
    t = read_table(path, "decision log", LogError, REQUIRED, "decisions")
    f = featurizer or Featurizer()
    cols = {c: t.column(c).to_pylist() for c in REQUIRED}
    versions = set(cols["feature_version"])
    if versions != {f.version}:
        if "prompt" in t.column_names and all(p for p in t.column("prompt").to_pylist()):
            cols["x"] = f.transform_many(t.column("prompt").to_pylist()).tolist()
        else:
            raise LogError(
                f"{path}: logged with features {sorted(versions)}, this version computes {f.version}, "
                "and the log holds no prompts to recompute them from"
            )
    n = t.num_rows
    X = np.asarray(cols["x"], dtype=float)
    if X.shape != (n, f.dim):
        raise LogError(f"{path}: x must have {f.dim} features per decision")
    models: list[str] = []
    index: dict[str, int] = {}
    for el in cols["eligible"]:
        for m in el:
            if m not in index:
                index[m] = len(models)
                models.append(m)
    K = len(models)
    eligible = np.zeros((n, K), dtype=bool)
    mu = np.zeros((n, K))
    chosen = np.empty(n, dtype=np.intp)
    for i, (el, probs, ch) in enumerate(zip(cols["eligible"], cols["probabilities"], cols["chosen"])):
        if len(el) != len(probs):
            raise LogError(f"{path}: row {i}: eligible and probabilities differ in length")
        if ch not in el:
            raise LogError(f"{path}: row {i}: chosen model {ch!r} is not among the eligible models")
        ks = [index[m] for m in el]
        eligible[i, ks] = True
        mu[i, ks] = probs
        chosen[i] = index[ch]
    prop = np.asarray(cols["propensity"], dtype=float)
    bad = np.flatnonzero(~np.isfinite(prop) | (prop <= 0) | (prop > 1))
    if bad.size:
        raise LogError(f"{path}: propensities must be in (0, 1]; row {bad[0]} has {prop[bad[0]]}")
    if not np.allclose(mu[np.arange(n), chosen], prop, rtol=1e-6, atol=1e-12):
        raise LogError(f"{path}: propensity differs from the logged probability of the chosen model")
    if not np.allclose(mu.sum(axis=1), 1.0, atol=1e-6):
        raise LogError(f"{path}: logged probabilities must sum to 1 per decision")
    q = np.array([np.nan if v is None else v for v in cols["quality"]], dtype=float)
    c = np.array([np.nan if v is None else v for v in cols["cost_usd"]], dtype=float)
    if np.any((q < 0) | (q > 1)):
        raise LogError(f"{path}: quality must be in [0, 1]")
    if np.any(c < 0):
        raise LogError(f"{path}: cost_usd must be >= 0")
    policy = t.column("policy")[0].as_py() if "policy" in t.column_names else "unknown"
    return Log(list(cols["decision_id"]), X, np.asarray(cols["input_tokens"], dtype=float), models, eligible, mu,
               chosen, prop, np.asarray(cols["cost_weight"], dtype=float), q, c, policy)


# -- candidates ------------------------------------------------------------------------------------
CHUNK = 4096  # decisions scored per call when the candidate does not learn in between


def candidate_probabilities(log: Log, name: str, cost_weight: float, state: str | None = None,
                            greedy: bool = False, seed: int = 0, settings: PolicyConfig | None = None,
                            progress: bool = False) -> np.ndarray:
    """pi(. | x_i) for every logged decision, as an (n, K) matrix over ``log.models``.

    Every candidate is asked through the same :meth:`Policy.probabilities` (or :meth:`Policy.greedy`)
    the server routes with. A candidate whose probabilities depend on what it learned, from scratch,
    is scored on decision i as a batch of one and only then learns from i's logged outcome
    (progressive validation); a frozen state, or a fixed rule, is scored in batches.
    """
    policy = _candidate_policy(log, name, state, settings)
    arm_of = np.array([policy.models.index(m) if m in policy.models else -1 for m in log.models])
    if np.any(arm_of < 0):
        unknown = [m for m, a in zip(log.models, arm_of) if a < 0]
        raise ValueError(f"candidate does not know the logged models {unknown}")
    n = len(log)
    eligible = np.zeros((n, len(policy.models)), dtype=bool)
    eligible[:, arm_of] = log.eligible
    rng = np.random.default_rng(seed)

    def score(rows: slice) -> np.ndarray:
        X, tokens, el = log.X[rows], log.input_tokens[rows], eligible[rows]
        s = policy.greedy(X, tokens, el, cost_weight) if greedy else policy.probabilities(X, tokens, el, cost_weight, rng)
        return s.probabilities[:, arm_of]

    pi = np.zeros((n, len(log.models)))
    if state is not None or not policy.learns_probabilities:
        for start in show_progress(range(0, n, CHUNK), -(-n // CHUNK), "candidate", progress, unit="batch"):
            pi[start:start + CHUNK] = score(slice(start, start + CHUNK))
        return pi
    for i in show_progress(range(n), n, "candidate", progress, unit="decision"):
        pi[i] = score(slice(i, i + 1))[0]
        q, c = log.quality[i], log.cost[i]
        policy.update(log.context(i), arm_of[log.chosen[i]], None if np.isnan(q) else float(q),
                      None if np.isnan(c) else float(c))
    return pi


def _candidate_policy(log: Log, name: str, state: str | None, settings: PolicyConfig | None) -> Policy:
    if state is not None:
        return load_state(state)
    return make_policy(name, log.models, log.X.shape[1], None, settings or PolicyConfig())


# -- reward models ----------------------------------------------------------------------------------
def _ridge_per_arm(X: np.ndarray, y: np.ndarray, arm: np.ndarray, K: int, lam: float) -> tuple[np.ndarray, np.ndarray]:
    d = X.shape[1]
    W = np.zeros((K, d))
    fallback = np.full(K, float(y.mean()) if y.size else 0.0)
    for k in range(K):
        m = arm == k
        if m.sum() == 0:
            continue
        Xk, yk = X[m], y[m]
        W[k] = np.linalg.solve(Xk.T @ Xk + lam * np.eye(d), Xk.T @ (yk - yk.mean()))
        fallback[k] = yk.mean()
    return W, fallback


def cross_fit(log: Log, y: np.ndarray, folds: int = 5, lam: float = 1.0, seed: int = 0,
              with_tokens: bool = False) -> np.ndarray:
    """rhat(x_i, a) for every decision and model, each row predicted by models fit on other folds.

    Per-model ridge regression of the outcome on the logged features (plus input tokens for cost),
    centred on the model's mean outcome; rows with a missing outcome are not used for fitting.
    """
    n, K = log.eligible.shape
    X = log.X if not with_tokens else np.hstack([log.X, log.input_tokens[:, None] / 1000.0])
    fold = np.random.default_rng(seed).permutation(n) % max(2, min(folds, n))
    out = np.zeros((n, K))
    observed = ~np.isnan(y)
    for f in np.unique(fold):
        train = (fold != f) & observed
        W, mean = _ridge_per_arm(X[train], y[train], log.chosen[train], K, lam)
        test = fold == f
        out[test] = X[test] @ W.T + mean
    return out


# -- evaluation -------------------------------------------------------------------------------------
def reward_models(log: Log, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted quality and cost predictions for every decision and model (for DM and DR)."""
    return cross_fit(log, log.quality, seed=seed), cross_fit(log, log.cost, seed=seed, with_tokens=True)


def evaluate(log: Log, pi: np.ndarray, cost_weight: float, estimators=("ips", "snips", "dm", "dr"),
             clip: float = np.inf, n_boot: int = 500, seed: int = 0, models=None) -> dict:
    """Estimates of quality, cost per decision and reward under ``pi``, with 95% intervals.

    ``models`` takes :func:`reward_models` of the log, to share them between candidates.
    """
    n = len(log)
    rows = np.arange(n)
    w = pi[rows, log.chosen] / log.propensity
    rng = np.random.default_rng(seed)
    q_hat, c_hat = models if models is not None else reward_models(log, seed)
    outcomes = {
        "quality": (log.quality, q_hat),
        "cost_usd": (log.cost, c_hat),
        "reward": (log.quality - cost_weight * log.cost, q_hat - cost_weight * c_hat),
    }
    result: dict[str, dict] = {}
    for name in estimators:
        est = IPS(clip=clip) if name == "ips" else ESTIMATORS[name]()
        result[name] = {}
        for outcome, (y, yhat) in outcomes.items():
            keep = ~np.isnan(y)
            dm_pi = (pi[keep] * yhat[keep]).sum(axis=1)
            dm_logged = yhat[rows[keep], log.chosen[keep]]
            terms, denom = est.terms(w[keep], y[keep], dm_pi, dm_logged)
            low, high = bootstrap_ci(terms, denom, n_boot=n_boot, rng=rng)
            result[name][outcome] = {"value": estimate(terms, denom), "low": low, "high": high}
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
            "reward": float(np.nanmean(q - cost_weight * c))}


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
