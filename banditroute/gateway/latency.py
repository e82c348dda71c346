"""Latency learned per model from the gateway's own calls, for ``max_latency_ms`` and ``GET /models``.

Per model, a least-squares line of the total latency in the call's size,

    latency_ms ~ a + b * input_ktokens + c * output_ktokens,

fitted from running sums (the normal equations, with a ridge of ``RIDGE`` on the two slopes only, so a
model seen on one prompt size still gets an intercept). A request's prediction puts in its estimated
prompt tokens and its ``max_tokens`` (else the pool's expected output tokens). A model with fewer
than ``MIN_CALLS`` answered calls has no prediction and is never excluded on latency.
"""

from __future__ import annotations

import numpy as np

RIDGE = 1.0
MIN_CALLS = 5

# the running sums of one model as the calls table gives them back at start (see from_log)
SUMS_SQL = """
SELECT model, count(*) AS n, sum(i) AS si, sum(o) AS so, sum(i * i) AS sii, sum(i * o) AS sio, sum(o * o) AS soo,
       sum(y) AS sy, sum(i * y) AS siy, sum(o * y) AS soy, sum(ttft_ms) AS st, count(ttft_ms) AS nt
FROM (SELECT model, input_tokens / 1000.0 AS i, output_tokens / 1000.0 AS o, latency_ms AS y, ttft_ms
      FROM calls WHERE outcome = 'ok' AND kind <> 'judge' AND latency_ms IS NOT NULL
        AND input_tokens IS NOT NULL AND output_tokens IS NOT NULL)
GROUP BY model
"""


class LatencyModel:
    """Per-model latency lines; :meth:`observe` one answered call, :meth:`predict` a request."""

    def __init__(self, models):
        self._xx = {m: np.zeros((3, 3)) for m in models}
        self._xy = {m: np.zeros(3) for m in models}
        self._ttft = {m: [0.0, 0] for m in models}
        self._coef: dict[str, np.ndarray | None] = dict.fromkeys(models)

    def observe(self, model: str, input_tokens: int, output_tokens: int, latency_ms: float,
                ttft_ms: float | None = None) -> None:
        x = np.array([1.0, input_tokens / 1000.0, output_tokens / 1000.0])
        self._xx[model] += np.outer(x, x)
        self._xy[model] += latency_ms * x
        if ttft_ms is not None:
            self._ttft[model][0] += ttft_ms
            self._ttft[model][1] += 1
        self._coef[model] = None

    def load(self, rows: list[dict]) -> None:
        """Start from the sums of :data:`SUMS_SQL` (one row per model)."""
        for r in rows:
            m = r["model"]
            if m not in self._xx:
                continue
            n, si, so = float(r["n"]), float(r["si"]), float(r["so"])
            self._xx[m] = np.array([[n, si, so], [si, float(r["sii"]), float(r["sio"])],
                                    [so, float(r["sio"]), float(r["soo"])]])
            self._xy[m] = np.array([float(r["sy"]), float(r["siy"]), float(r["soy"])])
            self._ttft[m] = [float(r["st"] or 0.0), int(r["nt"] or 0)]
            self._coef[m] = None

    def calls(self, model: str) -> int:
        return int(self._xx[model][0, 0] + 0.5)

    def _fit(self, model: str) -> np.ndarray | None:
        if self.calls(model) < MIN_CALLS:
            return None
        coef = self._coef[model]
        if coef is None:
            coef = np.linalg.solve(self._xx[model] + np.diag([0.0, RIDGE, RIDGE]), self._xy[model])
            self._coef[model] = coef
        return coef

    def predict(self, model: str, input_tokens: float, output_tokens: float) -> float | None:
        """Predicted total latency in ms, or None before ``MIN_CALLS`` answered calls."""
        coef = self._fit(model)
        if coef is None:
            return None
        return float(coef[0] + coef[1] * input_tokens / 1000.0 + coef[2] * output_tokens / 1000.0)

    def view(self, model: str, output_tokens: float) -> dict:
        """``GET /models``' latency of a model: calls, mean time to first token, and the predicted
        latency of a short prompt (100 tokens) with ``output_tokens`` out."""
        total, n = self._ttft[model]
        predicted = self.predict(model, 100.0, output_tokens)
        return {"calls": self.calls(model), "mean_ttft_ms": total / n if n else None,
                "predicted_ms": None if predicted is None else round(predicted, 3)}
