"""A fake OpenAI-compatible upstream for tests, benchmarks and trying the gateway without keys.

``python -m banditroute.gateway.fake_upstream --port 9000`` serves ``POST /v1/chat/completions`` and
``POST /v1/responses`` (streamed and not; the responses it made are kept, unless ``--no-record``, for
``GET /v1/responses/{id}``, ``.../input_items``, ``POST .../cancel`` and ``DELETE``), ``POST /v1/embeddings`` and ``GET /v1/models``. Every answer says which model was asked; its usage counts the
prompt's characters / 4 as prompt tokens and ``--output-tokens`` completion tokens. Faults are set per
model name, at start (``--fault MODEL=500``) or at run time with ``POST /control`` and a JSON body
``{"model": M, "status": 500 | 429 | ..., "times": n (default: until cleared), "retry_after": s,
"delay_ms": d, "event_delay_ms": e, "hang": true, "die_after_events": k, "drop": true, "garbage": true,
"reply": text, "failed": true, "when": text, "cached_tokens": n, "no_usage": true, "context_window": n,
"max_output_tokens": n, "prompt_token_scale": k, "answer": object, "events": [object, ...]}`` (``answer``: a
non-streamed answer's JSON as given, ``events``: a stream's events as given, each a ``data:`` line (then
``[DONE]`` on chat completions): providers' odd answers, for robustness tests; ``context_window``: a 400 ``context_length_exceeded`` in OpenAI's words when the body's
UTF-8 bytes / 2 plus its ``max_tokens`` exceed n, a count that, as a real tokenizer's can be, is higher than
the gateway's estimate for English or Chinese text; ``max_output_tokens``: OpenAI's 400 for a ``max_tokens`` above n; ``cached_tokens``: the
usage says that many prompt tokens came from a prompt cache; ``prompt_token_scale``: a chat answer's usage counts k
times the prompt tokens, as a tokenizer less frugal than characters / 4 would; ``no_usage``: a chat answer without usage; ``event_delay_ms``: a pause between a stream's events; ``failed``: a
responses answer whose status is ``failed``, streamed as ``response.failed`` after ``response.created``)
(``garbage``: a 200 whose body is not JSON; ``when``: only requests whose body contains the text; the
model ``*``: every model) (``{"model": M}`` alone
clears M's fault; ``reply`` replaces the answer's text); ``GET /control`` returns the requests received,
and ``cancelled``, the number of requests whose client (the gateway) went away before the answer.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time

import orjson
from aiohttp import web

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]


def invalid_chat(body: dict) -> str | None:
    """What makes a chat-completions body one a provider refuses (the parts the fake reads)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return "messages must be a list of objects"
    tools = body.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(
            isinstance(t, dict) and isinstance(t.get("function"), dict) and isinstance(t["function"].get("name"), str)
            for t in tools)):
        return "tools must be a list of {type: function, function: {name, ...}}"
    return None


def invalid_responses(body: dict) -> str | None:
    """What makes a responses body one a provider refuses (the parts the fake reads)."""
    given = body.get("input")
    if given is not None and not isinstance(given, str) and not (isinstance(given, list) and all(isinstance(i, dict) for i in given)):
        return "input must be a string or a list of objects"
    tools = body.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(
            isinstance(t, dict) and isinstance(t.get("name", ""), str) for t in tools)):
        return "tools must be a list of {type, name, ...}"
    return None


def refusal(message: str, **fields) -> web.Response:
    """A provider's 400 in OpenAI's error shape: the request's own fault."""
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", **fields}}, status=400)


def _beyond_limits(body: dict, size: int, fault: dict) -> web.Response | None:
    """The refusal of a request (``size`` bytes) beyond the fault's ``max_output_tokens`` or
    ``context_window``, in OpenAI's words; None when it is within them."""
    limit = body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens")
    limit = limit if isinstance(limit, int) else 0
    if fault.get("max_output_tokens") is not None and limit > fault["max_output_tokens"]:
        return refusal(f"max_tokens is too large: {limit}. This model supports at most {fault['max_output_tokens']} "
                       f"completion tokens, whereas you provided {limit}.", param="max_tokens", code="invalid_value")
    window, tokens = fault.get("context_window"), size // 2 + limit
    if window is not None and tokens > window:
        return refusal(f"This model's maximum context length is {window} tokens. However, you requested {tokens} "
                       "tokens. Please reduce the length of the messages.", param="messages",
                       code="context_length_exceeded")
    return None


