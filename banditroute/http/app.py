"""The aiohttp application: thin handlers that parse, call :class:`RouterService`, serialise.

Errors are JSON ``{"error", "message", "detail"?}`` with a 4xx status: 400 malformed JSON (NaN and
Infinity included), 401 missing or wrong bearer token, 404 unknown decision or path, 405 wrong
method, 413 body over ``server.max_body_bytes``, 422 a well-formed body that fails validation or
names an unknown model.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import sys
import tempfile
import time

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError
from threadpoolctl import threadpool_limits

from banditroute import __version__
from banditroute.config import PoolConfig
from banditroute.core.router import RoutingError, UnknownDecision
from banditroute.http.metrics import Metrics
from banditroute.http.schemas import (
    FeedbackRequest,
    ModelsResponse,
    PolicyUpdate,
    PolicyView,
    RouteRequest,
    openapi_document,
)
from banditroute.log.export import FORMATS
from banditroute.log.store import Store
from banditroute.service.service import RouterService

log = logging.getLogger("banditroute")
SERVICE = web.AppKey("service", RouterService)
METRICS = web.AppKey("metrics", Metrics)
PUBLIC = {"/healthz"}


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, detail=None):
        super().__init__(message)
        self.status, self.error, self.message, self.detail = status, error, message, detail


def json_response(body, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error_response(status: int, error: str, message: str, detail=None) -> web.Response:
    body = {"error": error, "message": message}
    if detail is not None:
        body["detail"] = detail
    return json_response(body, status)


async def parse(request: web.Request, model: type[BaseModel]):
    raw = await request.read()
    try:
        data = orjson.loads(raw)  # strict RFC 8259: NaN, Infinity and overflowing numbers are errors
    except orjson.JSONDecodeError as err:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "validation_error", "request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        detail = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
                  for e in err.errors(include_url=False, include_input=False)]
        message = "; ".join(f"{d['field']}: {d['message']}" for d in detail)
        raise ApiError(422, "validation_error", message, detail) from None


@web.middleware
async def errors_auth_metrics(request: web.Request, handler):
    t0 = time.perf_counter()
    metrics = request.app[METRICS]
    path = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        token = request.app[SERVICE].config.server.token
        if token and request.path not in PUBLIC:
            given = request.headers.get("Authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {token}".encode()):
                raise ApiError(401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer <token>)")
        response = await handler(request)
    except ApiError as err:
        response = error_response(err.status, err.error, err.message, err.detail)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SERVICE].config.server.max_body_bytes
        response = error_response(413, "body_too_large", f"request body exceeds the limit of {limit} bytes")
    except web.HTTPException as err:
        if err.status < 400:
            raise
        response = error_response(err.status, err.reason.lower().replace(" ", "_"), err.reason)
    except Exception:  # a bug must still answer JSON, and be logged
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response(500, "internal_error", "internal error (logged on the server)")
    metrics.inc("banditroute_requests_total", path=path, method=request.method, status=str(response.status))
    metrics.observe("banditroute_request_seconds", time.perf_counter() - t0, path=path)
    return response


async def route(request: web.Request) -> web.Response:
    req = await parse(request, RouteRequest)
    try:
        d = await request.app[SERVICE].route(req)
    except RoutingError as err:
        raise ApiError(422, "routing_error", str(err)) from None
    request.app[METRICS].inc("banditroute_decisions_total", model=d.model)
    return json_response({  # the RouteResponse shape, built directly: this is the hot path
        "decision_id": d.decision_id, "model": d.model, "propensity": d.propensity,
        "probabilities": dict(zip(d.eligible, d.probabilities.tolist())), "scores": d.scores(),
        "cost_weight": d.cost_weight, "policy": d.policy,
    })


async def feedback(request: web.Request) -> web.Response:
    req = await parse(request, FeedbackRequest)
    try:  # a FeedbackRequest is a Feedback with the decision id
        out = await request.app[SERVICE].feedback(req.decision_id, req)
    except UnknownDecision:
        raise ApiError(404, "unknown_decision", f"no decision with id {req.decision_id!r}") from None
    except RoutingError as err:
        raise ApiError(422, "routing_error", str(err)) from None
    request.app[METRICS].inc("banditroute_feedback_total", duplicate=str(out["duplicate"]).lower(),
                             late=str(out["late"]).lower())
    return json_response(out)  # the FeedbackResponse shape, built by the service: this is a hot path


async def models(request: web.Request) -> web.Response:
    return json_response(ModelsResponse(models=request.app[SERVICE].stats.table()).model_dump())


async def get_policy(request: web.Request) -> web.Response:
    return json_response(PolicyView(**request.app[SERVICE].policy_view()).model_dump())


async def put_policy(request: web.Request) -> web.Response:
    update = await parse(request, PolicyUpdate)
    try:
        view = await request.app[SERVICE].update_policy(update.model_dump())
    except ValueError as err:
        raise ApiError(422, "validation_error", str(err)) from None
    return json_response(PolicyView(**view).model_dump())


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[METRICS].render(), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Version": "0.0.4"})


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document(__version__))


async def export(request: web.Request) -> web.StreamResponse:
    fmt = request.query.get("format", "parquet")
    if fmt not in FORMATS:
        raise ApiError(422, "validation_error", f"format must be one of {', '.join(FORMATS)}")
    service = request.app[SERVICE]
    await asyncio.wrap_future(service.store.flush())
    # written to a temporary file and sent from there: the log can be far larger than memory
    fd, path = tempfile.mkstemp(prefix="banditroute-export-", suffix=f".{fmt}")
    os.close(fd)
    try:
        await asyncio.get_running_loop().run_in_executor(None, service.store.export, path, fmt)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream",
                                               "Content-Disposition": f'attachment; filename="decisions.{fmt}"'})
        response.content_length = os.path.getsize(path)
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        with open(path, "rb") as fh:  # noqa: ASYNC230 - opening is instant; the reads run off the loop
            while chunk := await loop.run_in_executor(None, fh.read, 1 << 20):
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        os.unlink(path)


def _register_gauges(app: web.Application, service: RouterService) -> None:
    m = app[METRICS]
    m.gauge("banditroute_feedback_seq", lambda: service.store.seq, "feedback rows queued (log position)")
    m.gauge("banditroute_committed_seq", lambda: service.store.committed_seq, "feedback rows committed")
    m.gauge("banditroute_snapshot_seq", lambda: service.snapshot_seq, "log position of the last snapshot")
    m.gauge("banditroute_write_queue_rows", lambda: service.store.pending_rows, "rows waiting for the writer")
    m.gauge("banditroute_commit_seconds", lambda: service.store.last_commit_seconds, "duration of the last commit")
    m.gauge("banditroute_idle_checkpoints", lambda: service.store.checkpoints,
            "checkpoints the log writer ran while no feedback waited")
    m.gauge("banditroute_pending_decisions", lambda: len(service.pending.window), "decisions held in memory")
    m.gauge("banditroute_recalled_decisions", lambda: len(service.pending.recalled),
            "decisions read back from the log for late feedback and kept for their next feedback")
    m.gauge("banditroute_route_batches", lambda: service.route_batches,
            "micro-batches of /route requests routed together (requests / batches = mean batch size)")
    m.gauge("banditroute_model_share", lambda: {(("model", r["model"]),): r["share"]
                                                for r in service.stats.table()},
            "share of decisions per model")


def create_app(config: PoolConfig, seed: int | None = None) -> web.Application:
    """The application; the store opens and the state recovers on start-up, and closes on cleanup."""
    app = web.Application(middlewares=[errors_auth_metrics], client_max_size=config.server.max_body_bytes)
    app[METRICS] = Metrics()
    app[METRICS].help.update({
        "banditroute_requests_total": "HTTP requests by path, method and status",
        "banditroute_request_seconds": "HTTP request latency in seconds",
        "banditroute_decisions_total": "routing decisions by chosen model",
        "banditroute_feedback_total": "accepted feedback requests (late: the decision was read back from the log)",
    })

    async def lifecycle(app: web.Application):
        store = Store(config.storage.db, config.storage.flush_interval_ms / 1000.0, config.storage.memory_limit)
        service = RouterService(config, store, seed=seed)
        service.recover()
        app[SERVICE] = service
        _register_gauges(app, service)
        # The pending window holds ~10^6 tracked objects; full collections over them stall the loop
        # for tens of milliseconds. Decisions hold no reference cycles, so collect rarely.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        yield
        gc.unfreeze()
        await service.snapshot()
        store.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/route", route)
    app.router.add_post("/feedback", feedback)
    app.router.add_get("/models", models)
    app.router.add_get("/policy", get_policy)
    app.router.add_put("/policy", put_policy)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/export", export)
    return app


def serve(config: PoolConfig, host: str, port: int) -> None:
    """Run the service until interrupted (uvloop when installed)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    # The service's matrix products are small (a micro-batch times the pool); OpenBLAS's worker
    # threads spin on them and take the CPU the event loop and the log writer need.
    threadpool_limits(1)
    # DuckDB's Python binding gives up and takes back the GIL several times per call, and each time
    # the log writer waits for the busy loop to yield it: up to Python's 5 ms switch interval by
    # default, which made group commits (and so feedback acknowledgements) slow under load.
    sys.setswitchinterval(0.0005)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("banditroute %s on http://%s:%d, database %s", __version__, host, port, config.storage.db)
    web.run_app(create_app(config), host=host, port=port, access_log=None, print=None)
