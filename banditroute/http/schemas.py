"""Request and response models of the HTTP API.

Requests are validated by these models. Answers are built by the response models' ``body``
methods, the one place each answer's shape is written (plain dicts on the hot paths; tests validate
every endpoint's real answers against the models, which forbid unknown fields).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from banditroute.config import NonNegFloat
from banditroute.core.reward import Feedback
from banditroute.core.router import RouteRequest
from banditroute.core.types import Decision

__all__ = [
    "ErrorResponse", "FeedbackRequest", "FeedbackResponse", "HealthResponse", "ModelScore", "ModelView",
    "ModelsResponse", "PolicyUpdate", "PolicyView", "RouteRequest", "RouteResponse",
]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelScore(_Answer):
    quality: float = Field(description="predicted quality in [0, 1]")
    cost_usd: float = Field(description="predicted cost of the call in USD")
    score: float = Field(description="quality - cost_weight * cost_usd")


class RouteResponse(_Answer):
    decision_id: str
    model: str = Field(description="the model to call")
    propensity: float = Field(description="probability with which this model was chosen")
    probabilities: dict[str, float] = Field(description="the policy's probability for every eligible model")
    scores: dict[str, ModelScore]
    cost_weight: float = Field(description="quality points per USD used for this decision")
    policy: str
    rule: str | None = Field(description="the configured rule that shaped the decision, if one matched")
    budget: str | None = Field(description="the budget the decision was charged to, if any")
    tenant: str | None = Field(description="the tenant of that budget")

    @staticmethod
    def body(d: Decision) -> dict:
        return {
            "decision_id": d.decision_id, "model": d.model, "propensity": d.propensity,
            "probabilities": dict(zip(d.eligible, d.probabilities.tolist())), "scores": d.scores(),
            "cost_weight": d.cost_weight, "policy": d.policy, "rule": d.rule, "budget": d.budget,
            "tenant": d.tenant,
        }


class FeedbackRequest(Feedback):
    """``POST /feedback``: outcomes of one decision; any subset, in as many calls as needed."""

    decision_id: str = Field(min_length=1, max_length=100)


class FeedbackResponse(_Answer):
    decision_id: str
    model: str
    applied_signals: int = Field(description="quality signals applied to the model (0 for a duplicate)")
    quality: float | None = Field(description="weighted mean quality of all signals so far (null if none)")
    cost_usd: float | None = Field(description="cost applied by this call (null if none or already known)")
    duplicate: bool = Field(description="true when the idempotency key was seen before; nothing was applied")
    late: bool = Field(description="true when the decision was read back from the log")

    @staticmethod
    def body(ack) -> dict:
        """From the service's :class:`~banditroute.service.service.FeedbackAck`."""
        return {"decision_id": ack.decision_id, "model": ack.model, "applied_signals": ack.applied_signals,
                "quality": ack.quality, "cost_usd": ack.cost_usd, "duplicate": ack.duplicate, "late": ack.late}


class ModelView(_Answer):
    model: str
    decisions: int
    share: float
    mean_quality: float | None
    mean_cost_usd: float | None
    observations: int = Field(description="feedbacks with a cost")
    quality_weight: float = Field(description="total weight of quality signals")
    cost_usd: float = Field(description="the costs reported for its decisions, summed (the bill)")
    predicted_cost_usd: float = Field(description="its decisions' predicted costs, summed (a request that fell back "
                                      "counts with the model that served it)")
    priciest_cost_usd: float = Field(description="for the same requests, the predicted cost of the priciest model "
                                     "each could have gone to; 1 - predicted / priciest over the pool is what routing "
                                     "saves")
    callable: bool = Field(description="the gateway can call it (it has a base_url or deployments)")
    capabilities: list[str] = Field(description="as configured: what requests that need them may be routed to it")
    context_window: int | None = Field(description="tokens of prompt and answer together, as configured (null: not "
                                       "checked)")
    max_output_tokens: int | None = Field(description="the most tokens it writes in one answer, as configured (null: "
                                          "not checked)")
    prompt_tokens: PromptTokensView | None = Field(default=None, description="how its tokenizer counts prompts "
                                                   "against the gateway's estimate")
    learned_limits: dict[str, LearnedLimit] = Field(
        default_factory=dict, description="context_window or max_output_tokens as its provider's refusal of a request too "
        "large stated them, where below the configured limit (or none is configured): such requests go to other models "
        "while one can take them, for an hour after the last such refusal")
    health: ProviderHealth = Field(description="its provider's circuit; with several deployments, the model's as a "
                                   "whole: the best state, the fewest consecutive failures, the soonest retry")
    latency: LatencyView
    rate_limits: RateLimitView | None = Field(description="the provider's limits the gateway keeps to (null: none "
                                              "configured, or several deployments: see each)")
    deployments: list[DeploymentView] = Field(description="the providers the gateway calls it at (empty: not callable)")


