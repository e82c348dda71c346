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
    """Per-model latency lines; :meth:`observe` one answered call, :meth:`predict` a request.

    A model's running sums are kept as the nine floats of :data:`SUMS_SQL` (``n, si, so, sii, sio, soo,
    sy, siy, soy``), plain Python numbers: one call adds to them on the hot path, and the normal equations
    are built from them only when a prediction needs a new fit."""

    def __init__(self, models):
        self._sums = {m: [0.0] * 9 for m in models}
        self._ttft = {m: [0.0, 0] for m in models}
        self._coef: dict[str, np.ndarray | None] = dict.fromkeys(models)

    def observe(self, model: str, input_tokens: int, output_tokens: int, latency_ms: float,
                ttft_ms: float | None = None) -> None:
        i, o, y = input_tokens / 1000.0, output_tokens / 1000.0, latency_ms
        s = self._sums[model]
        s[0] += 1.0
        s[1] += i
        s[2] += o
        s[3] += i * i
        s[4] += i * o
        s[5] += o * o
        s[6] += y
        s[7] += i * y
        s[8] += o * y
        if ttft_ms is not None:
            self._ttft[model][0] += ttft_ms
            self._ttft[model][1] += 1
        self._coef[model] = None

    def load(self, rows: list[dict]) -> None:
        """Start from the sums of :data:`SUMS_SQL` (one row per model)."""
        for r in rows:
            m = r["model"]
            if m not in self._sums:
                continue
            self._sums[m] = [float(r[k]) for k in ("n", "si", "so", "sii", "sio", "soo", "sy", "siy", "soy")]
            self._ttft[m] = [float(r["st"] or 0.0), int(r["nt"] or 0)]
            self._coef[m] = None

    def calls(self, model: str) -> int:
        return int(self._sums[model][0] + 0.5)

    def _fit(self, model: str) -> np.ndarray | None:
        if self.calls(model) < MIN_CALLS:
            return None
        coef = self._coef[model]
        if coef is None:
            n, si, so, sii, sio, soo, sy, siy, soy = self._sums[model]
            xx = np.array([[n, si, so], [si, sii + RIDGE, sio], [so, sio, soo + RIDGE]])
            coef = np.linalg.solve(xx, np.array([sy, siy, soy]))
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
