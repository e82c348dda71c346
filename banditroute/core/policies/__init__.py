"""Routing policies and the names they go by on the command line.

``lints`` (default), ``linucb``, ``squarecb``, ``egreedy``, ``random`` and ``fixed:MODEL``.
"""

from __future__ import annotations

import numpy as np

from banditroute.config import POLICY_NAMES, PolicyConfig
from banditroute.core.policies.base import Policy, apply_floor
from banditroute.core.policies.baselines import EpsilonGreedy, FixedPolicy, RandomPolicy
from banditroute.core.policies.bayes_linear import BayesLinear
from banditroute.core.policies.cost import CostModel
from banditroute.core.policies.linear import LinTS, LinUCB, SquareCB

#: policy classes by their ``name`` (``fixed:MODEL`` is ``fixed`` with its target)
POLICY_CLASSES = {cls.name: cls for cls in (LinTS, LinUCB, SquareCB, EpsilonGreedy, RandomPolicy, FixedPolicy)}

__all__ = [
    "POLICY_CLASSES", "POLICY_NAMES", "BayesLinear", "CostModel", "EpsilonGreedy", "FixedPolicy", "LinTS",
    "LinUCB", "Policy", "RandomPolicy", "SquareCB", "apply_floor", "exploration_for", "floors", "make_policy",
]


def floors(settings: PolicyConfig, n_models: int) -> tuple[float, float]:
    """The per-model ``(floor, floor_min)`` of a pool of ``n_models``: the configured ones, both scaled by
    ``min(1, floor_share / (K floor))`` so that the floor takes at most ``floor_share`` of the traffic
    however many models the pool has (the exploration an epsilon-greedy rule spreads as epsilon / K).

    >>> floors(PolicyConfig(), 2), floors(PolicyConfig(), 10)
    ((0.01, 0.001), (0.005, 0.0005))
    """
    if settings.floor_share is None or settings.floor <= 0 or n_models <= 0:
        return settings.floor, settings.floor_min
    scale = min(1.0, settings.floor_share / (n_models * settings.floor))
    return settings.floor * scale, settings.floor_min * scale


def exploration_for(settings: PolicyConfig, n_models: int) -> float:
    """The exploration scale of a pool of ``n_models``: ``exploration``, times ``sqrt(ln 2 / ln K)`` with
    ``exploration_pool_scaling`` (1 for two models). The expected largest of K independent standard
    normal draws grows like ``sqrt(2 ln K)`` (the extreme-value limit of normal maxima; Leadbetter,
    Lindgren & Rootzen, 1983, "Extremes and Related Properties of Random Sequences and Processes", ch. 1), so the best of K-1 other models' Thompson draws beats a leader by a margin that grows
    with K; the factor holds that margin to what it is for two models.

    >>> s = PolicyConfig(exploration_pool_scaling=True)
    >>> round(exploration_for(s, 2), 3), round(exploration_for(s, 11), 3), round(exploration_for(s, 28), 3)
    (0.5, 0.269, 0.228)
    """
    if not settings.exploration_pool_scaling or n_models <= 2:
        return settings.exploration
    return settings.exploration * float(np.sqrt(np.log(2.0) / np.log(n_models)))


def make_policy(name: str, models, dim: int, prices=None, settings: PolicyConfig | None = None) -> Policy:
    """Build a fresh policy from its command-line name.

    ``settings`` supplies the floor, the exploration scale and the prior strength; ``prices`` the
    list prices per model (``(input, output)`` USD per 1M tokens, or ``None``).
    """
    settings = settings or PolicyConfig()
    floor, floor_min = floors(settings, len(models))
    common = {"prices": prices, "floor": floor, "expected_output_tokens": settings.expected_output_tokens,
              "floor_decay": settings.floor_decay, "floor_min": floor_min, "importance_cap": settings.importance_cap,
              "cost_prior_strength": settings.cost_prior_strength}
    linear = {"exploration": exploration_for(settings, len(models)), "prior_strength": settings.prior_strength,
              "prior_mean": settings.prior_quality, "pooled": settings.pooled,
              "drift_threshold": settings.drift_threshold, "drift_delta": settings.drift_delta,
              "drift_keep": settings.drift_keep, "price_prior": settings.price_prior,
              "exploration_decay": settings.exploration_decay, "deviation_strength": settings.deviation_strength,
              "noise_prior": settings.noise_prior}
    if name in ("lints", "linucb", "squarecb"):
        return POLICY_CLASSES[name](models, dim, **common, **linear)
    if name == "egreedy":
        return EpsilonGreedy(models, dim, epsilon=min(0.1 * settings.exploration, 1.0), **common)
    if name == "random":
        return RandomPolicy(models, dim, **common)
    if name.startswith("fixed:"):
        common["floor"], common["floor_decay"] = 0.0, None
        return FixedPolicy(models, dim, target=name.split(":", 1)[1], **common)
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")
