"""The OpenAI-compatible gateway, end to end: the official ``openai`` client against banditroute, which
calls a fake OpenAI-compatible upstream (:mod:`banditroute.gateway.fake_upstream`) with injected faults.

Both servers run on one event loop in a background thread, so a test can inject faults and read the
log while its client blocks.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Self

import duckdb
import numpy as np
import openai
import pytest
from aiohttp import ClientSession, web

from banditroute.config import GatewayConfig, ModelSpec, Passthrough, parse_settings
from banditroute.core.reward import Feedback
from banditroute.gateway.fake_upstream import FakeUpstream
from banditroute.gateway.health import Health
from banditroute.gateway.judge import parse_rating
from banditroute.gateway.latency import RIDGE, SUMS_SQL, LatencyModel
from banditroute.gateway.model_limits import RATIOS_SQL, ModelLimits, TokenRatios
from banditroute.gateway.requests import ChatRequest
from banditroute.gateway.upstream import ERROR_BYTES, UpstreamFailure, beyond_model_limit, error_message
from banditroute.http.app import _Runner, create_app
from banditroute.http.handlers import GATEWAY, SERVICE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_socket() -> socket.socket:
    """A socket bound to a free loopback port, handed to the server as it is: no other socket can take
    the port between choosing it and serving on it (as with :func:`free_port`)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def pool(upstream: str, closed: str | None, **gateway) -> dict:
    """Three models on the fake upstream (``cheap``, ``mid``, ``strong``), one that cannot be called
    (``offline``), and, with ``closed``, one on a port nobody listens on (``gone``)."""
    data = {
        "policy": {"warm_start": "none", "floor": 0.05, "floor_share": None},  # a floor per model as given
        "storage": {"flush_interval_ms": 20},
        "gateway": {"cooldown_s": 30.0, **gateway},
        "models": [
            {"name": "cheap", "input_price_per_mtok": 0.1, "output_price_per_mtok": 0.4, "base_url": upstream,
             "capabilities": ["json", "responses"], "context_window": 1000, "upstream_name": "cheap-v1",
             "timeout_s": 1.0},
            {"name": "mid", "input_price_per_mtok": 1.0, "output_price_per_mtok": 4.0, "base_url": upstream,
             "capabilities": ["json", "tools"], "api_key_env": "MID_KEY"},
            {"name": "strong", "input_price_per_mtok": 5.0, "output_price_per_mtok": 15.0, "base_url": upstream,
             "capabilities": ["json", "tools", "vision", "responses"], "stream_usage": False},
            {"name": "offline", "input_price_per_mtok": 0.05, "output_price_per_mtok": 0.2},
        ],
    }
    if closed is not None:
        data["models"].append({"name": "gone", "input_price_per_mtok": 0.05, "output_price_per_mtok": 0.2,
                               "base_url": closed})
    return data


def fill(value, **names):
    """``value`` with ``{name}`` in every string filled in, through dicts and lists."""
    if isinstance(value, str):
        return value.format(**names) if "{" in value else value
    if isinstance(value, dict):
        return {k: fill(v, **names) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, **names) for v in value]
    return value


class Stack:
    """The fake upstream and banditroute, served from one loop in a thread."""

    def __init__(self, tmp_path, judge: dict | None = None, gone: bool = False, rules: list | None = None,
                 budgets: list | None = None, cascades: list | None = None, ensembles: list | None = None,
                 models: dict[str, dict] | None = None, storage: dict | None = None, rate_limits: list | None = None,
                 **gateway):
        self.fake = FakeUpstream()
        self._fake_sock, self._sock = listening_socket(), listening_socket()
        self.fake_port, self.port = self._fake_sock.getsockname()[1], self._sock.getsockname()[1]
        data = pool(f"http://127.0.0.1:{self.fake_port}/v1", f"http://127.0.0.1:{free_port()}/v1" if gone else None,
                    **gateway)
        data["storage"]["db"] = str(tmp_path / "router.duckdb")
        data["storage"].update(storage or {})
        data["rules"] = rules or []
        data["budgets"] = budgets or []
        data["rate_limits"] = rate_limits or []
        data["cascades"] = cascades or []
        data["ensembles"] = ensembles or []
        if judge is not None:
            data["models"].append({"name": "judge", "input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0,
                                   "base_url": f"http://127.0.0.1:{self.fake_port}/v1"})
            data["gateway"]["judge"] = judge
        for entry in data["gateway"].get("passthrough", []):
            entry["base_url"] = entry["base_url"].replace("{fake_port}", str(self.fake_port))
        for m in data["models"]:  # per-model settings of the test (``models``: name -> fields; {fake_port} filled in)
            m.update(fill((models or {}).get(m["name"], {}), fake_port=self.fake_port))
        self.config = parse_settings(data)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        self.run(self._start())
        return self

    def __exit__(self, *exc) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        self.fake_runner = web.AppRunner(self.fake.app(), handler_cancellation=True)
        await self.fake_runner.setup()
        await web.SockSite(self.fake_runner, self._fake_sock).start()
        os.environ["MID_KEY"] = "sk-mid-secret"
        self.app = create_app(self.config, seed=3)
        self.runner = _Runner(self.app, handler_cancellation=True)
        await self.runner.setup()
        await web.SockSite(self.runner, self._sock).start()

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.fake_runner.cleanup()

    @property
    def service(self):
        return self.app[SERVICE]

    @property
    def gateway(self):
        return self.app[GATEWAY]

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", **{"api_key": "unused", "max_retries": 0, **kw})

    def models_view(self) -> dict[str, dict]:
        """``GET /models``, per model (validated against its response schema by the service)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/models", timeout=10) as resp:
            return {m["model"]: m for m in json.load(resp)["models"]}

    def fault(self, model: str, **fault) -> None:
        """Inject ``fault`` into the fake's answers for pool model ``model`` (none: clear it)."""
        model = self.config.spec(model).upstream_name or model
        if fault:
            self.fake.faults[model] = fault
        else:
            self.fake.faults.pop(model, None)

    def query(self, sql: str) -> list[dict]:
        async def q():
            await asyncio.wrap_future(self.service.store.flush())
            return self.service.store.query(sql).to_pylist()

        return self.run(q())

    def wait_for(self, sql: str, n: int, timeout: float = 10.0) -> list[dict]:
        """Rows of ``sql`` once there are at least ``n`` (the gateway logs in the background)."""
        deadline = time.time() + timeout
        while True:
            rows = self.query(sql)
            if len(rows) >= n or time.time() > deadline:
                return rows
            time.sleep(0.05)


ASK = [{"role": "user", "content": "What is the capital of France?"}]


def only(*models: str) -> dict:
    return {"banditroute": {"models": list(models)}}


def test_a_routed_call_answers_names_the_model_logs_everything_and_learns_from_feedback(tmp_path):
    with Stack(tmp_path) as s:
        raw = s.client().chat.completions.with_raw_response.create(model="banditroute", messages=ASK)
        answer = raw.parse()
        model, decision_id = raw.headers["x-banditroute-model"], raw.headers["x-banditroute-decision-id"]
        assert model in ("cheap", "mid", "strong") and answer.model == model  # offline cannot be called
        assert answer.choices[0].message.content.startswith("answer from ")
        assert 0 < float(raw.headers["x-banditroute-propensity"]) <= 1
        decision = s.query(f"SELECT * FROM decisions WHERE decision_id = '{decision_id}'")[0]
        assert decision["chosen"] == model and decision["policy"] == "lints"
        assert sorted(decision["eligible"]) == ["cheap", "mid", "strong"]
        assert decision["propensity"] == float(raw.headers["x-banditroute-propensity"])
        call = s.wait_for("SELECT * FROM calls", 1)[0]
        spec = s.config.spec(model)
        assert call["decision_id"] == decision_id and call["outcome"] == "ok" and call["kind"] == "routed"
        assert call["input_tokens"] == answer.usage.prompt_tokens and call["output_tokens"] == 16
        assert call["cost_usd"] == pytest.approx(spec.price_usd(answer.usage.prompt_tokens, 16))
        assert call["latency_ms"] > 0 and call["ttft_ms"] > 0
        usage = s.wait_for("SELECT * FROM feedback", 1)[0]  # the gateway's own feedback: tokens, cost, latency
        assert usage["decision_id"] == decision_id and usage["cost_usd"] == pytest.approx(call["cost_usd"])
        assert json.loads(usage["reported"])["latency_ms"] == pytest.approx(call["latency_ms"])
        # the upstream got its own model name, the key from the environment only where configured, no options
        sent = s.fake.received[-1]
        assert sent["model"] == s.config.spec(model).upstream_name or model and not sent["has_banditroute"]
        assert sent["authorization"] == ("Bearer sk-mid-secret" if model == "mid" else None)
        # feedback with the header's decision id reaches the model that answered
        thumbs = Feedback.model_validate({"signals": [{"source": "user", "kind": "thumbs", "value": True}]})
        ack = s.run(s.service.feedback(decision_id, thumbs))
        assert ack.applied_signals == 1 and ack.model == model and ack.quality == 1.0
        assert "sk-mid-secret" not in (tmp_path / "router.duckdb").read_bytes().decode("latin-1")


