"""Anthropic's Messages API (``POST /v1/messages``), driven with the official ``anthropic`` client against the
fake OpenAI-compatible upstream: requests translated into chat completions, answers and streams back into
messages and the Messages API's events, errors in Anthropic's shape, and everything logged as for chat."""

from __future__ import annotations

import json

import anthropic
import pytest
from test_api import make_config

from banditroute.gateway.messages import MessagesRequest, StreamBridge
from banditroute.http.app import create_app
from tests.test_gateway import Stack, only

ASK = [{"role": "user", "content": "What is the capital of France?"}]


def client(s) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{s.port}", api_key="sk-test", max_retries=0)


def test_a_message_is_routed_answered_and_logged(tmp_path):
    with Stack(tmp_path) as s:
        raw = client(s).messages.with_raw_response.create(model="banditroute", max_tokens=64, messages=ASK,
                                                          system="Be brief.", extra_body=only("cheap", "mid"))
        msg = raw.parse()
        assert msg.type == "message" and msg.role == "assistant" and msg.model in ("cheap", "mid")
        assert msg.content[0].type == "text" and msg.content[0].text.startswith("answer from")
        assert msg.stop_reason == "end_turn" and msg.usage.output_tokens == 16 and msg.usage.input_tokens > 0
        assert raw.headers["x-banditroute-model"] == msg.model
        sent = s.fake.received[-1]
        assert sent["path"] == "/v1/chat/completions" and not sent["has_banditroute"]
        assert sent["messages"] == [{"role": "system", "content": "Be brief."}, *ASK]
        (row,) = s.wait_for("SELECT model, outcome, input_tokens, output_tokens, cost_usd FROM calls", 1)
        assert row["outcome"] == "ok" and row["output_tokens"] == 16 and row["cost_usd"] > 0
        (d,) = s.wait_for("SELECT decision_id FROM decisions", 1)
        assert d["decision_id"] == raw.headers["x-banditroute-decision-id"]


def test_tools_and_tool_results_translate_both_ways(tmp_path):
    tools = [{"name": "lookup", "description": "Look a city up", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}}}]
    history = [ASK[0],
               {"role": "assistant", "content": [{"type": "text", "text": "Let me look."},
                                                 {"type": "tool_use", "id": "toolu_1", "name": "lookup",
                                                  "input": {"city": "Paris"}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                             "content": [{"type": "text", "text": "capital of France"}]},
                                            {"type": "text", "text": "So?"}]}]
    with Stack(tmp_path) as s:
        msg = client(s).messages.create(model="mid", max_tokens=64, messages=history, tools=tools,
                                        tool_choice={"type": "any"})
        assert msg.stop_reason == "tool_use"
        (call,) = [b for b in msg.content if b.type == "tool_use"]
        assert call.name == "lookup" and call.input == {}
        sent = s.fake.received[-1]
        assert sent["tools"] and sent["messages"] == [
            ASK[0],
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "lookup", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "capital of France"},
            {"role": "user", "content": "So?"}]


def test_a_stream_arrives_as_the_messages_api_events_and_is_logged(tmp_path):
    with Stack(tmp_path) as s:
        with client(s).messages.stream(model="banditroute", max_tokens=64, messages=ASK,
                                       extra_body=only("mid")) as stream:
            events = list(stream)
            final = stream.get_final_message()
        kinds = [event.type for event in events]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
        assert events[0].message.usage.input_tokens > 0  # as Anthropic's stream: the prompt's tokens up front
        assert "content_block_start" in kinds and "content_block_stop" in kinds and "message_delta" in kinds
        assert final.model == "mid" and final.content[0].text.startswith("answer from mid")
        assert final.usage.output_tokens == 16 and final.stop_reason == "end_turn"
        assert s.fake.received[-1]["stream_options"] == {"include_usage": True}
        (row,) = s.wait_for("SELECT outcome, output_tokens, ttft_ms FROM calls", 1)
        assert row["outcome"] == "ok" and row["output_tokens"] == 16 and row["ttft_ms"] > 0


