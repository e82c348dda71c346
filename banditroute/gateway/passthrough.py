"""Paths the gateway does not route, forwarded as they are to one provider (``[[gateway.passthrough]]``).

An application points its OpenAI client at banditroute for chat completions and responses, and the
same client sends everything else there too: embeddings, moderations, audio, images. Those are not
routed (vectors of different embedding models are not interchangeable, and there is nothing to learn
from a moderation), so the gateway forwards them, method, path below ``/v1``, query and body
unchanged, to the provider configured for the path, with that provider's key in place of the client's
bearer token, and streams the answer back with its status. A path no entry matches is a 404, as
before. What is forwarded is not a decision: it is neither routed nor logged in the decision log;
``banditroute_requests_total`` counts it by path and status.

Headers forwarded to the provider: ``Content-Type``, ``Accept`` and ``OpenAI-Beta``; back to the
client: ``Content-Type``, ``Retry-After`` and ``x-request-id``. A provider that cannot be reached or
does not answer in time is a 502 in OpenAI's error shape (:class:`~banditroute.errors.UpstreamFailed`);
one that fails once its answer has begun has the client's connection closed, so that a cut answer
never looks complete.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from banditroute.config import GatewayConfig, Passthrough
from banditroute.errors import UpstreamFailed
from banditroute.gateway.client_writes import write_within
from banditroute.gateway.upstream import Upstreams

TO_PROVIDER = ("Content-Type", "Accept", "OpenAI-Beta")
TO_CLIENT = ("Content-Type", "Retry-After", "x-request-id")


class Passthroughs:
    """The configured passthrough entries, and the forwarding of a request to the first that matches."""

    def __init__(self, config: GatewayConfig, upstreams: Upstreams):
        self.config = config
        self.entries = config.passthrough
        self.upstreams = upstreams

    def match(self, path: str) -> Passthrough | None:
        return next((e for e in self.entries if e.matches(path)), None)

    async def forward(self, request: web.Request) -> web.StreamResponse:
        entry = self.match(request.path)
        return await relay(self.upstreams, request, entry.base_url, self.upstreams.key(entry.api_key_env),
                           entry.timeout_s or self.config.timeout_s, self.config.connect_timeout_s)


async def relay(upstreams: Upstreams, request: web.Request, base_url: str, key: str | None, total: float,
                connect: float) -> web.StreamResponse:
    """``request`` sent as it is to the same path below the API root ``base_url`` (the part after ``/v1``),
    with ``key`` as its bearer token, and the answer streamed back (the module's docstring)."""
    url = base_url.rstrip("/") + request.path[len("/v1"):]
    headers = {h: request.headers[h] for h in TO_PROVIDER if h in request.headers}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    timeout = aiohttp.ClientTimeout(total=total, connect=connect)
    body = await request.read() if request.can_read_body else None
    response = None
    try:
        async with upstreams.session(base_url).request(request.method, url, params=request.rel_url.query, data=body,
                                                       headers=headers, timeout=timeout) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers={
                h: upstream.headers[h] for h in TO_CLIENT if h in upstream.headers})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await write_within(request, response, chunk, total)  # a client that stops reading: TimeoutError
            await response.write_eof()
            return response
    except (TimeoutError, aiohttp.ClientError) as err:
        why = f"no answer within {total:g} s" if isinstance(err, TimeoutError) else f"{type(err).__name__}: {err}"
        if response is not None and response.prepared:  # the answer had begun: cut it, not end it cleanly
            request.transport.close()
            return response
        raise UpstreamFailed(f"{request.path} is forwarded to {base_url}, which failed: {why}", [
            {"model": None, "outcome": "timeout" if isinstance(err, TimeoutError) else "connect_error",
             "status": None, "message": why}]) from None
