"""A candidate policy's probabilities pi(. | x_i) on every decision of a log.

Every candidate is asked through the same :meth:`~banditroute.core.policies.base.Policy.probabilities`
(or :meth:`~banditroute.core.policies.base.Policy.greedy`) the server routes with:

* ``fixed:MODEL``, ``random`` and a saved state (``--state``, frozen): their own probabilities, in
  batches (``greedy=True``: the greedy rule, all mass on the best mean score for a learning policy);
* ``lints`` / ``linucb`` / ``squarecb`` / ``egreedy`` from scratch: progressive validation (Blum,
  Kalai & Langford, 1999, "Beating the Hold-Out: Bounds for K-fold and Progressive Cross-Validation"):
  decision i is scored by the candidate, as a batch of one, *before* it learns from the logged outcome
  of i, so it never peeks at what it is evaluated on.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from banditroute.config import PolicyConfig
from banditroute.core.policies import Policy, make_policy
from banditroute.core.policies.bayes_linear import single_threaded_blas
from banditroute.core.state import load_state
from banditroute.offline.logs import Log

SCORE_ROWS = 4096  # decisions scored per call when the candidate does not learn in between


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
    eligible = np.zeros((len(log), len(policy.models)), dtype=bool)
    eligible[:, arm_of] = log.eligible
    rng = np.random.default_rng(seed)

    def score(start: int, X: np.ndarray) -> np.ndarray:
        rows = slice(start, start + len(X))
        tokens, el = log.input_tokens[rows], eligible[rows]
        s = policy.greedy(X, tokens, el, cost_weight) if greedy else policy.probabilities(X, tokens, el, cost_weight, rng)
        return s.probabilities[:, arm_of]

    # float32: a probability needs no more, and at 10^7 decisions this is the largest array replay holds
    pi = np.zeros((len(log), len(log.models)), dtype=np.float32)
    bar = tqdm(total=len(log), desc="candidate", unit="decision", disable=not progress, leave=False)
    if state is not None or not policy.learns_probabilities:
        for start, X in log.feature_chunks():
            for j in range(0, len(X), SCORE_ROWS):
                pi[start + j:start + j + SCORE_ROWS] = score(start + j, X[j:j + SCORE_ROWS])
            bar.update(len(X))
        bar.close()
        return pi
    with single_threaded_blas():
        for start, X in log.feature_chunks():
            for j in range(len(X)):
                i = start + j
                pi[i] = score(i, X[j:j + 1])[0]
                q, c = log.quality[i], log.cost[i]
                policy.update(log.context(i, X[j]), arm_of[log.chosen[i]], None if np.isnan(q) else float(q),
                              None if np.isnan(c) else float(c), propensity=float(log.propensity[i]))
            bar.update(len(X))
    bar.close()
    return pi


def _candidate_policy(log: Log, name: str, state: str | None, settings: PolicyConfig | None) -> Policy:
    if state is not None:
        return load_state(state)
    return make_policy(name, log.models, log.dim, None, settings or PolicyConfig())
