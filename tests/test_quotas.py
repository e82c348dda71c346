"""Rate limits per tenant (``[[rate_limits]]``): windows per tenant, every applicable limit checked before
anything is counted, idle tenants forgotten, and the 429s of /route and of the gateway."""

from __future__ import annotations

import json

import openai
import pytest
from test_api import make_config, post, samples

from banditroute.config import TenantRateLimit
from banditroute.core.router import RouteRequest
from banditroute.errors import RateLimited
from banditroute.gateway.limits import WINDOW
from banditroute.http.app import create_app
from banditroute.service.quotas import Quotas
from tests.test_gateway import ASK, Stack


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def request(user=None, key=None, team=None) -> RouteRequest:
    r = RouteRequest(prompt="hi", user=user, metadata=None if team is None else {"team": team})
    r.set_api_key(key)
    return r


def test_each_tenant_has_its_own_window_and_named_tenants_their_own_limits():
    clock = Clock()
    q = Quotas([TenantRateLimit(name="per-user", rpm=2, tenants={"vip": {"rpm": 5}})], clock)
    for _ in range(2):
        q.admit(request("alice"), 10)
    with pytest.raises(RateLimited, match="rate limit 'per-user': user 'alice' is at its rpm limit") as err:
        q.admit(request("alice"), 10)
    assert 1 <= err.value.retry_after <= WINDOW
    q.admit(request("bob"), 10)  # another tenant is not affected
    for _ in range(5):
        q.admit(request("vip"), 10)
    q.admit(request(), 10)  # no user: no tenant of this limit, not limited
    clock.t += WINDOW + 1
    q.admit(request("alice"), 10)  # the window slid
    assert q.refused == {"per-user": 1}


def test_a_request_is_counted_only_when_every_limit_that_applies_has_room():
    clock = Clock()
    q = Quotas([TenantRateLimit(name="user", rpm=5), TenantRateLimit(name="team", tenant="metadata.team", tpm=100)],
               clock)
    a = q.admit(request("alice", team="red"), 60)
    with pytest.raises(RateLimited, match="metadata.team 'red' is at its tpm limit"):
        q.admit(request("alice", team="red"), 60)
    # refused by the team's limit: alice's own window did not count it
    assert len(q._windows["user"]._usage["alice"].calls) == 1
    Quotas.settle(a, 20)  # the gateway learned the call's usage: 20 tokens, not 60
    q.admit(request("alice", team="red"), 60)


def test_a_long_tenant_is_kept_as_its_hash():
    q = Quotas([TenantRateLimit(name="team", tenant="metadata.team", rpm=1)], Clock())
    q.admit(request(team="x" * 10_000), 1)
    (key,) = q._windows["team"]._usage
    assert key.startswith("sha256:") and len(key) == 7 + 64
    with pytest.raises(RateLimited):  # the same tenant, the same window
        q.admit(request(team="x" * 10_000), 1)


def test_api_key_tenants_and_a_bound_on_tenants_tracked_at_once():
    clock = Clock()
    q = Quotas([TenantRateLimit(name="keys", tenant="api_key", rpm=1, max_tenants=2)], clock)
    q.admit(request(key="sk-one"), 1)
    q.admit(request(key="sk-two"), 1)
    with pytest.raises(RateLimited, match="2 tenants sent requests in the last minute"):
        q.admit(request(key="sk-three"), 1)
    clock.t += WINDOW + 1  # both idle now: forgotten to make room
    q.admit(request(key="sk-three"), 1)
    assert q.tenants("keys") == 1


async def test_route_answers_429_with_retry_after_and_counts_the_refusal(aiohttp_client, tmp_path):
    cfg = make_config(tmp_path).model_copy(update={"rate_limits": [TenantRateLimit(name="per-user", rpm=2)]})
    client = await aiohttp_client(create_app(cfg, seed=0))
    for _ in range(2):
        await post(client, "/route", {"prompt": "Write a sort", "user": "u1"})
    resp = await client.post("/route", data=json.dumps({"prompt": "Write a sort", "user": "u1"}))
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    body = await resp.json()
    assert body["error"] == "rate_limited" and "user 'u1'" in body["message"]
    await post(client, "/route", {"prompt": "Write a sort", "user": "u2"})
    text = await (await client.get("/metrics")).text()
    assert samples(text)[("banditroute_rate_limit_refusals_total", frozenset({("limit", "per-user")}))] == 1


def test_the_gateway_refuses_a_tenant_past_its_limit_before_routing_and_counts_usage(tmp_path):
    limits = [{"name": "per-user", "rpm": 3}, {"name": "per-key", "tenant": "api_key", "tpm": 10_000}]
    with Stack(tmp_path, rate_limits=limits) as s:
        c = s.client()
        for _ in range(3):
            c.chat.completions.create(model="banditroute", messages=ASK, user="ann")
        with pytest.raises(openai.RateLimitError, match="user 'ann' is at its rpm limit"):
            c.chat.completions.create(model="cheap", messages=ASK, user="ann")
        assert s.query("SELECT count(*) AS n FROM decisions")[0]["n"] == 3  # the refused one was not routed
        c.chat.completions.create(model="banditroute", messages=ASK, user="bo")
        # the key's window holds each answered call's usage (the fake's), not the estimate made at its start
        (window,) = s.service.quotas._windows["per-key"]._usage.values()
        usage = s.query("SELECT input_tokens + output_tokens AS n FROM calls WHERE outcome = 'ok'")
        assert window.tokens == pytest.approx(sum(r["n"] for r in usage))
