"""Request and response models of the HTTP API, and the OpenAPI 3 document built from them."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from banditroute.core.reward import Feedback
from banditroute.core.router import RouteRequest


class ModelScore(BaseModel):
    quality: float = Field(description="predicted quality in [0, 1]")
    cost_usd: float = Field(description="predicted cost of the call in USD")
    score: float = Field(description="quality - cost_weight * cost_usd")


class RouteResponse(BaseModel):
    decision_id: str
    model: str = Field(description="the model to call")
    propensity: float = Field(description="probability with which this model was chosen")
    probabilities: dict[str, float] = Field(description="the policy's probability for every eligible model")
    scores: dict[str, ModelScore]
    cost_weight: float = Field(description="quality points per USD used for this decision")
    policy: str


class FeedbackRequest(Feedback):
    """``POST /feedback``: outcomes of one decision; any subset, in as many calls as needed."""

    decision_id: str = Field(min_length=1, max_length=100)


class FeedbackResponse(BaseModel):
    decision_id: str
    model: str
    applied_signals: int = Field(description="quality signals applied to the model (0 for a duplicate)")
    quality: float | None = Field(description="weighted mean quality of all signals so far (null if none)")
    cost_usd: float | None = Field(description="cost applied by this call (null if none or already known)")
    duplicate: bool = Field(description="true when the idempotency key was seen before; nothing was applied")
    late: bool = Field(description="true when the decision was read back from the log")


class ModelView(BaseModel):
    model: str
    decisions: int
    share: float
    mean_quality: float | None
    mean_cost_usd: float | None
    observations: int = Field(description="feedbacks with a cost")
    quality_weight: float = Field(description="total weight of quality signals")


class ModelsResponse(BaseModel):
    models: list[ModelView]


class PolicyView(BaseModel):
    policy: str
    cost_weight: float
    exploration: float | None
    floor: float
    feature_version: str
    feedback_seq: int = Field(description="position in the feedback log the state covers")


class PolicyUpdate(BaseModel):
    """``PUT /policy``: any subset; a new ``policy`` is rebuilt from the whole feedback log."""

    model_config = ConfigDict(extra="forbid")

    policy: str | None = Field(default=None, description="lints | linucb | egreedy | random | fixed:MODEL")
    cost_weight: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    exploration: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    floor: Annotated[float, Field(ge=0, le=0.5, allow_inf_nan=False)] | None = None


class ErrorResponse(BaseModel):
    error: str = Field(description="machine-readable error kind")
    message: str = Field(description="what is wrong, for humans")
    detail: list[dict[str, Any]] | None = Field(default=None, description="per-field validation errors")


ENDPOINTS = [
    ("post", "/route", "Choose a model for a prompt", RouteRequest, RouteResponse, (401, 413, 422)),
    ("post", "/feedback", "Report outcomes of a decision", FeedbackRequest, FeedbackResponse, (401, 404, 413, 422)),
    ("get", "/models", "Traffic and outcomes per model", None, ModelsResponse, (401,)),
    ("get", "/policy", "The active policy and its settings", None, PolicyView, (401,)),
    ("put", "/policy", "Change the policy or its settings (logged)", PolicyUpdate, PolicyView, (401, 422)),
]


def openapi_document(version: str) -> dict:
    """An OpenAPI 3.1 document generated from the pydantic models above."""
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error = {"content": {"application/json": {"schema": ref(ErrorResponse)}}}
    paths: dict[str, dict] = {}
    for method, path, summary, req, resp, errors in ENDPOINTS:
        op: dict[str, Any] = {
            "summary": summary,
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ref(resp)}}},
                          **{str(code): {"description": "error", **error} for code in errors}},
            "security": [{"bearer": []}],
        }
        if req is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(req)}}}
        paths.setdefault(path, {})[method] = op
    paths["/healthz"] = {"get": {"summary": "Liveness", "security": [],
                                 "responses": {"200": {"description": "OK"}}}}
    paths["/metrics"] = {"get": {"summary": "Prometheus metrics", "security": [{"bearer": []}],
                                 "responses": {"200": {"description": "text/plain; version=0.0.4"}}}}
    paths["/export"] = {"get": {"summary": "The decision log joined with feedback (Parquet, or JSONL with ?format=jsonl)",
                                "security": [{"bearer": []}],
                                "responses": {"200": {"description": "a file"}, "401": {"description": "error", **error}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "banditroute", "version": version,
                 "description": "An LLM router that learns from feedback."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
