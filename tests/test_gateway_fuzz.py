"""Hostile bodies on the gateway's three APIs: valid requests mutated at random (fields dropped, values
swapped for odd ones, unknown fields added, bodies cut short), sent through the gateway to a fake
upstream that injects no fault. Every answer must be a success or a 4xx with a JSON error body, never a
5xx: a 502 here means a body the gateway relayed broke the upstream (which opens circuits for everyone),
a 500 that the gateway itself failed. A seeded generator, so a failure names the body that caused it."""

from __future__ import annotations

import copy
import http.client
import json
import random

import pytest
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
ODD = [None, True, False, 0, -1, 1e308, -1e308, 2**70, "", "x" * 3000, "\u0000", [], {}, [None], {"": None}, 3.5,
       "banditroute", [[[]]], {"type": None}, [5], "strong"]
EXTRA = ["n", "stop", "seed", "user", "metadata", "logprobs", "top_logprobs", "previous_response_id", "tool_choice",
         "parallel_tool_calls", "functions", "stream", "banditroute", "max_completion_tokens", "reasoning_effort"]


def mutate(v, rng: random.Random):
    """``v`` with one random change somewhere inside it."""
    if isinstance(v, dict) and v and rng.random() < 0.7:
        v, k = dict(v), rng.choice(list(v))
        op = rng.random()
        if op < 0.2:
            del v[k]
        elif op < 0.6:
            v[k] = mutate(v[k], rng)
        elif op < 0.8:
            v[k] = rng.choice(ODD)
        else:
            v[rng.choice(EXTRA)] = rng.choice([*ODD, 1, 2, "auto"])
        return v
    if isinstance(v, list) and v and rng.random() < 0.7:
        v, i = list(v), rng.randrange(len(v))
        op = rng.random()
        if op < 0.2:
            del v[i]
        elif op < 0.7:
            v[i] = mutate(v[i], rng)
        elif op < 0.85:
            v.append(copy.deepcopy(v[i]))
        else:
            v[i] = rng.choice(ODD)
        return v
    return rng.choice(ODD) if rng.random() < 0.9 else v


@pytest.mark.parametrize("seed", [1, 2, 3, 12])  # 3 and 12 found the two 500s of a non-string block type and text
def test_mutated_bodies_get_a_json_4xx_or_an_answer_never_a_5xx(tmp_path, seed):
    rng = random.Random(seed)
    caps = {"capabilities": ["json", "tools", "vision", "responses"]}
    with Stack(tmp_path, models={"cheap": caps, "mid": caps, "strong": caps}) as s:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        statuses = []
        for _ in range(1000):
            path, body = rng.choice(TEMPLATES)
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
