"""The baseline of the server benchmark: an aiohttp app whose POST /route parses the JSON body and
answers a fixed JSON object, on the same event loop (uvloop when installed) as banditroute serve."""

import sys

from aiohttp import web


async def route(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response({"decision_id": "0" * 32, "model": "m", "prompt_chars": len(body.get("prompt", ""))})


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    app = web.Application()
    app.router.add_post("/route", route)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