def test_errors_come_in_anthropics_shape(tmp_path):
    with Stack(tmp_path) as s:
        c = client(s)
        with pytest.raises(anthropic.NotFoundError) as err:
            c.messages.create(model="nonesuch", max_tokens=8, messages=ASK)
        assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "not_found_error"
        with pytest.raises(anthropic.UnprocessableEntityError, match="server tool 'web_search_20250305'"):
            c.messages.create(model="banditroute", max_tokens=8, messages=ASK,
                              tools=[{"type": "web_search_20250305", "name": "web_search"}])
        with pytest.raises(anthropic.UnprocessableEntityError) as err:  # max_tokens is required, as at Anthropic
            c.post("/v1/messages", body={"model": "banditroute", "messages": ASK}, cast_to=object)
        assert err.value.body["error"]["type"] == "invalid_request_error" and "max_tokens" in str(err.value.body)
        # malformed content blocks are the client's error, named, not a failure of the gateway
        bad_text = [{"role": "user", "content": [{"type": "text", "text": ["not", "a", "string"]}]}]
        with pytest.raises(anthropic.UnprocessableEntityError, match=r"messages\.0\.content\.0\.text must be a string"):
            c.messages.create(model="banditroute", max_tokens=8, messages=bad_text)
        odd_type = [{"role": "user", "content": [{"type": {"nested": 1}, "text": "hi"}]}]
        with pytest.raises(anthropic.UnprocessableEntityError, match="content block of type"):
            c.messages.create(model="banditroute", max_tokens=8, messages=odd_type)
        # a prompt too long for every model: the provider's refusal, in Anthropic's shape
        s.fake.faults["*"] = {"context_window": 10}
        with pytest.raises(anthropic.BadRequestError, match="maximum context length is 10 tokens") as err:
            c.messages.create(model="banditroute", max_tokens=8, messages=ASK, extra_body=only("cheap", "mid"))
        assert err.value.body["error"]["type"] == "invalid_request_error"
        s.fake.faults.clear()
        # a provider that fails after the stream began: the stream ends with an error event
        s.fault("mid", die_after_events=2)
        with (pytest.raises(anthropic.APIStatusError, match="the upstream stream failed"),
              c.messages.stream(model="mid", max_tokens=64, messages=ASK) as stream):
            for _ in stream:
                pass


