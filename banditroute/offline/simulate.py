"""Simulate online learning on a full-information outcome table, through the real Router.

The train split streams, in an order fixed by the seed, through ``Router.route`` and
``Router.feedback`` exactly as the server would drive them; only the chosen model's quality and
cost are revealed (partial, bandit feedback). The learned policy is then evaluated greedily (no
exploration, no learning) on the test split: for each test prompt the expected quality and cost
under the policy's greedy probabilities (one-hot for learning policies, uniform for ``random``).
"""

from __future__ import annotations

import numpy as np

from banditroute.config import PolicyConfig, PoolConfig, pool_from_names
from banditroute.core.features import Featurizer
from banditroute.core.policies import Policy, make_policy
from banditroute.core.reward import Feedback, Signal
from banditroute.core.router import Decision, Router
from banditroute.core.state import load_state
from banditroute.offline.outcomes import Outcomes
from banditroute.offline.progress import progress as show_progress


class CollectingSink:
    """Keeps every decision; rows carry the feedback joined to them."""

    def __init__(self):
        self.decisions: dict[str, Decision] = {}

    def decision(self, decision: Decision) -> None:
        self.decisions[decision.decision_id] = decision

    def feedback(self, pending, feedback, result) -> None:
        self.decisions[pending.decision_id].join(pending)

    def rows(self) -> list[dict]:
        return [d.log_row() for d in self.decisions.values()]


def pool_for(outcomes: Outcomes, pool: PoolConfig | None, settings: PolicyConfig | None = None) -> PoolConfig:
    """The pool to simulate with: the table's models, priced from ``pool`` where it names them."""
    prices = {}
    if pool is not None:
        prices = {m.name: (m.input_price_per_mtok, m.output_price_per_mtok) for m in pool.models}
        settings = settings or pool.policy
    out = pool_from_names(outcomes.models, prices)
    if settings is not None:
        out = out.model_copy(update={"policy": settings})
    return out


def build_router(outcomes: Outcomes, policy: str | Policy, cost_weight: float, seed: int,
                 pool: PoolConfig | None = None, featurizer: Featurizer | None = None,
                 sink=None, settings: PolicyConfig | None = None) -> Router:
    """A Router over the outcome table's models, as the simulator and replay use it."""
    if not (np.isfinite(cost_weight) and cost_weight >= 0):
        raise ValueError(f"cost weight must be a finite number >= 0, got {cost_weight}")
    p = pool_for(outcomes, pool, settings)
    p = p.model_copy(update={"policy": p.policy.model_copy(update={"cost_weight": cost_weight})})
    featurizer = featurizer or Featurizer()
    if isinstance(policy, str):
        prices = [(m.input_price_per_mtok, m.output_price_per_mtok) for m in p.models]
        policy = make_policy(policy, p.names, featurizer.dim, prices, p.policy)
    return Router(p, policy=policy, featurizer=featurizer, seed=seed, sink=sink)


def run_online(router: Router, train: Outcomes, seed: int, progress: bool = False,
               every: int = 0, on_step=None) -> dict:
    """Stream ``train`` through the router with bandit feedback; returns online totals.

    With ``every > 0``, ``on_step(n_seen)`` is called after every ``every`` prompts (learning curves).
    """
    order = np.random.default_rng(seed).permutation(len(train))
    col = {m: k for k, m in enumerate(train.models)}
    quality = cost = 0.0
    for step, i in enumerate(show_progress(order, len(order), "online", progress), start=1):
        d = router.route(train.prompts[i])
        k = col[d.model]
        q, c = float(train.quality[i, k]), float(train.cost[i, k])
        router.feedback(d.decision_id, Feedback(signals=[Signal(source="judge", kind="quality", value=q)], cost_usd=c))
        quality += q
        cost += c
        if every and step % every == 0:
            on_step(step)
    n = len(order)
    return {"n": n, "quality": quality / n if n else 0.0, "cost_usd": cost}


def evaluate_greedy(router: Router, test: Outcomes, cost_weights=None, progress: bool = False) -> list[dict]:
    """Expected test quality, total cost and model shares of the greedy policy, per cost weight."""
    cost_weights = [router.cost_weight] if cost_weights is None else list(cost_weights)
    col = np.array([test.models.index(m) for m in router.policy.models])
    quality, cost = test.quality[:, col], test.cost[:, col]
    X = router.featurizer.transform_many(test.prompts)
    tokens = np.array([router.featurizer.input_tokens(p) for p in test.prompts])
    n = max(len(test), 1)
    out = []
    for cw in show_progress(cost_weights, len(cost_weights), "test", progress, unit="cost weight"):
        p = router.policy.greedy(X, tokens, None, cw).probabilities
        share = np.zeros(len(test.models))
        share[col] = p.sum(axis=0)
        out.append({"cost_weight": float(cw), "n": len(test), "quality": float((p * quality).sum()) / n,
                    "cost_usd": float((p * cost).sum()),
                    "share": {m: round(float(v / n), 6) for m, v in zip(test.models, share)}})
    return out


def simulate(outcomes: Outcomes, policy: str = "lints", cost_weight: float | None = None, seed: int = 0,
             state: str | None = None, pool: PoolConfig | None = None, progress: bool = False,
             settings: PolicyConfig | None = None, with_log: bool = False, featurizer: Featurizer | None = None):
    """Learn online on the train split, evaluate greedily on the test split.

    Returns ``(result, log_rows)``; ``result`` follows the ``simulate --json`` contract and
    ``log_rows`` holds the decision log (empty unless ``with_log``).
    """
    settings = settings or (pool.policy if pool is not None else PolicyConfig())
    cw = settings.cost_weight if cost_weight is None else float(cost_weight)
    sink = CollectingSink() if with_log else None
    start: str | Policy = load_state(state) if state else policy
    router = build_router(outcomes, start, cw, seed, pool, featurizer=featurizer, sink=sink, settings=settings)
    train, test = outcomes.subset("train"), outcomes.subset("test")
    online = run_online(router, train, seed, progress)
    (test_result,) = evaluate_greedy(router, test, progress=progress)
    test_result.pop("cost_weight")
    result = {
        "policy": router.policy.describe(),
        "cost_weight": cw,
        "seed": seed,
        "feature_version": router.featurizer.version,
        "online": online,
        "test": test_result,
        "reference": test.reference(),
    }
    return result, (sink.rows() if sink else [])
