"""A model served by several providers (``[[models.deployments]]``): calls spread over them, a failed call
moves to the model's next provider within the same decision, and each provider has its own circuit and
rate limits. Driven with the official ``openai`` client against the fake upstream, where each
deployment is told apart by the model name it sends upstream (and its key)."""

from __future__ import annotations

import os
import urllib.request
from collections import Counter

import openai
import pytest

from banditroute.config import ConfigError, ModelSpec, parse_settings
from tests.test_gateway import ASK, Stack, only

EAST = {"name": "east", "base_url": "http://127.0.0.1:{fake_port}/v1", "upstream_name": "mid-east",
        "api_key_env": "EAST_KEY"}
WEST = {"name": "west", "base_url": "http://127.0.0.1:{fake_port}/v1", "upstream_name": "mid-west", "weight": 2}
TWO = {"mid": {"base_url": None, "deployments": [EAST, WEST]}}


def sent(s, n: int | None = None) -> list[str]:
    """The upstream model names of the chat calls the fake received (the last ``n``)."""
    names = [r["model"] for r in s.fake.received if r["path"] == "/v1/chat/completions"]
    return names if n is None else names[-n:]


def calls(s, n: int) -> list[dict]:
    return s.wait_for("SELECT decision_id, model, deployment, attempt, outcome, replaces FROM calls "
                      "ORDER BY ts, attempt", n)


def test_deployments_are_named_and_filled_from_the_model_and_mistakes_are_refused():
    spec = ModelSpec(name="m", api_key_env="KEY", timeout_s=5, deployments=[
        {"base_url": "https://a.example/v1"}, {"base_url": "https://a.example/v1", "api_key_env": "OTHER"},
        {"base_url": "https://b.example/v1", "name": "eu", "upstream_name": "m-eu", "rpm": 10}])
    got = [(d.name, d.api_key_env, d.upstream_name, d.timeout_s, d.rpm) for d in spec.providers()]
    assert got == [("a.example", "KEY", "m", 5, None), ("a.example#2", "OTHER", "m", 5, None),
                   ("eu", "KEY", "m-eu", 5, 10)]
    assert spec.callable and ModelSpec(name="x", base_url="https://c.example/v1", rpm=3).providers()[0].rpm == 3
    assert not ModelSpec(name="y").callable and ModelSpec(name="y").providers() == []
    base = {"name": "m", "deployments": [{"base_url": "https://a.example/v1", "name": "one"}]}
    for extra, message in (({"base_url": "https://a.example/v1"}, "base_url go on each of its deployments"),
                           ({"rpm": 5}, "rpm go on each of its deployments"),
                           ({"deployments": [{"base_url": "https://a.example/v1", "name": "one"}] * 2},
                            "two deployments named one")):
        with pytest.raises(ConfigError, match=message):
            parse_settings({"models": [{**base, **extra}]})


def test_calls_spread_over_the_deployments_in_proportion_to_their_weight(tmp_path):
    os.environ["EAST_KEY"] = "sk-east"
    with Stack(tmp_path, models=TWO) as s:
        c = s.client()
        for _ in range(6):
            assert c.chat.completions.create(model="mid", messages=ASK).model == "mid"
        assert Counter(sent(s)) == {"mid-east": 2, "mid-west": 4}
        keys = {r["model"]: r["authorization"] for r in s.fake.received}
        assert keys == {"mid-east": "Bearer sk-east", "mid-west": "Bearer sk-mid-secret"}  # west: the model's key
        rows = calls(s, 6)
        assert Counter(r["deployment"] for r in rows) == {"east": 2, "west": 4}
        models = s.models_view()
        view = models["mid"]
        assert [(d["name"], d["calls_started"], d["weight"]) for d in view["deployments"]] == [("east", 2, 1.0),
                                                                                              ("west", 4, 2.0)]
        assert view["health"]["state"] == "closed" and view["rate_limits"] is None
        assert [d["name"] for d in models["cheap"]["deployments"]] == [f"127.0.0.1:{s.fake_port}"]
        assert models["offline"]["deployments"] == [] and not models["offline"]["callable"]
        with urllib.request.urlopen(f"http://127.0.0.1:{s.port}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        assert 'banditroute_upstream_calls_total{deployment="west",model="mid",outcome="ok"} 4.0' in metrics


def test_a_failed_call_moves_to_the_next_deployment_within_the_same_decision(tmp_path):
    with Stack(tmp_path, models=TWO) as s:
        s.fake.faults["mid-east"] = {"status": 500}
        raw = s.client().chat.completions.with_raw_response.create(model="banditroute", messages=ASK,
                                                                     extra_body=only("mid", "cheap"))
        first = raw.headers["x-banditroute-decision-id"]
        answer = raw.parse()
        served_by_mid = answer.model == "mid"
        rows = calls(s, 2 if served_by_mid else 1)
        if not served_by_mid:  # routed to cheap: no deployment of mid was involved
            assert [r["deployment"] for r in rows] == [f"127.0.0.1:{s.fake_port}"]
            pytest.skip("the router chose cheap (seeded); the direct test below covers mid")
        assert [(r["decision_id"], r["deployment"], r["attempt"], r["outcome"], r["replaces"]) for r in rows] == [
            (first, "east", 1, "upstream_error", None), (first, "west", 2, "ok", None)]
        assert raw.headers["x-banditroute-attempt"] == "2"


def test_a_direct_call_tries_every_deployment_then_a_routed_one_falls_back_to_another_model(tmp_path):
    with Stack(tmp_path, models=TWO) as s:
        c = s.client()
        s.fake.faults["mid-east"] = {"status": 503}
        raw = c.chat.completions.with_raw_response.create(model="mid", messages=ASK)
        assert raw.parse().model == "mid" and raw.headers["x-banditroute-attempt"] == "2"
        assert sent(s, 2) == ["mid-east", "mid-west"]
        # the decision is the same one, and no fallback decision was made
        assert s.query("SELECT count(*) AS n FROM decisions")[0]["n"] == 1
        s.fake.faults["mid-west"] = {"status": 503}
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model="mid", messages=ASK)
        assert err.value.status_code == 502
        assert sorted((a["model"], a["deployment"]) for a in err.value.body["detail"]) == [("mid", "east"),
                                                                                           ("mid", "west")]
        # routed: both providers of mid fail, so the request falls back to another model
        for _ in range(20):
            raw = c.chat.completions.with_raw_response.create(model="banditroute", messages=ASK,
                                                              extra_body=only("mid", "cheap"))
            if raw.parse().model == "cheap" and raw.headers["x-banditroute-attempt"] != "1":
                break
        else:
            pytest.fail("no request was routed to mid first")
        rows = calls(s, 0)
        last = [r for r in rows if r["decision_id"] == raw.headers["x-banditroute-decision-id"]]
        assert [(r["model"], r["outcome"]) for r in last] == [("cheap", "ok")] and last[0]["replaces"] is not None
        failed = [r for r in rows if r["decision_id"] == last[0]["replaces"]]
        assert sorted((r["model"], r["deployment"], r["outcome"]) for r in failed) == [
            ("mid", "east", "upstream_error"), ("mid", "west", "upstream_error")]


