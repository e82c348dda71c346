"""Hostile input on both sides of the gateway, from a seeded generator (a failure names what caused it).

Clients: valid requests on the three APIs, streamed and not, mutated at random (fields dropped, values
swapped for odd ones, unknown fields added, bodies cut short), sent through the gateway to a fake
upstream that injects no fault. Every answer must be a success or a 4xx with a JSON error body, never a
5xx: a 502 here means a body the gateway relayed broke the upstream (which opens circuits for everyone),
a 500 that the gateway itself failed.

Providers: valid answers and streams mutated the same way, as a provider's bug or a proxy between could
send them: the gateway relays what it can, says the upstream failed otherwise, and logs every call.
Longer runs than the defaults (``range(1, 41)`` as the seeds) found the bugs these tests now guard."""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import time

import aiohttp
import pytest
from mutations import mutate
from test_gateway import Stack

CHAT = {"model": "banditroute", "messages": [{"role": "system", "content": "be brief"},
                                             {"role": "user", "content": [{"type": "text", "text": "hi there"}]}],
        "max_tokens": 20, "temperature": 0.5, "stream": False, "stream_options": {"include_usage": True},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "response_format": {"type": "json_object"},
        "banditroute": {"cost_weight": 10, "models": ["cheap", "mid", "strong"], "require": [], "max_cost_usd": 1}}
RESPONSES = {"model": "banditroute", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hello"}]}],
             "instructions": "x", "max_output_tokens": 30, "stream": False, "store": True,
             "tools": [{"type": "function", "name": "g", "parameters": {}}]}
MESSAGES = {"model": "banditroute", "max_tokens": 50, "system": [{"type": "text", "text": "sys"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "yo"}]}], "stream": False,
            "tools": [{"name": "t", "input_schema": {"type": "object"}}], "tool_choice": {"type": "auto"}}
TEMPLATES = [("/v1/chat/completions", CHAT), ("/v1/responses", RESPONSES), ("/v1/messages", MESSAGES)]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_mutated_bodies_get_a_json_4xx_or_an_answer_never_a_5xx(tmp_path, seed):
    rng = random.Random(seed)
    caps = {"capabilities": ["json", "tools", "vision", "responses"]}
    with Stack(tmp_path, models={"cheap": caps, "mid": caps, "strong": caps}) as s:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        statuses = []
        for _ in range(1000):
            path, body = rng.choice(TEMPLATES)
            body = {**body, "stream": rng.random() < 0.5}
            for _ in range(rng.randint(1, 4)):
                body = mutate(body, rng)
            data = json.dumps(body).encode()
            if rng.random() < 0.05:
                data = data[: rng.randrange(len(data) + 1)]
            conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = resp.read()
            statuses.append(resp.status)
            assert resp.status < 500, (path, data[:500], answer[:500])
            if resp.status >= 400:
                error = json.loads(answer)
                assert isinstance(error, dict) and ("error" in error), (path, data[:500], answer[:500])
        conn.close()
        assert 200 in statuses and any(400 <= c < 500 for c in statuses)
        assert all(s.gateway.providers.view(m)["health"]["consecutive_failures"] == 0 for m in ("cheap", "mid", "strong"))


