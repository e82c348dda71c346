"""The HTTP work of a gateway alone, for ``bench_gateway.py --relay``: an aiohttp app whose
``POST /v1/chat/completions`` reads the JSON body, sends it to one upstream model through a pooled
client session (keep-alive, as the gateway's :class:`~banditroute.gateway.upstream.Upstreams`), and
answers with the upstream's JSON, its ``model`` renamed; a streamed request is relayed chunk by chunk.
No routing, no eligibility, no log: the gateway's CPU per request minus this one's is what routing,
accounting and logging cost. Same event loop (uvloop when installed) as ``banditroute serve``.

    python benchmarks/relay_app.py PORT UPSTREAM_API_ROOT UPSTREAM_MODEL
"""

import sys

import aiohttp
import orjson
from aiohttp import web

UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
URL = web.AppKey("url", str)
MODEL = web.AppKey("model", str)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    body["model"] = request.app[MODEL]
    async with request.app[UPSTREAM].post(request.app[URL], data=orjson.dumps(body),
                                          headers={"Content-Type": "application/json"}) as upstream:
        if body.get("stream"):
            response = web.StreamResponse(status=upstream.status, headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        answer = orjson.loads(await upstream.read())
    answer["model"] = "relayed"
    return web.Response(body=orjson.dumps(answer), status=upstream.status, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def app(root: str, model: str) -> web.Application:
    application = web.Application()
    application[URL], application[MODEL] = root.rstrip("/") + "/chat/completions", model

    async def session(application: web.Application):
        application[UPSTREAM] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60))
        yield
        await application[UPSTREAM].close()

    application.cleanup_ctx.append(session)
    application.router.add_post("/v1/chat/completions", chat_completions)
    application.router.add_get("/healthz", healthz)
    return application


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app(sys.argv[2], sys.argv[3]), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
