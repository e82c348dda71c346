"""The one middleware: bearer authentication, the mapping of every error to its JSON answer (in OpenAI's
shape below ``/v1/``, Anthropic's below ``/v1/messages``), and the request metrics.

A :class:`~banditroute.errors.ClientError` answers with its own status and body and is logged at its
own level; aiohttp's protocol errors (unknown path, wrong method, body over the limit) are mapped to
the same kinds; anything else is a bug: 500 ``internal_error``, logged with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from aiohttp import web

from banditroute.errors import BodyTooLarge, ClientError, MethodNotAllowed, NotFound, RequestTimeout, Unauthorized
from banditroute.gateway import messages
from banditroute.http.handlers import METRICS, SERVICE, bearer_key, json_response

log = logging.getLogger("banditroute")


def _client_error(request: web.Request, err: web.HTTPException) -> ClientError:
    """aiohttp's own 4xx, as the service's error types."""
    if err.status == 404:
        return NotFound(f"no endpoint at {request.path}")
    if err.status == 405:
        allowed = set(getattr(err, "allowed_methods", ()) or ())
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}", allowed)
    if err.status == 413:
        return BodyTooLarge(f"request body exceeds the limit of {request.app[SERVICE].config.server.max_body_bytes} bytes")
    generic = ClientError(err.reason)
    generic.status, generic.kind = err.status, err.reason.lower().replace(" ", "_")
    return generic


def make_middleware(public: set[str]):
    """The middleware, with the paths that need no token (``public``)."""

    @web.middleware
    async def errors_auth_metrics(request: web.Request, handler):
        t0 = time.perf_counter()
        resource = request.match_info.route.resource
        path = resource.canonical if resource else "unmatched"
        try:
            token = request.app[SERVICE].config.server.token
            if token and request.path not in public:
                given = bearer_key(request) or ""  # the Anthropic SDK sends its key as x-api-key
                if not secrets.compare_digest(given.encode(), token.encode()):
                    raise Unauthorized("missing or wrong bearer token (Authorization: Bearer <token>, or x-api-key)")
            try:
                response = await handler(request)
            except web.HTTPException as err:
                if err.status < 400:
                    raise
                raise _client_error(request, err) from None
        except ClientError as err:
            log.log(err.log_level, "%s %s: %d %s", request.method, request.path, err.status, err.message)
            body = err.body()
            if request.path.startswith("/v1/messages"):  # Anthropic's, which its SDKs read
                body = messages.error_body(err.status, body.pop("message"), code=body.pop("error"), **body)
            elif request.path.startswith("/v1/"):  # OpenAI's error shape, which its SDKs read
                body = {"error": {"message": body.pop("message"), "type": err.kind, "code": body.pop("error"),
                                  "param": None, **body}}
            response = json_response(body, err.status)
            response.headers.update(err.headers())
            if isinstance(err, RequestTimeout):  # the rest of the body may never come: do not wait for it
                response.force_close()
        except asyncio.CancelledError:  # the client went away before its answer: nginx's 499, "client closed request"
            request.app[METRICS].request(path, request.method, 499, time.perf_counter() - t0)
            raise
        except Exception:  # a bug must still answer JSON, and be logged
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = json_response({"error": "internal_error", "message": "internal error (logged on the server)"},
                                     500)
        request.app[METRICS].request(path, request.method, response.status, time.perf_counter() - t0)
        return response

    return errors_auth_metrics