def test_feedback_over_http_with_the_header_decision_id_moves_the_models_prediction(tmp_path):
    with Stack(tmp_path) as s:
        c = s.client()
        raw = c.chat.completions.with_raw_response.create(model="banditroute", messages=ASK, extra_body=only("mid"))
        decision_id = raw.headers["x-banditroute-decision-id"]
        route = {"prompt": ASK[0]["content"], "models": ["mid"]}

        def post(path, body):
            req = urllib.request.Request(f"http://127.0.0.1:{s.port}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())

        q0 = post("/route", route)["scores"]["mid"]["quality"]
        post("/feedback", {"decision_id": decision_id, "signals": [{"source": "user", "kind": "thumbs", "value": True}]})
        q1 = post("/route", route)["scores"]["mid"]["quality"]
        assert q1 > q0


def test_streaming_relays_events_with_headers_first_and_usage_only_when_asked(tmp_path):
    with Stack(tmp_path) as s:
        c = s.client()
        with c.chat.completions.with_streaming_response.create(model="banditroute", messages=ASK, stream=True,
                                                               extra_body=only("cheap")) as raw:
            assert raw.headers["x-banditroute-model"] == "cheap"
            chunks = list(raw.parse())
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text.startswith("answer from cheap-v1: the quick brown fox")
        assert all(ch.model == "cheap" for ch in chunks) and all(ch.choices for ch in chunks)  # no usage chunk
        assert s.fake.received[-1]["stream_options"] == {"include_usage": True}  # asked upstream regardless
        chunks = list(c.chat.completions.create(model="banditroute", messages=ASK, stream=True,
                                                stream_options={"include_usage": True}, extra_body=only("cheap")))
        assert chunks[-1].usage.completion_tokens == 16 and chunks[-1].choices == []
        calls = s.wait_for("SELECT * FROM calls WHERE stream ORDER BY ts", 2)
        assert [c["outcome"] for c in calls] == ["ok", "ok"]
        assert all(c["output_tokens"] == 16 and c["ttft_ms"] <= c["latency_ms"] for c in calls)
        # an upstream that does not take stream_options is not sent them; its tokens are estimated
        text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model="strong", messages=ASK, stream=True) if ch.choices)
        assert s.fake.received[-1]["stream_options"] is None
        row = s.wait_for("SELECT * FROM calls WHERE model = 'strong'", 1)[0]
        assert row["output_tokens"] == round(len(text) / 4) and row["cost_usd"] > 0


def test_tools_images_json_and_context_decide_eligibility(tmp_path):
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    image = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
    with Stack(tmp_path) as s:
        c = s.client()
        for _ in range(5):
            r = c.chat.completions.with_raw_response.create(model="banditroute", messages=ASK, tools=[tool])
            assert r.headers["x-banditroute-model"] in ("mid", "strong")
            assert r.parse().choices[0].message.tool_calls[0].function.name == "lookup"
            r = c.chat.completions.with_raw_response.create(model="banditroute", messages=image)
            assert r.headers["x-banditroute-model"] == "strong"
        long = [{"role": "user", "content": "word " * 1000}]  # about 1,250 tokens: over cheap's 1,000
        for _ in range(5):
            r = c.chat.completions.with_raw_response.create(model="banditroute", messages=long,
                                                            extra_body=only("cheap", "mid"))
            assert r.headers["x-banditroute-model"] == "mid"
        with pytest.raises(openai.UnprocessableEntityError) as err:
            c.chat.completions.create(model="banditroute", messages=image, extra_body=only("cheap", "mid"))
        assert "lacks vision" in err.value.message
        with pytest.raises(openai.UnprocessableEntityError) as err:
            c.chat.completions.create(model="banditroute", messages=long, max_tokens=10, extra_body=only("cheap"))
        assert "context_window 1000" in err.value.message
        with pytest.raises(openai.UnprocessableEntityError) as err:
            c.chat.completions.create(model="cheap", messages=ASK, tools=[tool])
        assert "lacks tools" in err.value.message
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="gpt-nonexistent", messages=ASK)
        with pytest.raises(openai.UnprocessableEntityError) as err:
            c.chat.completions.create(model="banditroute", messages=ASK, extra_body={"banditroute": {"budget": 1}})
        assert err.value.body["code"] == "validation_error" and "banditroute.budget" in err.value.message
        assert [m.id for m in c.models.list()][:2] == ["banditroute", "cheap"]
        assert c.models.retrieve("banditroute").id == "banditroute" and c.models.retrieve("mid").id == "mid"
        with pytest.raises(openai.NotFoundError, match="neither banditroute, a routed model nor a model of the pool"):
            c.models.retrieve("gpt-nonexistent")


def test_extra_body_options_reach_the_decision_and_a_direct_call_is_logged_as_direct(tmp_path):
    with Stack(tmp_path) as s:
        c = s.client()
        r = c.chat.completions.with_raw_response.create(
            model="banditroute", messages=ASK, user="alice",
            extra_body={"banditroute": {"cost_weight": 0.0, "models": ["mid", "strong"], "metadata": {"team": "a"}}})
        d = s.query(f"SELECT * FROM decisions WHERE decision_id = '{r.headers['x-banditroute-decision-id']}'")[0]
        assert d["cost_weight"] == 0.0 and sorted(d["eligible"]) == ["mid", "strong"]
        assert d["user"] == "alice" and json.loads(d["metadata"]) == {"team": "a"}
        r = c.chat.completions.with_raw_response.create(model="mid", messages=ASK)
        assert r.headers["x-banditroute-model"] == "mid" and r.headers["x-banditroute-propensity"] == "1.0"
        d = s.query(f"SELECT * FROM decisions WHERE decision_id = '{r.headers['x-banditroute-decision-id']}'")[0]
        assert d["policy"] == "direct" and d["eligible"] == ["mid"]
        assert s.wait_for("SELECT kind FROM calls WHERE kind = 'direct'", 1)


@pytest.mark.parametrize("fault", [
    {"status": 500},
    {"status": 429, "retry_after": 7},
    {"hang": True},  # cheap's timeout_s is 1
    {"drop": True},
    {"status": 401},
])
def test_a_failed_provider_falls_back_to_a_decision_of_its_own(tmp_path, fault):
    with Stack(tmp_path) as s:
        s.fault("cheap", **fault)
        c = s.client()
        t0 = time.perf_counter()
        served = set()
        for _ in range(40):
            r = c.chat.completions.with_raw_response.create(model="banditroute", messages=ASK,
                                                            extra_body=only("cheap", "mid", "strong"))
            served.add(r.headers["x-banditroute-model"])
            if r.headers["x-banditroute-attempt"] == "2":
                break
        else:
            pytest.fail("the failing model was never chosen")
        assert time.perf_counter() - t0 < 10
        calls = s.wait_for("SELECT * FROM calls ORDER BY ts", 1)
        failed = [c for c in calls if c["outcome"] != "ok"]
        assert len(failed) == 1 and failed[0]["model"] == "cheap"
        assert failed[0]["outcome"] == {500: "upstream_error", 429: "rate_limited", 401: "upstream_error"}.get(
            fault.get("status"), "timeout" if "hang" in fault else "connect_error")
        fallback = next(c for c in calls if c["replaces"] == failed[0]["decision_id"])
        assert fallback["attempt"] == 2 and fallback["outcome"] == "ok"
        assert fallback["decision_id"] == r.headers["x-banditroute-decision-id"]
        first, second = (s.query(f"SELECT * FROM decisions WHERE decision_id = '{i}'")[0]
                         for i in (failed[0]["decision_id"], fallback["decision_id"]))
        # the fallback's probabilities are the first decision's, renormalised over the models left
        p = dict(zip(first["eligible"], first["probabilities"]))
        left = [m for m in first["eligible"] if m != "cheap"]
        assert second["eligible"] == left
        assert second["probabilities"] == pytest.approx([p[m] / sum(p[m] for m in left) for m in left])
        assert second["propensity"] == pytest.approx(p[second["chosen"]] / sum(p[m] for m in left))
        health = s.gateway.providers.view("cheap")["health"]
        if fault.get("status") == 429:  # Retry-After opens the circuit at once, for that long
            assert health["state"] == "open" and 6 < health["retry_in_s"] <= 7
        else:
            assert health["consecutive_failures"] == 1 and health["state"] == "closed"
        # the outage taught the quality model nothing: no feedback for the failed decision
        assert not s.query(f"SELECT * FROM feedback WHERE decision_id = '{failed[0]['decision_id']}'")


def test_an_answer_that_is_not_json_or_too_large_is_a_provider_failure(tmp_path):
    with Stack(tmp_path, max_response_bytes=2000) as s:
        c = s.client()
        s.fault("mid", garbage=True)
        s.fault("strong", reply="x" * 5000)  # over gateway.max_response_bytes
        for model in ("mid", "strong"):
            with pytest.raises(openai.APIStatusError) as err:
                c.chat.completions.create(model=model, messages=ASK)
            assert err.value.status_code == 502
        with pytest.raises(openai.APIError):  # streamed, the limit holds too
            list(c.chat.completions.create(model="strong", messages=ASK, stream=True))
        outcomes = [r["outcome"] for r in s.wait_for("SELECT outcome FROM calls ORDER BY ts", 3)]
        assert outcomes[:2] == ["upstream_error", "too_large"] and outcomes[2] in ("too_large", "stream_error")
        r = c.chat.completions.with_raw_response.create(model="banditroute", messages=ASK,
                                                        extra_body=only("mid", "cheap"))
        assert r.headers["x-banditroute-model"] == "cheap"  # mid's garbage moved the call on


