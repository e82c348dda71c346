"""The values that flow through routing: a prompt's context, a policy's scores, and the score formula.

Every place that ranks models by value (the policies, the router's answer, replay and the
experiments) uses :func:`net_score`, the one formula of DESIGN.md's decision 1:

    score_k(x) = q_k(x) - w c_k(x)

with ``q_k`` the predicted quality in [0, 1], ``c_k`` the predicted cost in USD and ``w`` the cost
weight in quality points per USD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def net_score(quality, cost, cost_weight):
    """``quality - cost_weight * cost``, for floats or broadcastable arrays."""
    return quality - cost_weight * cost


@dataclass(frozen=True, slots=True)
class Context:
    """What a policy learns from about one prompt: its feature vector and its estimated input tokens."""

    x: np.ndarray
    input_tokens: float


@dataclass
class Scores:
    """A policy's view of a batch of B decisions over its K models, as (B, K) arrays.

    ``probabilities`` is zero for models that were not eligible; ``quality`` and ``cost`` are the
    mean predictions for every model, eligible or not.
    """

    probabilities: np.ndarray
    quality: np.ndarray
    cost: np.ndarray

    def net(self, cost_weights) -> np.ndarray:
        """:func:`net_score` per row, with ``cost_weights`` a scalar or one weight per row."""
        return net_score(self.quality, self.cost, np.asarray(cost_weights, dtype=float).reshape(-1, 1))
