"""Linear contextual bandits with per-model Bayesian ridge quality models.

Each model k keeps a Gaussian posterior over the weights of ``q_k(x) = mu0 + theta_k . x``:

    A_k = lambda I + sum_i w_i x_i x_i^T,    b_k = sum_i w_i (y_i - mu0) x_i,    theta_k = A_k^{-1} b_k

(ridge regression with prior precision ``lambda`` and per-observation weight ``w_i``). ``A_k^{-1}``
is maintained by the Sherman-Morrison rank-1 update (Sherman & Morrison, 1950)

    (A + w x x^T)^{-1} = A^{-1} - w (A^{-1} x)(A^{-1} x)^T / (1 + w x^T A^{-1} x),

and re-inverted exactly every ``refresh_every`` updates of a model to stop rounding drift.

Two policies sit on these posteriors:

* :class:`LinTS`, linear Thompson sampling (Agrawal & Goyal, 2013, "Thompson Sampling for
  Contextual Bandits with Linear Payoffs"): the score of model k is Gaussian,
  ``N(q_k(x) - cost_weight c_k(x), v^2 x^T A_k^{-1} x)``, and the probability that k has the highest
  sampled score is estimated by vectorised Monte Carlo over ``n_samples`` joint draws. The router then
  samples the model from that vector, so the logged propensity is exact by construction.
* :class:`LinUCB` (Li et al., 2010, "A Contextual-Bandit Approach to Personalized News Article
  Recommendation"): the optimistic score ``q_k(x) + alpha sqrt(x^T A_k^{-1} x) - cost_weight c_k(x)``,
  turned into probabilities by an epsilon rule around its argmax.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.blas import dger

from banditroute.core.policies.base import Policy, Scores, apply_floor, one_hot
from banditroute.core.policies.cost import Context

FOLD_EVERY = 64  # observations of one arm gathered before they are added to its precision matrix


def add_rank1(a: np.ndarray, alpha: float, v: np.ndarray) -> None:
    """``a += alpha v v^T`` in place, for a symmetric C-ordered ``a``: one BLAS ``dger`` call.

    ``dger`` works on Fortran-ordered matrices: it updates ``a.T``, a Fortran-ordered view of the same
    memory, which is the same update since ``a`` and ``v v^T`` are symmetric. One pass over ``a``,
    against three for ``np.outer``, a scale and a subtraction: with it ``Router.feedback`` takes p50
    31 us against 38 us before (``benchmarks/bench_engine.py``; results committed in d77447b and 616a090).
    """
    out = dger(alpha, v, v, a=a.T, overwrite_a=1)
    if out.ctypes.data != a.ctypes.data:  # not updated in place (an unexpected layout): copy back
        a[...] = out.T


class BayesLinear:
    """Per-model ridge posteriors with Sherman-Morrison updates.

    Parameters
    ----------
    n_arms, dim
        Number of models and feature dimension.
    prior_strength
        Prior precision ``lambda``.
    prior_mean
        ``mu0``, the quality predicted for a model with no observations.
    refresh_every
        Exact re-inversion period, in updates of one model.
    """

    def __init__(self, n_arms: int, dim: int, prior_strength: float = 1.0, prior_mean: float = 0.5,
                 refresh_every: int = 2000):
        self.prior_strength = float(prior_strength)
        self.prior_mean = float(prior_mean)
        self.refresh_every = int(refresh_every)
        eye = np.eye(dim)
        self._A = np.repeat(eye[None] * self.prior_strength, n_arms, axis=0)
        # A is only read to re-invert it exactly: observations are folded into it a few dozen at a
        # time, in order, while one arm's matrix stays in cache (the same sums, far less memory traffic)
        self._unfolded: list[list[tuple[np.ndarray, float]]] = [[] for _ in range(n_arms)]
        self.A_inv = np.repeat(eye[None] / self.prior_strength, n_arms, axis=0)
        self.b = np.zeros((n_arms, dim))
        self.updates = np.zeros(n_arms, dtype=np.int64)
        # What decisions read, derived from A_inv and b: refreshed for the arms updated since the last
        # decision when a decision needs them (a burst of feedback pays for them once, not per update)
        self._theta = np.zeros((n_arms, dim))
        self._A_inv32 = self.A_inv.astype(np.float32)  # variance at decision time: half the memory traffic
        self._stale = np.zeros(n_arms, dtype=bool)

    def __getstate__(self) -> dict:
        self._fold_all()
        return self.__dict__.copy()

    def __setstate__(self, state: dict) -> None:
        if "theta" in state:  # a state pickled before theta, A_inv32 and A were kept lazily
            state["_theta"], state["_A_inv32"], state["_A"] = state.pop("theta"), state.pop("A_inv32"), state.pop("A")
            state["_stale"] = np.zeros(len(state["A_inv"]), dtype=bool)
            state["_unfolded"] = [[] for _ in range(len(state["A_inv"]))]
        self.__dict__.update(state)

    def _refresh(self) -> None:
        """Bring theta and the float32 inverse up to date for the arms updated since they were read."""
        if not self._stale.any():
            return
        for arm in np.flatnonzero(self._stale):
            self._A_inv32[arm] = self.A_inv[arm]
            self._theta[arm] = self.A_inv[arm] @ self.b[arm]
        self._stale[:] = False

    def _fold(self, arm: int) -> None:
        """Add the arm's unfolded observations to its A, in the order they came: A += w x x^T."""
        for x, w in self._unfolded[arm]:
            add_rank1(self._A[arm], w, x)
        self._unfolded[arm].clear()

    def _fold_all(self) -> None:
        for arm in range(len(self._unfolded)):
            self._fold(arm)

    @property
    def A(self) -> np.ndarray:
        """The posterior precision matrices ``lambda I + sum w x x^T``, one per arm."""
        self._fold_all()
        return self._A

    @property
    def theta(self) -> np.ndarray:
        """Posterior mean weights ``A_k^{-1} b_k``, one row per arm."""
        self._refresh()
        return self._theta

    @property
    def A_inv32(self) -> np.ndarray:
        """``A_inv`` in float32."""
        self._refresh()
        return self._A_inv32

    def mean(self, x: np.ndarray, arms: np.ndarray) -> np.ndarray:
        """Posterior mean quality mu0 + theta_k . x for each arm."""
        return self.prior_mean + (self.theta @ x)[arms]

    def variance(self, x: np.ndarray, arms: np.ndarray) -> np.ndarray:
        """x^T A_k^{-1} x for each arm (the posterior variance of theta_k . x, in units of v^2).

        Computed in float32 (it only scales exploration); all arms at once, then selected, because
        indexing ``A_inv`` first would copy K d^2 floats per call.
        """
        x32 = x.astype(np.float32)
        return (self.A_inv32 @ x32 @ x32).astype(np.float64)[arms]

    def variance_many(self, X: np.ndarray) -> np.ndarray:
        """x_b^T A_k^{-1} x_b for every row b of ``X`` and every arm k, as a (B, K) array.

        In float32: one stacked product ``X A_k`` per arm (K, B, d), then the row-wise dot with
        ``x_b`` over the contiguous last axis (``route_many`` in ``benchmarks/bench_engine.py``).
        """
        X32 = X.astype(np.float32)
        return np.einsum("kbd,bd->bk", X32 @ self.A_inv32, X32).astype(np.float64)

    def update(self, x: np.ndarray, arm: int, y: float, weight: float = 1.0) -> None:
        """Add observation ``y`` of arm ``arm`` at ``x`` with weight ``weight``.

        Both rank-1 terms are BLAS updates in place (:func:`add_rank1`), so an update allocates no
        d x d temporaries; the precision matrix's term is added :data:`FOLD_EVERY` observations at a
        time (see :meth:`A`), one by one in the order they came, so the result does not depend on when
        folds happen (a snapshot folds everything).
        """
        Ainv = self.A_inv[arm]
        u = Ainv @ x
        add_rank1(Ainv, -weight / (1.0 + weight * (x @ u)), u)
        unfolded = self._unfolded[arm]
        unfolded.append((x.copy(), weight))
        if len(unfolded) >= FOLD_EVERY:
            self._fold(arm)
        self.b[arm] += weight * (y - self.prior_mean) * x
        self.updates[arm] += 1
        if self.updates[arm] % self.refresh_every == 0:
            self._fold(arm)
            Ainv[:] = np.linalg.inv(self._A[arm])
        self._stale[arm] = True