@pytest.mark.parametrize("body", [
    {"model": "banditroute", "messages": []},
    {"model": "banditroute", "messages": [{"role": "user", "content": 42}]},
    {"model": "banditroute", "messages": [{"content": "no role"}]},
    {"model": "banditroute", "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
    {"model": "banditroute", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
    {"model": "banditroute", "messages": [{"role": "user", "content": "x"}], "banditroute": {"cost_weight": -1}},
    {"model": "banditroute", "messages": [{"role": "user", "content": "x"}], "banditroute": {"models": ["nope"]}},
    {"messages": [{"role": "user", "content": "x"}]},
    [1, 2, 3],
])
def test_hostile_chat_bodies_get_a_4xx_in_openai_shape_and_reach_no_upstream(tmp_path, body):
    with Stack(tmp_path) as s:
        req = urllib.request.Request(f"http://127.0.0.1:{s.port}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert 400 <= err.value.code < 500
        error = json.loads(err.value.read())["error"]
        assert error["message"] and error["type"] in ("validation_error", "routing_error", "malformed_json")
        assert s.fake.received == [] and s.query("SELECT * FROM decisions") == []


def test_the_saving_metrics_count_a_request_that_fell_back_once(tmp_path):
    """A fallback's predicted cost replaces that of the decision it replaces, whose priciest cost stands for
    the request; counted so live and when rebuilt from the log."""
    with Stack(tmp_path) as s:
        s.fault("cheap", status=500)
        c = s.client()
        for _ in range(40):
            r = c.chat.completions.with_raw_response.create(model="banditroute", messages=ASK,
                                                            extra_body=only("cheap", "mid", "strong"))
            if r.headers["x-banditroute-attempt"] == "2":
                break
        else:
            pytest.fail("the failing model was never chosen")
        s.wait_for("SELECT * FROM calls WHERE replaces IS NOT NULL", 1)
        s.service.store.flush().result(10)
        decisions = s.query("SELECT decision_id, chosen, eligible, pred_cost FROM decisions")
        replaced = {r["replaces"] for r in s.query("SELECT replaces FROM calls WHERE replaces IS NOT NULL")}
        fallbacks = {r["decision_id"] for r in s.query("SELECT decision_id FROM calls WHERE replaces IS NOT NULL")}
        predicted, priciest = {}, {}
        for d in decisions:
            m = d["chosen"]
            if d["decision_id"] not in replaced:
                predicted[m] = predicted.get(m, 0.0) + d["pred_cost"][d["eligible"].index(m)]
            if d["decision_id"] not in fallbacks:
                priciest[m] = priciest.get(m, 0.0) + max(d["pred_cost"])
        stats = s.service.stats

        def counted(table: dict) -> dict:
            return {m: v for m, v in table.items() if v}

        assert counted(stats.predicted_cost) == pytest.approx(predicted)
        assert counted(stats.priciest_cost) == pytest.approx(priciest)
        stats.reset()
        s.service._load_stats()  # as at a restart
        assert counted(stats.predicted_cost) == pytest.approx(predicted)
        assert counted(stats.priciest_cost) == pytest.approx(priciest)


def test_connection_refused_falls_back_and_all_failing_is_a_502_listing_each_attempt(tmp_path):
    with Stack(tmp_path, gone=True) as s:
        c = s.client()
        r = c.chat.completions.with_raw_response.create(model="banditroute", messages=ASK, extra_body=only("gone", "mid"))
        assert r.headers["x-banditroute-model"] == "mid"
        s.fault("cheap", status=503)
        s.fault("mid", status=500)
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model="banditroute", messages=ASK, extra_body=only("cheap", "mid"))
        assert err.value.status_code == 502
        attempts = err.value.body["detail"]
        assert sorted(a["model"] for a in attempts) == ["cheap", "mid"]
        assert {a["status"] for a in attempts} == {500, 503}
        with pytest.raises(openai.BadRequestError):  # the request's own fault goes back as it is, no fallback
            s.fault("mid", status=400)
            c.chat.completions.create(model="mid", messages=ASK)


def test_a_request_the_provider_refuses_as_malformed_never_opens_its_circuit(tmp_path):
    """Hostile input goes upstream as it is (the gateway reads only what it routes on); the provider's
    400 is the request's fault: passed back, no fallback, and the model stays healthy for everyone else."""
    with Stack(tmp_path) as s:
        c = s.client()
        for _ in range(2 * s.config.gateway.failures_to_open):
            with pytest.raises(openai.BadRequestError, match="tools must be"):
                c.chat.completions.create(model="banditroute", messages=ASK, tools=[{"type": "function"}],
                                          extra_body=only("mid"))
        assert s.gateway.providers.view("mid")["health"]["state"] == "closed" and s.gateway.providers.healthy("mid")
        calls = s.wait_for("SELECT * FROM calls", 4)
        assert {(c["outcome"], c["status"]) for c in calls} == {("rejected", 400)}
        assert all(c["replaces"] is None for c in calls)
        assert c.chat.completions.create(model="banditroute", messages=ASK, extra_body=only("mid")).model == "mid"


LONG = [{"role": "user", "content": "字" * 600}]  # about 620 tokens by the gateway's estimate, 950 by the fake's count


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_prompt_too_long_for_a_model_falls_back_to_a_larger_one_without_harming_its_health(tmp_path, stream):
    """mid's provider refuses the prompt as longer than its window of 800 tokens, which the gateway's
    estimate (within it) could not see: a fallback decision among the models not known to be smaller
    (cheap's configured window of 500 is left out), and mid's provider stays healthy."""
    with Stack(tmp_path, models={"cheap": {"context_window": 500}}) as s:
        s.fault("mid", context_window=800)
        s.fault("cheap", context_window=800)
        c = s.client()
        for _ in range(60):
            r = c.chat.completions.with_raw_response.create(
                model="banditroute", messages=LONG, max_tokens=100, stream=stream,
                extra_body={"banditroute": {"models": ["cheap", "mid", "strong"], "cost_weight": 0}})
            answer = r.parse()
            if stream:
                assert {chunk.model for chunk in answer} == {"strong"}
            else:
                assert answer.model == "strong"
            served = r.headers["x-banditroute-decision-id"]
            chain = s.wait_for(f"SELECT * FROM calls WHERE decision_id = '{served}' AND outcome = 'ok'", 1)
            if chain[0]["replaces"] is None:
                continue
            first = s.query(f"SELECT * FROM calls WHERE decision_id = '{chain[0]['replaces']}'")
            if first[0]["model"] == "mid" and first[0]["replaces"] is None:
                break
        else:
            pytest.fail("mid was never chosen first")
        assert (first[0]["outcome"], first[0]["status"]) == ("context_exceeded", 400)
        assert r.headers["x-banditroute-attempt"] == "2" and chain[0]["model"] == "strong"
        fallback = s.query(f"SELECT * FROM decisions WHERE decision_id = '{served}'")[0]
        assert fallback["eligible"] == ["strong"] and fallback["propensity"] == 1.0
        assert not s.query("SELECT * FROM calls WHERE model = 'cheap' AND replaces IS NOT NULL")
        health = s.gateway.providers.view("mid")["health"]
        assert health["state"] == "closed" and health["consecutive_failures"] == 0
        assert not s.query(f"SELECT * FROM feedback WHERE decision_id = '{first[0]['decision_id']}'")


def test_a_prompt_too_long_for_every_model_is_the_providers_400_not_a_502(tmp_path):
    """Every model is called once (the first request); after that, the window each refusal stated is known,
    so a request of that size is still called (no model is known to fit it) but falls back no more."""
    with Stack(tmp_path) as s:
        s.fake.faults["*"] = {"context_window": 50}
        c = s.client()
        for stream, model in ((False, "banditroute"), (True, "banditroute"), (False, "mid")):
            with pytest.raises(openai.BadRequestError) as err:
                c.chat.completions.create(model=model, messages=LONG, stream=stream,
                                          extra_body=only("cheap", "mid", "strong") if model == "banditroute" else None)
            assert err.value.body["code"] == "context_length_exceeded"
            assert "maximum context length is 50 tokens" in err.value.body["message"]
        calls = s.wait_for("SELECT * FROM calls", 5)
        assert {c["outcome"] for c in calls} == {"context_exceeded"} and len(calls) == 5
        assert sorted(c["attempt"] for c in calls) == [1, 1, 1, 2, 3]  # the first request's three, then one each
        assert all(s.gateway.providers.view(m)["health"]["consecutive_failures"] == 0 for m in ("cheap", "mid", "strong"))


@pytest.mark.parametrize("status, body, window", [
    (400, {"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted "
                                "in 9000 tokens.", "code": "context_length_exceeded"}}, 8192),  # OpenAI, vLLM
    (400, {"error": {"message": "Please reduce the length of the messages or completion.",
                     "code": "context_length_exceeded"}}, None),  # Groq
    (400, {"error": {"message": "prompt is too long: 210000 tokens > 200000 maximum"}}, 200000),  # Anthropic
    (400, {"error": {"message": "The input token count (1200000) exceeds the maximum number of tokens allowed "
                                "(1048576)."}}, 1048576),  # Gemini
    (400, {"message": "Prompt contains 40000 tokens and 0 draft tokens, too large for model with 32768 maximum "
                      "context length"}, 32768),  # Mistral
    (422, {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 "
                    "`inputs` tokens and 500 `max_new_tokens`"}, 4096),  # text-generation-inference
])
def test_providers_refusals_of_a_prompt_too_long_are_read_with_the_window_they_state(status, body, window):
    assert beyond_model_limit(status, json.dumps(body).encode()) == ("context_exceeded", window)


@pytest.mark.parametrize("body, limit", [
    ({"error": {"message": "max_tokens is too large: 100000. This model supports at most 16384 completion tokens, "
                           "whereas you provided 100000.", "param": "max_tokens", "code": "invalid_value"}}, 16384),
    ({"error": {"message": "max_completion_tokens is too large: 70000. This model supports at most 65536 completion "
                           "tokens, whereas you provided 70000."}}, 65536),  # OpenAI
    ({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: 100000 > 64000, which is "
                                 "the maximum allowed number of output tokens for claude-sonnet-4"}}, 64000),  # Anthropic
])
def test_providers_refusals_of_a_max_tokens_too_large_are_read_with_the_limit_they_state(body, limit):
    assert beyond_model_limit(400, json.dumps(body).encode()) == ("output_limit_exceeded", limit)


@pytest.mark.parametrize("status, body", [
    (400, {"error": {"message": "tools must be a list", "code": "invalid_value"}}),
    (429, {"error": {"message": "Rate limit reached: too many tokens per minute; context length"}}),
    (500, {"error": {"message": "maximum context length is 10 tokens"}}),
])
def test_other_errors_are_not_read_as_a_prompt_too_long(status, body):
    assert beyond_model_limit(status, json.dumps(body).encode()) == (None, None)


def test_max_tokens_above_a_models_output_limit_leaves_it_out_or_falls_back_to_a_larger_one(tmp_path):
    """cheap is configured to write at most 64 tokens, so a request for 100 is not routed there; strong
    writes at most 50 without saying so in the configuration: its provider refuses, and the request
    falls back to mid (no limit) without harming strong's health. Beyond every model: the 400."""
    with Stack(tmp_path, models={"cheap": {"max_output_tokens": 64}}) as s:
        s.fault("strong", max_output_tokens=50)
        c = s.client()
        with pytest.raises(openai.UnprocessableEntityError, match="max_output_tokens 64 < max_tokens 100"):
            c.chat.completions.create(model="banditroute", messages=ASK, max_tokens=100, extra_body=only("cheap"))
        for _ in range(40):
            r = c.chat.completions.with_raw_response.create(model="banditroute", messages=ASK, max_tokens=100,
                                                            extra_body=only("cheap", "mid", "strong"))
            assert r.headers["x-banditroute-model"] == "mid"
            if r.headers["x-banditroute-attempt"] == "2":
                break
        else:
            pytest.fail("strong was never chosen first")
        first = s.wait_for("SELECT * FROM calls WHERE outcome <> 'ok'", 1)[0]
        assert (first["model"], first["outcome"], first["status"]) == ("strong", "output_limit_exceeded", 400)
        decisions = s.query("SELECT eligible FROM decisions")
        assert all("cheap" not in d["eligible"] for d in decisions)
        assert s.gateway.providers.view("strong")["health"]["consecutive_failures"] == 0
        shown = s.models_view()
        assert (shown["cheap"]["max_output_tokens"], shown["cheap"]["context_window"]) == (64, 1000)
        assert shown["strong"]["max_output_tokens"] is None and "vision" in shown["strong"]["capabilities"]
        s.fault("mid", max_output_tokens=50)
        with pytest.raises(openai.BadRequestError, match="supports at most 50 completion tokens"):
            c.chat.completions.create(model="banditroute", messages=ASK, max_tokens=100,
                                      extra_body=only("cheap", "mid", "strong"))


