"""Warm start: fit a policy from the train split of a full-information outcome table.

Every train prompt updates every model's quality and cost models with that model's recorded
outcome (full information), so the result is also the "supervised router trained with full
information" that experiments compare the online-learned policy against.
"""

from __future__ import annotations

from banditroute.config import PolicyConfig, Settings
from banditroute.core.features import Featurizer
from banditroute.core.policies import Policy, make_policy
from banditroute.core.policies.bayes_linear import single_threaded_blas
from banditroute.core.types import Context
from banditroute.offline.outcomes import Outcomes, OutcomeTableError


def pretrain(outcomes: Outcomes, policy: str = "lints", pool: Settings | None = None,
             settings: PolicyConfig | None = None, featurizer: Featurizer | None = None) -> Policy:
    """A policy whose models have seen every (train prompt, model) outcome."""
    train = outcomes.subset("train")
    if len(train) == 0:
        raise OutcomeTableError("the outcome table has no rows in the train split")
    settings = settings or (pool.policy if pool is not None else PolicyConfig())
    prices = None
    if pool is not None:
        spec = {m.name: m for m in pool.models}
        prices = [(spec[m].input_price_per_mtok, spec[m].output_price_per_mtok) if m in spec else None
                  for m in outcomes.models]
    f = featurizer or Featurizer()
    pol = make_policy(policy, outcomes.models, f.dim, prices, settings)
    pol.feature_version = f.version
    X = f.transform_many(train.prompts)
    with single_threaded_blas():
        for i, prompt in enumerate(train.prompts):
            ctx = Context(X[i], f.input_tokens(prompt))
            for k in range(len(outcomes.models)):
                pol.update(ctx, k, quality=float(train.quality[i, k]), cost_usd=float(train.cost[i, k]))
    return pol
