"""OpenAI's responses API through the gateway, end to end with the official ``openai`` client: the
same routing, fallback, logging and usage feedback as chat completions, for the models that carry the
``responses`` capability (in the test pool, ``cheap`` and ``strong``)."""

from __future__ import annotations

import json

import openai
import pytest
from test_gateway import Stack, only

from banditroute.core.reward import Feedback
from banditroute.gateway.requests import ResponsesRequest

QUESTION = "What is the capital of France?"


def test_a_routed_response_answers_names_the_model_logs_everything_and_learns_from_feedback(tmp_path):
    with Stack(tmp_path) as s:
        raw = s.client().responses.with_raw_response.create(model="banditroute", input=QUESTION)
        answer = raw.parse()
        model, decision_id = raw.headers["x-banditroute-model"], raw.headers["x-banditroute-decision-id"]
        assert model in ("cheap", "strong") and answer.model == model  # mid lacks the capability
        assert answer.output_text.startswith("answer from ")
        decision = s.query(f"SELECT * FROM decisions WHERE decision_id = '{decision_id}'")[0]
        assert sorted(decision["eligible"]) == ["cheap", "strong"] and decision["chosen"] == model
        assert decision["propensity"] == float(raw.headers["x-banditroute-propensity"])
        call = s.wait_for("SELECT * FROM calls", 1)[0]
        assert call["outcome"] == "ok" and call["kind"] == "routed" and call["decision_id"] == decision_id
        assert call["input_tokens"] == answer.usage.input_tokens and call["output_tokens"] == 16
        assert call["cost_usd"] == pytest.approx(s.config.spec(model).price_usd(answer.usage.input_tokens, 16))
        usage = s.wait_for("SELECT * FROM feedback", 1)[0]
        assert usage["decision_id"] == decision_id and usage["cost_usd"] == pytest.approx(call["cost_usd"])
        sent = s.fake.received[-1]
        assert sent["path"] == "/v1/responses" and not sent["has_banditroute"]
        assert sent["model"] == (s.config.spec(model).upstream_name or model)
        thumbs = Feedback.model_validate({"signals": [{"source": "user", "kind": "thumbs", "value": True}]})
        ack = s.run(s.service.feedback(decision_id, thumbs))
        assert ack.model == model and ack.applied_signals == 1


