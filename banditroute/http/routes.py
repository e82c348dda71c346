"""The route table: every endpoint once, from which both the aiohttp routes and the OpenAPI document
are built."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from banditroute.gateway.messages import CountTokensRequest, MessagesRequest
from banditroute.http import handlers
from banditroute.http.metrics import CONTENT_TYPE
from banditroute.http.schemas import (
    AnthropicErrorResponse,
    BudgetsResponse,
    ChatCompletionRequest,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    ModelsResponse,
    OpenAIErrorResponse,
    PolicyUpdate,
    PolicyView,
    ResponseCreateRequest,
    ResponseDeleted,
    RouteRequest,
    RouteResponse,
)


@dataclass(frozen=True)
class Route:
    """One endpoint: what it does, what it takes and answers, and the errors it may answer with."""

    method: str
    path: str
    handler: Any
    summary: str
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    errors: tuple[int, ...] = (401,)
    content_type: str = "application/json"  # of a response without a model
    public: bool = False  # answered without the bearer token
    query: tuple[tuple[str, str, list[str] | None], ...] = ()  # (name, description, allowed values; None: any)


ROUTES = (
    Route("POST", "/route", handlers.route, "Choose a model for a prompt", RouteRequest, RouteResponse,
          (400, 401, 408, 413, 422, 429, 503)),
    Route("POST", "/feedback", handlers.feedback, "Report outcomes of a decision", FeedbackRequest,
          FeedbackResponse, (400, 401, 404, 408, 409, 413, 422, 503)),
    Route("POST", "/v1/chat/completions", handlers.chat_completions, "OpenAI-compatible chat completions: routes "
          "(model banditroute) or calls a pool model, falls back on provider failures, streams with stream: true",
          ChatCompletionRequest, None, (400, 401, 404, 408, 413, 422, 429, 502, 503)),
    Route("POST", "/v1/responses", handlers.responses, "OpenAI-compatible responses: routes (model banditroute) "
          "among the models with the responses capability or calls one, falls back on provider failures, streams "
          "with stream: true", ResponseCreateRequest, None, (400, 401, 404, 408, 413, 422, 429, 502, 503)),
    Route("POST", "/v1/messages", handlers.messages, "Anthropic-compatible messages: routes (model banditroute) or "
          "calls a pool model through chat completions, falls back on provider failures, streams with stream: true",
          MessagesRequest, None, (400, 401, 404, 408, 413, 422, 429, 502, 503)),
    Route("POST", "/v1/messages/count_tokens", handlers.count_tokens, "Anthropic-compatible token count of a "
          "messages body (the gateway's estimate)", CountTokensRequest, None, (400, 401, 408, 413, 422)),
    Route("DELETE", "/v1/responses/{response_id}", handlers.delete_response, "OpenAI-compatible deletion of a "
          "stored response: one the gateway keeps for the caller's API key (its conversation turn, in memory and in "
          "the log), or one a provider stored (deleted there)", response=ResponseDeleted,
          errors=(401, 404, 502, 503)),
    Route("GET", "/v1/responses/{response_id}", handlers.stored_response, "OpenAI-compatible retrieval of a "
          "response its provider stored (relayed to that provider) or the gateway made of a chat completion and "
          "keeps for the caller's API key", errors=(401, 404, 422, 502, 503)),
    Route("GET", "/v1/responses/{response_id}/input_items", handlers.stored_response, "OpenAI-compatible input "
          "items of a response its provider stored (relayed to that provider) or the gateway keeps (the request's "
          "own input; limit, order, after)", errors=(401, 404, 422, 502, 503)),
    Route("POST", "/v1/responses/{response_id}/cancel", handlers.stored_response, "OpenAI-compatible cancellation "
          "of a background response its provider stored (relayed to that provider); a response the gateway made "
          "is never a background one (400)", errors=(400, 401, 404, 502, 503)),
    Route("GET", "/v1/models", handlers.v1_models, "OpenAI-compatible model list: banditroute and the pool"),
    Route("GET", "/v1/models/{model}", handlers.v1_model, "OpenAI-compatible model retrieval: banditroute or a pool "
          "model", errors=(401, 404)),
    Route("GET", "/models", handlers.models, "Traffic and outcomes per model", response=ModelsResponse),
    Route("GET", "/budgets", handlers.budgets, "Spend, remaining budget, pace and cost weight per tenant",
          response=BudgetsResponse, errors=(401, 422),
          query=(("budget", "only this budget (its name in the configuration)", None),
                 ("tenant", "only this tenant, as the list shows it (an API key as key: and its SHA-256 prefix)", None))),
    Route("GET", "/policy", handlers.get_policy, "The active policy and its settings", response=PolicyView),
    Route("PUT", "/policy", handlers.put_policy, "Change the policy or its settings (logged)", PolicyUpdate,
          PolicyView, (400, 401, 408, 413, 422)),
    Route("GET", "/healthz", handlers.healthz, "Liveness: 503 when the log's database was invalidated and cannot "
          "be opened again in the process (a restart is needed)", response=HealthResponse, errors=(503,), public=True),
    Route("GET", "/readyz", handlers.readyz, "Readiness: 503 while the log does not accept writes",
          response=HealthResponse, errors=(503,), public=True),
    Route("GET", "/metrics", handlers.metrics, "Prometheus metrics", content_type=CONTENT_TYPE),
    Route("GET", "/openapi.json", handlers.openapi, "This document"),
    Route("GET", "/export", handlers.export, "The decision log joined with its feedback, as replay reads it",
          errors=(401, 422), content_type="application/octet-stream",
          query=(("format", "file format (default parquet)", ["parquet", "jsonl"]),)),
)
PUBLIC = {r.path for r in ROUTES if r.public}


def add_routes(app: web.Application, passthrough=()) -> None:
    """:data:`ROUTES`, then one route (any method) per ``gateway.passthrough`` entry: its path, or every path
    below a prefix (:mod:`banditroute.gateway.passthrough`)."""
    for r in ROUTES:
        app.router.add_route(r.method, r.path, r.handler)
    for entry in passthrough:
        app.router.add_route("*", entry.path + "{tail:.*}" if entry.path.endswith("/") else entry.path,
                             handlers.passthrough)


def openapi_document(version: str) -> dict:
    """An OpenAPI 3.1 document of :data:`ROUTES`, with the pydantic models' JSON schemas."""
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error = {"description": "error", "content": {"application/json": {"schema": ref(ErrorResponse)}}}
    openai_error = {"description": "error", "content": {"application/json": {"schema": ref(OpenAIErrorResponse)}}}
    anthropic_error = {"description": "error", "content": {"application/json": {"schema": ref(AnthropicErrorResponse)}}}
    paths: dict[str, dict] = {}
    for r in ROUTES:
        err = anthropic_error if r.path.startswith("/v1/messages") else openai_error if r.path.startswith("/v1/") else error
        ok = ({"application/json": {"schema": ref(r.response)}} if r.response is not None
              else {r.content_type: {"schema": {"type": "string"} if "json" not in r.content_type
                                     else {"type": "object"}}})
        op: dict[str, Any] = {
            "summary": r.summary,
            "responses": {"200": {"description": "OK", "content": ok}, **{str(c): err for c in r.errors}},
            "security": [] if r.public else [{"bearer": []}],
        }
        if r.request is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(r.request)}}}
        parameters = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                      for n in re.findall(r"{(\w+)}", r.path)]
        parameters += [{"name": n, "in": "query", "required": False, "description": d,
                        "schema": {"type": "string"} | ({"enum": values} if values else {})}
                       for n, d, values in r.query]
        if parameters:
            op["parameters"] = parameters
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "banditroute", "version": version, "description": "An LLM router that learns from feedback."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