def test_a_limit_a_refusal_states_keeps_requests_of_that_size_away_from_the_model_until_it_lapses(tmp_path):
    """strong's provider refuses max_tokens above 50 (nothing configured): once it has said so, requests for
    100 go to mid while mid can take them (no second refusal), GET /models shows the learned limit, a
    request only strong may serve is still sent (its refusal is the answer), smaller requests still go to
    strong, and after the hour the limit lapses."""
    now = [1000.0]
    with Stack(tmp_path) as s:
        s.gateway.limits.clock = lambda: now[0]
        s.fault("strong", max_output_tokens=50)
        c = s.client()
        with pytest.raises(openai.BadRequestError, match="supports at most 50 completion tokens"):
            c.chat.completions.create(model="banditroute", messages=ASK, max_tokens=100, extra_body=only("strong"))
        learned = s.models_view()["strong"]["learned_limits"]
        assert learned == {"max_output_tokens": {"tokens": 50, "expires_in_s": 3600.0}}
        assert s.models_view()["strong"]["max_output_tokens"] is None  # the configured one, as before
        for _ in range(20):
            r = c.chat.completions.with_raw_response.create(
                model="banditroute", messages=ASK, max_tokens=100,
                extra_body={"banditroute": {"models": ["mid", "strong"], "cost_weight": 0}})
            assert (r.headers["x-banditroute-model"], r.headers["x-banditroute-attempt"]) == ("mid", "1")
        assert len(s.wait_for("SELECT * FROM calls WHERE outcome = 'output_limit_exceeded'", 1)) == 1
        assert s.query("SELECT eligible FROM decisions WHERE policy <> 'direct'")[-1]["eligible"] == ["mid"]
        r = c.chat.completions.with_raw_response.create(model="banditroute", messages=ASK, max_tokens=40,
                                                        extra_body=only("strong"))
        assert r.headers["x-banditroute-model"] == "strong"
        now[0] += 3601
        assert s.models_view()["strong"]["learned_limits"] == {}
        with pytest.raises(openai.BadRequestError):  # called again, and refused again: learned again
            c.chat.completions.create(model="banditroute", messages=ASK, max_tokens=100, extra_body=only("strong"))
        assert s.models_view()["strong"]["learned_limits"]["max_output_tokens"]["tokens"] == 50
        assert len(s.wait_for("SELECT * FROM calls WHERE outcome = 'output_limit_exceeded'", 2)) == 2
        assert s.gateway.providers.view("strong")["health"]["consecutive_failures"] == 0


def test_the_context_check_counts_a_prompt_as_the_models_own_answers_report_its_tokens(tmp_path):
    """mid's provider counts twice the prompt tokens the gateway estimates (configured window 400): a
    prompt estimated at 254 tokens plus max_tokens 50 fits by the estimate, and mid serves it until its
    answers have shown the ratio; after 25 calls it is about 1.9 (GET /models), the same request leaves
    mid out (a 422 naming its count), and the other models, whose answers match the estimate, still
    take it."""
    with Stack(tmp_path, models={"mid": {"context_window": 400}}) as s:
        s.fault("mid", prompt_token_scale=2.0)
        c = s.client()
        big = [{"role": "user", "content": "word " * 200}]  # 1,000 characters: 254 tokens by the estimate
        r = c.chat.completions.with_raw_response.create(model="banditroute", messages=big, max_tokens=50,
                                                        extra_body=only("mid"))
        assert r.headers["x-banditroute-model"] == "mid"
        for _ in range(24):
            c.chat.completions.create(model="mid", messages=[{"role": "user", "content": "word " * 80}], max_tokens=8)
        shown = s.models_view()["mid"]["prompt_tokens"]
        assert shown["calls"] == 25 and 1.8 < shown["ratio"] < 2.0
        assert s.models_view()["strong"]["prompt_tokens"] == {"ratio": 1.0, "calls": 0}
        with pytest.raises(openai.UnprocessableEntityError, match=r"context_window 400 < about 4\d\d prompt tokens"):
            c.chat.completions.create(model="banditroute", messages=big, max_tokens=50, extra_body=only("mid"))
        r = c.chat.completions.with_raw_response.create(model="banditroute", messages=big, max_tokens=50,
                                                        extra_body=only("mid", "strong"))
        assert r.headers["x-banditroute-model"] == "strong"
        rows = s.wait_for("SELECT * FROM calls WHERE outcome = 'ok' AND model = 'mid' ORDER BY ts", 25)
        assert rows[0]["estimated_input_tokens"] == pytest.approx(254, abs=1)
        assert rows[0]["input_tokens"] == pytest.approx(2 * 254, abs=20)
    with Stack(tmp_path, models={"mid": {"context_window": 400}}) as s:  # a restart learns it again from the log
        assert s.models_view()["mid"]["prompt_tokens"] == shown
        with pytest.raises(openai.UnprocessableEntityError, match=r"context_window 400 < about 4\d\d prompt tokens"):
            s.client().chat.completions.create(model="banditroute", messages=big, max_tokens=50, extra_body=only("mid"))


def test_a_calls_log_written_before_estimated_input_tokens_opens_and_teaches_no_ratio(tmp_path):
    """A log whose calls table predates the column: it is added at open (null for the old rows), and the
    old rows, which cannot tell an estimate, give no ratio at start."""
    from banditroute.log.schema import CALL_SCHEMA, DUCK_TYPES
    from banditroute.log.store import Store

    path = str(tmp_path / "old.duckdb")
    con = duckdb.connect(path)
    old = [f for f in CALL_SCHEMA if f.name != "estimated_input_tokens"]
    con.execute(f"CREATE TABLE calls ({', '.join(f'{chr(34)}{f.name}{chr(34)} {DUCK_TYPES[f.type]}' for f in old)})")
    con.execute("INSERT INTO calls (decision_id, ts, kind, model, outcome, input_tokens) "
                "VALUES ('d1', now(), 'routed', 'mid', 'ok', 500)")
    con.close()
    store = Store(path, flush_interval=3600.0, group_commit=False)
    try:
        assert store.query("SELECT estimated_input_tokens FROM calls").column(0).to_pylist() == [None]
        assert store.query(RATIOS_SQL).num_rows == 0
    finally:
        store.close()


def test_token_ratios_wait_for_evidence_follow_recent_calls_and_stay_in_range():
    ratios = TokenRatios(["m"])
    for _ in range(19):
        ratios.observe("m", 100.0, 150)
    assert ratios.ratio("m") == 1.0  # not yet 20 calls
    ratios.observe("m", 100.0, None)  # no usage reported: nothing learned
    ratios.observe("m", 0.5, 10)  # an empty prompt says nothing of the ratio
    assert ratios.view("m") == {"ratio": 1.0, "calls": 19}
    ratios.observe("m", 100.0, 150)
    assert ratios.ratio("m") == pytest.approx(1.5)
    for _ in range(5000):  # the provider's tokenizer changed: the old calls fade
        ratios.observe("m", 100.0, 90)
    assert ratios.ratio("m") == pytest.approx(0.9, abs=0.01)
    for _ in range(20000):
        ratios.observe("m", 100.0, 1000)
    assert ratios.ratio("m") == 4.0  # clipped


def test_learned_limits_survive_a_restart_from_the_calls_log_for_the_rest_of_their_hour(tmp_path):
    with Stack(tmp_path) as s:
        s.fault("strong", max_output_tokens=50)
        with pytest.raises(openai.BadRequestError):
            s.client().chat.completions.create(model="banditroute", messages=ASK, max_tokens=100,
                                               extra_body=only("strong"))
        s.wait_for("SELECT * FROM calls WHERE outcome = 'output_limit_exceeded'", 1)
    with Stack(tmp_path) as s:
        learned = s.models_view()["strong"]["learned_limits"]["max_output_tokens"]
        assert learned["tokens"] == 50 and 3500 < learned["expires_in_s"] <= 3600
        assert s.models_view()["mid"]["learned_limits"] == {}
    con = duckdb.connect(str(tmp_path / "router.duckdb"))
    con.execute("UPDATE calls SET ts = ts - INTERVAL 2 HOUR")  # the refusal is now older than the hour
    con.close()
    with Stack(tmp_path) as s:
        assert s.models_view()["strong"]["learned_limits"] == {}


def test_a_limit_stated_deep_in_a_long_refusal_is_learned_again_from_the_logged_message():
    """A provider whose error body states the window after more than the quoted bytes (metadata first):
    the live check reads it, the logged message keeps it, and a restart's load learns it again; a log
    written before messages kept it still gives the limits stated in what it quoted."""
    body = json.dumps({"error": {"details": "x" * 400, "message": "This model's maximum context length is "
                                 "8192 tokens. However, you requested 9000 tokens."}}).encode()
    outcome, limit = beyond_model_limit(400, body)
    assert (outcome, limit) == ("context_exceeded", 8192)
    message = error_message("m", 400, body, limit)
    assert "8192" not in message[:ERROR_BYTES + 30] and message.endswith("(stated limit: 8192 tokens)")
    limits = ModelLimits({"m": ModelSpec(name="m"), "n": ModelSpec(name="n")}, clock=lambda: 0.0)
    old = error_message("n", 400, b'{"error": {"message": "maximum context length is 4096 tokens"}}', None)
    limits.load([{"model": "m", "outcome": outcome, "status": 400, "error": message, "age_s": 60.0},
                 {"model": "n", "outcome": outcome, "status": 400, "error": old, "age_s": 60.0}])
    assert limits.get("m", "context_window") == 8192 and limits.get("n", "context_window") == 4096


