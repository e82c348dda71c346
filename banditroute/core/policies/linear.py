"""Linear contextual bandits on per-model Bayesian ridge quality models (:mod:`.bayes_linear`).

Model k's quality is ``q_k(x) = mu0 + theta_k . x`` with posterior precision ``A_k``; its exploration
scale at ``x`` is ``s_k(x) = v sqrt(x^T A_k^{-1} x)`` with ``v = exploration * noise_sd`` (with
``noise_prior``, a noise learned per model: :meth:`_LinearPolicy.noise`). With
``pooled=True`` the models' weights shrink towards a fit of all of them together, so each feedback
informs every model (:mod:`.bayes_linear`). With ``drift_threshold`` set, a Page-Hinkley test on each
model's residuals (:mod:`banditroute.core.drift`) detects a model whose quality changed (a provider
update) and the policy keeps only ``drift_keep`` of what it had learned about it. With ``price_prior``
(and ``pooled``) a model's prior intercept follows its list price (:func:`price_covariate`): a model
with little evidence is expected to do what the pool's evidence says models at its price do.

* :class:`LinTS`, linear Thompson sampling (Agrawal & Goyal, 2013, "Thompson Sampling for
  Contextual Bandits with Linear Payoffs"): the score of model k is Gaussian,
  ``N(q_k(x) - w c_k(x), s_k(x)^2)``, and the probability that k has the highest sampled score is
  estimated by Monte Carlo over ``n_samples`` joint draws. The router then samples the model from
  that vector, so the logged propensity is exact by construction.
* :class:`LinUCB` (Li et al., 2010, "A Contextual-Bandit Approach to Personalized News Article
  Recommendation"): the optimistic score ``q_k(x) + s_k(x) - w c_k(x)``, turned into probabilities
  by an epsilon or a softmax rule.
* :class:`SquareCB`, inverse gap weighting on the mean scores (Foster & Rakhlin, 2020, "Beyond UCB:
  Optimal and Efficient Contextual Bandits with Regression Oracles"; Abe & Long, 1999): exploration
  in closed form, more on models whose predicted score is close to the best one, less as the policy
  learns; the probabilities are exact without sampling.
"""

from __future__ import annotations

import numpy as np

from banditroute.core.drift import PageHinkley
from banditroute.core.policies.base import Policy
from banditroute.core.policies.bayes_linear import BayesLinear
from banditroute.core.types import Context

try:  # the C core of thompson_wins, built where a compiler was available at install
    from banditroute.core.policies import _thompson as _native
except ImportError:
    _native = None


