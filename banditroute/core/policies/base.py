"""The policy interface: batch-only probabilities over eligible models, and learning from outcomes.

A policy maps a batch of B prompts (features ``X``, (B, d), and input tokens) and an eligibility
mask ``eligible`` (B, K) over its K models to a (B, K) probability matrix, zero where a model is not
eligible. A single decision is a batch of one: the server, the simulator and replay all call the
same :meth:`Policy.probabilities`, so what is evaluated offline is what runs online.

Scores follow :func:`~banditroute.core.types.net_score`. After a policy computes its raw
probabilities ``p``, :func:`apply_floor` mixes in the exploration floor ``f``:

    p'_k = f + (1 - K_b f) p_k  over the K_b models eligible in row b,

so every eligible model keeps probability at least ``f`` (IPS and DR need it) and each row still
sums to one. With ``floor_decay = n0`` the floor shrinks as the policy learns, to

    f_n = max(floor_min, f sqrt(n0 / (n0 + n))),    n = quality observations learned so far,

so that exploration beyond what the posterior asks for ends, while every eligible model keeps at least
``floor_min``: the smallest propensity a log then holds, which bounds the importance weights of
off-policy estimates by ``1 / floor_min``. The configured ``floor`` and ``floor_min`` are per model;
:func:`banditroute.core.policies.floors` scales both so that the floor takes at most ``floor_share``
of the traffic over the pool's K models.

Learning from bandit feedback sees model k's outcome only where the policy chose k, mostly where it
already expected k to win, so an unweighted regression fits k to that region and extrapolates
elsewhere. With ``importance_cap = c`` each quality observation of model k taken with propensity
``p_t`` is weighted by its self-normalised inverse propensity

    w_t = min(c, (1 / p_t) / ((1 / n_k) sum_{s <= t, a_s = k} 1 / p_s)),

so that the weighted fit targets model k's quality over all prompts (importance-weighted regression,
the reduction that did best in Bietti, Agarwal & Langford, 2021, "A Contextual Bandit Bake-off",
JMLR 22(133)). Dividing by the running mean of ``1 / p`` over k's own observations keeps their weights
near one on average, so the posterior's precision still counts observations (with raw ``1 / p`` a
rarely chosen model would look as certain as if it had seen every prompt); the cap bounds what one
exploratory observation can do. Observations without a propensity (full-information pretraining, a
state loaded without it) are weighted one.
"""

from __future__ import annotations

import numpy as np

from banditroute.core.policies.cost import CostModel
from banditroute.core.types import Context, Scores, net_score


def apply_floor(p: np.ndarray, eligible: np.ndarray | None, floor: float) -> np.ndarray:
    """``f + (1 - K_b f) p`` on the eligible models of each row b; uniform on them when ``K_b f >= 1``.

    ``eligible`` None means every model of every row.
    """
    if floor <= 0:
        return p
    if eligible is None:  # the usual case, without the per-row masks
        k = p.shape[1]
        return np.full(p.shape, 1.0 / k) if k * floor >= 1.0 else floor + (1.0 - k * floor) * p
    k = eligible.sum(axis=1, keepdims=True)
    floored = np.where(eligible, floor + (1.0 - k * floor) * p, 0.0)
    return np.where(k * floor >= 1.0, eligible / k, floored)


def uniform(shape: tuple[int, int], eligible: np.ndarray | None) -> np.ndarray:
    """``1 / K_b`` on the eligible models of each row b (None: every model)."""
    if eligible is None:
        return np.full(shape, 1.0 / shape[1])
    return eligible / eligible.sum(axis=1, keepdims=True)


def argmax_one_hot(net: np.ndarray) -> np.ndarray:
    """All mass on the highest value of each row (ineligible models carry ``-inf``)."""
    p = np.zeros(net.shape)
    p[np.arange(len(net)), np.argmax(net, axis=1)] = 1.0
    return p