def test_learned_limits_keep_the_lowest_stated_and_never_raise_a_configured_one():
    specs = {"m": ModelSpec(name="m", context_window=8000)}
    limits = ModelLimits(specs, clock=lambda: 0.0)
    for stated in (9000, 8000):  # not below the configured window: nothing learned
        limits.learn("m", UpstreamFailure("context_exceeded", "too long", 400, limit=stated))
    assert limits.get("m", "context_window") == 8000 and limits.view("m") == {}
    limits.learn("m", UpstreamFailure("context_exceeded", "too long", 400, limit=4096))
    limits.learn("m", UpstreamFailure("context_exceeded", "too long", 400, limit=6000))  # not above the lower
    limits.learn("m", UpstreamFailure("context_exceeded", "too long", 400))  # no limit stated
    limits.learn("m", UpstreamFailure("upstream_error", "failed", 500, limit=10))  # not a refusal of the size
    assert limits.get("m", "context_window") == 4096 and limits.get("m", "max_output_tokens") is None


def test_a_request_that_breaks_providers_at_two_api_roots_opens_no_circuit(tmp_path):
    """A body that makes providers fail with a 5xx instead of rejecting it (the fake: every model, only
    for requests carrying a marker), sent again and again: every attempt fails, the 502 says why, and no
    circuit opens, so everyone else is still served. A provider that fails while another serves the same
    request is counted as before, and opens its circuit."""
    second_root = {"mid": {"base_url": "http://localhost:{fake_port}/v1"}}  # the same fake, another API root
    with Stack(tmp_path, models=second_root) as s:
        c = s.client()
        s.fake.faults["*"] = {"status": 500, "when": "POISON"}
        poison = [{"role": "user", "content": "POISON " + ASK[0]["content"]}]
        for _ in range(2 * s.config.gateway.failures_to_open):
            with pytest.raises(openai.APIStatusError, match="none of them is counted") as err:
                c.chat.completions.create(model="banditroute", messages=poison, extra_body=only("cheap", "mid"))
            assert err.value.status_code == 502
        assert all(s.gateway.providers.view(m)["health"]["state"] == "closed" for m in ("cheap", "mid"))
        calls = s.wait_for("SELECT * FROM calls", 4 * s.config.gateway.failures_to_open)
        assert {(c["outcome"], c["status"]) for c in calls} == {("upstream_error", 500)}
        assert c.chat.completions.create(model="banditroute", messages=ASK, extra_body=only("cheap", "mid")).choices
        s.fault("cheap", status=500)  # an outage of cheap's provider alone: mid serves, cheap is charged
        for _ in range(60):
            answer = c.chat.completions.with_raw_response.create(model="banditroute", messages=ASK,
                                                                 extra_body=only("cheap", "mid"))
            assert answer.headers["x-banditroute-model"] == "mid"
            if s.gateway.providers.view("cheap")["health"]["state"] == "open":
                break
        assert s.gateway.providers.view("cheap")["health"]["state"] == "open"


def test_the_circuit_opens_after_consecutive_failures_and_a_trial_closes_it():
    now = [0.0]
    h = Health(["a"], GatewayConfig(failures_to_open=2, cooldown_s=10, max_cooldown_s=25), clock=lambda: now[0])
    h.failure("a")
    assert h.available("a")
    h.failure("a")
    assert not h.available("a") and h.view("a")["state"] == "open"
    now[0] = 10.0
    assert h.available("a") and h.view("a")["state"] == "half_open"
    h.begin("a")
    assert not h.available("a")  # one trial at a time
    h.failure("a")  # the trial failed: open for twice as long
    assert h.view("a")["retry_in_s"] == 20.0
    now[0] = 30.0
    h.begin("a")
    h.failure("a")
    assert h.view("a")["retry_in_s"] == 25.0  # capped
    now[0] = 55.0
    h.begin("a")
    h.success("a")
    assert h.view("a") == {"state": "closed", "consecutive_failures": 0, "retry_in_s": 0.0, "times_opened": 3}


def test_an_open_circuit_keeps_calls_away_until_its_cooldown_ends(tmp_path):
    with Stack(tmp_path, failures_to_open=1, cooldown_s=1.0) as s:
        s.fault("strong", status=500)
        c = s.client()
        for _ in range(30):
            r = c.chat.completions.with_raw_response.create(model="banditroute", messages=ASK,
                                                            extra_body=only("mid", "strong"))
            if r.headers["x-banditroute-attempt"] == "2":
                break
        assert s.gateway.providers.view("strong")["health"]["state"] == "open"
        n = len(s.fake.received)
        for _ in range(20):  # strong is skipped: every call goes straight to mid
            r = c.chat.completions.with_raw_response.create(model="banditroute", messages=ASK,
                                                            extra_body=only("mid", "strong"))
            assert r.headers["x-banditroute-model"] == "mid" and r.headers["x-banditroute-attempt"] == "1"
        assert [x["model"] for x in s.fake.received[n:]] == ["mid"] * 20
        s.fault("strong")
        time.sleep(1.1)
        for _ in range(60):  # half-open: strong is tried again, and its success closes the circuit
            c.chat.completions.create(model="banditroute", messages=ASK, extra_body=only("mid", "strong"))
            if s.gateway.providers.view("strong")["health"]["state"] == "closed":
                break
        assert s.gateway.providers.view("strong")["health"]["state"] == "closed"


def test_a_stream_that_dies_after_its_first_event_ends_with_an_error_event(tmp_path):
    with Stack(tmp_path) as s:
        s.fault("cheap", die_after_events=2)
        s.fault("mid", die_after_events=2)
        stream = s.client().chat.completions.create(model="banditroute", messages=ASK, stream=True,
                                                    extra_body=only("cheap", "mid"))
        got = []
        with pytest.raises(openai.APIError) as err:
            for ch in stream:
                got.append(ch.choices[0].delta.content)
        assert len(got) == 2 and "the upstream stream failed" in str(err.value)
        assert [c["outcome"] for c in s.wait_for("SELECT outcome FROM calls", 1)] == ["stream_error"]
        assert len(s.fake.received) == 1  # no silent switch to another model mid-answer


def test_a_client_that_disconnects_cancels_the_upstream_call_and_the_call_is_marked(tmp_path):
    with Stack(tmp_path) as s:
        s.fault("mid", delay_ms=3000)
        with pytest.raises(openai.APITimeoutError):
            s.client(timeout=0.5).chat.completions.create(model="banditroute", messages=ASK, extra_body=only("mid"))
        rows = s.wait_for("SELECT * FROM calls", 1, timeout=5)
        assert [r["outcome"] for r in rows] == ["cancelled"]
        deadline = time.time() + 5
        while s.fake.cancelled < 1 and time.time() < deadline:
            time.sleep(0.05)
        assert s.fake.cancelled == 1  # the upstream saw its request go away, well before its 3 s answer
        assert s.gateway.providers.view("mid")["health"]["consecutive_failures"] == 0  # the client's doing, not the provider's
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{s.port}/metrics", timeout=5).read().decode()
        assert 'banditroute_requests_total{method="POST",path="/v1/chat/completions",status="499"} 1.0' in metrics


def test_a_client_that_leaves_a_stream_midway_closes_the_upstream_stream_and_the_call_is_marked(tmp_path):
    with Stack(tmp_path) as s:
        s.fault("mid", event_delay_ms=200)
        with s.client().chat.completions.with_streaming_response.create(
                model="banditroute", messages=ASK, stream=True, extra_body=only("mid")) as raw:
            for line in raw.iter_lines():
                if line.startswith("data:"):
                    break  # the first event, then the client goes away
        rows = s.wait_for("SELECT * FROM calls WHERE outcome = 'cancelled'", 1, timeout=5)
        assert len(rows) == 1 and 0 < rows[0]["ttft_ms"] <= rows[0]["latency_ms"]
        deadline = time.time() + 5
        while s.fake.cancelled < 1 and time.time() < deadline:
            time.sleep(0.05)
        assert s.fake.cancelled == 1  # the upstream's stream was closed, not read to its end
        assert s.gateway.providers.view("mid")["health"]["consecutive_failures"] == 0


def stalled_stream(port: int, path: str, body: dict) -> socket.socket:
    """A client that sends ``body`` to ``path`` and then reads nothing (a small receive buffer, so that the
    server's writes soon block)."""
    data = json.dumps(body).encode()
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    client.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return client


def test_a_streaming_client_that_stops_reading_is_given_up_after_the_models_timeout(tmp_path):
    """A client that asks for a stream and reads nothing would hold its call, and a connection to the
    provider, for as long as it stays connected: each write to it must be taken within the model's timeout,
    after which the gateway closes the connection and the call is logged as cancelled."""
    with Stack(tmp_path, timeout_s=1.0) as s:
        s.fault("mid", reply="word " * 2_000_000)  # 10 MB: more than the sockets' buffers hold
        stalled = stalled_stream(s.port, "/v1/chat/completions", {"model": "mid", "messages": ASK, "stream": True})
        try:
            (row,) = s.wait_for("SELECT * FROM calls", 1, timeout=10)
            assert row["outcome"] == "cancelled" and row["error"] == "the client read nothing for 1 s"
            assert s.gateway.providers.view("mid")["deployments"][0]["in_flight"] == 0
            assert s.gateway.providers.view("mid")["health"]["consecutive_failures"] == 0  # not the provider's doing
            stalled.settimeout(10)
            while stalled.recv(1 << 20):  # what was sent before, then the end: the gateway closed the connection
                pass
        finally:
            stalled.close()


def judges_done(s, timeout: float = 30.0) -> None:
    """Wait until no judgement is queued or under way (each ends once its feedback is recorded)."""
    deadline = time.time() + timeout
    while s.gateway.judge.queued and time.time() < deadline:
        time.sleep(0.05)
    assert not s.gateway.judge.queued