class PromptTokensView(_Answer):
    ratio: float = Field(description="the prompt tokens its providers reported per token the gateway estimated, over "
                         "its recent calls: what the context-window check multiplies the estimate by (1 until 20 calls)")
    calls: int = Field(description="calls with reported usage it was learned from")


class LearnedLimit(_Answer):
    tokens: int
    expires_in_s: float = Field(description="seconds until the limit lapses, unless another refusal states it again")


class DeploymentView(_Answer):
    name: str
    base_url: str
    weight: float
    in_flight: int = Field(description="its calls now under way")
    calls_started: int = Field(description="since the service started")
    health: ProviderHealth
    rate_limits: RateLimitView | None


class RateLimitView(_Answer):
    rpm: int | None = Field(description="requests a minute allowed (null: no limit)")
    tpm: int | None = Field(description="tokens a minute allowed (null: no limit)")
    requests_last_minute: int
    tokens_last_minute: int = Field(description="estimated at each call's start, then its reported usage")
    requests_refused: int = Field(description="requests that left this model out for its limit")


class ProviderHealth(_Answer):
    state: str = Field(description="closed (calls go through), open (skipped until retry_in_s), half_open (one "
                       "trial call allowed)")
    consecutive_failures: int
    retry_in_s: float
    times_opened: int


class LatencyView(_Answer):
    calls: int = Field(description="answered gateway calls the latency is learned from")
    mean_ttft_ms: float | None = Field(description="mean time to the first byte of the answer")
    predicted_ms: float | None = Field(description="predicted latency of a 100-token prompt with the pool's expected "
                                       "output tokens (null before 5 answered calls)")


class ModelsResponse(_Answer):
    models: list[ModelView]


class PolicyView(_Answer):
    policy: str
    cost_weight: float
    cost_preference: float | None = Field(description="when set, the default instead of cost_weight")
    exploration: float | None
    exploration_decay: float | None = Field(description="n0 of the annealed exploration scale; null: constant")
    current_exploration: float | None = Field(description="the exploration scale in force now (linear Thompson "
                                              "sampling and LinUCB)")
    floor: float = Field(description="the floor the policy started from (and keeps, without floor_decay)")
    floor_decay: float | None = Field(description="n0 of the decaying floor; null: a constant floor")
    floor_min: float = Field(description="the least the decaying floor falls to")
    current_floor: float = Field(description="the minimum probability of every eligible model now")
    feature_version: str
    feedback_seq: int = Field(description="position in the feedback log the state covers")


class TenantBudget(_Answer):
    budget: str
    tenant: str = Field(description="the request's user, metadata field, or key:HASH for an API key")
    period_start: str
    period_end: str
    amount_usd: float = Field(description="what the tenant may spend in the period")
    spent_usd: float = Field(description="charged so far: reported costs, and predicted costs until reported")
    remaining_usd: float
    requests: int = Field(description="decisions charged to the budget in the period")
    pace: float | None = Field(description="spend over the even pace (the budget times the share of the period "
                               "gone): above 1, ahead of it")
    target_usd_per_request: float | None = Field(description="what each request expected in the rest of the "
                                                 "period may cost on average (paced budgets)")
    cost_preference: float | None = Field(description="the preference the pacing controller sets now")
    cost_weight: float | None = Field(description="the cost weight of the tenant's last decision")
    exhausted_requests: int = Field(description="requests that found the budget exhausted (served by the "
                                    "cheapest model, or refused)")


