"""The endpoint handlers: parse the request, call the service, answer with the response model's body.

Errors are raised as :mod:`banditroute.errors` types; :mod:`banditroute.http.middleware` maps them.
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile

import duckdb
import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from banditroute.errors import MalformedJSON, NotFound, RequestTimeout, Unavailable, ValidationFailed
from banditroute.gateway.gateway import Gateway
from banditroute.gateway.messages import CountTokensRequest, MessagesRequest
from banditroute.gateway.requests import ROUTED, ChatRequest, ResponsesRequest
from banditroute.http.metrics import CONTENT_TYPE, Metrics
from banditroute.http.schemas import (
    BudgetsResponse,
    FeedbackRequest,
    FeedbackResponse,
    ModelsResponse,
    PolicyUpdate,
    PolicyView,
    RouteRequest,
    RouteResponse,
)
from banditroute.log.export import FORMATS, ExportError
from banditroute.service.service import Service

SERVICE = web.AppKey("service", Service)
GATEWAY = web.AppKey("gateway", Gateway)
METRICS = web.AppKey("metrics", Metrics)
OPENAPI = web.AppKey("openapi", dict)


def json_response(body, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def parse(request: web.Request, model: type[BaseModel]):
    """The body validated by ``model``; :class:`MalformedJSON` or :class:`ValidationFailed` otherwise."""
    if request.content.is_eof():  # the whole body came with the headers: nothing to wait for, no timer
        raw = await request.read()
    else:
        timeout = request.app[SERVICE].config.server.body_timeout_s
        try:
            async with asyncio.timeout(timeout):  # no task per request, as asyncio.wait_for would make
                raw = await request.read()
        except TimeoutError:
            raise RequestTimeout(f"the request body did not arrive within {timeout:g} s "
                                 "(server.body_timeout_s)") from None
    try:
        data = orjson.loads(raw)  # strict RFC 8259: NaN, Infinity and overflowing numbers are errors
    except orjson.JSONDecodeError as err:
        raise MalformedJSON(f"request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValidationFailed("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        detail = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
                  for e in err.errors(include_url=False, include_input=False)]
        raise ValidationFailed("; ".join(f"{d['field']}: {d['message']}" for d in detail), detail) from None


def bearer_key(request: web.Request) -> str | None:
    """The request's key (``Authorization: Bearer <key>``, the scheme in any case, or the Anthropic SDK's
    ``x-api-key``), for rules, budgets and rate limits."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and key.strip():
        return key.strip()
    return request.headers.get("x-api-key", "").strip() or None


async def route(request: web.Request) -> web.Response:
    req = await parse(request, RouteRequest)
    req.set_api_key(bearer_key(request))
    request.app[SERVICE].admit(req)
    d = await request.app[SERVICE].route(req)
    request.app[METRICS].decision(d.model, d.rule)
    return json_response(RouteResponse.body(d))


async def feedback(request: web.Request) -> web.Response:
    req = await parse(request, FeedbackRequest)
    ack = await request.app[SERVICE].feedback(req.decision_id, req)  # a FeedbackRequest is a Feedback with an id
    request.app[METRICS].feedback_ack(ack.duplicate, ack.late)
    return json_response(FeedbackResponse.body(ack))


async def models(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    rows = [{**row, **gateway.model_view(row["model"])} for row in request.app[SERVICE].stats.table()]
    return json_response(ModelsResponse(models=rows).model_dump())


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY].serve(request, await parse(request, ChatRequest), bearer_key(request))


async def messages(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY].serve(request, await parse(request, MessagesRequest), bearer_key(request))


async def count_tokens(request: web.Request) -> web.Response:
    """Anthropic's token count of a Messages body: the gateway's own estimate of its input tokens (no
    tokenizer is fetched); for a body naming a pool model, scaled to that model's count as its answers
    have reported it (the figure its context-window check uses)."""
    req = await parse(request, CountTokensRequest)
    gateway = request.app[GATEWAY]
    tokens = req.prompt_tokens(request.app[SERVICE].router.featurizer.input_tokens)
    if req.model in gateway.specs:
        tokens = gateway.own_tokens(req.model, tokens)
    return json_response({"input_tokens": round(tokens)})


async def responses(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY].serve(request, await parse(request, ResponsesRequest), bearer_key(request))


