"""Baseline policies: uniform random, a fixed model, and epsilon-greedy over online linear regressors.

All of them keep learning the shared cost model (and the epsilon-greedy one its quality
regressors), so their predicted scores are meaningful in logs and in replay.
"""

from __future__ import annotations

import numpy as np

from banditroute.core.policies.base import Policy, uniform
from banditroute.core.policies.linear import epsilon_rule
from banditroute.core.types import Context


class RandomPolicy(Policy):
    """Uniform over the eligible models: ``p_k = 1 / K``. Predicted quality is the running mean."""

    name = "random"
    learns_probabilities = False

    def __init__(self, models, dim: int, **kwargs):
        super().__init__(models, dim, **kwargs)
        self._sum = np.zeros(len(self.models))

    def _predict_quality(self, X):
        n = self.quality_observations
        mean = np.where(n > 0, self._sum / np.maximum(n, 1), 0.5)
        return np.broadcast_to(mean, (len(X), len(self.models)))

    def _raw_probabilities(self, X, net, eligible, rng):
        return uniform(net.shape, eligible)

    def _greedy_probabilities(self, X, net, eligible):
        """A fixed rule exploits by being itself: its own probabilities, without the floor."""
        return self._raw_probabilities(X, net, eligible, None)

    def _update_quality(self, ctx, arm, quality, weight):
        self._sum[arm] += quality

    def arrays(self):
        return {**super().arrays(), "quality_sum": self._sum}

    def load_arrays(self, arrays):
        super().load_arrays(arrays)
        self._sum = np.array(arrays["quality_sum"], dtype=float)


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

    def params(self):
        return {**super().params(), "target": self.target}

    def _raw_probabilities(self, X, net, eligible, rng):
        p = super()._raw_probabilities(X, net, eligible, rng)
        hit = slice(None) if eligible is None else eligible[:, self.target_arm]
        p[hit] = 0.0
        p[hit, self.target_arm] = 1.0
        return p

    def describe(self) -> str:
        return f"fixed:{self.target}"


class EpsilonGreedy(Policy):
    """Epsilon-greedy over one online linear regressor per model.

    ``p = epsilon / K + (1 - epsilon) * onehot(argmax_k score_k)``, with quality predicted by a
    linear regression ``q_k(x) = beta_k + w_k . x`` clipped to [0, 1], fit by plain SGD on the
    squared loss with an L2 penalty (the update of river's ``LinearRegression``): for an observation
    ``y`` with weight ``s``, ``g = 2 s (q_k(x) - y)``, ``beta_k -= intercept_lr * g`` and
    ``w_k -= learning_rate * (g x + l2 w_k)``.

    Parameters
    ----------
    epsilon
        Exploration rate (``0.1 * exploration`` from the configuration).
    learning_rate
        SGD step size of the weights.
    """

    name = "egreedy"
    intercept_lr = 0.01
    l2 = 1e-4

    def __init__(self, models, dim: int, epsilon: float = 0.1, learning_rate: float = 0.05, **kwargs):
        super().__init__(models, dim, **kwargs)
        self.epsilon = float(epsilon)
        self.learning_rate = float(learning_rate)
        self.weights = np.zeros((len(self.models), dim))
        self.intercepts = np.full(len(self.models), 0.5)

    def params(self):
        return {**super().params(), "epsilon": self.epsilon, "learning_rate": self.learning_rate}

    def arrays(self):
        return {**super().arrays(), "weights": self.weights, "intercepts": self.intercepts}

    def load_arrays(self, arrays):
        super().load_arrays(arrays)
        self.weights = np.array(arrays["weights"], dtype=float)
        self.intercepts = np.array(arrays["intercepts"], dtype=float)

    def _predict_quality(self, X):
        return np.clip(X @ self.weights.T + self.intercepts, 0.0, 1.0)

    def _raw_probabilities(self, X, net, eligible, rng):
        return epsilon_rule(net, eligible, self.epsilon)

    def _update_quality(self, ctx: Context, arm: int, quality: float, weight: float) -> None:
        w = self.weights[arm]
        g = 2.0 * (float(w @ ctx.x) + self.intercepts[arm] - quality) * weight
        self.intercepts[arm] -= self.intercept_lr * g
        w -= self.learning_rate * (g * ctx.x + self.l2 * w)
