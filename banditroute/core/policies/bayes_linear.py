"""Per-arm Bayesian ridge regression with Sherman-Morrison updates: the posteriors the linear
policies and the cost model sit on.

Each arm k keeps a Gaussian posterior over the weights of ``y = mu0 + theta_k . x + noise``:

    A_k = lambda I + sum_i w_i x_i x_i^T,    b_k = sum_i w_i (y_i - mu0) x_i,    theta_k = A_k^{-1} b_k

(ridge regression with prior precision ``lambda`` and per-observation weight ``w_i``; Bishop, 2006,
"Pattern Recognition and Machine Learning", sec. 3.3). ``A_k^{-1}`` is maintained by the
Sherman-Morrison rank-1 update (Sherman & Morrison, 1950)

    (A + w x x^T)^{-1} = A^{-1} - w (A^{-1} x)(A^{-1} x)^T / (1 + w x^T A^{-1} x),

and re-inverted exactly every ``refresh_every`` updates of an arm to stop rounding drift.

With ``pooled=True`` the arms share what they learn (partial pooling; Gelman & Hill, 2007, ch. 12; a
hierarchical prior ``theta_k ~ N(beta, lambda^{-1} I)`` as in Hong et al., 2022, "Hierarchical Bayesian
Bandits"). ``beta`` is the ridge fit of every arm's observations together,

    A_0 = lambda I + sum_{all i} w_i x_i x_i^T,    b_0 = sum_{all i} w_i (y_i - mu0) x_i,    beta = A_0^{-1} b_0,

and each arm's posterior mean shrinks towards it instead of towards zero:

    theta_k = A_k^{-1} (b_k + lambda beta).

With ``deviation_strength = rho`` the arms' prior precision is ``Lambda = diag(lambda, rho lambda, ...,
rho lambda)``: the constant feature's weight keeps ``lambda``, every other weight is held ``rho`` times
tighter to the pooled fit (models that differ mostly by their overall quality), and
``theta_k = A_k^{-1} (b_k + Lambda beta)`` with ``A_k = Lambda + sum_{i in k} w_i x_i x_i^T``.

So a feedback on one model moves every model's prediction (a prompt that is hard for one is usually hard
for all), an arm with few observations predicts what the pool predicts, and a model added to the pool
starts from the pool's fit rather than from nothing. ``beta`` is plugged in (empirical Bayes): its own
uncertainty is not added to the arms' variances. It is recomputed every :data:`POOL_EVERY` updates.

With an arm covariate ``z_k`` (the policies pass the model's standardised log list price) the prior
mean of arm k's intercept (the weight of the first feature, the constant 1) moves with it:
``theta_k ~ N(beta + gamma z_k e_1, lambda^{-1} I)``, so an arm with little evidence predicts what the
pool predicts for a model at its price. ``gamma`` is the slope, across arms, of each arm's mean
residual from the pooled fit on its covariate, each arm weighted by its reliability
``s_k = n_k / (n_k + lambda)`` (``n_k`` its summed observation weights), with one pseudo-arm of slope
zero:

    r_k = (1 / n_k) sum_{i in k} w_i (y_i - mu0 - x_i . beta),    gamma = sum_k s_k z_k r_k / (1 + sum_k s_k z_k^2)

(a second level of the hierarchy regressed on an arm-level predictor, as group-level predictors in
Gelman & Hill, 2007, sec. 12.6; fitted by moments, empirical Bayes again). It is recomputed with ``beta``.

Example
-------
>>> import numpy as np
>>> bl = BayesLinear(n_arms=2, dim=2, prior_strength=1.0, prior_mean=0.0)
>>> for _ in range(100):
...     bl.update(np.array([1.0, 0.0]), 1, 3.0)
>>> np.round(bl.predict(np.array([[1.0, 0.0]])), 2)
array([[0.  , 2.97]])
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.blas import dger
from threadpoolctl import threadpool_limits

FOLD_EVERY = 64  # observations of one arm gathered before they are added to its precision matrix
POOL_EVERY = 16  # updates (of any arm) between recomputations of the pooled weights beta


def single_threaded_blas():
    """A context in which BLAS runs on one thread: for loops of small updates (simulate, pretrain,
    replay). From a size of about 150 x 150, OpenBLAS splits a rank-1 update over threads whose start-up
    costs several times the update itself (and, with two processes on two cores, they fight)."""
    return threadpool_limits(1, user_api="blas")


def add_rank1(a: np.ndarray, alpha: float, v: np.ndarray) -> None:
    """``a += alpha v v^T`` in place, for a symmetric C-ordered ``a``: one BLAS ``dger`` call.

    ``dger`` works on Fortran-ordered matrices: it updates ``a.T``, a Fortran-ordered view of the same
    memory, which is the same update since ``a`` and ``v v^T`` are symmetric. One pass over ``a``,
    against three for ``np.outer``, a scale and a subtraction.
    """
    at = a.T
    out = dger(alpha, v, v, a=at, overwrite_a=1)
    if out is not at:  # not updated in place (an unexpected layout): copy back
        a[...] = out.T


class BayesLinear:
    """Per-arm ridge posteriors with Sherman-Morrison updates.

    Parameters
    ----------
    n_arms, dim
        Number of arms and feature dimension.
    prior_strength
        Prior precision ``lambda``.
    prior_mean
        ``mu0``, the value predicted for an arm with no observations.
    refresh_every
        Exact re-inversion period, in updates of one arm.
    pooled
        Shrink every arm towards the pooled fit of all arms (module docstring) instead of towards zero.
    arm_covariate
        With ``pooled``: one number per arm that moves its prior intercept (module docstring); None or
        all zeros: no such effect.
    deviation_strength
        With ``pooled``: ``rho``, the prior precision of an arm's deviation from the pooled fit on every
        feature but the first, in multiples of ``prior_strength`` (module docstring); 1: the same for all.
    """

    def __init__(self, n_arms: int, dim: int, prior_strength: float = 1.0, prior_mean: float = 0.5,
                 refresh_every: int = 2000, pooled: bool = False, arm_covariate=None, deviation_strength: float = 1.0):
        self.prior_strength = float(prior_strength)
        self.prior_mean = float(prior_mean)
        self.refresh_every = int(refresh_every)
        self.pooled = bool(pooled)
        self.deviation_strength = float(deviation_strength)
        if self.deviation_strength != 1.0 and not self.pooled:
            raise ValueError("deviation_strength only applies with pooled=True")
        eye = np.eye(dim)
        # the arms' prior precisions Lambda = diag(lambda, rho lambda, ..., rho lambda)
        self.prior = np.full(dim, self.prior_strength * self.deviation_strength)
        self.prior[0] = self.prior_strength
        self._A = np.repeat(np.diag(self.prior)[None], n_arms, axis=0)
        # A is only read to re-invert it exactly: observations are folded into it a few dozen at a
        # time, in order, while one arm's matrix stays in cache (the same sums, far less memory traffic)
        self._unfolded: list[list[tuple[np.ndarray, float]]] = [[] for _ in range(n_arms)]
        self.A_inv = np.repeat(np.diag(1.0 / self.prior)[None], n_arms, axis=0)
        self.b = np.zeros((n_arms, dim))
        self.updates = np.zeros(n_arms, dtype=np.int64)
        # What decisions read, derived from A_inv and b: refreshed for the arms updated since the last
        # decision when a decision needs them (a burst of feedback pays for them once, not per update)
        self._theta = np.zeros((n_arms, dim))
        self._A_inv32 = self.A_inv.astype(np.float32)  # variance at decision time: half the memory traffic
        self._stale = np.zeros(n_arms, dtype=bool)
        self.version = 0  # counts the refreshes of theta, so that what is derived from it can be cached
        if self.pooled:  # the pooled posterior over every arm's observations (see the module docstring)
            self.pool_A = eye * self.prior_strength
            self.pool_A_inv = eye / self.prior_strength
            self.pool_b = np.zeros(dim)
            self.pool_updates = 0
            self._beta = np.zeros(dim)  # recomputed every POOL_EVERY updates (a function of them alone)
            self.covariate = np.zeros(n_arms) if arm_covariate is None else np.array(arm_covariate, dtype=float)
            if self.covariate.shape != (n_arms,):
                raise ValueError(f"arm_covariate needs one value per arm ({n_arms}), got {self.covariate.shape}")
            self._gamma = 0.0  # the covariate's slope, recomputed with beta
            # per arm: the first column of A_k, lambda e_1 + sum w x (the first feature is the constant 1),
            # kept with the same operations in the same order as A itself, for the arms' residuals
            self._col = eye[0] * self.prior[0] + np.zeros((n_arms, 1))

    # -- state ----------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The learned state as plain arrays (everything else is derived from them)."""
        out = {"A": self.A, "A_inv": self.A_inv, "b": self.b, "updates": self.updates}
        if self.pooled:
            out |= {"pool_A": self.pool_A, "pool_A_inv": self.pool_A_inv, "pool_b": self.pool_b,
                    "pool_updates": np.array([self.pool_updates], dtype=np.int64), "pool_beta": self._beta,
                    "pool_gamma": np.array([self._gamma])}
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the learned state with :meth:`arrays` of a posterior of the same shape."""
        for name in ("A", "A_inv", "b", "updates"):
            if arrays[name].shape != getattr(self, "_A" if name == "A" else name).shape:
                raise ValueError(f"{name} has shape {arrays[name].shape}, expected {self.A_inv.shape}")
        self._A = np.array(arrays["A"], dtype=float)
        self.A_inv = np.array(arrays["A_inv"], dtype=float)
        self.b = np.array(arrays["b"], dtype=float)
        self.updates = np.array(arrays["updates"], dtype=np.int64)
        self._unfolded = [[] for _ in range(len(self.b))]
        if self.pooled:
            self._col = self._A[:, :, 0].copy()
            if "pool_A" in arrays:
                self.pool_A = np.array(arrays["pool_A"], dtype=float)
                self.pool_A_inv = np.array(arrays["pool_A_inv"], dtype=float)
                self.pool_b = np.array(arrays["pool_b"], dtype=float)
                self.pool_updates = int(arrays["pool_updates"][0])
                self._beta = (np.array(arrays["pool_beta"], dtype=float) if "pool_beta" in arrays
                              else self._pooled_beta())
                self._gamma = (float(arrays["pool_gamma"][0]) if "pool_gamma" in arrays
                               else self._covariate_slope())
            else:  # a state learned without pooling: pool what the arms learned
                self.pool_A = self.prior_strength * np.eye(len(self.pool_b)) + (self._A - np.diag(self.prior)).sum(axis=0)
                self.pool_A_inv = np.linalg.inv(self.pool_A)
                self.pool_b = self.b.sum(axis=0)
                self.pool_updates = int(self.updates.sum())
                self._beta = self._pooled_beta()
                self._gamma = self._covariate_slope()
        self._stale[:] = True

    def _pooled_beta(self) -> np.ndarray:
        """beta from the current pooled arrays, for a state saved without ``pool_beta`` (the value at the
        last multiple of POOL_EVERY updates cannot be recovered from them); none before POOL_EVERY updates."""
        return self.pool_A_inv @ self.pool_b if self.pool_updates >= POOL_EVERY else np.zeros_like(self.pool_b)

    def _covariate_slope(self) -> float:
        """``gamma`` from the current arrays and ``beta`` (module docstring); 0 without a covariate."""
        z = self.covariate
        if not z.any():
            return 0.0
        lam = self.prior[0]
        n = self._col[:, 0] - lam  # the first feature is the constant 1: the summed weights
        residual = self.b[:, 0] - (self._col @ self._beta - lam * self._beta[0])
        r = np.divide(residual, n, out=np.zeros_like(n), where=n > 0)
        s = n / (n + lam)
        return float((s * z * r).sum() / (1.0 + (s * z * z).sum()))

    def _refresh(self) -> None:
        """Bring theta and the float32 inverse up to date for the arms updated since they were read (and
        every arm's pooled term when beta is recomputed)."""
        if not self._stale.any():
            return
        for arm in np.flatnonzero(self._stale):
            self._A_inv32[arm] = self.A_inv[arm]
            if self.pooled:
                b = self.b[arm] + self.prior * self._beta
                b[0] += self.prior[0] * self._gamma * self.covariate[arm]
            else:
                b = self.b[arm]
            self._theta[arm] = self.A_inv[arm] @ b
        self._stale[:] = False
        self.version += 1

    def _fold(self, arm: int) -> None:
        """Add the arm's unfolded observations to its A, in the order they came: A += w x x^T."""
        for x, w in self._unfolded[arm]:
            add_rank1(self._A[arm], w, x)
        self._unfolded[arm].clear()

    @property
    def A(self) -> np.ndarray:
        """The posterior precision matrices ``lambda I + sum w x x^T``, one per arm."""
        for arm in range(len(self._unfolded)):
            self._fold(arm)
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

    # -- prediction -----------------------------------------------------------------------------
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Posterior mean ``mu0 + theta_k . x_b`` for every row b of ``X`` and every arm k: (B, K)."""
        return self.prior_mean + X @ self.theta.T

    def variance(self, X: np.ndarray) -> np.ndarray:
        """``x_b^T A_k^{-1} x_b`` for every row b of ``X`` and every arm k, as a (B, K) array (the
        posterior variance of ``theta_k . x_b`` in units of the noise variance).

        In float32 (it only scales exploration): one stacked product ``X A_k`` per arm (K, B, d),
        then the row-wise dot with ``x_b`` over the contiguous last axis.
        """
        X32 = X.astype(np.float32)
        return np.einsum("kbd,bd->bk", X32 @ self.A_inv32, X32).astype(np.float64)

    # -- learning -------------------------------------------------------------------------------
    def forget(self, arm: int, keep: float) -> None:
        """Keep only the share ``keep`` of what arm ``arm`` learned (a detected change):
        ``A_k = Lambda + keep (A_k - Lambda)``, ``b_k = keep b_k``, re-inverted exactly."""
        self._fold(arm)
        prior = np.diag(self.prior)
        self._A[arm] = prior + keep * (self._A[arm] - prior)
        self.A_inv[arm] = np.linalg.inv(self._A[arm])
        self.b[arm] *= keep
        if self.pooled:
            self._col[arm] = prior[0] + keep * (self._col[arm] - prior[0])
        self._stale[arm] = True

    def update(self, x: np.ndarray, arm: int, y: float, weight: float = 1.0) -> None:
        """Add observation ``y`` of arm ``arm`` at ``x`` with weight ``weight``.

        Both rank-1 terms are BLAS updates in place (:func:`add_rank1`), so an update allocates no
        d x d temporaries; the precision matrix's term is added :data:`FOLD_EVERY` observations at a
        time (see :attr:`A`), one by one in the order they came, so the result does not depend on when
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
        if self.pooled:
            u = self.pool_A_inv @ x
            add_rank1(self.pool_A_inv, -weight / (1.0 + weight * (x @ u)), u)
            add_rank1(self.pool_A, weight, x)
            self.pool_b += weight * (y - self.prior_mean) * x
            self._col[arm] += weight * x
            self.pool_updates += 1
            if self.pool_updates % self.refresh_every == 0:
                self.pool_A_inv[:] = np.linalg.inv(self.pool_A)
            if self.pool_updates % POOL_EVERY == 0:  # here, not at decision time: the state depends on the
                self._beta = self.pool_A_inv @ self.pool_b  # updates alone, so a rebuild from the log equals it
                self._gamma = self._covariate_slope()
                self._stale[:] = True
        if self.updates[arm] % self.refresh_every == 0:
            self._fold(arm)
            Ainv[:] = np.linalg.inv(self._A[arm])
        self._stale[arm] = True