class BudgetsResponse(_Answer):
    budgets: list[TenantBudget] = Field(description="every tenant with decisions in its current period")


class PolicyUpdate(BaseModel):
    """``PUT /policy``: any subset; a new ``policy`` is rebuilt from the whole feedback log."""

    model_config = ConfigDict(extra="forbid", strict=True)

    policy: str | None = Field(default=None, description="lints | linucb | squarecb | egreedy | random | fixed:MODEL")
    cost_weight: NonNegFloat | None = Field(default=None, description="the default cost weight (clears "
                                            "cost_preference)")
    cost_preference: Annotated[float, Field(ge=0, le=1, strict=True, allow_inf_nan=False)] | None = Field(
        default=None, description="the default cost preference, in [0, 1], instead of a weight")
    exploration: NonNegFloat | None = None
    floor: Annotated[float, Field(gt=0, le=0.5, strict=True, allow_inf_nan=False,
                                  description="minimum probability of every eligible model, in (0, 1 / models]; "
                                              "0 would make off-policy estimates of the log invalid")] | None = None


class HealthResponse(_Answer):
    status: str


class ErrorResponse(_Answer):
    error: str = Field(description="machine-readable error kind")
    message: str = Field(description="what is wrong, for humans")
    detail: list[dict[str, Any]] | None = Field(default=None, description="per-field validation errors")


class OpenAIErrorBody(BaseModel):
    message: str
    type: str = Field(description="the error kind (validation_error, routing_error, upstream_error, ...)")
    code: str | None
    param: str | None
    detail: list[dict[str, Any]] | None = Field(default=None, description="per-field errors, or each failed attempt")


class OpenAIErrorResponse(BaseModel):
    """An error on the OpenAI-compatible paths, in OpenAI's shape."""

    error: OpenAIErrorBody


class AnthropicErrorBody(BaseModel):
    type: str = Field(description="Anthropic's error type (invalid_request_error, not_found_error, rate_limit_error, "
                      "api_error, ...)")
    message: str
    code: str | None = Field(default=None, description="banditroute's own error kind")
    detail: list[dict[str, Any]] | None = Field(default=None, description="per-field errors, or each failed attempt")


class AnthropicErrorResponse(BaseModel):
    """An error on the Anthropic-compatible path (``/v1/messages``), in Anthropic's shape."""

    type: str = "error"
    error: AnthropicErrorBody


class ResponseDeleted(BaseModel):
    """``DELETE /v1/responses/{response_id}``: OpenAI's deletion object (a provider's own, as it answered,
    for a response it stored)."""

    id: str
    object: str = "response.deleted"
    deleted: bool


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat-completions body (https://platform.openai.com/docs/api-reference/chat/create);
    fields not listed are passed upstream untouched. ``model``: ``banditroute`` to route among the pool,
    or a pool model's name to call it directly."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    banditroute: dict[str, Any] | None = Field(default=None, description="routing options: cost_weight, "
                                               "max_cost_usd, models, require, max_latency_ms, metadata")


class ResponseCreateRequest(BaseModel):
    """OpenAI's responses body (https://platform.openai.com/docs/api-reference/responses/create); fields
    not listed are passed upstream untouched. Served by the pool's models with the ``responses``
    capability. ``model``: ``banditroute`` to route among them, or a pool model's name to call it directly."""

    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    banditroute: dict[str, Any] | None = Field(default=None, description="routing options: cost_weight, "
                                               "max_cost_usd, models, require, max_latency_ms, metadata")
