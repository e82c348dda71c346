"""The values that flow through routing: a prompt's context, a policy's scores, the score formula,
and the records of a decision (:class:`Decision`, what the log stores; :class:`Pending`, what learning
from its feedback needs; :class:`FeedbackResult`, what one feedback applied).

Every place that ranks models by value (the policies, the router's answer, replay and the
experiments) uses :func:`net_score`, the one formula of DESIGN.md's decision 1:

    score_k(x) = q_k(x) - w c_k(x)

with ``q_k`` the predicted quality in [0, 1], ``c_k`` the predicted cost in USD and ``w`` the cost
weight in quality points per USD.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from banditroute.core.reward import mean_quality


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


@dataclass(slots=True)
class Pending:
    """What the router keeps of a decision until its feedback stops: just what learning needs."""

    decision_id: str
    model: str
    arm: int
    context: Context
    cost_usd: float | None = None
    signals: list[tuple[float, float]] = field(default_factory=list)
    keys: dict[str, str] | None = None  # idempotency key -> payload fingerprint of its feedback
    pacer: Any = None  # the tenant budget (a core.budget.Pacer) charged ``charged`` USD for it
    charged: float = 0.0
    propensity: float | None = None  # the probability it was chosen with (importance weights of learning)

    @property
    def quality(self) -> float | None:
        """Weighted mean quality of the signals received so far."""
        return mean_quality(self.signals)


@dataclass(slots=True)
class Decision:
    """A routing decision: what the answer to ``/route`` and the decision log say about it."""

    decision_id: str
    ts: float
    model: str
    arm: int
    propensity: float
    eligible: list[str]
    probabilities: np.ndarray
    pred_quality: np.ndarray
    pred_cost: np.ndarray
    cost_weight: float
    policy: str
    feature_version: str
    context: Context
    prompt_hash: str
    prompt: str | None = None
    rule: str | None = None  # the configured rule that shaped it
    budget: str | None = None  # the budget and tenant it was charged to, and the tenant's cost preference after
    tenant: str | None = None
    pace: float | None = None
    pacer: Any = None  # that budget's core.budget.Pacer, and what it was charged (the predicted cost)
    charged: float = 0.0

    def pending(self) -> Pending:
        """What learning from this decision's feedback needs."""
        return Pending(self.decision_id, self.model, self.arm, self.context, pacer=self.pacer, charged=self.charged,
                       propensity=self.propensity)

    def scores(self) -> dict[str, dict[str, float]]:
        """``{model: {quality, cost_usd, score}}`` behind the choice."""
        cw = self.cost_weight  # in Python floats: the same two roundings as numpy, without its per-call cost
        return {m: {"quality": q, "cost_usd": c, "score": net_score(q, c, cw)}
                for m, q, c in zip(self.eligible, self.pred_quality.tolist(), self.pred_cost.tolist())}


@dataclass
class FeedbackResult:
    """What one feedback call changed."""

    decision_id: str
    model: str
    qualities: list[tuple[float, float]]
    cost_usd: float | None
    quality: float | None
