"""Per-model cost models learned online with river.

For model k the predicted cost of a prompt is

    c_k(x) = p_k(x) + w_k . phi(x),    phi(x) = (1, input_ktokens, code, choice_options)

where ``p_k(x)`` is the list-price estimate (input tokens x input price + expected output tokens x
output price, zero when the pool gives no price) and ``w_k`` is the posterior mean of a river
:class:`~river.linear_model.BayesianLinearRegression` fit online to the residual
``observed cost - p_k(x)`` (Bishop, 2006, "Pattern Recognition and Machine Learning", sec. 3.3).
A model with prices therefore starts at its list price and corrects it as real costs arrive; a model
without prices starts at zero cost and learns it from its first observations. Costs are modelled
in milli-USD so the regression's default prior (precision 1) is on the scale of the data.

Example
-------
>>> import numpy as np
>>> cm = CostModel(["a"], prices=[(1.0, 2.0)], expected_output_tokens=100)
>>> ctx = Context(x=np.zeros(40), input_tokens=1000.0)
>>> round(float(cm.predict(ctx, [0])[0]), 6)   # 1000 x 1 + 100 x 2 USD per 1M tokens
0.0012
"""

from __future__ import annotations

import numpy as np
from river import linear_model

from banditroute.core.features import SIGNALS, Context

_CODE = 1 + SIGNALS.index("code_request")
_CHOICE = 1 + SIGNALS.index("choice_options")
_SCALE = 1000.0  # USD -> milli-USD
_PHI = ("bias", "in_ktok", "code", "choice")


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
    """

    def __init__(self, models, prices=None, expected_output_tokens: float = 256.0):
        self.models = list(models)
        prices = prices or [None] * len(self.models)
        self.in_price = np.array([(p[0] or 0.0) if p else 0.0 for p in prices], dtype=float)
        self.out_price = np.array([(p[1] or 0.0) if p else 0.0 for p in prices], dtype=float)
        self.expected_output_tokens = float(expected_output_tokens)
        self.regressors = [linear_model.BayesianLinearRegression(alpha=1.0, beta=1.0) for _ in self.models]
        # posterior-mean weights of each regressor, read back from it when a decision needs them after
        # it learned: a decision then predicts every model's cost with one matrix product instead of K
        # river calls, and a burst of feedback does not read them back once per call
        self._coef = np.zeros((len(self.models), len(_PHI)))
        self._stale: set[int] = set()
        self.observations = np.zeros(len(self.models), dtype=np.int64)

    def __setstate__(self, state: dict) -> None:
        state.setdefault("_stale", set())  # states pickled before the lazy read-back had none stale
        self.__dict__.update(state)

    @property
    def coef(self) -> np.ndarray:
        """Posterior-mean weights of each model's cost regressor (rows in arm order, columns :data:`_PHI`)."""
        for arm in self._stale:
            reg = self.regressors[arm]
            self._coef[arm] = [reg.predict_one({name: 1.0}) for name in _PHI]
        self._stale.clear()
        return self._coef

    @staticmethod
    def _phi(ctx: Context) -> np.ndarray:
        return np.array([1.0, ctx.input_tokens / 1000.0, ctx.x[_CODE], ctx.x[_CHOICE]])

    def list_price(self, ctx: Context, arms) -> np.ndarray:
        """List-price estimate in USD for each of ``arms``."""
        arms = np.asarray(arms, dtype=np.intp)
        return (ctx.input_tokens * self.in_price[arms] + self.expected_output_tokens * self.out_price[arms]) / 1e6

    def predict(self, ctx: Context, arms) -> np.ndarray:
        """Predicted cost in USD (never negative) for each of ``arms``."""
        learned = self.coef[arms] @ self._phi(ctx) / _SCALE
        return np.maximum(self.list_price(ctx, arms) + learned, 0.0)

    def predict_many(self, X: np.ndarray, input_tokens: np.ndarray) -> np.ndarray:
        """:meth:`predict` for every row of ``X`` and every model at once (n, models)."""
        phi = np.empty((len(X), len(_PHI)))
        phi[:, 0] = 1.0
        phi[:, 1] = input_tokens / 1000.0
        phi[:, 2] = X[:, _CODE]
        phi[:, 3] = X[:, _CHOICE]
        price = (input_tokens[:, None] * self.in_price + self.expected_output_tokens * self.out_price) / 1e6
        return np.maximum(price + phi @ self.coef.T / _SCALE, 0.0)

    def update(self, ctx: Context, arm: int, cost_usd: float) -> None:
        """Learn from the observed cost of one call to model ``arm``."""
        residual = cost_usd - float(self.list_price(ctx, arm))
        reg = self.regressors[arm]
        reg.learn_one(dict(zip(_PHI, self._phi(ctx).tolist())), residual * _SCALE)
        self._stale.add(arm)
        self.observations[arm] += 1