class _LinearPolicy(Policy):
    def __init__(self, models, dim: int, prices=None, floor: float = 0.01, exploration: float = 1.0,
                 prior_strength: float = 10.0, prior_mean: float = 0.5, noise_sd: float = 0.5,
                 expected_output_tokens: float = 256.0):
        super().__init__(models, dim, prices, floor, expected_output_tokens)
        self.exploration = float(exploration)
        self.noise_sd = float(noise_sd)
        self.quality = BayesLinear(len(self.models), dim, prior_strength, prior_mean)

    def predict_quality(self, ctx: Context, arms: np.ndarray) -> np.ndarray:
        return self.quality.mean(ctx.x, arms)

    def predict_quality_many(self, X: np.ndarray, input_tokens: np.ndarray) -> np.ndarray:
        return self.quality.prior_mean + X @ self.quality.theta.T

    def _update_quality(self, ctx: Context, arm: int, quality: float, weight: float) -> None:
        self.quality.update(ctx.x, arm, quality, weight)

    def probabilities_many(self, X, input_tokens, arms, cost_weights, rng) -> Scores:
        """Vectorised over the batch: one product each for means, costs and variances.

        A batch of one takes :meth:`probabilities`, so single decisions (the simulator's) are
        computed exactly as before; larger batches agree with it up to float rounding.
        """
        if len(X) == 1:
            return super().probabilities_many(X, input_tokens, arms, cost_weights, rng)
        rows = np.arange(len(X))[:, None]
        quality = self.predict_quality_many(X, input_tokens)[rows, arms]
        cost = self.cost_model.predict_many(X, input_tokens)[rows, arms]
        sd = self.exploration * self.noise_sd * np.sqrt(np.maximum(self.quality.variance_many(X)[rows, arms], 0.0))
        net = quality - cost_weights[:, None] * cost
        p = self._raw_probabilities_many(net, sd, rng)
        return Scores(apply_floor(p, self.floor), quality, cost)

    def _raw_probabilities_many(self, net: np.ndarray, sd: np.ndarray, rng) -> np.ndarray:
        raise NotImplementedError


