"""Baseline policies: uniform random, a fixed model, and epsilon-greedy over river regressors.

All of them keep learning the shared cost model (and the epsilon-greedy one its quality
regressors), so their predicted scores are meaningful in logs and in replay.
"""

from __future__ import annotations

import numpy as np
from river import linear_model, optim

from banditroute.core.policies.base import Policy, Scores, one_hot
from banditroute.core.policies.cost import Context


class RandomPolicy(Policy):
    """Uniform over the eligible models: ``p_k = 1 / K``. Predicted quality is the running mean."""

    name = "random"

    def __init__(self, models, dim: int, **kwargs):
        super().__init__(models, dim, **kwargs)
        self._sum = np.zeros(len(self.models))

    def predict_quality(self, ctx, arms):
        n = self.quality_observations[arms]
        return np.where(n > 0, self._sum[arms] / np.maximum(n, 1), 0.5)

    def _raw_probabilities(self, ctx, arms, scores, cost_weight, rng):
        return np.full(len(arms), 1.0 / len(arms))

    def greedy(self, ctx, arms, cost_weight):
        """A fixed rule exploits by being itself: its own probabilities, without the floor."""
        arms = np.asarray(arms, dtype=np.intp)
        s = self.scores(ctx, arms)
        s.probabilities = self._raw_probabilities(ctx, arms, s, cost_weight, None)
        return s

    def _update_quality(self, ctx, arm, quality, weight):
        self._sum[arm] += quality


class FixedPolicy(RandomPolicy):
    """Always the model ``target`` (``fixed:MODEL`` on the command line).

    When ``target`` is not eligible for a request, the policy falls back to uniform over the
    eligible models. Its floor defaults to 0, so it is exactly "always MODEL".
    """

    name = "fixed"

    def __init__(self, models, dim: int, target: str, **kwargs):
        kwargs.setdefault("floor", 0.0)
        super().__init__(models, dim, **kwargs)
        if target not in self.models:
            raise ValueError(f"fixed policy: unknown model {target!r}; known: {', '.join(self.models)}")
        self.target = target
        self.target_arm = self.models.index(target)

    def _raw_probabilities(self, ctx, arms, scores, cost_weight, rng):
        hit = np.flatnonzero(arms == self.target_arm)
        if hit.size == 0:
            return np.full(len(arms), 1.0 / len(arms))
        return one_hot(len(arms), int(hit[0]))

    def describe(self) -> str:
        return f"fixed:{self.target}"


class EpsilonGreedy(Policy):
    """Epsilon-greedy over one river linear regressor per model.

    ``p = epsilon / K + (1 - epsilon) * onehot(argmax_k score_k)``, with quality predicted by
    ``river.linear_model.LinearRegression`` (SGD, squared loss) clipped to [0, 1].

    Parameters
    ----------
    epsilon
        Exploration rate (``0.1 * exploration`` from the pool configuration).
    learning_rate
        SGD step size.
    """

    name = "egreedy"

    def __init__(self, models, dim: int, epsilon: float = 0.1, learning_rate: float = 0.05, **kwargs):
        super().__init__(models, dim, **kwargs)
        self.epsilon = float(epsilon)
        self.regressors = [
            linear_model.LinearRegression(optimizer=optim.SGD(learning_rate), intercept_init=0.5, l2=1e-4)
            for _ in self.models
        ]

    @staticmethod
    def _dict(ctx: Context) -> dict[int, float]:
        return {i: v for i, v in enumerate(ctx.x.tolist()) if v != 0.0}

    def predict_quality(self, ctx, arms):
        xd = self._dict(ctx)
        return np.clip([self.regressors[a].predict_one(xd) for a in arms], 0.0, 1.0)

    def _raw_probabilities(self, ctx, arms, scores: Scores, cost_weight, rng):
        k = len(arms)
        return self.epsilon / k + (1.0 - self.epsilon) * one_hot(k, int(np.argmax(scores.net(cost_weight))))

    def _update_quality(self, ctx, arm, quality, weight):
        self.regressors[arm].learn_one(self._dict(ctx), quality, w=weight)