def test_judge_scores_a_sampled_fraction_after_the_answer_and_its_cost_is_apart(tmp_path):
    with Stack(tmp_path, judge={"model": "judge", "sample_rate": 0.5}) as s:
        s.fault("judge", reply="Accurate and complete. [[9]]")
        c = s.client()
        n = 40
        for _ in range(n):
            c.chat.completions.create(model="banditroute", messages=ASK, extra_body=only("cheap", "mid"))
        routed = s.wait_for("SELECT * FROM calls WHERE kind = 'routed'", n)
        assert {r["judge_rate"] for r in routed} == {0.5}  # their rows are logged as the judge is asked
        judges_done(s)
        judged = s.wait_for("SELECT * FROM calls WHERE kind = 'judge'", 1)
        assert 8 <= len(judged) <= 32  # Binomial(40, 0.5): outside this with probability < 1e-4
        assert all(j["outcome"] == "ok" and j["cost_usd"] > 0 for j in judged)
        scores = s.wait_for("SELECT * FROM feedback WHERE idempotency_key = 'banditroute-judge'", len(judged))
        assert len(scores) == len(judged)
        assert {r["decision_id"] for r in scores} == {j["decision_id"] for j in judged}
        assert all(r["qualities"] == [pytest.approx(8 / 9)] and r["cost_usd"] is None for r in scores)
        # the judge's cost is its own: the judged decisions' cost is their own call's
        for j in judged:
            own = s.query(f"SELECT cost_usd FROM calls WHERE kind = 'routed' AND decision_id = '{j['decision_id']}'")
            fb = s.query(f"SELECT sum(cost_usd) AS c FROM feedback WHERE decision_id = '{j['decision_id']}'")
            assert fb[0]["c"] == pytest.approx(own[0]["cost_usd"])
        metric = s.gateway.metrics.judge_cost.value()
        assert metric == pytest.approx(sum(j["cost_usd"] for j in judged))
        # a judge whose provider fails: the answers are still served, the judge's health hears of it
        s.fault("judge", status=500)
        for _ in range(20):
            c.chat.completions.create(model="banditroute", messages=ASK, extra_body=only("cheap", "mid"))
        s.wait_for("SELECT * FROM calls WHERE kind = 'routed'", n + 20)
        judges_done(s)
        failed = s.query("SELECT * FROM calls WHERE kind = 'judge' AND outcome <> 'ok'")
        assert 1 <= len(failed) <= 3  # the third consecutive failure opens the judge's circuit: no more calls
        assert s.gateway.providers.view("judge")["health"]["consecutive_failures"] == len(failed)


def test_a_judge_at_its_rate_limit_drops_the_sampled_judgements_and_counts_them(tmp_path):
    with Stack(tmp_path, judge={"model": "judge", "sample_rate": 1.0}, models={"judge": {"rpm": 2}}) as s:
        s.fault("judge", reply="Fine. [[8]]")
        for _ in range(5):
            s.client().chat.completions.create(model="banditroute", messages=ASK, extra_body=only("cheap"))
        time.sleep(0.5)
        assert len(s.wait_for("SELECT * FROM calls WHERE kind = 'judge'", 2)) == 2
        assert s.gateway.metrics.judge_dropped.value() == 3


def test_a_burst_of_judgements_stays_within_the_judges_rate_limit(tmp_path):
    """Five answers sampled in one loop turn all see room under the limit when they are sampled; the
    limit is checked again as each call starts, so two calls go out and three are dropped."""
    with Stack(tmp_path, judge={"model": "judge", "sample_rate": 1.0, "max_concurrent": 1},
               models={"judge": {"rpm": 2}}) as s:
        s.fault("judge", reply="Fine. [[8]]")

        async def burst():
            for i in range(5):
                s.gateway.judge.submit(f"decision-{i}", "What is 2 + 2?", "4")

        s.run(burst())
        deadline = time.monotonic() + 10
        while s.gateway.judge.queued and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(s.query("SELECT * FROM calls WHERE kind = 'judge'")) == 2
        assert s.gateway.metrics.judge_dropped.value() == 3


def test_a_judgement_counts_against_the_judges_tpm_in_its_own_tokens(tmp_path):
    """The judge model's answers have shown it counts three times the estimate (tpm 2,000): after one
    judgement, one of about 700 estimated tokens (2,100 in its count) no longer fits what is left of
    the minute, though it would by the estimate alone, and is dropped."""
    with Stack(tmp_path, judge={"model": "judge", "sample_rate": 1.0}, models={"judge": {"tpm": 2000}}) as s:
        s.fault("judge", reply="Fine. [[8]]")
        for _ in range(20):
            s.gateway.token_ratios.observe("judge", 100.0, 300)

        async def submit(text: str):
            s.gateway.judge.submit("decision-1", "What is 2 + 2?", text)

        s.run(submit("4"))
        s.wait_for("SELECT * FROM calls WHERE kind = 'judge'", 1)
        left = 2000 - s.gateway.providers.view("judge")["rate_limits"]["tokens_last_minute"]
        assert 750 < left < 2100
        s.run(submit("4 " * 1400))  # 2,800 characters: about 700 tokens by the estimate
        assert s.gateway.metrics.judge_dropped.value() == 1
        assert len(s.query("SELECT * FROM calls WHERE kind = 'judge'")) == 1


def test_a_burst_routed_together_falls_back_once_a_model_fills_its_rate_limit(tmp_path):
    """Requests routed in one micro-batch all saw room under cheap's limit when they were routed; each
    call checks again as it starts, so cheap gets its two calls a minute and the rest fall back to mid
    without a call to cheap, every request answered. Each attempt given up is logged (outcome
    ``unavailable``), so that a budget rebuilt from the log, as after a restart, counts it as unpaid."""
    budget = {"name": "daily", "usd": 100.0}
    with Stack(tmp_path, models={"cheap": {"rpm": 2}}, budgets=[budget]) as s:
        async def burst():
            async with ClientSession() as http:
                async def one():
                    async with http.post(f"http://127.0.0.1:{s.port}/v1/chat/completions", json={
                            "model": "banditroute", "messages": ASK, "user": "acme",
                            "banditroute": {"models": ["cheap", "mid"], "cost_weight": 1e6}}) as r:
                        return r.status, r.headers.get("x-banditroute-model")
                return await asyncio.gather(*(one() for _ in range(8)))

        served = s.run(burst())
        assert [status for status, _ in served] == [200] * 8
        calls = s.wait_for("SELECT * FROM calls WHERE outcome = 'ok'", 8)
        assert sum(c["model"] == "cheap" for c in calls) <= 2
        assert sum(model == "mid" for _, model in served) >= 6
        skipped = s.query("SELECT * FROM calls WHERE outcome = 'unavailable'")
        assert len(skipped) >= 1
        assert all(c["model"] == "cheap" and c["latency_ms"] is None and "rpm limit" in c["error"] for c in skipped)
        replaced = {c["replaces"] for c in calls if c["replaces"]}
        assert replaced == {c["decision_id"] for c in skipped}  # each one's fallback links back to it
        s.wait_for("SELECT * FROM feedback WHERE cost_usd IS NOT NULL", 8)
        pacer = s.service.router.budgets.pacers["daily", "acme"]
        spent, requests = pacer.spent, pacer.requests
        s.service.store.flush().result(10)
        s.service._restore_budgets()  # as at a restart
        restored = s.service.router.budgets.pacers["daily", "acme"]
        assert restored.requests == requests == 8  # fallbacks are not requests of their own
        assert restored.spent == pytest.approx(spent) and spent == pytest.approx(sum(c["cost_usd"] for c in calls))


def test_paths_the_gateway_does_not_route_pass_through_to_their_provider(tmp_path):
    """Embeddings through the same OpenAI client: forwarded as they are, with the provider's key in place
    of the client's; a provider that is down is a 502 in OpenAI's shape; a path no entry names is a 404."""
    passthrough = [{"path": "/v1/embeddings", "base_url": "http://127.0.0.1:{fake_port}/v1", "api_key_env": "MID_KEY"},
                   {"path": "/v1/audio/", "base_url": f"http://127.0.0.1:{free_port()}/v1"}]
    with Stack(tmp_path, passthrough=passthrough) as s:
        c = s.client(max_retries=0)
        raw = c.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["a", "bcd"])
        out = raw.parse()
        assert [len(d.embedding) for d in out.data] == [8, 8] and out.model == "text-embedding-3-small"
        assert raw.headers["x-request-id"].startswith("req_fake")
        sent = s.fake.received[-1]
        assert sent["path"] == "/v1/embeddings" and sent["authorization"] == "Bearer sk-mid-secret"
        assert s.query("SELECT count(*) AS n FROM decisions")[0]["n"] == 0  # not routed, not a decision
        s.fake.faults["text-embedding-3-small"] = {"status": 429, "retry_after": 7}  # not a pool model
        with pytest.raises(openai.RateLimitError) as err:  # the provider's answer, status and all
            c.embeddings.create(model="text-embedding-3-small", input="a")
        assert err.value.response.headers["retry-after"] == "7"
        with pytest.raises(openai.APIStatusError) as err:
            c.audio.speech.create(model="tts-1", voice="alloy", input="hi")
        assert err.value.status_code == 502 and "forwarded to" in err.value.body["message"]
        with pytest.raises(openai.NotFoundError):
            c.moderations.create(input="hi")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{s.port}/metrics").read().decode()
        assert 'path="/v1/embeddings"' in metrics