class Policy:
    """Base class: models, the shared cost model, the floor, the batch checks and the greedy rule.

    Subclasses implement :meth:`_predict_quality` (mean predicted quality, (B, K)),
    :meth:`_raw_probabilities` and :meth:`_update_quality`, and list their settings in
    :meth:`params` and their learned arrays in :meth:`arrays` (for snapshots).

    Parameters
    ----------
    models
        Model names; arm ``i`` is ``models[i]``.
    dim
        Feature dimension.
    prices
        Optional ``(input, output)`` USD per 1M tokens per model, for the cost model's prior.
    floor
        Minimum probability of every eligible model (at the start, with ``floor_decay``).
    floor_decay, floor_min
        ``n0`` and the lower bound of the decaying floor (module docstring); ``None``: a constant floor.
    expected_output_tokens
        Output length assumed by list-price cost estimates.
    importance_cap
        Cap ``c`` of the importance weights of quality observations (module docstring); ``None``:
        every observation weighs one.
    """

    name = "base"
    #: whether the probabilities depend on what the policy learned (replay must then score each
    #: decision before learning from it; fixed rules can be scored in one batch)
    learns_probabilities = True

    def __init__(self, models, dim: int, prices=None, floor: float = 0.01, expected_output_tokens: float = 256.0,
                 floor_decay: float | None = None, floor_min: float = 0.001, importance_cap: float | None = None,
                 cost_prior_strength: float = 1.0):
        self.models = list(models)
        self.dim = int(dim)
        self.floor = float(floor)
        self.floor_decay = None if floor_decay is None else float(floor_decay)
        self.floor_min = float(floor_min)
        self.cost_model = CostModel(self.models, prices, expected_output_tokens, cost_prior_strength)
        self.quality_observations = np.zeros(len(self.models), dtype=np.int64)
        self.importance_cap = None if importance_cap is None else float(importance_cap)
        # per model: the observations with a propensity and the sum of their 1 / p (the weights' normaliser)
        self.weighted_observations = np.zeros(len(self.models), dtype=np.int64)
        self.inverse_propensity_sum = np.zeros(len(self.models))
        self.feature_version: str | None = None

    # -- subclass hooks -------------------------------------------------------------------------
    def _predict_quality(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _raw_probabilities(self, X: np.ndarray, net: np.ndarray, eligible: np.ndarray | None, rng) -> np.ndarray:
        """Probabilities before the floor; ``net`` is ``-inf`` where ``eligible`` (None: all) is False."""
        raise NotImplementedError

    def _greedy_probabilities(self, X: np.ndarray, net: np.ndarray, eligible: np.ndarray | None) -> np.ndarray:
        return argmax_one_hot(net)

    def _update_quality(self, ctx: Context, arm: int, quality: float, weight: float) -> None:
        raise NotImplementedError

    # -- the policy verbs -----------------------------------------------------------------------
    def _batch(self, X, input_tokens, eligible, cost_weights):
        """Check a batch at the boundary; returns float arrays and a boolean (B, K) mask, or None for
        a mask that admits every model (which the policies then need not apply)."""
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(f"X must have shape (batch, {self.dim}), got {X.shape}")
        b, k = len(X), len(self.models)
        tokens = np.asarray(input_tokens, dtype=float).reshape(b)
        mask = None
        if eligible is not None:
            mask = np.asarray(eligible, dtype=bool)
            if mask.shape != (b, k):
                raise ValueError(f"eligible must have shape ({b}, {k}), got {mask.shape}")
            if mask.all():
                mask = None
            elif b and not mask.any(axis=1).all():
                raise ValueError("every decision needs at least one eligible model")
        cw = np.asarray(cost_weights, dtype=float)
        return X, tokens, mask, (cw if cw.ndim == 0 else cw.reshape(b, 1))

    def predict(self, X: np.ndarray, input_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean predicted quality and cost in USD of every model for each row of ``X``: two (B, K)."""
        return self._predict_quality(X), self.cost_model.predict(X, input_tokens)

    def _scored(self, X, input_tokens, eligible, cost_weights):
        X, tokens, mask, cw = self._batch(X, input_tokens, eligible, cost_weights)
        quality, cost = self.predict(X, tokens)
        net = net_score(quality, cost, cw)
        if mask is not None:
            net[~mask] = -np.inf  # never the best, never drawn
        return X, mask, quality, cost, net

    def probabilities(self, X, input_tokens, eligible, cost_weights, rng: np.random.Generator) -> Scores:
        """Probabilities (with the floor) over the eligible models of each row, and the predictions.

        ``X`` (B, d); ``input_tokens`` (B,); ``eligible`` (B, K) booleans, or None for all models;
        ``cost_weights`` a scalar or (B,). Rows never depend on each other except through shared
        random draws, so a row's probabilities are the same alone or inside a batch.
        """
        X, mask, quality, cost, net = self._scored(X, input_tokens, eligible, cost_weights)
        p = self._raw_probabilities(X, net, mask, rng)
        return Scores(apply_floor(p, mask, self.current_floor()), quality, cost)

    def annealed(self, value: float, n0: float | None) -> float:
        """``value sqrt(n0 / (n0 + n))`` after the ``n`` quality observations learned so far (``value``
        itself when ``n0`` is None): the schedule of the decaying floor and of annealed exploration."""
        if n0 is None:
            return value
        return value * np.sqrt(n0 / (n0 + float(self.quality_observations.sum())))

    def current_floor(self) -> float:
        """The floor now: ``floor``, or its decayed value after the observations learned so far."""
        if self.floor_decay is None:
            return self.floor
        return max(min(self.floor_min, self.floor), self.annealed(self.floor, self.floor_decay))

    def greedy(self, X, input_tokens, eligible, cost_weights) -> Scores:
        """The exploitation rule, without the floor: all mass on the best mean score for a learning
        policy, the rule itself for a fixed one."""
        X, mask, quality, cost, net = self._scored(X, input_tokens, eligible, cost_weights)
        return Scores(self._greedy_probabilities(X, net, mask), quality, cost)

    def update(self, ctx: Context, arm: int, quality: float | None = None, cost_usd: float | None = None,
               weight: float = 1.0, propensity: float | None = None) -> None:
        """Learn from one outcome of model ``arm``, chosen with probability ``propensity`` (None: not
        known, as in full-information pretraining); either part may be missing."""
        if quality is not None:
            self._update_quality(ctx, arm, float(quality), float(weight) * self.importance(arm, propensity))
            self.quality_observations[arm] += 1
        if cost_usd is not None:
            self.cost_model.update(ctx, arm, float(cost_usd))

    def importance(self, arm: int, propensity: float | None) -> float:
        """The importance weight ``w_t`` of a quality observation of ``arm`` (module docstring), after
        counting it in the running mean of ``1 / p``; 1 without a cap or a propensity."""
        if self.importance_cap is None or propensity is None or not propensity > 0:
            return 1.0
        inverse = 1.0 / float(propensity)
        self.weighted_observations[arm] += 1
        self.inverse_propensity_sum[arm] += inverse
        mean = self.inverse_propensity_sum[arm] / self.weighted_observations[arm]
        return min(self.importance_cap, inverse / mean)

    # -- state (see banditroute.core.state) -----------------------------------------------------
    def params(self) -> dict:
        """The constructor's keyword arguments that rebuild this policy (JSON values)."""
        return {"floor": self.floor, "floor_decay": self.floor_decay, "floor_min": self.floor_min,
                "expected_output_tokens": self.cost_model.expected_output_tokens,
                "prices": self.cost_model.prices(), "importance_cap": self.importance_cap,
                "cost_prior_strength": self.cost_model.cost_prior_strength}

    def arrays(self) -> dict[str, np.ndarray]:
        """What the policy learned, as named arrays."""
        out = {"quality_observations": self.quality_observations,
               "weighted_observations": self.weighted_observations,
               "inverse_propensity_sum": self.inverse_propensity_sum}
        out.update({f"cost.{k}": v for k, v in self.cost_model.arrays().items()})
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace what the policy learned with :meth:`arrays` of the same policy."""
        self.quality_observations = np.array(arrays["quality_observations"], dtype=np.int64)
        k = len(self.models)  # a state saved before importance weights: their running means start afresh
        self.weighted_observations = np.array(arrays.get("weighted_observations", np.zeros(k)), dtype=np.int64)
        self.inverse_propensity_sum = np.array(arrays.get("inverse_propensity_sum", np.zeros(k)), dtype=float)
        self.cost_model.load_arrays({k[5:]: v for k, v in arrays.items() if k.startswith("cost.")})

    def describe(self) -> str:
        return self.name