def test_each_deployment_has_its_own_circuit_and_rate_limits(tmp_path):
    east, west = {**EAST, "rpm": 2}, {**WEST, "rpm": 1}
    with Stack(tmp_path, models={"mid": {"base_url": None, "deployments": [east, west]}}, failures_to_open=2) as s:
        c = s.client()
        s.fake.faults["mid-east"] = {"status": 500}
        assert c.chat.completions.create(model="mid", messages=ASK).model == "mid"  # east fails, west answers
        with pytest.raises(openai.APIStatusError) as err:  # west is at its rpm: east alone, which fails again
            c.chat.completions.create(model="mid", messages=ASK)
        assert err.value.status_code == 502
        deployments = {d["name"]: d for d in s.gateway.providers.view("mid")["deployments"]}
        assert deployments["east"]["health"]["state"] == "open"
        assert deployments["west"]["health"]["state"] == "closed"
        assert deployments["west"]["rate_limits"]["requests_last_minute"] == 1
        assert s.gateway.providers.view("mid")["health"]["state"] == "closed"  # the model's best provider
        with pytest.raises(openai.RateLimitError, match="every deployment is at its rate limit"):
            c.chat.completions.create(model="mid", messages=ASK)


def test_a_provider_stored_response_is_continued_at_the_deployment_that_stored_it_even_after_a_restart(tmp_path):
    """cheap serves the responses API at two API roots (the same fake, reached by two names): a
    response stored at one can only be continued there, which the log remembers across a restart."""
    roots = {"cheap": {"base_url": None, "deployments": [
        {"name": "a", "base_url": "http://127.0.0.1:{fake_port}/v1", "upstream_name": "cheap-a"},
        {"name": "b", "base_url": "http://localhost:{fake_port}/v1", "upstream_name": "cheap-b"}]}}
    storing = {}
    with Stack(tmp_path, models=roots) as s:
        c = s.client()
        for _ in range(4):
            first = c.responses.create(model="banditroute", input="What is the capital of France?",
                                       extra_body=only("cheap"))
            storing[first.id] = s.fake.received[-1]["model"]
            c.responses.create(model="banditroute", input="And of Spain?", previous_response_id=first.id)
            assert s.fake.received[-1]["model"] == storing[first.id]
            assert s.fake.received[-1]["previous_response_id"] == first.id
        assert set(storing.values()) == {"cheap-a", "cheap-b"}
        s.wait_for("SELECT * FROM responses", 4)
    with Stack(tmp_path, models=roots) as s:
        for rid, model in storing.items():
            s.client().responses.create(model="banditroute", input="And of Italy?", previous_response_id=rid)
            assert s.fake.received[-1]["model"] == model


def test_a_cascade_step_moves_to_the_next_deployment_before_it_escalates(tmp_path):
    cascades = [{"name": "up", "escalate_to": ["strong"], "check": {"min_length": 1}}]
    with Stack(tmp_path, models=TWO, cascades=cascades) as s:
        s.fake.faults["mid-east"] = {"status": 500}
        raw = s.client().chat.completions.with_raw_response.create(
            model="banditroute", messages=ASK, extra_body={"banditroute": {"models": ["mid"], "cascade": "up"}})
        assert raw.parse().model == "mid" and raw.headers["x-banditroute-cascade"] == "mid"
        rows = calls(s, 2)
        assert [(r["model"], r["deployment"], r["outcome"]) for r in rows] == [("mid", "east", "upstream_error"),
                                                                             ("mid", "west", "ok")]