def test_a_passthrough_answer_cut_by_its_provider_is_cut_for_the_client_too(tmp_path):
    """The provider's stream dies after two events (the fake's chat completions, reached here through a
    passthrough of /v1/completions): the client's connection is closed mid-answer, so the answer cannot
    pass for complete."""
    passthrough = [{"path": "/v1/completions", "base_url": "http://127.0.0.1:{fake_port}/v1/chat"}]
    with Stack(tmp_path, passthrough=passthrough) as s:
        s.fake.faults["m"] = {"die_after_events": 2}
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        conn.request("POST", "/v1/completions", body=json.dumps({"model": "m", "stream": True, "messages": ASK}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead):
            resp.read()


def test_a_passthrough_client_that_stops_reading_is_cut_after_the_timeout(tmp_path):
    """As for the gateway's own streams: a client that reads nothing may not hold the provider's answer
    open beyond the passthrough's timeout."""
    passthrough = [{"path": "/v1/completions", "base_url": "http://127.0.0.1:{fake_port}/v1/chat", "timeout_s": 1.0}]
    with Stack(tmp_path, passthrough=passthrough) as s:
        s.fake.faults["m"] = {"reply": "word " * 2_000_000}  # 10 MB: more than the sockets' buffers hold
        stalled = stalled_stream(s.port, "/v1/completions", {"model": "m", "stream": True, "messages": ASK})
        try:
            deadline = time.time() + 10
            while s.fake.cancelled < 1 and time.time() < deadline:
                time.sleep(0.05)
            assert s.fake.cancelled == 1  # the provider's answer was given up
            stalled.settimeout(10)
            while stalled.recv(1 << 20):  # then the connection ends
                pass
        finally:
            stalled.close()


def test_a_passthrough_may_not_take_a_path_the_gateway_serves():
    for path in ("/v1/responses", "/v1/responses/", "/v1/chat/", "/v1/models/x"):
        with pytest.raises(ValueError, match="serves itself"):
            Passthrough(path=path, base_url="http://127.0.0.1:1/v1")
    assert Passthrough(path="/v1/audio/", base_url="http://127.0.0.1:1/v1").matches("/v1/audio/speech")
    twice = [{"path": "/v1/embeddings", "base_url": f"http://127.0.0.1:{port}/v1"} for port in (1, 2)]
    with pytest.raises(ValueError, match="more than one entry for /v1/embeddings"):
        GatewayConfig(passthrough=twice)


def test_judge_ratings_are_read_from_the_mt_bench_format():
    assert parse_rating("Good answer. [[8]]") == 8
    assert parse_rating("Rating: [[10]]") == 10
    assert parse_rating("[[3]] no wait [[6]]") == 6
    assert parse_rating("I give it 7/10") is None
    assert parse_rating("[[0]]") is None and parse_rating("[[11]]") is None


def test_what_a_request_needs_and_its_size_are_read_from_the_openai_body():
    req = ChatRequest.model_validate({
        "model": "banditroute", "max_tokens": 50, "response_format": {"type": "json_object"},
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "describe"},
                                                  {"type": "image_url", "image_url": {"url": "x"}}]},
                     {"role": "assistant", "content": None, "tool_calls": []}],
        "functions": [{"name": "f"}], "temperature": 0.2})
    assert req.needs() == ["tools", "vision", "json"]
    assert req.routing_text() == "describe"
    tokens = req.prompt_tokens(lambda t: len(t) / 4)
    assert tokens == pytest.approx(3 * 4 + len("be brief") / 4 + len("describe") / 4 + 85 + len(str([{"name": "f"}])) / 4)
    body = req.upstream_body("up", include_usage=True)
    assert body["model"] == "up" and body["temperature"] == 0.2 and "banditroute" not in body
    assert body["messages"][2] == {"role": "assistant", "content": None, "tool_calls": []}


def test_latency_line_is_the_ridge_fit_of_the_calls_and_the_log_sums_rebuild_it():
    rng = np.random.default_rng(3)
    tokens_in, tokens_out = rng.integers(1, 4000, 40), rng.integers(1, 800, 40)
    latency = 50.0 + 0.02 * tokens_in + 1.5 * tokens_out + rng.normal(0, 5, 40)
    model = LatencyModel(["a", "b"])
    for i, o, y in zip(tokens_in, tokens_out, latency, strict=True):
        model.observe("a", int(i), int(o), float(y))
    X = np.column_stack([np.ones(40), tokens_in / 1000.0, tokens_out / 1000.0])
    coef = np.linalg.solve(X.T @ X + np.diag([0.0, RIDGE, RIDGE]), X.T @ latency)
    assert model.predict("a", 1200, 300) == pytest.approx(coef @ [1.0, 1.2, 0.3])
    assert model.predict("b", 1200, 300) is None and model.calls("a") == 40
    con = duckdb.connect()  # the sums the gateway reads back from its calls log at start
    con.execute("CREATE TABLE calls (model TEXT, kind TEXT, outcome TEXT, input_tokens INT, output_tokens INT, "
                "latency_ms DOUBLE, ttft_ms DOUBLE)")
    con.executemany("INSERT INTO calls VALUES ('a', 'routed', 'ok', ?, ?, ?, NULL)",
                    [[int(i), int(o), float(y)] for i, o, y in zip(tokens_in, tokens_out, latency, strict=True)])
    rebuilt = LatencyModel(["a", "b"])
    rebuilt.load([dict(zip(["model", "n", "si", "so", "sii", "sio", "soo", "sy", "siy", "soy", "st", "nt"], r,
                           strict=True)) for r in con.execute(SUMS_SQL).fetchall()])
    assert rebuilt.predict("a", 1200, 300) == pytest.approx(model.predict("a", 1200, 300))


def test_latency_is_learned_per_model_and_max_latency_ms_excludes_the_slow_ones(tmp_path):
    with Stack(tmp_path) as s:
        s.fault("strong", delay_ms=300)
        c = s.client()
        for _ in range(6):
            for m in ("mid", "strong"):
                c.chat.completions.create(model=m, messages=ASK)
        slow = s.gateway.latency.predict("strong", 10, 16)
        fast = s.gateway.latency.predict("mid", 10, 16)
        assert slow > 250 and fast < 100
        for _ in range(10):
            r = c.chat.completions.with_raw_response.create(
                model="banditroute", messages=ASK, extra_body={"banditroute": {"models": ["mid", "strong"],
                                                                               "max_latency_ms": 200}})
            assert r.headers["x-banditroute-model"] == "mid"
        with urllib.request.urlopen(f"http://127.0.0.1:{s.port}/models", timeout=10) as resp:
            view = {m["model"]: m for m in json.loads(resp.read())["models"]}
        assert view["strong"]["latency"]["calls"] >= 6 and view["strong"]["latency"]["predicted_ms"] > 250
        assert view["offline"]["callable"] is False and view["strong"]["health"]["state"] == "closed"


def test_latency_survives_a_restart_from_the_calls_log(tmp_path):
    with Stack(tmp_path) as s:
        s.fault("strong", delay_ms=200)
        for _ in range(6):
            s.client().chat.completions.create(model="strong", messages=ASK)
        s.wait_for("SELECT * FROM calls", 6)  # the accounting follows the answer: wait for all of it
        before = s.gateway.latency.predict("strong", 10, 16)
    with Stack(tmp_path) as s:
        assert s.gateway.latency.predict("strong", 10, 16) == pytest.approx(before)


def test_fallback_probabilities_are_exact_for_a_router_decision():
    from banditroute.config import load_settings
    from banditroute.core.router import Router

    router = Router(load_settings(), seed=1)
    d = router.route("Prove that there are infinitely many primes.")
    counts = {}
    for _ in range(4000):
        f = router.fallback(d, {d.model})
        counts[f.model] = counts.get(f.model, 0) + 1
        assert f.propensity == pytest.approx(f.probabilities[f.eligible.index(f.model)])
    p = dict(zip(d.eligible, d.probabilities))
    rest = sum(v for m, v in p.items() if m != d.model)
    for m, n in counts.items():
        assert abs(n / 4000 - p[m] / rest) < 4 * np.sqrt(p[m] / rest / 4000) + 1e-3
    assert router.fallback(d, set(d.eligible)) is None


def test_rules_apply_to_gateway_calls_on_the_clients_key_and_are_logged(tmp_path, monkeypatch):
    monkeypatch.setenv("TEAM_A_KEY", "sk-team-a")
    rules = [{"name": "team a pays little", "when": {"api_key_env": "TEAM_A_KEY"}, "models": ["cheap"]},
             {"name": "vip", "when": {"users": ["vip"]}, "model": "strong"}]
    with Stack(tmp_path, rules=rules) as s:
        team_a = openai.OpenAI(base_url=f"http://127.0.0.1:{s.port}/v1", api_key="sk-team-a", max_retries=0)
        for _ in range(5):
            r = team_a.chat.completions.with_raw_response.create(model="banditroute", messages=ASK)
            assert r.headers["x-banditroute-model"] == "cheap"
        r = s.client().chat.completions.with_raw_response.create(model="banditroute", messages=ASK, user="vip")
        assert r.headers["x-banditroute-model"] == "strong" and r.headers["x-banditroute-propensity"] == "1.0"
        logged = s.query("SELECT rule, count(*) AS n FROM decisions GROUP BY rule ORDER BY rule")
        assert logged == [{"rule": "team a pays little", "n": 5}, {"rule": "vip", "n": 1}]
        metric = s.gateway.metrics.rule_matches.value("team a pays little")
        assert metric == 5


def test_a_cost_preference_in_extra_body_becomes_the_decisions_weight(tmp_path):
    with Stack(tmp_path) as s:
        r = s.client().chat.completions.with_raw_response.create(
            model="banditroute", messages=ASK, extra_body={"banditroute": {"cost_preference": 0.5,
                                                                           "models": ["cheap", "strong"]}})
        d = s.query(f"SELECT * FROM decisions WHERE decision_id = '{r.headers['x-banditroute-decision-id']}'")[0]
        spread = max(d["pred_cost"]) - min(d["pred_cost"])
        assert d["cost_weight"] == pytest.approx(s.config.policy.preference_scale / spread)


def test_a_budget_is_refunded_for_failed_calls_charged_what_answers_cost_and_refuses_in_openai_shape(tmp_path):
    budget = {"name": "daily", "usd": 0.01, "when_exhausted": "refuse"}
    with Stack(tmp_path, budgets=[budget]) as s:
        c = s.client()
        pacer = lambda: s.service.router.budgets.pacers["daily", "acme"]
        s.fault("cheap", status=503)
        s.fault("mid", status=500)
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model="banditroute", messages=ASK, user="acme", extra_body=only("cheap", "mid"))
        assert err.value.status_code == 502
        assert pacer().spent == 0.0 and pacer().requests == 1  # both failed calls were refunded
        s.fault("cheap")
        s.fault("mid")
        r = c.chat.completions.create(model="banditroute", messages=ASK, user="acme", extra_body=only("cheap"))
        calls = s.wait_for("SELECT cost_usd FROM calls WHERE outcome = 'ok'", 1)
        deadline = time.time() + 5
        while pacer().reported_cost == 0.0 and time.time() < deadline:  # the usage feedback is queued
            time.sleep(0.02)
        assert r.model == "cheap" and pacer().spent == pytest.approx(calls[0]["cost_usd"])
        pacer().amount = pacer().spent  # as if the rest of the budget had been spent
        with pytest.raises(openai.RateLimitError) as err:
            c.chat.completions.create(model="banditroute", messages=ASK, user="acme", extra_body=only("cheap"))
        body = err.value.body
        assert body["code"] == "budget_exhausted" and "acme" in body["message"]
        assert int(err.value.response.headers["retry-after"]) > 0


CASCADE = [{"name": "json first", "escalate_to": ["strong"], "check": {"json": True, "json_keys": ["answer"]}}]