class _LinearPolicy(Policy):
    def __init__(self, models, dim: int, prices=None, floor: float = 0.01, exploration: float = 1.0,
                 prior_strength: float = 10.0, prior_mean: float = 0.5, noise_sd: float = 0.5,
                 expected_output_tokens: float = 256.0, floor_decay: float | None = None, floor_min: float = 0.001,
                 pooled: bool = False, drift_threshold: float | None = None, drift_delta: float = 0.1,
                 drift_keep: float = 0.0, importance_cap: float | None = None, price_prior: bool = False,
                 exploration_decay: float | None = None, cost_prior_strength: float = 1.0,
                 deviation_strength: float = 1.0, noise_prior: float | None = None):
        super().__init__(models, dim, prices, floor, expected_output_tokens, floor_decay, floor_min, importance_cap,
                         cost_prior_strength)
        self.exploration = float(exploration)
        self.exploration_decay = None if exploration_decay is None else float(exploration_decay)
        self.noise_sd = float(noise_sd)
        self.noise_prior = None if noise_prior is None else float(noise_prior)
        # per model: the weighted sum of squared one-step-ahead residuals and of their weights
        self.noise_ss, self.noise_n = np.zeros(len(self.models)), np.zeros(len(self.models))
        self.price_prior = bool(price_prior)
        covariate = price_covariate(self.cost_model) if self.price_prior else None
        self.quality = BayesLinear(len(self.models), dim, prior_strength, prior_mean, pooled=pooled,
                                   arm_covariate=covariate, deviation_strength=deviation_strength)
        self.drift_keep = float(drift_keep)
        self.drift = None if drift_threshold is None else PageHinkley(len(self.models), drift_threshold, drift_delta)

    def _predict_quality(self, X: np.ndarray) -> np.ndarray:
        return self.quality.predict(X)

    def _update_quality(self, ctx: Context, arm: int, quality: float, weight: float) -> None:
        if self.drift is not None or self.noise_prior is not None:
            residual = quality - self.quality.prior_mean - float(ctx.x @ self.quality.theta[arm])
        if self.noise_prior is not None:
            self.noise_ss[arm] += weight * residual * residual
            self.noise_n[arm] += weight
        self.quality.update(ctx.x, arm, quality, weight)
        if self.drift is not None and self.drift.update(arm, residual):
            self.quality.forget(arm, self.drift_keep)
            self.noise_ss[arm] *= self.drift_keep  # its residuals were the old model's too
            self.noise_n[arm] *= self.drift_keep

    def current_exploration(self) -> float:
        """``exploration``, or with ``exploration_decay = n0`` ``exploration sqrt(n0 / (n0 + n))`` after
        ``n`` quality observations: the posterior's own shrinking plus a schedule that anneals its
        inflation, as the floor's (SquareCB keeps its own schedule, ``gamma_n``)."""
        return float(self.annealed(self.exploration, self.exploration_decay))

    def noise(self) -> float | np.ndarray:
        """The quality noise's standard deviation: ``noise_sd``, or with ``noise_prior = nu0`` one per model,

            sigma_k = sqrt((nu0 noise_sd^2 + sum_i w_i r_i^2) / (nu0 + sum_i w_i)),

        ``r_i`` the model's one-step-ahead residuals (each observation against the prediction before it
        was learned) and ``w_i`` their weights: the posterior mean of an inverse-gamma prior on the
        variance worth ``nu0`` observations at ``noise_sd^2`` (Gelman et al., 2013, "Bayesian Data
        Analysis", sec. 2.6), so a model whose outcomes are predictable explores less. A change detector's
        alarm keeps ``drift_keep`` of a model's sums, as of the rest of what it learned."""
        if self.noise_prior is None:
            return self.noise_sd
        return np.sqrt((self.noise_prior * self.noise_sd ** 2 + self.noise_ss) / (self.noise_prior + self.noise_n))

    def exploration_scale(self, X: np.ndarray) -> np.ndarray:
        """``s_k(x_b) = v * sigma_k * sqrt(x_b^T A_k^{-1} x_b)`` with ``v`` :meth:`current_exploration` and
        ``sigma_k`` :meth:`noise`: (B, K)."""
        return self.current_exploration() * self.noise() * np.sqrt(np.maximum(self.quality.variance(X), 0.0))

    def params(self) -> dict:
        return {**super().params(), "exploration": self.exploration, "exploration_decay": self.exploration_decay,
                "noise_sd": self.noise_sd,
                "prior_strength": self.quality.prior_strength, "prior_mean": self.quality.prior_mean,
                "pooled": self.quality.pooled, "deviation_strength": self.quality.deviation_strength,
                "noise_prior": self.noise_prior,
                "drift_keep": self.drift_keep, "price_prior": self.price_prior,
                "drift_threshold": None if self.drift is None else self.drift.threshold,
                "drift_delta": 0.1 if self.drift is None else self.drift.delta}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {**super().arrays(), **{f"quality.{k}": v for k, v in self.quality.arrays().items()}}
        if self.drift is not None:
            out |= {f"drift.{k}": v for k, v in self.drift.arrays().items()}
        if self.noise_prior is not None:
            out |= {"noise.ss": self.noise_ss, "noise.n": self.noise_n}
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        super().load_arrays(arrays)
        self.quality.load_arrays({k[8:]: v for k, v in arrays.items() if k.startswith("quality.")})
        if self.drift is not None and "drift.state" in arrays:
            self.drift.load_arrays({k[6:]: v for k, v in arrays.items() if k.startswith("drift.")})
        if self.noise_prior is not None and "noise.ss" in arrays:
            self.noise_ss = np.array(arrays["noise.ss"], dtype=float)
            self.noise_n = np.array(arrays["noise.n"], dtype=float)


