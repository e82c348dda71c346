"""The aiohttp application: :func:`create_app` assembles the configuration, the service's life cycle,
the one middleware and the route table; :func:`serve` runs it.

Errors are JSON ``{"error", "message", "detail"?}`` with the status their type owns
(:mod:`banditroute.errors`), including the ones aiohttp answers before any middleware runs (a request
line, header or chunk it cannot parse): :class:`JSONErrorRequestHandler`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from http import HTTPStatus

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from threadpoolctl import threadpool_limits

from banditroute import __version__
from banditroute.config import Settings
from banditroute.errors import ClientError
from banditroute.gateway.gateway import Gateway
from banditroute.http.handlers import GATEWAY, METRICS, OPENAPI, SERVICE, json_response
from banditroute.http.metrics import Metrics
from banditroute.http.middleware import make_middleware
from banditroute.http.routes import PUBLIC, add_routes, openapi_document
from banditroute.log.store import Store
from banditroute.service.service import Service

log = logging.getLogger("banditroute")


def create_app(config: Settings, seed: int | None = None) -> web.Application:
    """The application; the store opens and the state recovers on start-up, and closes on cleanup."""
    # lingering: how long an answered connection with an unread body is still drained before closing
    # (aiohttp waits 10 s by default, which lets slow bodies hold connections long after their 408)
    app = web.Application(middlewares=[make_middleware(PUBLIC)], client_max_size=config.server.max_body_bytes,
                          handler_args={"lingering_time": 1.0})
    app[METRICS] = Metrics()
    app[OPENAPI] = openapi_document(__version__)

    async def lifecycle(app: web.Application):
        store = Store(config.storage.db, config.storage.flush_interval_ms / 1000.0, config.storage.memory_limit,
                      min_free_bytes=config.storage.min_free_bytes, writer_niceness=config.storage.writer_niceness)
        service = Service(config, store, seed=seed)
        service.recover()
        service.watch_storage()
        service.retention.start()
        app[SERVICE] = service
        app[METRICS].watch(service)
        gateway = Gateway(service, app[METRICS])
        gateway.load()
        app[METRICS].watch_conversations(gateway.stored.conversations)
        app[GATEWAY] = gateway
        # The pending window holds ~10^6 tracked objects; full collections over them stall the loop
        # for tens of milliseconds. Decisions hold no reference cycles, so collect rarely.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        app[METRICS].start_loop_lag()
        yield
        await app[METRICS].stop_loop_lag()
        gc.unfreeze()
        await gateway.close()
        await service.retention.stop()
        await service.snapshot()
        store.close()

    app.cleanup_ctx.append(lifecycle)
    add_routes(app, config.gateway.passthrough)
    return app


def _one_line(text, limit: int = 200) -> str:
    """aiohttp's parser messages quote the offending bytes over several lines; one line, bounded."""
    return " ".join(str(text).split())[:limit]


class ClientProtocolErrors(logging.Filter):
    """aiohttp logs a request it cannot parse (a bad request line, header or chunk) as an ERROR with a
    traceback; it is the client's fault, so it becomes one INFO line naming the problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = f"{record.getMessage()}: {exc.code} {_one_line(exc.message)}", ()
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


class JSONErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering the errors aiohttp raises itself (a request it cannot
    parse, a handler that escaped the middleware) with the service's JSON body instead of text/plain.

    aiohttp has no public hook for these answers (aio-libs/aiohttp#9882): they are written by
    :meth:`RequestHandler.handle_error` before the application sees the request.
    """

    __slots__ = ()

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs it, and refuses once bytes are out
        if status >= 500:
            body = {"error": "internal_error", "message": "internal error (logged on the server)"}
        else:
            reason = exc.message if isinstance(exc, HttpProcessingError) and exc.message else HTTPStatus(status).phrase
            body = ClientError(f"malformed HTTP request: {_one_line(reason)}").body()
        response = json_response(body, status)
        response.force_close()
        return response


class _JSONErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JSONErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    """:class:`web.AppRunner` whose connections are :class:`JSONErrorRequestHandler` s."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # the application builds a plain Server; only its protocol factory differs in ours
        server.__class__ = _JSONErrorServer
        return server


async def _run(app: web.Application, host: str, port: int) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then shut it down (its cleanup writes the snapshot)."""
    # handler_cancellation: a client that goes away cancels its handler, and so its upstream call
    runner = _Runner(app, access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(config: Settings) -> None:
    """Run the service on ``config.server``'s address until interrupted (uvloop when installed)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    # The service's matrix products are small (a micro-batch times the pool); OpenBLAS's worker
    # threads spin on them and take the CPU the event loop and the log writer need.
    threadpool_limits(1)
    # DuckDB's Python binding gives up and takes back the GIL several times per call, and each time
    # the log writer waits for the busy loop to yield it, up to Python's switch interval: a short
    # interval keeps group commits (and so feedback acknowledgements) quick under load.
    sys.setswitchinterval(0.0005)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.server").addFilter(ClientProtocolErrors())
    host, port = config.server.host, config.server.port
    log.info("banditroute %s on http://%s:%d, database %s", __version__, host, port, config.storage.db)
    asyncio.run(_run(create_app(config), host, port))