def test_the_bridge_keeps_blocks_apart_and_says_tool_use():
    bridge = StreamBridge()
    events = bridge.start()
    for chunk in ({"choices": [{"delta": {"content": "Hel"}}]}, {"choices": [{"delta": {"content": "lo"}}]},
                  {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{\"a\""}}]}}]},
                  {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}}]},
                  {"choices": [{"delta": {"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "g", "arguments": "{}"}}]}}]},
                  {"choices": [{"delta": {}, "finish_reason": "stop"}]},
                  {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5,
                                            "prompt_tokens_details": {"cached_tokens": 4}}}):
        events += bridge.feed(chunk)
    events += bridge.end()
    kinds = [(e["type"], e.get("index")) for e in events]
    assert kinds == [("message_start", None), ("content_block_start", 0), ("content_block_delta", 0),
                     ("content_block_delta", 0), ("content_block_stop", 0), ("content_block_start", 1),
                     ("content_block_delta", 1), ("content_block_delta", 1), ("content_block_stop", 1),
                     ("content_block_start", 2), ("content_block_delta", 2), ("content_block_stop", 2),
                     ("message_delta", None), ("message_stop", None)]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-2]["usage"] == {"input_tokens": 6, "output_tokens": 5, "cache_read_input_tokens": 4,
                                   "cache_creation_input_tokens": 0}
    assert MessagesRequest.usage_tokens(events[-2]["usage"]) == (10, 5, 4)


async def test_the_anthropic_sdks_x_api_key_is_a_token_like_a_bearer_one(aiohttp_client, tmp_path):
    cfg = make_config(tmp_path)
    cfg = cfg.model_copy(update={"server": cfg.server.model_copy(update={"token": "sk-secret"})})
    c = await aiohttp_client(create_app(cfg, seed=0))
    body = json.dumps({"prompt": "Write a sort"})
    assert (await c.post("/route", data=body, headers={"x-api-key": "sk-secret"})).status == 200
    assert (await c.post("/route", data=body, headers={"Authorization": "Bearer sk-secret"})).status == 200
    assert (await c.post("/route", data=body, headers={"x-api-key": "sk-wrong"})).status == 401
    resp = await c.post("/v1/messages", data=json.dumps({"model": "banditroute", "max_tokens": 8, "messages": ASK}))
    assert resp.status == 401 and (await resp.json())["error"]["type"] == "authentication_error"


def test_a_routed_model_can_stand_for_the_model_an_agent_asks_for(tmp_path):
    """An application that only lets you pick an Anthropic model name can be routed all the same."""
    routed = [{"name": "claude-sonnet-4-5", "models": ["cheap", "mid"], "cost_preference": 0.5}]
    with Stack(tmp_path, routed_models=routed) as s:
        msg = client(s).messages.create(model="claude-sonnet-4-5", max_tokens=32, messages=ASK)
        assert msg.model in ("cheap", "mid")


def test_count_tokens_gives_the_gateways_estimate_in_the_named_models_own_count(tmp_path):
    with Stack(tmp_path) as s:
        c = client(s)
        short = c.messages.count_tokens(model="banditroute", messages=ASK).input_tokens
        longer = c.messages.count_tokens(model="banditroute", messages=ASK, system="You are a careful geographer. " * 20)
        assert 0 < short < longer.input_tokens
        assert c.messages.count_tokens(model="mid", messages=ASK).input_tokens == short  # no calls of mid yet
        s.fault("mid", prompt_token_scale=3.0)  # mid's tokenizer counts three times the estimate's tokens
        for _ in range(20):
            c.messages.create(model="mid", max_tokens=8, messages=[{"role": "user", "content": "word " * 100}])
        counted = c.messages.count_tokens(model="mid", messages=ASK, system="You are a careful geographer. " * 20)
        assert counted.input_tokens == pytest.approx(longer.input_tokens * s.gateway.token_ratios.ratio("mid"), abs=2)
        assert s.gateway.token_ratios.ratio("mid") > 2.5
        assert c.messages.count_tokens(model="banditroute", messages=ASK).input_tokens == short


def test_a_stream_without_upstream_usage_is_counted_by_the_gateways_estimates(tmp_path):
    with Stack(tmp_path) as s:  # strong's upstream is not asked for a stream's usage (stream_usage = false)
        with client(s).messages.stream(model="strong", max_tokens=64, messages=ASK) as stream:
            final = stream.get_final_message()
        assert s.fake.received[-1]["stream_options"] is None
        (row,) = s.wait_for("SELECT input_tokens, output_tokens, cost_usd FROM calls", 1)
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0 and row["cost_usd"] > 0
        # the client is told the gateway's estimates, the counts it bills
        assert (final.usage.input_tokens, final.usage.output_tokens) == (row["input_tokens"], row["output_tokens"])


def test_an_answer_without_upstream_usage_is_counted_by_the_gateways_estimates(tmp_path):
    with Stack(tmp_path) as s:
        s.fault("mid", no_usage=True)
        msg = client(s).messages.create(model="mid", max_tokens=64, messages=ASK)
        (row,) = s.wait_for("SELECT input_tokens, output_tokens, cost_usd FROM calls", 1)
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0 and row["cost_usd"] > 0
        # the upstream said nothing: the client is told the gateway's estimates, the counts it bills
        assert (msg.usage.input_tokens, msg.usage.output_tokens) == (row["input_tokens"], row["output_tokens"])
        assert msg.usage.cache_read_input_tokens == 0


def test_tool_choice_translates_and_needs_tools():
    def body(**fields) -> dict:
        return MessagesRequest.model_validate({"model": "m", "max_tokens": 5, "messages": ASK, **fields}).to_chat("u", False)

    tools = [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]
    assert body(tools=tools, tool_choice={"type": "any"})["tool_choice"] == "required"
    assert body(tools=tools, tool_choice={"type": "auto"})["tool_choice"] == "auto"
    assert body(tools=tools, tool_choice={"type": "none"})["tool_choice"] == "none"
    named = body(tools=tools, tool_choice={"type": "tool", "name": "f", "disable_parallel_tool_use": True})
    assert named["tool_choice"] == {"type": "function", "function": {"name": "f"}} and named["parallel_tool_calls"] is False
    assert named["tools"] == [{"type": "function", "function": {"name": "f", "description": "d",
                                                                "parameters": {"type": "object"}}}]
    assert "tool_choice" not in body(tool_choice={"type": "auto"})  # without tools an upstream would refuse it
    assert body(stop_sequences=["END"], temperature=0.2, top_k=5, metadata={"user_id": "u7"}) == {
        "model": "u", "messages": ASK, "max_tokens": 5, "temperature": 0.2, "stop": ["END"], "user": "u7"}