def thompson_wins(scale: np.ndarray, net: np.ndarray, z: np.ndarray, native: bool = True) -> np.ndarray:
    """``wins[b, k]``: the draws ``s`` for which model k has the highest sampled score
    ``scale[b, k] * z[s, k] + net[b, k]`` (B, K) (numpy's argmax: the first maximum wins a tie).

    The C core computes the same counts without the (B, S, K) temporary (``native=False``: numpy,
    the specification).
    """
    if native and _native is not None:
        wins = np.empty_like(net)
        _native.wins(np.ascontiguousarray(scale), np.ascontiguousarray(net), np.ascontiguousarray(z), wins)
        return wins
    b, k = net.shape
    draws = scale[:, None, :] * z
    draws += net[:, None, :]
    winners = np.argmax(draws, axis=2)
    winners += k * np.arange(b)[:, None]
    return np.bincount(winners.ravel(), minlength=b * k).reshape(b, k).astype(float)


class LinTS(_LinearPolicy):
    """Linear Thompson sampling with Monte Carlo propensities (the default policy).

    The rows of a batch share one set of standard normal draws (common random numbers): each row's
    vector is still the exact probability its model is then sampled with, and its expectation over
    the draws is that row's Thompson sampling probability; sharing only correlates the Monte Carlo
    error across the rows of one batch, and it makes a row's probabilities the same alone or in a
    batch for the same draws.

    Parameters
    ----------
    exploration
        Multiplies the posterior standard deviation ``v = exploration * noise_sd``.
    n_samples
        Monte Carlo draws per decision for the probability vector.

    Example
    -------
    >>> import numpy as np
    >>> from banditroute.core.features import Featurizer
    >>> f = Featurizer()
    >>> pol = LinTS(["a", "b"], dim=f.dim, floor=0.05)
    >>> ctx = f.context("What is 2 + 2?")
    >>> for _ in range(50):
    ...     pol.update(ctx, 0, 1.0); pol.update(ctx, 1, 0.0)
    >>> s = pol.probabilities(ctx.x[None], [ctx.input_tokens], None, 0.0, np.random.default_rng(0))
    >>> [round(float(p), 2) for p in s.probabilities[0]]
    [0.95, 0.05]
    """

    name = "lints"

    def __init__(self, *args, n_samples: int = 128, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_samples = int(n_samples)

    def params(self) -> dict:
        return {**super().params(), "n_samples": self.n_samples}

    def _raw_probabilities(self, X, net, eligible, rng) -> np.ndarray:
        # ineligible models carry net = -inf and never win
        z = rng.standard_normal((self.n_samples, net.shape[1]))
        return thompson_wins(self.exploration_scale(X), net, z) / self.n_samples


class LinUCB(_LinearPolicy):
    """LinUCB, its optimistic argmax turned into probabilities by an epsilon or a softmax rule.

    * ``rule="epsilon"``: ``1 - epsilon`` on the argmax of the optimistic score, ``epsilon / K`` on
      every eligible model;
    * ``rule="softmax"``: ``p_k proportional to exp(u_k / temperature)`` over the optimistic scores
      ``u_k`` (a Boltzmann rule; temperature in quality points).

    Parameters
    ----------
    exploration
        The width ``alpha`` of the confidence bonus.
    rule, epsilon, temperature
        As above.
    """

    name = "linucb"

    def __init__(self, *args, rule: str = "epsilon", epsilon: float = 0.05, temperature: float = 0.02, **kwargs):
        super().__init__(*args, **kwargs)
        if rule not in ("epsilon", "softmax"):
            raise ValueError(f"LinUCB rule must be 'epsilon' or 'softmax', got {rule!r}")
        self.rule = rule
        self.epsilon = float(epsilon)
        self.temperature = float(temperature)

    def params(self) -> dict:
        return {**super().params(), "rule": self.rule, "epsilon": self.epsilon, "temperature": self.temperature}

    def _raw_probabilities(self, X, net, eligible, rng) -> np.ndarray:
        optimistic = net + self.exploration_scale(X)
        if self.rule == "softmax":
            z = np.exp((optimistic - optimistic.max(axis=1, keepdims=True)) / self.temperature)
            return z / z.sum(axis=1, keepdims=True)
        return epsilon_rule(optimistic, eligible, self.epsilon)


class SquareCB(_LinearPolicy):
    """Inverse gap weighting (IGW) of the ridge's mean scores, as Vowpal Wabbit's ``--squarecb``.

    With ``b`` the model of row x with the best mean score ``net_b``, ``K_x`` the eligible models and
    ``n`` the quality observations learned so far:

        p_k = 1 / (K_x + gamma_n (net_b - net_k))   for every eligible k != b,   p_b = 1 - sum of the others,

        gamma_n = gamma_scale sqrt(n + 1) / (2 exploration).

    A model predicted 0.1 worse than the best one is tried about ``1 / (0.1 gamma_n)`` of the time:
    exploration goes to close calls and shrinks as ``1 / sqrt(n)``, and how much is set by the gap in
    predicted score rather than by the posterior's width (which a misspecified linear model gets
    wrong). ``gamma_scale = 10`` with the default exploration 0.5 is Vowpal Wabbit's default
    (``--gamma_scale 10 --gamma_exponent 0.5``, ``n`` its example count).

    Example
    -------
    >>> import numpy as np
    >>> pol = SquareCB(["a", "b"], dim=2, floor=0.0, exploration=0.5)  # gamma_0 = 10
    >>> pol._raw_probabilities(None, np.array([[0.9, 0.8], [0.5, -np.inf]]), None, None).round(3)
    array([[0.667, 0.333],
           [1.   , 0.   ]])
    """

    name = "squarecb"

    def __init__(self, *args, gamma_scale: float = 10.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.gamma_scale = float(gamma_scale)

    def params(self) -> dict:
        return {**super().params(), "gamma_scale": self.gamma_scale}

    def gamma(self) -> float:
        """``gamma_n``; unbounded (greedy) with no exploration."""
        n = float(self.quality_observations.sum())
        return np.inf if self.exploration <= 0 else self.gamma_scale * np.sqrt(n + 1.0) / (2.0 * self.exploration)

    def _raw_probabilities(self, X, net, eligible, rng) -> np.ndarray:
        return inverse_gap_weights(net, self.gamma())


#: the input length at which list prices are compared across models (with the expected output length)
PRICE_INPUT_TOKENS = 500.0


def price_covariate(cost_model) -> np.ndarray:
    """Each model's standardised log list price for a request of :data:`PRICE_INPUT_TOKENS` in and the
    expected output out, over the priced models (mean 0, standard deviation 1); 0 for a model without
    a price, and for every model when fewer than two prices differ.

    >>> from banditroute.core.policies.cost import CostModel
    >>> price_covariate(CostModel(["a", "b", "c", "d"], [(0.1, 0.4), (1.0, 4.0), (10.0, 40.0), None])).round(3)
    array([-1.225,  0.   ,  1.225,  0.   ])
    """
    price = cost_model.list_price(np.array([PRICE_INPUT_TOKENS]))[0]
    priced = price > 0
    z = np.zeros(len(price))
    if priced.sum() < 2:
        return z
    log_price = np.log(price[priced])
    sd = log_price.std()
    if sd > 0:
        z[priced] = (log_price - log_price.mean()) / sd
    return z


def inverse_gap_weights(net: np.ndarray, gamma: float) -> np.ndarray:
    """:class:`SquareCB`'s rule on (B, K) scores (``-inf``: not eligible, probability 0)."""
    b = np.arange(len(net))
    best = np.argmax(net, axis=1)
    finite = np.isfinite(net)
    k = finite.sum(axis=1, keepdims=True)
    gap = net[b, best][:, None] - net
    with np.errstate(invalid="ignore"):
        p = np.where(finite, 1.0 / (k + gamma * gap), 0.0) if np.isfinite(gamma) else np.zeros(net.shape)
    p[b, best] = 0.0
    p[b, best] = 1.0 - p.sum(axis=1)
    return p


def epsilon_rule(value: np.ndarray, eligible: np.ndarray | None, epsilon: float) -> np.ndarray:
    """``epsilon / K_b`` on every eligible model of row b (None: all) plus ``1 - epsilon`` on its best value."""
    if eligible is None:
        p = np.full(value.shape, epsilon / value.shape[1])
    else:
        p = eligible * (epsilon / eligible.sum(axis=1, keepdims=True))
    p[np.arange(len(value)), np.argmax(value, axis=1)] += 1.0 - epsilon
    return p