class FakeUpstream:
    """The fake's state: faults per model, the requests it received, its base latency."""

    def __init__(self, delay_ms: float = 0.0, output_tokens: int = 16, events: int = 8, record: bool = True):
        self.delay_ms = delay_ms
        self.output_tokens = output_tokens
        self.events = events
        self.record = record
        self.faults: dict[str, dict] = {}
        self.received: list[dict] = []
        self.cancelled = 0
        # the responses it made (with record): id -> (the response, its input items), for GET and DELETE
        self.stored: dict[str, tuple[dict, list]] = {}
        self._ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_delete("/v1/responses/{id}", self.delete_response)
        app.router.add_get("/v1/responses/{id}", self.get_response)
        app.router.add_get("/v1/responses/{id}/input_items", self.input_items)
        app.router.add_post("/v1/responses/{id}/cancel", self.cancel_response)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/control", self.control)
        app.router.add_get("/control", self.requests)
        return app

    async def control(self, request: web.Request) -> web.Response:
        body = await request.json()
        model = body.pop("model")
        if body:
            self.faults[model] = body
        else:
            self.faults.pop(model, None)
        return web.json_response({"ok": True})

    async def requests(self, request: web.Request) -> web.Response:
        return web.json_response({"received": self.received, "cancelled": self.cancelled})

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's embeddings: a vector of 8 numbers per input, made of its characters (deterministic)."""
        body, model, _, early = await self._receive(request)
        if early is not None:
            return early
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else inputs if isinstance(inputs, list) else []
        data = [{"object": "embedding", "index": i, "embedding": [((len(str(x)) + j) % 7) / 7.0 for j in range(8)]}
                for i, x in enumerate(inputs)]
        tokens = sum(max(1, len(str(x)) // 4) for x in inputs)
        return web.json_response({"object": "list", "data": data, "model": model,
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                                 headers={"x-request-id": f"req_fake{next(self._ids)}"})

    async def delete_response(self, request: web.Request) -> web.Response:
        """OpenAI's deletion of a stored response: a response this fake made, once."""
        rid = request.match_info["id"]
        self._record_bodiless(request)
        if self.stored.pop(rid, None) is None:
            return self._unknown(rid)
        return web.json_response({"id": rid, "object": "response.deleted", "deleted": True})

    def _record_bodiless(self, request: web.Request) -> None:
        """Keep a request without a body (a stored response's GET or DELETE) among those received."""
        if self.record:
            self.received.append({"path": request.path, "method": request.method, "model": None,
                                  "authorization": request.headers.get("Authorization")})

    @staticmethod
    def _unknown(rid: str) -> web.Response:
        return web.json_response({"error": {"message": f"Response with id '{rid}' not found.",
                                            "type": "invalid_request_error"}}, status=404)

    async def get_response(self, request: web.Request) -> web.Response:
        rid = request.match_info["id"]
        self._record_bodiless(request)
        return web.json_response(self.stored[rid][0]) if rid in self.stored else self._unknown(rid)

    async def cancel_response(self, request: web.Request) -> web.Response:
        """A stored response, cancelled (the fake's answers are complete at once: it only changes the status)."""
        rid = request.match_info["id"]
        if rid not in self.stored:
            return self._unknown(rid)
        response, items = self.stored[rid]
        self.stored[rid] = (response | {"status": "cancelled"}, items)
        return web.json_response(self.stored[rid][0])

    async def input_items(self, request: web.Request) -> web.Response:
        rid = request.match_info["id"]
        if rid not in self.stored:
            return self._unknown(rid)
        items = self.stored[rid][1]
        return web.json_response({"object": "list", "data": items, "has_more": False,
                                  "first_id": items[0]["id"] if items else None,
                                  "last_id": items[-1]["id"] if items else None})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    def _fault(self, model: str, raw: bytes) -> dict | None:
        for key in (model, "*"):
            fault = self.faults.get(key)
            if fault is None or ("when" in fault and fault["when"].encode() not in raw):
                continue
            if "times" in fault:
                fault["times"] -= 1
                if fault["times"] < 0:
                    self.faults.pop(key)
                    continue
            return fault
        return None

    async def _receive(self, request: web.Request) -> tuple[dict, str, dict, web.StreamResponse | None]:
        """The request's body, model and fault, after the fault's delay; or the fault's own answer."""
        raw = await request.read()
        body = orjson.loads(raw)
        model = body.get("model", "")
        if self.record:
            self.received.append({"path": request.path, "model": model,
                                  "authorization": request.headers.get("Authorization"),
                                  "stream": body.get("stream", False), "stream_options": body.get("stream_options"),
                                  "has_banditroute": "banditroute" in body, "tools": "tools" in body,
                                  "previous_response_id": body.get("previous_response_id"),
                                  "messages": body.get("messages"), "input": body.get("input")})
        fault = self._fault(model, raw) or {}
        delay = fault.get("delay_ms", self.delay_ms) / 1000.0
        try:
            if fault.get("hang"):
                await asyncio.sleep(3600)
            if delay:
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if fault.get("drop"):
            request.transport.close()
            await asyncio.sleep(1)
            return body, model, fault, web.Response()
        if fault.get("garbage"):
            return body, model, fault, web.Response(text="<html>upstream proxy error</html>", content_type="text/html")
        if "max_output_tokens" in fault or "context_window" in fault:
            refused = _beyond_limits(body, len(raw), fault)
            if refused is not None:
                return body, model, fault, refused
        if "status" in fault:
            headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
            return body, model, fault, web.json_response(
                {"error": {"message": f"injected {fault['status']}", "type": "fake"}}, status=fault["status"],
                headers=headers)
        return body, model, fault, None

    @staticmethod
    async def _verbatim(request: web.Request, body: dict, fault: dict, done: bool) -> web.StreamResponse | None:
        """The fault's ``answer`` or ``events`` as given, if it has the one the request asks for (``done``: a
        chat stream's ``[DONE]`` after the events). Through json, which writes any integer (orjson stops at
        64 bits)."""
        if "answer" in fault and not body.get("stream"):
            return web.Response(text=json.dumps(fault["answer"]), content_type="application/json")
        if "events" not in fault or not body.get("stream"):
            return None
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in fault["events"] if isinstance(fault["events"], list) else [fault["events"]]:
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        if done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _text(self, model: str, fault: dict) -> str:
        return fault.get("reply") or f"answer from {model}: " + " ".join(WORDS[i % len(WORDS)]
                                                                        for i in range(self.output_tokens))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, model, fault, early = await self._receive(request)
        if early is not None:
            return early
        problem = invalid_chat(body)
        if problem is not None:  # as a real provider does: a 400, the request's own fault
            return refusal(problem)
        prompt_chars = sum(len(m.get("content") or "") if isinstance(m.get("content"), str) else 0
                           for m in body.get("messages", []))
        prompt_tokens = max(1, int(prompt_chars * fault.get("prompt_token_scale", 1)) // 4)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": self.output_tokens,
                 "total_tokens": prompt_tokens + self.output_tokens}
        if fault.get("cached_tokens"):
            usage["prompt_tokens_details"] = {"cached_tokens": min(fault["cached_tokens"], usage["prompt_tokens"])}
        if fault.get("no_usage"):
            usage = None
        text = self._text(model, fault)
        created = int(time.time())
        verbatim = await self._verbatim(request, body, fault, done=True)
        if verbatim is not None:
            return verbatim
        if not body.get("stream"):
            message = {"role": "assistant", "content": text}
            if body.get("tools"):
                message = {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": body["tools"][0]["function"]["name"], "arguments": "{}"}}]}
            return web.Response(body=orjson.dumps({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage}),
                content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        step = -(-len(text) // self.events)
        pieces = [text[i:i + step] for i in range(0, len(text), step)]
        die = fault.get("die_after_events")
        pause = fault.get("event_delay_ms", 0) / 1000.0
        for i, piece in enumerate(pieces):
            if die is not None and i >= die:
                request.transport.close()
                return response
            chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            try:
                await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
                if pause:
                    await asyncio.sleep(pause)
            except (asyncio.CancelledError, ConnectionResetError):
                self.cancelled += 1
                raise
        if (body.get("stream_options") or {}).get("include_usage"):
            chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [], "usage": usage}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


    async def responses(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's responses API: a response object, or its stream of named events (created, the output
        text's deltas, completed with the usage)."""
        body, model, fault, early = await self._receive(request)
        if early is not None:
            return early
        problem = invalid_responses(body)
        if problem is not None:
            return refusal(problem)
        verbatim = await self._verbatim(request, body, fault, done=False)
        if verbatim is not None:
            return verbatim
        items = [{"content": body["input"]}] if isinstance(body.get("input"), str) else body.get("input") or []
        chars = sum(len(i["content"]) for i in items if isinstance(i, dict) and isinstance(i.get("content"), str))
        usage = {"input_tokens": max(1, chars // 4), "output_tokens": self.output_tokens,
                 "total_tokens": max(1, chars // 4) + self.output_tokens}
        if fault.get("cached_tokens"):
            usage["input_tokens_details"] = {"cached_tokens": min(fault["cached_tokens"], usage["input_tokens"])}
        text = self._text(model, fault)
        rid = f"resp_fake{next(self._ids)}"
        message = {"type": "message", "id": f"msg_{rid}", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]}
        if body.get("tools"):
            message = {"type": "function_call", "id": f"fc_{rid}", "call_id": "call_1", "status": "completed",
                       "name": body["tools"][0].get("name", "f"), "arguments": "{}"}

        def response(status: str, output: list, usage: dict | None) -> dict:
            return {"id": rid, "object": "response", "created_at": int(time.time()), "status": status, "error": None,
                    "incomplete_details": None, "model": model, "output": output, "usage": usage,
                    "previous_response_id": body.get("previous_response_id")}

        failed = response("failed", [], None) | {"error": {"code": "server_error", "message": "injected failure"}}
        if body.get("store", True) and self.record:
            inputs = [{"type": "message", "role": "user", "content": body["input"]}] if isinstance(body.get("input"), str) \
                else body.get("input") or []
            self.stored[rid] = (response("completed", [message], usage), [{"id": f"item_{rid}_{i}", **item} for i, item
                                                                         in enumerate(inputs) if isinstance(item, dict)])
        if not body.get("stream"):
            answer = failed if fault.get("failed") else response("completed", [message], usage)
            return web.Response(body=orjson.dumps(answer), content_type="application/json")
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        step = -(-len(text) // self.events)
        events = [{"type": "response.created", "response": response("in_progress", [], None)}]
        if fault.get("failed"):
            events.append({"type": "response.failed", "response": failed})
        else:
            events += [{"type": "response.output_text.delta", "item_id": message["id"], "output_index": 0,
                        "content_index": 0, "delta": text[i:i + step]} for i in range(0, len(text), step)]
            events.append({"type": "response.completed", "response": response("completed", [message], usage)})
        die = fault.get("die_after_events")
        for n, event in enumerate(events):
            if die is not None and n >= die:
                request.transport.close()
                return stream
            event["sequence_number"] = n
            try:
                await stream.write(f"event: {event['type']}\n".encode() + b"data: " + orjson.dumps(event) + b"\n\n")
            except (asyncio.CancelledError, ConnectionResetError):
                self.cancelled += 1
                raise
        await stream.write_eof()
        return stream


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="latency of every answer")
    ap.add_argument("--output-tokens", type=int, default=16)
    ap.add_argument("--no-record", action="store_true", help="do not keep the requests received (long runs)")
    ap.add_argument("--fault", action="append", default=[], metavar="MODEL=STATUS")
    args = ap.parse_args(argv)
    fake = FakeUpstream(args.delay_ms, args.output_tokens, record=not args.no_record)
    for f in args.fault:
        model, _, status = f.partition("=")
        fake.faults[model] = {"status": int(status)}
    web.run_app(fake.app(), host=args.host, port=args.port, access_log=None, print=None, handler_cancellation=True)


if __name__ == "__main__":
    main()
