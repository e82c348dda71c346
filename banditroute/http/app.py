"""The aiohttp application: :func:`create_app` assembles the configuration, the service's life cycle,
the one middleware and the route table; :func:`serve` runs it.

Errors are JSON ``{"error", "message", "detail"?}`` with the status their type owns
(:mod:`banditroute.errors`).
"""

from __future__ import annotations

import gc
import logging
import sys

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from threadpoolctl import threadpool_limits

from banditroute import __version__
from banditroute.config import Settings
from banditroute.http.handlers import METRICS, OPENAPI, SERVICE
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
                      min_free_bytes=config.storage.min_free_bytes)
        service = Service(config, store, seed=seed)
        service.recover()
        service.watch_storage()
        app[SERVICE] = service
        app[METRICS].watch(service)
        # The pending window holds ~10^6 tracked objects; full collections over them stall the loop
        # for tens of milliseconds. Decisions hold no reference cycles, so collect rarely.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        yield
        gc.unfreeze()
        await service.snapshot()
        store.close()

    app.cleanup_ctx.append(lifecycle)
    add_routes(app)
    return app


class ClientProtocolErrors(logging.Filter):
    """aiohttp logs a request it cannot parse (a bad request line, header or chunk) as an ERROR with a
    traceback; it is the client's fault, so it becomes one INFO line naming the problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = f"{record.getMessage()}: {exc.code} {exc.message}", ()
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


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
    web.run_app(create_app(config), host=host, port=port, access_log=None, print=None)