class LinTS(_LinearPolicy):
    """Linear Thompson sampling with Monte Carlo propensities (the default policy).

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
    >>> from banditroute.core.policies.cost import Context
    >>> f = Featurizer()
    >>> pol = LinTS(["a", "b"], dim=f.dim, floor=0.05)
    >>> ctx = Context(f.transform("What is 2 + 2?"), 4.0)
    >>> for _ in range(50):
    ...     pol.update(ctx, 0, 1.0); pol.update(ctx, 1, 0.0)
    >>> s = pol.probabilities(ctx, [0, 1], cost_weight=0.0, rng=np.random.default_rng(0))
    >>> [round(float(p), 2) for p in s.probabilities]
    [0.95, 0.05]
    """

    name = "lints"

    def __init__(self, *args, n_samples: int = 128, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_samples = int(n_samples)

    def _raw_probabilities(self, ctx, arms, scores: Scores, cost_weight, rng) -> np.ndarray:
        mean = scores.net(cost_weight)
        sd = self.exploration * self.noise_sd * np.sqrt(np.maximum(self.quality.variance(ctx.x, arms), 0.0))
        draws = mean + sd * rng.standard_normal((self.n_samples, len(arms)))
        wins = np.bincount(np.argmax(draws, axis=1), minlength=len(arms))
        return wins / self.n_samples

    def _raw_probabilities_many(self, net, sd, rng) -> np.ndarray:
        """The rows of a batch share one set of standard normal draws (common random numbers).

        Each row's vector is still the exact probability its model is then sampled with, and its
        expectation over the draws is still that row's Thompson sampling probability; sharing only
        correlates the Monte Carlo error across the rows of one batch, and saves drawing
        ``n_samples x n`` normals per request (most of the policy's time otherwise).
        """
        b, n = net.shape
        draws = sd[:, None, :] * rng.standard_normal((self.n_samples, n))
        draws += net[:, None, :]  # in place: at 32 rows a third temporary of this size costs more than the sums
        winners = np.argmax(draws, axis=2)
        winners += n * np.arange(b)[:, None]
        return np.bincount(winners.ravel(), minlength=b * n).reshape(b, n) / self.n_samples


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

    def _raw_probabilities(self, ctx, arms, scores: Scores, cost_weight, rng) -> np.ndarray:
        bonus = self.exploration * self.noise_sd * np.sqrt(np.maximum(self.quality.variance(ctx.x, arms), 0.0))
        optimistic = scores.net(cost_weight) + bonus
        if self.rule == "softmax":
            z = np.exp((optimistic - optimistic.max()) / self.temperature)
            return z / z.sum()
        k = len(arms)
        return self.epsilon / k + (1.0 - self.epsilon) * one_hot(k, int(np.argmax(optimistic)))

    def _raw_probabilities_many(self, net, sd, rng) -> np.ndarray:
        optimistic = net + sd
        if self.rule == "softmax":
            z = np.exp((optimistic - optimistic.max(axis=1, keepdims=True)) / self.temperature)
            return z / z.sum(axis=1, keepdims=True)
        b, k = optimistic.shape
        p = np.full((b, k), self.epsilon / k)
        p[np.arange(b), np.argmax(optimistic, axis=1)] += 1.0 - self.epsilon
        return p