def test_a_cascade_escalates_on_a_failing_check_stops_on_a_passing_one_and_logs_every_step(tmp_path):
    with Stack(tmp_path, cascades=CASCADE) as s:
        c = s.client()
        opts = {"banditroute": {"cascade": "json first", "models": ["cheap"]}}
        s.fault("cheap", reply="Sure! The answer is 4.")
        s.fault("strong", reply='{"answer": 4}')
        r = c.chat.completions.with_raw_response.create(model="banditroute", messages=ASK, extra_body=opts)
        first = r.headers["x-banditroute-decision-id"]
        assert r.headers["x-banditroute-model"] == "strong" and r.headers["x-banditroute-cascade"] == "cheap,strong"
        assert r.parse().choices[0].message.content == '{"answer": 4}' and r.parse().model == "strong"
        s.fault("cheap", reply='```json\n{"answer": 4}\n```')  # a fenced block passes
        r = c.chat.completions.with_raw_response.create(model="banditroute", messages=ASK, extra_body=opts)
        second = r.headers["x-banditroute-decision-id"]
        assert r.headers["x-banditroute-model"] == "cheap" and r.headers["x-banditroute-cascade"] == "cheap"
        calls = s.wait_for("SELECT decision_id, model, attempt, kind, cost_usd FROM calls ORDER BY ts", 3)
        assert [(x["decision_id"], x["model"], x["attempt"], x["kind"]) for x in calls] == [
            (first, "cheap", 1, "cascade"), (first, "strong", 2, "cascade"), (second, "cheap", 1, "cascade")]
        decisions = s.query("SELECT decision_id, chosen, propensity FROM decisions ORDER BY ts")
        assert [(d["decision_id"], d["chosen"]) for d in decisions] == [(first, "cheap"), (second, "cheap")]
        total = calls[0]["cost_usd"] + calls[1]["cost_usd"]
        fb = s.wait_for(f"SELECT cost_usd FROM feedback WHERE decision_id = '{first}'", 1)
        assert fb[0]["cost_usd"] == pytest.approx(total)  # learning sees the cascade's total cost
        # streamed: the final answer as one event, after the check
        stream = c.chat.completions.create(model="banditroute", messages=ASK, extra_body=opts, stream=True)
        assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == '```json\n{"answer": 4}\n```'


def test_a_rule_sends_requests_through_a_cascade_and_a_start_inside_the_chain_goes_on_from_there(tmp_path):
    cascades = [{"name": "tiers", "escalate_to": ["mid", "strong"], "check": {"min_length": 30}}]
    rules = [{"name": "everything cascades", "cascade": "tiers"}]
    with Stack(tmp_path, cascades=cascades, rules=rules) as s:
        s.fault("mid", reply="too short")
        r = s.client().chat.completions.with_raw_response.create(model="banditroute", messages=ASK,
                                                                 extra_body=only("mid"))
        assert r.headers["x-banditroute-cascade"] == "mid,strong"
        with pytest.raises(openai.UnprocessableEntityError, match="no cascade named 'nope'"):
            s.client().chat.completions.create(model="banditroute", messages=ASK,
                                               extra_body={"banditroute": {"cascade": "nope"}})


def test_a_cascade_skips_a_later_step_whose_provider_is_open_or_at_its_rate_limit(tmp_path):
    cascades = [{"name": "tiers", "escalate_to": ["mid", "strong"], "check": {"min_length": 30}}]
    with Stack(tmp_path, cascades=cascades, models={"mid": {"rpm": 1}}) as s:
        s.fault("cheap", reply="too short")
        opts = {"banditroute": {"cascade": "tiers", "models": ["cheap"]}}
        r = s.client().chat.completions.with_raw_response.create(model="banditroute", messages=ASK, extra_body=opts)
        assert r.headers["x-banditroute-cascade"] == "cheap,mid"  # mid's answer is long enough
        r = s.client().chat.completions.with_raw_response.create(model="banditroute", messages=ASK, extra_body=opts)
        assert r.headers["x-banditroute-cascade"] == "cheap,strong"  # mid is at its limit: skipped
        d = r.headers["x-banditroute-decision-id"]
        calls = s.wait_for(f"SELECT model, outcome FROM calls WHERE decision_id = '{d}' ORDER BY ts", 3)
        # nothing sent to mid: its step is logged as given up
        assert [(c["model"], c["outcome"]) for c in calls] == [("cheap", "ok"), ("mid", "unavailable"), ("strong", "ok")]
        for _ in range(3):
            s.gateway.providers.health.failure(s.gateway.providers.of("strong")[0].key)  # its circuit opens
        # nothing to escalate to: the start's answer stands, though it failed its check
        r = s.client().chat.completions.with_raw_response.create(model="banditroute", messages=ASK, extra_body=opts)
        assert r.headers["x-banditroute-cascade"] == "cheap" and r.parse().choices[0].message.content == "too short"


def test_an_ensemble_calls_every_member_logs_each_call_and_returns_the_majority(tmp_path):
    ensembles = [{"name": "vote", "models": ["cheap", "mid", "strong"], "pick": "majority"}]
    with Stack(tmp_path, ensembles=ensembles) as s:
        s.fault("cheap", reply="41")
        s.fault("mid", reply="42")
        s.fault("strong", reply=" 42. ")
        r = s.client().chat.completions.with_raw_response.create(
            model="banditroute", messages=ASK, extra_body={"banditroute": {"ensemble": "vote"}})
        assert r.parse().choices[0].message.content == "42" and r.headers["x-banditroute-ensemble"] == "cheap,mid,strong"
        calls = s.wait_for("SELECT model, kind, cost_usd FROM calls ORDER BY model", 3)
        assert [(x["model"], x["kind"]) for x in calls] == [("cheap", "ensemble"), ("mid", "ensemble"),
                                                             ("strong", "ensemble")]
        assert all(x["cost_usd"] > 0 for x in calls)
        rows = s.wait_for("SELECT d.chosen, d.policy, d.propensity, f.qualities FROM decisions d "
                          "JOIN feedback f USING (decision_id) ORDER BY d.chosen", 3)
        assert [(x["chosen"], x["policy"], x["propensity"], x["qualities"]) for x in rows] == [
            ("cheap", "ensemble:vote", 1.0, [0.0]), ("mid", "ensemble:vote", 1.0, [1.0]),
            ("strong", "ensemble:vote", 1.0, [1.0])]


def test_an_ensemble_judged_by_the_judge_returns_the_answer_it_picks(tmp_path):
    ensembles = [{"name": "best of two", "models": ["cheap", "mid"], "pick": "judge"}]
    with Stack(tmp_path, ensembles=ensembles, judge={"model": "judge", "sample_rate": 0.0}) as s:
        s.fault("cheap", reply="Paris")
        s.fault("mid", reply="Paris is the capital of France.")
        s.fault("judge", reply="The second is complete. [[2]]")
        r = s.client().chat.completions.create(model="banditroute", messages=ASK,
                                               extra_body={"banditroute": {"ensemble": "best of two"}})
        assert r.choices[0].message.content == "Paris is the capital of France." and r.model == "mid"
        judged = s.wait_for("SELECT kind FROM calls WHERE kind = 'judge'", 1)
        assert len(judged) == 1


@pytest.mark.parametrize("extra, message", [
    ({"cascades": [{"name": "c", "escalate_to": ["offline"], "check": {"json": True}}]},
     "cascades.0 \\(c\\): offline not pool models with a base_url"),
    ({"ensembles": [{"name": "e", "models": ["cheap", "mid"], "pick": "judge"}]}, "e need a judge"),
    ({"rules": [{"name": "r", "cascade": "nope"}]}, "no cascade named 'nope'"),
    ({"cascades": [{"name": "c", "escalate_to": ["mid"], "check": {"regex": "("}}]}, "not a regular expression"),
])
def test_a_bad_cascade_or_ensemble_fails_the_configuration(extra, message):
    from banditroute.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_settings({**pool("http://127.0.0.1:1/v1", None), **extra})


def test_checks_read_json_keys_regex_length_and_logprobs():
    from banditroute.config import CheckConfig
    from banditroute.gateway.strategies import check_answer

    body = {"choices": [{"logprobs": {"content": [{"logprob": -0.1}, {"logprob": -2.9}]}}]}
    cases = [({"json": True}, '{"a": 1}', True), ({"json": True}, "```json\n[1, 2]\n```", True),
             ({"json": True}, "Here: {", False), ({"json_keys": ["answer"]}, '{"answer": 3}', True),
             ({"json_keys": ["answer"]}, '["answer"]', False), ({"regex": r"\bA\b"}, "The answer is A.", True),
             ({"regex": r"\bA\b"}, "The answer is B.", False), ({"min_length": 10}, " short  ", False),
             ({"min_logprob": -1.0}, "x", False), ({"min_logprob": -2.0}, "x", True)]
    for check, text, passed in cases:
        assert check_answer(CheckConfig.model_validate(check), text, body)[0] is passed, (check, text)
    # an upstream that returns no logprobs cannot fail that check
    assert check_answer(CheckConfig(min_logprob=-0.01), "x", {"choices": [{}]})[0] is True


def test_a_cascade_with_a_judge_check_escalates_when_the_rating_is_low(tmp_path):
    cascades = [{"name": "judged", "escalate_to": ["strong"], "check": {"judge_min": 0.6}}]
    with Stack(tmp_path, cascades=cascades, judge={"model": "judge", "sample_rate": 0.0}) as s:
        s.fault("judge", reply="Wrong answer. [[3]]")
        r = s.client().chat.completions.with_raw_response.create(
            model="banditroute", messages=ASK, extra_body={"banditroute": {"cascade": "judged", "models": ["cheap"]}})
        assert r.headers["x-banditroute-cascade"] == "cheap,strong"
        d = r.headers["x-banditroute-decision-id"]
        calls = s.wait_for(f"SELECT kind, model, cost_usd FROM calls WHERE decision_id = '{d}' ORDER BY ts", 3)
        assert [(c["kind"], c["model"]) for c in calls] == [("cascade", "cheap"), ("judge", "judge"), ("cascade", "strong")]
        fb = s.wait_for(f"SELECT cost_usd FROM feedback WHERE decision_id = '{d}'", 1)
        assert fb[0]["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in calls))  # the check's cost counts
