"""Simulate online learning on a full-information outcome table, through the service's own core.

The train split streams, in an order fixed by the seed, through the same
:class:`~banditroute.service.service.Service` the server runs (router, pending decisions,
the DuckDB log writer, here on an in-memory database): each prompt is routed as a batch of one and
its feedback learned and logged; only the chosen model's quality and cost are revealed (partial,
bandit feedback). ``--log`` exports that log with the server's export, so a simulated log and a
server's are the same table. The learned policy is then evaluated greedily (no
exploration, no learning) on the test split: for each test prompt the expected quality and cost
under the policy's greedy probabilities (one-hot for learning policies, uniform for ``random``).
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from banditroute.config import BudgetConfig, PolicyConfig, Settings, pool_from_names
from banditroute.core.budget import Budgets
from banditroute.core.features import Featurizer
from banditroute.core.policies import Policy, make_policy
from banditroute.core.policies.bayes_linear import single_threaded_blas
from banditroute.core.preference import preference_weights
from banditroute.core.reward import Feedback, Signal
from banditroute.core.router import Router, RouteRequest
from banditroute.core.state import load_state
from banditroute.core.types import net_score
from banditroute.errors import BudgetExhausted
from banditroute.log.store import Store
from banditroute.offline.outcomes import Outcomes
from banditroute.service.service import Service


def budget_per_request(usd: float, when_exhausted: str = "cheapest", pacing: bool = True,
                       pacing_step: float | None = None) -> BudgetConfig:
    """A budget of ``usd`` per request on average for :func:`simulate` (its total is ``usd`` times the
    train split's size)."""
    extra = {} if pacing_step is None else {"pacing_step": pacing_step}
    return BudgetConfig(name="simulate", tenant="user", usd=usd, when_exhausted=when_exhausted, pacing=pacing, **extra)


def pool_for(outcomes: Outcomes, pool: Settings | None, settings: PolicyConfig | None = None) -> Settings:
    """The pool to simulate with: the table's models, priced from ``pool`` where it names them."""
    prices = {}
    if pool is not None:
        prices = {m.name: (m.input_price_per_mtok, m.output_price_per_mtok) for m in pool.models}
        settings = settings or pool.policy
    out = pool_from_names(outcomes.models, prices)
    if settings is not None:
        out = out.model_copy(update={"policy": settings})
    return out


def build_service(outcomes: Outcomes, policy: str | Policy, cost_weight: float, seed: int,
                  pool: Settings | None = None, featurizer: Featurizer | None = None,
                  settings: PolicyConfig | None = None, budgets: Budgets | None = None) -> Service:
    """The service over the outcome table's models, logging to an in-memory DuckDB (close its store)."""
    if not (np.isfinite(cost_weight) and cost_weight >= 0):
        raise ValueError(f"cost weight must be a finite number >= 0, got {cost_weight}")
    p = pool_for(outcomes, pool, settings)
    p = p.model_copy(update={"policy": p.policy.model_copy(update={"cost_weight": cost_weight})})
    featurizer = featurizer or Featurizer()
    if isinstance(policy, str):
        prices = [(m.input_price_per_mtok, m.output_price_per_mtok) for m in p.models]
        policy = make_policy(policy, p.names, featurizer.dim, prices, p.policy)
    router = Router(p, policy=policy, featurizer=featurizer, seed=seed, budgets=budgets)
    # rows wait for the end of the run: a simulation acknowledges nothing, so it needs no group commit
    store = Store(":memory:", flush_interval=3600.0, group_commit=False)
    return Service(p, store, router=router)


class StepClock:
    """The simulator's clock for budgets: the number of requests routed so far."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_online(service: Service, train: Outcomes, seed: int, progress: bool = False,
               every: int = 0, on_step=None, clock: StepClock | None = None, on_decision=None) -> dict:
    """Stream ``train`` through the service with bandit feedback; returns online totals and regret.

    Each prompt is a request routed as a batch of one, then its feedback (the chosen model's quality
    as a judge's score and its cost) is learned and logged, as the server does.
    With ``every > 0``, ``on_step(n_seen)`` is called after every ``every`` prompts (learning curves);
    ``on_decision(i, d)``, if given, sees each decision ``d`` (of train row ``i``) before its feedback.
    The regret figures are :func:`online_regret` of the choices. Under a budget (``clock`` set, the
    requests of tenant ``simulate``) a refused request counts as quality 0 at no cost; ``refused``
    says how many.
    """
    order = np.random.default_rng(seed).permutation(len(train))
    col = {m: k for k, m in enumerate(train.models)}
    chosen = np.empty(len(order), dtype=np.intp)
    answered = np.ones(len(order), dtype=bool)
    user = "simulate" if clock is not None else None
    for step, i in enumerate(tqdm(order, "online", unit="prompt", disable=not progress, leave=False), start=1):
        if clock is not None:
            clock.now = float(step - 1)
        (d,) = service.route_many([RouteRequest(prompt=train.prompts[i], user=user)])
        if isinstance(d, BudgetExhausted):
            answered[step - 1], chosen[step - 1] = False, 0
            continue
        if isinstance(d, Exception):
            raise d
        if on_decision is not None:
            on_decision(i, d)
        k = chosen[step - 1] = col[d.model]
        q, c = float(train.quality[i, k]), float(train.cost[i, k])
        service.record_feedback(service.pending.get(d.decision_id),
                                Feedback(signals=[Signal(source="judge", kind="quality", value=q)], cost_usd=c))
        if every and step % every == 0:
            on_step(step)
    n = len(order)
    rows = order[np.arange(n)]
    quality = np.where(answered, train.quality[rows, chosen], 0.0)
    cost = np.where(answered, train.cost[rows, chosen], 0.0)
    out = {"n": n, "quality": float(quality.sum()) / n if n else 0.0, "cost_usd": float(cost.sum()),
           "regret": online_regret(net_score(train.quality[rows], train.cost[rows], service.router.cost_weight),
                                   chosen, train.models)}
    if clock is not None:
        out["refused"] = int((~answered).sum())
    return out


def online_regret(rewards: np.ndarray, chosen: np.ndarray, models: list[str], points: int = 20) -> dict:
    """Regret of the choices ``chosen`` (n,) on the stream's rewards ``q - w c`` (n, K), in reward units.

    * ``vs_best_fixed``: the reward of the best single model in hindsight (the one with the highest
      total over the whole stream, named in ``best_fixed``) minus the router's; ``vs_oracle``: the per-prompt best minus the
      router's; both totals over the stream, and as ``curve`` at ``points`` evenly spaced steps;
    * ``passes_best_fixed_at``: the step from which the router's cumulative reward stays at or above
      that model's to the end (None if it ends below).
    """
    n = len(chosen)
    if n == 0:
        return {"vs_best_fixed": 0.0, "vs_oracle": 0.0, "best_fixed": None, "passes_best_fixed_at": None, "curve": []}
    mine = np.cumsum(rewards[np.arange(n), chosen])
    best = int(np.argmax(rewards.sum(axis=0)))
    fixed = np.cumsum(rewards[:, best])
    oracle = np.cumsum(rewards.max(axis=1))
    below = np.flatnonzero(mine < fixed)
    passes = None if below.size and below[-1] == n - 1 else int(below[-1] + 2 if below.size else 1)
    steps = np.unique(np.linspace(1, n, min(points, n)).astype(int))
    return {"vs_best_fixed": float(fixed[-1] - mine[-1]), "vs_oracle": float(oracle[-1] - mine[-1]),
            "best_fixed": models[best], "passes_best_fixed_at": passes,
            "curve": [{"n": int(t), "vs_best_fixed": float(fixed[t - 1] - mine[t - 1]),
                       "vs_oracle": float(oracle[t - 1] - mine[t - 1])} for t in steps]}


def evaluate_greedy(router: Router, test: Outcomes, cost_weights=None, progress: bool = False,
                    per_prompt: bool = False) -> list[dict]:
    """Expected test quality, total cost and model shares of the greedy policy, per cost weight (by
    default the router's own: its cost preference, a weight per prompt, when it has one). ``per_prompt``:
    each entry also holds ``per_prompt``, the (quality, cost) arrays of every test prompt, for paired
    comparisons of routers on resampled test prompts."""
    col = np.array([test.models.index(m) for m in router.policy.models])
    quality, cost = test.quality[:, col], test.cost[:, col]
    X = router.featurizer.transform_many(test.prompts)
    tokens = np.array([router.featurizer.input_tokens(p) for p in test.prompts])
    if cost_weights is None:
        cost_weights = [router.cost_weight if router.cost_preference is None else preference_weights(
            np.full(len(X), router.cost_preference), router.policy.cost_model.predict(X, tokens), None,
            router.pool.policy.preference_scale)]
    n = max(len(test), 1)
    out = []
    for cw in tqdm(cost_weights, "test", unit="cost weight", disable=not progress, leave=False):
        p = router.policy.greedy(X, tokens, None, cw).probabilities
        share = np.zeros(len(test.models))
        share[col] = p.sum(axis=0)
        out.append({"cost_weight": float(np.median(cw)), "n": len(test), "quality": float((p * quality).sum()) / n,
                    "cost_usd": float((p * cost).sum()),
                    "share": {m: round(float(v / n), 6) for m, v in zip(test.models, share)}})
        if per_prompt:
            out[-1]["per_prompt"] = ((p * quality).sum(axis=1), (p * cost).sum(axis=1))
    return out


def simulate(outcomes: Outcomes, policy: str = "lints", cost_weight: float | None = None, seed: int = 0,
             state: str | None = None, pool: Settings | None = None, progress: bool = False,
             settings: PolicyConfig | None = None, log: str | None = None,
             featurizer: Featurizer | None = None, cost_preference: float | None = None,
             budget: BudgetConfig | None = None, per_prompt: bool = False) -> dict:
    """Learn online on the train split, evaluate greedily on the test split.

    Returns the ``simulate --json`` result. ``cost_preference`` (in [0, 1]) routes by preference instead
    of the cost weight (:mod:`banditroute.core.preference`). With ``log`` (a ``.parquet`` or ``.jsonl`` path) the
    decision log is exported there, by the server's export; the result then says how many decisions.

    ``budget`` (see :func:`budget_per_request`): the online stream runs under it, as one tenant whose
    period is the stream (its clock counts requests); the result gains ``budget``: what was allowed
    and spent, per request and in total, the share spent, and the requests that found it exhausted.
    ``per_prompt``: ``test`` also holds every test prompt's quality and cost (:func:`evaluate_greedy`).
    """
    settings = settings or (pool.policy if pool is not None else PolicyConfig())
    if cost_preference is not None:
        settings = settings.model_copy(update={"cost_preference": float(cost_preference)})
    cw = settings.cost_weight if cost_weight is None else float(cost_weight)
    start: str | Policy = load_state(state) if state else policy
    train, test = outcomes.subset("train"), outcomes.subset("test")
    clock = budgets = None
    if budget is not None:
        clock = StepClock()
        budget = budget.model_copy(update={"usd": budget.usd * len(train)})
        budgets = Budgets([budget], clock=clock, window=(0.0, float(len(train))), rate=1.0)
    service = build_service(outcomes, start, cw, seed, pool, featurizer=featurizer, settings=settings, budgets=budgets)
    try:
        with single_threaded_blas():
            online = run_online(service, train, seed, progress, clock=clock)
        router = service.router
        (test_result,) = evaluate_greedy(router, test, progress=progress, per_prompt=per_prompt)
        test_result.pop("cost_weight")
        result = {
            "policy": router.policy.describe(),
            "cost_weight": cw,
            "cost_preference": router.cost_preference,
            "seed": seed,
            "feature_version": router.featurizer.version,
            "online": online,
            "test": test_result,
            "reference": test.reference(),
        }
        if budget is not None:
            (pacer,) = budgets.pacers.values()
            n = max(len(train), 1)
            result["budget"] = {
                "usd_per_request": budget.usd / n, "usd": budget.usd, "spent_usd": online["cost_usd"],
                "spent_per_request": online["cost_usd"] / n, "spent_share": online["cost_usd"] / budget.usd,
                "pacing": budget.pacing, "when_exhausted": budget.when_exhausted,
                "exhausted_requests": pacer.exhausted, "refused": online.pop("refused"),
                "final_cost_preference": pacer.preference if budget.pacing else None}
        if log is not None:
            service.store.flush().result()
            result["log"] = {"path": str(log), "decisions": service.store.export(log)}
    finally:
        service.store.close()
    return result