def test_a_streamed_response_relays_named_events_with_the_pool_name_and_learns_its_usage(tmp_path):
    with Stack(tmp_path) as s:
        events = list(s.client().responses.create(
            model="banditroute", stream=True, extra_body=only("cheap"),
            input=[{"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}]))
        kinds = [e.type for e in events]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert "response.output_text.delta" in kinds
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        done = events[-1].response
        assert done.model == "cheap" and events[0].response.model == "cheap"
        assert text == done.output_text and text.startswith("answer from cheap-v1")
        call = s.wait_for("SELECT * FROM calls", 1)[0]
        assert call["stream"] and call["outcome"] == "ok" and call["output_tokens"] == done.usage.output_tokens
        assert call["ttft_ms"] > 0


def test_eligibility_follows_the_responses_capability_and_what_the_request_needs(tmp_path):
    with Stack(tmp_path) as s:
        c = s.client()
        with pytest.raises(openai.UnprocessableEntityError, match="lacks responses"):
            c.responses.create(model="mid", input=QUESTION)  # a direct call to a model without it
        with pytest.raises(openai.UnprocessableEntityError, match="lacks"):
            c.responses.create(model="banditroute", input=QUESTION, extra_body=only("mid"))
        image = [{"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                              {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}]
        raw = c.responses.with_raw_response.create(model="banditroute", input=image)
        assert raw.headers["x-banditroute-model"] == "strong"  # the only one with vision
        with pytest.raises(openai.UnprocessableEntityError, match="cascades and ensembles"):
            c.responses.create(model="banditroute", input=QUESTION, extra_body={"banditroute": {"cascade": "x"}})


def test_a_failing_provider_falls_back_and_a_dying_stream_ends_with_an_error_event(tmp_path):
    with Stack(tmp_path) as s:
        s.fault("cheap", status=500)
        for _ in range(10):
            raw = s.client().responses.with_raw_response.create(model="banditroute", input=QUESTION)
            assert raw.headers["x-banditroute-model"] == "strong" and raw.parse().model == "strong"
        failed = s.wait_for("SELECT * FROM calls WHERE outcome = 'upstream_error'", 1)
        assert failed and all(f["model"] == "cheap" for f in failed)
        replaced = s.query("SELECT * FROM calls WHERE replaces IS NOT NULL")
        assert {r["replaces"] for r in replaced} == {f["decision_id"] for f in failed}
        s.fault("cheap")
        s.gateway.health.success("cheap")  # close its circuit
        s.fault("cheap", die_after_events=2)
        events = list(s.client().responses.create(model="banditroute", input=QUESTION, stream=True,
                                                  extra_body=only("cheap")))
        assert events[0].type == "response.created" and events[-1].type == "error"
        assert "stream failed" in events[-1].message
        assert s.wait_for("SELECT * FROM calls WHERE outcome = 'stream_error'", 1)


def test_a_continued_response_stays_with_the_provider_that_stored_it(tmp_path):
    with Stack(tmp_path, gone=True) as s:
        c = s.client()
        first = c.responses.create(model="banditroute", input=QUESTION, extra_body=only("cheap"))
        follow = c.responses.create(model="banditroute", input="And of Spain?", previous_response_id=first.id)
        assert follow.model in ("cheap", "strong")  # the same API root as cheap
        assert s.fake.received[-1]["previous_response_id"] == first.id
        s.gateway._stored["resp_elsewhere"] = "gone"  # a response a provider at another API root stored
        with pytest.raises(openai.UnprocessableEntityError, match="previous_response_id is stored by the provider of gone"):
            c.responses.create(model="banditroute", input="And?", previous_response_id="resp_elsewhere")


def test_what_a_responses_request_needs_and_how_big_it_is():
    req = ResponsesRequest.model_validate({
        "model": "banditroute", "instructions": "Be brief.",
        "input": [{"role": "user", "content": "first question"},
                  {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"x": 1}'},
                  {"type": "function_call_output", "call_id": "c1", "output": "42"},
                  {"role": "user", "content": [{"type": "input_text", "text": "last question"},
                                               {"type": "input_image", "image_url": "https://x/y.png"}]}],
        "tools": [{"type": "function", "name": "f", "parameters": {}}],
        "text": {"format": {"type": "json_schema", "name": "a", "schema": {}}}, "max_output_tokens": 50})
    assert sorted(req.needs()) == ["json", "responses", "tools", "vision"]
    assert req.routing_text() == "last question"
    tokens = req.prompt_tokens(lambda t: len(t) / 4.0)
    text = len("Be brief.") + len("first question") + len('{"x": 1}') + len("42") + len("last question")
    assert tokens == pytest.approx(5 * 4 + text / 4.0 + 85 + len(str(req.tools)) / 4.0)
    body = ResponsesRequest.model_validate({"model": "banditroute", "input": "hi", "store": False,
                                            "banditroute": {"models": ["a"]}}).upstream_body("up", True)
    assert body == {"model": "up", "input": "hi", "store": False}
    assert ResponsesRequest.usage_tokens({"input_tokens": 3, "output_tokens": 4}) == (3, 4)
    answer = {"output": [{"type": "reasoning", "summary": []},
                         {"type": "message", "content": [{"type": "output_text", "text": "a"},
                                                         {"type": "refusal", "refusal": "no"},
                                                         {"type": "output_text", "text": "b"}]}]}
    assert ResponsesRequest.answer_text(answer) == "ab"
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize("odd", [
    {"text": {"format": 1.5}}, {"text": {"format": ["json_schema"]}}, {"text": {"format": "json_object"}},
    {"input": [{"role": "user", "content": {"text": "a dict"}}]}, {"input": [{"role": "user", "content": 7}]},
    {"input": [{"type": "function_call_output", "output": ["x", 1, None]}]}, {"input": [{"content": [1, "a", None]}]},
])
def test_odd_shapes_of_a_responses_body_are_read_without_failing(odd):
    """Fields the gateway reads but passes on as they are (the upstream judges them): any JSON in them
    leaves the request routable (hostile shapes once gave 500s)."""
    req = ResponsesRequest.model_validate({"model": "banditroute", "input": "hi", **odd})
    assert "responses" in req.needs() and "json" not in req.needs()
    assert isinstance(req.routing_text(), str)
    assert req.prompt_tokens(lambda t: len(t) / 4.0) >= 0
