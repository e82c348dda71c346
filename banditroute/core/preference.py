"""The scale-free cost knob: ``cost_preference`` p in [0, 1] as a cost weight for one request.

A cost weight w (quality points per USD) means different things in different pools: a weight that
balances GPT-4-class prices makes models thirty times cheaper look free. The preference is measured
against the request's own price spread instead, the predicted cost of its most expensive eligible
model minus that of its cheapest, Delta c:

    w(p) = s * p / (1 - p) / Delta c

so at p = 0.5 paying the whole spread is worth s quality (``policy.preference_scale``, 0.1: ten
quality points on the 0-1 scale), at p = 0 cost does not count (w = 0) and as p -> 1 only the cheapest
model is worth choosing (p = 1 is taken as 1 - 1e-9). A request whose eligible models all cost the same
gets w = 0. The cost predictions are the policy's (list prices until costs are reported), so the
same p means the same trade-off in any pool. Decisions log the weight that resulted, so replay and
tuning see ordinary cost weights.
"""

from __future__ import annotations

import numpy as np

MAX_PREFERENCE = 1.0 - 1e-9


def price_spread(cost: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Delta c per row: the dearest minus the cheapest predicted cost (B, K) among the eligible models."""
    if mask is None:
        return cost.max(axis=1) - cost.min(axis=1)
    return np.where(mask, cost, -np.inf).max(axis=1) - np.where(mask, cost, np.inf).min(axis=1)


def spread_weights(preference, spread, scale: float) -> np.ndarray:
    """w(p) = s p / (1 - p) / Delta c for preferences and price spreads (B,); 0 where Delta c is 0."""
    p = np.minimum(np.asarray(preference, dtype=float), MAX_PREFERENCE)
    spread = np.asarray(spread, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = scale * p / (1.0 - p) / spread
    return np.where(spread > 0, w, 0.0)


def preference_weights(preference: np.ndarray, cost: np.ndarray, mask: np.ndarray | None, scale: float) -> np.ndarray:
    """Cost weights (B,) for preferences (B,) given predicted costs (B, K) and eligible masks (B, K)."""
    return spread_weights(preference, price_spread(cost, mask), scale)


def preference_for_weight(weight: float, spread: float, scale: float) -> float:
    """The preference that gives ``weight`` at a price spread of ``spread`` (the inverse of w(p))."""
    x = weight * spread / scale
    return float(x / (1.0 + x))
