"""Per-model cost models learned online.

For model k the predicted cost of a prompt is

    c_k(x) = max(0, p_k(x) + w_k . phi(x)),    phi(x) = (1, input_ktokens, code, choice_options)

where ``p_k(x)`` is the list-price estimate (input tokens x input price + expected output tokens x
output price, zero when the pool gives no price) and ``w_k`` is the posterior mean of a Bayesian
linear regression (prior N(0, I / lambda_k), noise precision 1; Bishop, 2006, "Pattern Recognition
and Machine Learning", sec. 3.3) fit online to the residual ``observed cost - p_k(x)``::

    w_k = (lambda_k I + Phi_k^T Phi_k)^{-1} Phi_k^T r_k

so ``lambda_k`` counts in calls: after n calls the mean residual is learned as ``n / (n + lambda_k)``
of what was observed. A model with prices starts at its list price and trusts it for
``lambda_k = cost_prior_strength`` calls' worth of evidence: a list price is the price, and what a
few calls say about output lengths is noisy. Learned faster, the per-prompt noise decides between
models of about the same price, and the model that looked cheaper on a handful of prompts takes
them for good (a tight budget then overspends by picking it where the other is cheaper). A model
without prices starts at zero cost and learns it from its first calls (``lambda_k = 1``). The
prior is put in the features: the regression runs on ``phi / sqrt(lambda_k)`` with a unit prior,
and its weights are divided by ``sqrt(lambda_k)`` (the same posterior mean); a state records the
scale, so that what it learned moves exactly to the priors of the policy that loads it. Costs are
modelled in milli-USD.

Example
-------
>>> import numpy as np
>>> cm = CostModel(["a"], prices=[(1.0, 2.0)], expected_output_tokens=100)
>>> round(float(cm.predict(np.zeros((1, 40)), np.array([1000.0]))[0, 0]), 6)   # 1000 x 1 + 100 x 2 USD/1M
0.0012
"""

from __future__ import annotations

import numpy as np

from banditroute.core.features import SIGNALS
from banditroute.core.policies.bayes_linear import BayesLinear
from banditroute.core.types import Context

_CODE = 1 + SIGNALS.index("code_request")
_CHOICE = 1 + SIGNALS.index("choice_options")
_SCALE = 1000.0  # USD -> milli-USD
_PHI = ("bias", "in_ktok", "code", "choice")


def phi(X: np.ndarray, input_tokens: np.ndarray) -> np.ndarray:
    """The cost regressors' inputs for each row: (B, 4)."""
    out = np.empty((len(X), len(_PHI)))
    out[:, 0] = 1.0
    out[:, 1] = np.asarray(input_tokens, dtype=float) / 1000.0
    out[:, 2] = X[:, _CODE]
    out[:, 3] = X[:, _CHOICE]
    return out


class CostModel:
    """One online cost regressor per model, on top of optional list prices.

    Parameters
    ----------
    models
        Model names, in the policy's arm order.
    prices
        ``(input, output)`` USD per 1M tokens per model; ``None`` entries mean unknown.
    expected_output_tokens
        Output length assumed by the list-price estimate.
    cost_prior_strength
        ``lambda_k`` of a model with a list price, in calls (module docstring); 1 for one without.
    """

    def __init__(self, models, prices=None, expected_output_tokens: float = 256.0, cost_prior_strength: float = 1.0):
        self.models = list(models)
        prices = prices or [None] * len(self.models)
        self.in_price = np.array([(p[0] or 0.0) if p else 0.0 for p in prices], dtype=float)
        self.out_price = np.array([(p[1] or 0.0) if p else 0.0 for p in prices], dtype=float)
        self.expected_output_tokens = float(expected_output_tokens)
        self.cost_prior_strength = float(cost_prior_strength)
        priced = (self.in_price > 0.0) | (self.out_price > 0.0)
        self.scale = np.where(priced, np.sqrt(self.cost_prior_strength), 1.0)  # sqrt(lambda_k)
        self.residual = BayesLinear(len(self.models), len(_PHI), prior_strength=1.0, prior_mean=0.0)
        self.observations = np.zeros(len(self.models), dtype=np.int64)
        self._w, self._weights_version = None, -1

    def prices(self) -> list[list[float]]:
        """``[input, output]`` USD per 1M tokens per model (0 where unknown)."""
        return np.stack([self.in_price, self.out_price], axis=1).tolist()

    def arrays(self) -> dict[str, np.ndarray]:
        return {"observations": self.observations, "scale": self.scale, **self.residual.arrays()}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace what was learned by :meth:`arrays`, learned under any priors (a state saved before the
        price prior learned every model at lambda 1): with features scaled by 1 / s, the data enter
        ``A = I + sum x x^T / s^2`` and ``b = sum x r / s``, so the evidence moves exactly to this
        model's scale: ``A' = I + (s / s')^2 (A - I)``, ``b' = (s / s') b``."""
        self.observations = np.array(arrays["observations"], dtype=np.int64)
        ratio = np.array(arrays.get("scale", np.ones(len(self.models))), dtype=float) / self.scale
        eye = np.eye(len(_PHI))
        A = eye + ratio[:, None, None] ** 2 * (np.array(arrays["A"], dtype=float) - eye)
        b = ratio[:, None] * np.array(arrays["b"], dtype=float)
        A_inv = np.array(arrays["A_inv"], dtype=float)
        moved = ratio != 1.0
        A_inv[moved] = np.linalg.inv(A[moved])
        self.residual.load_arrays({"A": A, "A_inv": A_inv, "b": b, "updates": arrays["updates"]})
        self._weights_version = -1

    def list_price(self, input_tokens: np.ndarray) -> np.ndarray:
        """List-price estimate in USD of every model for each row: (B, K)."""
        tokens = np.asarray(input_tokens, dtype=float).reshape(-1, 1)
        return (tokens * self.in_price + self.expected_output_tokens * self.out_price) / 1e6

    def predict(self, X: np.ndarray, input_tokens: np.ndarray) -> np.ndarray:
        """Predicted cost in USD (never negative) of every model for each row of ``X``: (B, K).

        The list price is linear in the same inputs, so both terms are one product: the list price
        enters the bias and input-token weights of ``w_k`` (see :meth:`_weights`).
        """
        return np.maximum(phi(X, input_tokens) @ self._weights(), 0.0)

    def _weights(self) -> np.ndarray:
        """(4, K): the learned weights in USD plus the list price, ``p_k(x) = in_k t + out_k e``, which
        contributes ``out_k e / 1e6`` to the bias and ``in_k / 1e3`` per thousand input tokens."""
        theta = self.residual.theta  # refreshed first, so its version is current
        if self._weights_version != self.residual.version:
            w = theta.T / (_SCALE * self.scale)
            w[0] += self.expected_output_tokens * self.out_price / 1e6
            w[1] += self.in_price / 1e3
            self._w, self._weights_version = w, self.residual.version
        return self._w

    def update(self, ctx: Context, arm: int, cost_usd: float) -> None:
        """Learn from the observed cost of one call to model ``arm``."""
        # phi and list_price of one row, in the same floating-point operations as the batch forms
        tokens, x = float(ctx.input_tokens), ctx.x
        f = np.array((1.0, tokens / 1000.0, x[_CODE], x[_CHOICE])) / self.scale[arm]
        residual = cost_usd - float(tokens * self.in_price[arm] + self.expected_output_tokens * self.out_price[arm]) / 1e6
        self.residual.update(f, arm, residual * _SCALE)
        self.observations[arm] += 1