async def delete_response(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    return json_response(await gateway.stored.delete_response(request.match_info["response_id"], bearer_key(request)))


async def stored_response(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    return await gateway.stored.stored_response(request, request.match_info["response_id"], bearer_key(request))


async def passthrough(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY].passthroughs.forward(request)


def _model_object(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "banditroute"}


def _model_names(config) -> list[str]:
    """What a client may ask for: ``banditroute``, the configured routed models, the pool's models."""
    return [ROUTED, *(r.name for r in config.gateway.routed_models), *config.names]


async def v1_models(request: web.Request) -> web.Response:
    """OpenAI's model list: ``banditroute`` and the routed models (routed), each pool model (called directly)."""
    return json_response({"object": "list", "data": [_model_object(n) for n in _model_names(request.app[SERVICE].config)]})


async def v1_model(request: web.Request) -> web.Response:
    """OpenAI's model retrieval: one of :func:`v1_models`'s."""
    name = request.match_info["model"]
    if name not in _model_names(request.app[SERVICE].config):
        raise NotFound(f"model {name!r} is neither banditroute, a routed model nor a model of the pool")
    return json_response(_model_object(name))


async def budgets(request: web.Request) -> web.Response:
    """Every tenant's budget in its current period; ``?budget=`` and ``?tenant=`` narrow the list."""
    unknown = sorted(set(request.query) - {"budget", "tenant"})
    if unknown:
        raise ValidationFailed(f"unknown query parameter {unknown[0]!r}; use budget or tenant")
    budgets = request.app[SERVICE].router.budgets
    name, tenant = request.query.get("budget"), request.query.get("tenant")
    if name is not None and name not in budgets.names:
        raise ValidationFailed(f"budget {name!r} is not configured; configured: {', '.join(budgets.names) or 'none'}")
    return json_response(BudgetsResponse(budgets=budgets.view(name, tenant)).model_dump())


async def get_policy(request: web.Request) -> web.Response:
    return json_response(PolicyView(**request.app[SERVICE].policy_view()).model_dump())


async def put_policy(request: web.Request) -> web.Response:
    update = await parse(request, PolicyUpdate)
    try:
        view = await request.app[SERVICE].update_policy(update.model_dump())
    except ValueError as err:  # an unknown policy name
        raise ValidationFailed(str(err)) from None
    return json_response(PolicyView(**view).model_dump())


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers, and its log can recover without a restart. A database DuckDB
    invalidated is opened again in the process; only when that fails with a fatal error too does this
    answer 503, so that a supervisor restarts the process, which then rebuilds its state from the log."""
    service = request.app[SERVICE]
    if service.store.fatal is not None:
        raise Unavailable(f"the log's database was invalidated and cannot be opened again in this process "
                          f"({service.store.fatal}); restart the process",
                          retry_after=math.ceil(service.config.storage.retry_interval_s))
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 503 while the log does not accept writes (and ``/route`` and ``/feedback`` refuse)."""
    service = request.app[SERVICE]
    service.check_available()
    if not service.store.writer_alive:
        raise Unavailable("the log writer is not running")
    return json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


async def export(request: web.Request) -> web.StreamResponse:
    fmt = request.query.get("format", "parquet")
    if fmt not in FORMATS:
        raise ValidationFailed(f"format must be one of {', '.join(FORMATS)}")
    service = request.app[SERVICE]
    await asyncio.wrap_future(service.store.flush())
    loop = asyncio.get_running_loop()
    # written to a temporary file and sent from there: the log can be far larger than memory
    fd, path = tempfile.mkstemp(prefix="banditroute-export-", suffix=f".{fmt}")
    os.close(fd)
    try:
        try:
            await loop.run_in_executor(None, service.store.export, path, fmt)
        except ExportError as err:  # the temporary file's disk, not the log: nothing of the log is at fault
            raise Unavailable(f"the export could not be written ({err}); retry later", retry_after=60) from None
        except duckdb.Error as err:
            raise service.unreadable(err) from None
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream",
                                               "Content-Disposition": f'attachment; filename="decisions.{fmt}"'})
        response.content_length = os.path.getsize(path)
        await response.prepare(request)
        with open(path, "rb") as fh:  # noqa: ASYNC230 - opening is instant; the reads run off the loop
            while chunk := await loop.run_in_executor(None, fh.read, 1 << 20):
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        os.unlink(path)