ANSWER = {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "m",
          "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                       "message": {"role": "assistant", "content": "hello there", "refusal": None,
                                   "tool_calls": [{"id": "c1", "type": "function",
                                                   "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}}],
          "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8,
                    "prompt_tokens_details": {"cached_tokens": 1}}}
EVENTS = [{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
          {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": None}]},
          {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                                               "function": {"name": "f", "arguments": "{}"}}]},
                        "finish_reason": None}]},
          {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
          {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
           "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}]
RESPONSE = {"id": "resp_x", "object": "response", "created_at": 1, "status": "completed", "model": "m",
            "output": [{"type": "message", "id": "msg_x", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": "hello", "annotations": []}]},
                       {"type": "function_call", "id": "fc_x", "call_id": "c1", "status": "completed", "name": "f",
                        "arguments": "{}"}],
            "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8,
                      "input_tokens_details": {"cached_tokens": 1}}}
RESPONSE_EVENTS = [{"type": "response.created", "response": {**RESPONSE, "status": "in_progress", "output": []}},
                   {"type": "response.output_text.delta", "item_id": "msg_x", "output_index": 0, "content_index": 0,
                    "delta": "hello"},
                   {"type": "response.completed", "response": RESPONSE}]
CLIENT_BODIES = [
    ("/v1/chat/completions", {"model": "banditroute", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}),
    ("/v1/responses", {"model": "banditroute", "input": "hello", "max_output_tokens": 30}),
    ("/v1/messages", {"model": "banditroute", "max_tokens": 50, "messages": [{"role": "user", "content": "yo"}]}),
]


@pytest.mark.parametrize("native", [False, True], ids=["bridged", "native_responses"])
@pytest.mark.parametrize("seed", [1, 2])
def test_a_provider_s_odd_answers_are_relayed_or_a_502_never_a_500(tmp_path, seed, native):
    """The upstream's side: an answer or a stream mutated at random (what a provider's bug or a proxy in
    between can send), served through chat completions and through the responses and messages bridges, or
    with ``native`` the responses API relayed as it is, streamed and not. The gateway answers, or says the
    upstream failed (a 502 with a JSON error body, or a stream that ends in an error event); it never fails
    itself, and its log keeps working."""
    rng = random.Random(seed)
    models = {m: {"capabilities": ["responses"]} for m in ("cheap", "mid", "strong")} if native else None
    # circuits stay closed: every answer reaches the gateway
    with Stack(tmp_path, models=models, failures_to_open=10**9) as s:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        statuses, served, followups = [], {}, []  # decision id of each 200: streamed or not
        for _ in range(400):
            path, body = rng.choice(CLIENT_BODIES)
            stream = rng.random() < 0.5
            answer, events = (RESPONSE, RESPONSE_EVENTS) if native and path == "/v1/responses" else (ANSWER, EVENTS)
            fault = {"events": mutate(events, rng)} if stream else {"answer": mutate(answer, rng)}
            for _ in range(rng.randint(0, 3)):
                fault = {k: mutate(v, rng) for k, v in fault.items()}
            s.fake.faults["*"] = fault
            conn.request("POST", path, body=json.dumps({**body, "stream": stream}).encode(),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = resp.read()
            statuses.append(resp.status)
            if resp.status == 200:
                served[resp.headers["x-banditroute-decision-id"]] = stream
                if path == "/v1/responses" and not stream:  # the next turn continues whatever was kept of it
                    rid = json.loads(answer).get("id")
                    if isinstance(rid, str) and rid:
                        followups.append(rid)
            assert resp.status != 500 and resp.status in (200, 502, 503), (path, stream, fault, answer[:500])
            if resp.status >= 400:
                assert "error" in json.loads(answer), (path, fault, answer[:500])
        s.fake.faults.clear()
        for rid in followups:
            conn.request("POST", "/v1/responses", headers={"Content-Type": "application/json"}, body=json.dumps(
                {"model": "banditroute", "input": "and then?", "previous_response_id": rid}).encode())
            resp = conn.getresponse()
            answer = resp.read()
            assert resp.status < 500 and (resp.status == 200 or "error" in json.loads(answer)), (rid, answer[:500])
        conn.close()
        assert 200 in statuses and 502 in statuses
        assert s.service.unavailable is None
        # every answer is in the log; one served whole, counted (the gateway's estimates where the usage said
        # nothing); a stream may have ended in an error event after its 200
        calls = {c["decision_id"]: c for c in s.wait_for("SELECT * FROM calls", len(served))}
        for decision, streamed in served.items():
            call = calls[decision]
            assert call["outcome"] == "ok" or streamed, call
            if call["outcome"] == "ok":
                assert None not in (call["input_tokens"], call["output_tokens"], call["cost_usd"], call["latency_ms"])


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_whose_accounting_fails_is_still_in_the_log(tmp_path, monkeypatch, stream, caplog):
    """A fault injected into the accounting that runs once an answer is out (here: learning its latency):
    the client has its answer, the call its row (without usage), the server's log the error."""
    with Stack(tmp_path) as s:
        def broken(*args, **kwargs):
            raise RuntimeError("injected")

        monkeypatch.setattr(s.gateway.latency, "observe", broken)
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        conn.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json"}, body=json.dumps(
            {"model": "banditroute", "messages": [{"role": "user", "content": "hi"}], "stream": stream}).encode())
        resp = conn.getresponse()
        answer = resp.read()
        assert resp.status == 200 and (b"[DONE]" in answer if stream else json.loads(answer)["choices"])
        decision = resp.headers["x-banditroute-decision-id"]
        (call,) = s.wait_for(f"SELECT * FROM calls WHERE decision_id = '{decision}'", 1)
        assert call["outcome"] == "ok" and call["latency_ms"] is not None
        assert any("accounting" in r.getMessage() and decision in r.getMessage() for r in caplog.records)


FAULTS = [{}, {}, {}, {"status": 500}, {"status": 429, "retry_after": 1}, {"status": 503}, {"delay_ms": 50},
          {"drop": True}, {"garbage": True}, {"die_after_events": 2}, {"hang": True}, {"no_usage": True},
          {"event_delay_ms": 20}, {"context_window": 10}]


def test_concurrent_clients_through_provider_faults_disconnects_and_policy_swaps(tmp_path):
    """Everything at once for a few seconds: 12 clients on the three APIs, streamed and not, some going
    away mid-request, some sending feedback, some swapping the policy (rebuilt from the log); every 0.2 s
    each provider's fault changes (errors, 429s, hangs past the timeout, dropped connections, garbage,
    streams that die). No answer is a 500, the service stays available, and every answer served whole has
    its call in the log."""
    seconds = 6.0
    with Stack(tmp_path, timeout_s=1.0) as s:
        base = f"http://127.0.0.1:{s.port}"
        results: list[tuple[str, int | None, str | None, bool]] = []  # (what, status, decision id, streamed)
        bodies = {"/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 20},
                  "/v1/responses": {"input": "hello", "max_output_tokens": 30},
                  "/v1/messages": {"messages": [{"role": "user", "content": "yo"}], "max_tokens": 30}}

        async def client(r: random.Random, until: float) -> None:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
                while time.monotonic() < until:
                    if r.random() < 0.05:
                        update = r.choice([{"policy": "lints"}, {"policy": "squarecb"}, {"exploration": r.random()}])
                        async with session.put(base + "/policy", json=update) as resp:
                            await resp.read()
                            results.append(("policy", resp.status, None, False))
                        continue
                    path, stream = r.choice(list(bodies)), r.random() < 0.5
                    request = session.post(base + path, json={"model": "banditroute", "stream": stream, **bodies[path]})
                    try:
                        if r.random() < 0.1:  # a client that goes away
                            task = asyncio.ensure_future(request.__aenter__())
                            await asyncio.sleep(r.random() * 0.05)
                            task.cancel()
                            continue
                        async with request as resp:
                            await resp.read()
                            decision = resp.headers.get("x-banditroute-decision-id")
                            results.append((path, resp.status, decision, stream))
                        if decision and r.random() < 0.3:
                            thumbs = {"decision_id": decision,
                                      "signals": [{"source": "user", "kind": "thumbs", "value": r.random() < 0.5}]}
                            async with session.post(base + "/feedback", json=thumbs) as resp:
                                await resp.read()
                                results.append(("feedback", resp.status, decision, False))
                    except (aiohttp.ClientError, TimeoutError):
                        results.append((path, None, None, stream))

        async def faults(r: random.Random, until: float) -> None:
            while time.monotonic() < until:
                for m in ("cheap", "mid", "strong"):
                    s.fault(m, **r.choice(FAULTS))
                await asyncio.sleep(0.2)
            s.fake.faults.clear()

        async def run() -> None:
            until = time.monotonic() + seconds
            await asyncio.gather(faults(random.Random(0), until), *(client(random.Random(i), until) for i in range(1, 13)))

        asyncio.run(run())
        statuses = [status for _, status, _, _ in results]
        assert 500 not in statuses and 200 in statuses and 502 in statuses
        assert s.service.unavailable is None
        served = {d for what, status, d, streamed in results if what.startswith("/v1") and status == 200 and not streamed}
        logged = {c["decision_id"] for c in s.wait_for("SELECT decision_id FROM calls WHERE outcome = 'ok'", len(served))}
        assert served <= logged
