"""OpenAI's responses API through the gateway, end to end with the official ``openai`` client: the
same routing, fallback, logging and usage feedback as chat completions, for the models that carry the
``responses`` capability (in the test pool, ``cheap`` and ``strong``)."""

from __future__ import annotations

import json
import time
import urllib.request

import duckdb
import openai
import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter
from test_gateway import Stack, only

from banditroute.core.reward import Feedback
from banditroute.gateway import bridge
from banditroute.gateway.conversations import Conversations
from banditroute.gateway.requests import ResponsesRequest
from banditroute.http.schemas import ResponseDeleted

QUESTION = "What is the capital of France?"


@pytest.mark.parametrize("model, path", [("cheap", "/v1/responses"), ("mid", "/v1/chat/completions")],
                         ids=["native", "bridged"])
def test_a_routed_response_answers_names_the_model_logs_everything_and_learns_from_feedback(tmp_path, model, path):
    """cheap's provider serves the responses API; mid's only chat completions, so the request is
    translated there and the answer back."""
    with Stack(tmp_path) as s:
        raw = s.client().responses.with_raw_response.create(model="banditroute", input=QUESTION, extra_body=only(model))
        answer = raw.parse()
        decision_id = raw.headers["x-banditroute-decision-id"]
        assert raw.headers["x-banditroute-model"] == model and answer.model == model
        assert answer.output_text.startswith("answer from ") and answer.status == "completed"
        decision = s.query(f"SELECT * FROM decisions WHERE decision_id = '{decision_id}'")[0]
        assert decision["chosen"] == model and decision["propensity"] == float(raw.headers["x-banditroute-propensity"])
        call = s.wait_for("SELECT * FROM calls", 1)[0]
        assert call["outcome"] == "ok" and call["kind"] == "routed" and call["decision_id"] == decision_id
        assert call["input_tokens"] == answer.usage.input_tokens and call["output_tokens"] == 16
        assert call["cost_usd"] == pytest.approx(s.config.spec(model).price_usd(answer.usage.input_tokens, 16))
        usage = s.wait_for("SELECT * FROM feedback", 1)[0]
        assert usage["decision_id"] == decision_id and usage["cost_usd"] == pytest.approx(call["cost_usd"])
        sent = s.fake.received[-1]
        assert sent["path"] == path and not sent["has_banditroute"]
        assert sent["model"] == (s.config.spec(model).upstream_name or model)
        thumbs = Feedback.model_validate({"signals": [{"source": "user", "kind": "thumbs", "value": True}]})
        ack = s.run(s.service.feedback(decision_id, thumbs))
        assert ack.model == model and ack.applied_signals == 1


def test_a_responses_request_the_provider_refuses_as_malformed_never_opens_its_circuit(tmp_path):
    """A tool that is not an object goes upstream as it is; the provider's 400 comes back, with no
    fallback and no harm to the model's health (found by fuzzing: the fake upstream used to fail it as
    a 500, which opens circuits)."""
    with Stack(tmp_path) as s:
        c = s.client()
        for _ in range(2 * s.config.gateway.failures_to_open):
            with pytest.raises(openai.BadRequestError, match="tools must be"):
                c.responses.create(model="banditroute", input=QUESTION, tools=[5], extra_body=only("strong"))
        assert s.gateway.providers.view("strong")["health"]["state"] == "closed"
        calls = s.wait_for("SELECT * FROM calls", 4)
        assert {(c["outcome"], c["status"]) for c in calls} == {("rejected", 400)}
        assert c.responses.create(model="banditroute", input=QUESTION, extra_body=only("strong")).model == "strong"


@pytest.mark.parametrize("model", ["cheap", "mid"], ids=["native", "bridged"])
def test_a_streamed_response_relays_named_events_with_the_pool_name_and_learns_its_usage(tmp_path, model):
    with Stack(tmp_path) as s:
        events = list(s.client().responses.create(
            model="banditroute", stream=True, extra_body=only(model),
            input=[{"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}]))
        kinds = [e.type for e in events]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert "response.output_text.delta" in kinds
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        done = events[-1].response
        assert done.model == model and events[0].response.model == model
        assert text == done.output_text and text.startswith("answer from ")
        call = s.wait_for("SELECT * FROM calls", 1)[0]
        assert call["stream"] and call["outcome"] == "ok" and call["output_tokens"] == done.usage.output_tokens == 16
        assert call["ttft_ms"] > 0


def test_the_sdks_stream_helper_assembles_a_bridged_stream(tmp_path):
    """``responses.stream`` rebuilds the response from the events and checks their order: the bridge's
    sequence is one it accepts, and it arrives at the same response as the last event."""
    with Stack(tmp_path) as s:
        with s.client().responses.stream(model="banditroute", input=QUESTION, extra_body=only("mid")) as stream:
            for _ in stream:
                pass
            final = stream.get_final_response()
        assert final.model == "mid" and final.output_text.startswith("answer from mid")


def test_a_bridged_tool_call_comes_back_as_a_function_call_item(tmp_path):
    with Stack(tmp_path) as s:
        tools = [{"type": "function", "name": "get_weather", "description": "the weather",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
        answer = s.client().responses.create(model="banditroute", input="Weather in Paris?", tools=tools,
                                             extra_body=only("mid"))
        assert answer.model == "mid" and answer.output[0].type == "function_call"
        assert answer.output[0].name == "get_weather" and answer.output[0].arguments == "{}"
        assert s.fake.received[-1]["path"] == "/v1/chat/completions" and s.fake.received[-1]["tools"]


def test_eligibility_follows_what_the_request_needs(tmp_path):
    with Stack(tmp_path) as s:
        c = s.client()
        web = [{"type": "web_search"}]
        with pytest.raises(openai.UnprocessableEntityError, match="lacks responses.*built-in tool 'web_search'"):
            c.responses.create(model="mid", input=QUESTION, tools=web)  # a direct call to a model without it
        with pytest.raises(openai.UnprocessableEntityError, match="built-in tool"):
            c.responses.create(model="banditroute", input=QUESTION, tools=web, extra_body=only("mid"))
        raw = c.responses.with_raw_response.create(model="banditroute", input=QUESTION, tools=web)
        assert raw.headers["x-banditroute-model"] in ("cheap", "strong")
        assert s.fake.received[-1]["path"] == "/v1/responses"
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
            raw = s.client().responses.with_raw_response.create(model="banditroute", input=QUESTION,
                                                                extra_body=only("cheap", "mid"))
            assert raw.headers["x-banditroute-model"] == "mid" and raw.parse().model == "mid"
        failed = s.wait_for("SELECT * FROM calls WHERE outcome = 'upstream_error'", 1)
        assert failed and all(f["model"] == "cheap" for f in failed)
        replaced = s.query("SELECT * FROM calls WHERE replaces IS NOT NULL")
        assert {r["replaces"] for r in replaced} == {f["decision_id"] for f in failed}
        s.fault("cheap")
        s.gateway.providers.health.success(s.gateway.providers.of("cheap")[0].key)  # close its circuit
        for model in ("cheap", "mid"):
            s.fault(model, die_after_events=2)
            events = list(s.client().responses.create(model="banditroute", input=QUESTION, stream=True,
                                                      extra_body=only(model)))
            assert events[0].type == "response.created" and events[-1].type == "error"
            assert "stream failed" in events[-1].message
        assert len(s.wait_for("SELECT * FROM calls WHERE outcome = 'stream_error'", 2)) == 2


def test_a_response_the_provider_failed_falls_back_before_the_first_byte_and_is_relayed_after_it(tmp_path):
    """A non-streamed response whose status is ``failed`` is the provider's failure: the call moves to
    another model. In a stream, ``response.failed`` comes after the first event: it goes to the client as
    it came, and the call is logged as the provider's failure."""
    with Stack(tmp_path) as s:
        s.fault("cheap", failed=True)
        with pytest.raises(openai.APIStatusError, match="the answer is an error") as err:
            s.client().responses.create(model="banditroute", input=QUESTION, extra_body=only("cheap"))
        assert err.value.status_code == 502
        for _ in range(3):
            answer = s.client().responses.create(model="banditroute", input=QUESTION, extra_body=only("cheap", "strong"))
            assert answer.model == "strong" and answer.status == "completed"
        s.gateway.providers.health.success(s.gateway.providers.of("cheap")[0].key)  # close its circuit for the stream
        events = list(s.client().responses.create(model="banditroute", input=QUESTION, stream=True,
                                                  extra_body=only("cheap")))
        assert [e.type for e in events] == ["response.created", "response.failed"]
        assert events[-1].response.model == "cheap" and events[-1].response.error.message == "injected failure"
        failed = s.wait_for("SELECT * FROM calls WHERE model = 'cheap' AND outcome = 'upstream_error'", 2)
        assert any("the answer is an error" in f["error"] for f in failed)
        assert any("the response failed" in f["error"] for f in failed)


def test_a_continued_response_stays_with_the_provider_that_stored_it(tmp_path):
    with Stack(tmp_path, gone=True) as s:
        c = s.client()
        first = c.responses.create(model="banditroute", input=QUESTION, extra_body=only("cheap"))
        follow = c.responses.create(model="banditroute", input="And of Spain?", previous_response_id=first.id)
        assert follow.model in ("cheap", "strong")  # the same API root as cheap
        assert s.fake.received[-1]["previous_response_id"] == first.id
        bridged = c.responses.create(model="banditroute", input=QUESTION, extra_body=only("mid"))
        assert bridged.id not in s.gateway.stored._stored  # made of a chat completion: nobody stores it
        s.gateway.stored._stored["resp_elsewhere"] = ("gone", None)  # a response a provider at another API root stored
        with pytest.raises(openai.UnprocessableEntityError, match="previous_response_id is stored by the provider of gone"):
            c.responses.create(model="banditroute", input="And?", previous_response_id="resp_elsewhere")


def test_a_bridged_response_is_kept_and_continued_with_its_conversation_by_any_model(tmp_path):
    """mid speaks chat completions only: the gateway keeps the responses it makes there, and a request
    that continues one gets the conversation as input, whichever model serves it."""
    with Stack(tmp_path) as s:
        c = s.client()
        first = c.responses.create(model="banditroute", instructions="Be brief.", input="My name is Ann.",
                                   extra_body=only("mid"))
        assert first.store is True and first.previous_response_id is None
        second = c.responses.create(model="banditroute", input="What is my name?", previous_response_id=first.id,
                                    extra_body=only("mid"))
        assert second.previous_response_id == first.id and second.model == "mid"
        sent = s.fake.received[-1]
        assert sent["path"] == "/v1/chat/completions" and sent["previous_response_id"] is None
        # earlier instructions do not carry over (as in OpenAI's API); the earlier turn's input and answer do
        assert sent["messages"] == [{"role": "user", "content": "My name is Ann."},
                                    {"role": "assistant", "content": first.output_text},
                                    {"role": "user", "content": "What is my name?"}]
        # a third turn, streamed, to a model that serves the responses API itself: it gets the whole
        # conversation as input items, not an id its provider never saw
        events = list(c.responses.create(model="banditroute", input="Spell it.", previous_response_id=second.id,
                                         stream=True, extra_body=only("strong")))
        assert events[-1].response.model == "strong"
        sent = s.fake.received[-1]
        assert sent["path"] == "/v1/responses" and sent["previous_response_id"] is None
        texts = [i["content"] if isinstance(i["content"], str) else i["content"][0]["text"] for i in sent["input"]]
        assert texts == ["My name is Ann.", first.output_text, "What is my name?", second.output_text, "Spell it."]
        assert all("id" not in i and "status" not in i for i in sent["input"])  # input items, not stored items
        # a streamed bridged response is kept once it completes
        streamed = list(c.responses.create(model="banditroute", input="Hi.", stream=True, extra_body=only("mid")))
        rid = streamed[-1].response.id
        c.responses.create(model="banditroute", input="Again.", previous_response_id=rid, extra_body=only("mid"))
        assert [m["content"] for m in s.fake.received[-1]["messages"]] == [
            "Hi.", streamed[-1].response.output_text, "Again."]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{s.port}/metrics").read().decode()
        assert "banditroute_conversation_turns 4.0" in metrics  # the four mid made


def test_a_kept_tool_call_turn_continues_with_the_functions_output(tmp_path):
    with Stack(tmp_path) as s:
        c = s.client()
        tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
        first = c.responses.create(model="banditroute", input="Weather in Paris?", tools=tools, extra_body=only("mid"))
        call = first.output[0]
        c.responses.create(model="banditroute", previous_response_id=first.id, tools=tools, extra_body=only("mid"),
                           input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
        assert s.fake.received[-1]["messages"] == [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call.call_id, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}]


def test_a_response_not_kept_cannot_be_continued_and_says_why(tmp_path):
    """Without a model that serves the responses API, an id the gateway does not keep (store: false, a
    restart, an unknown id) is a 404 naming it; with one, the request goes there (its provider may hold it)."""
    with Stack(tmp_path, models=CHAT_ONLY) as s:
        c = s.client()
        unstored = c.responses.create(model="banditroute", input="Hi.", store=False)
        assert unstored.store is False
        for rid in (unstored.id, "resp_unknown"):
            with pytest.raises(openai.NotFoundError, match=f"previous_response_id '{rid}' is not a response the gateway"):
                c.responses.create(model="banditroute", input="And?", previous_response_id=rid)
    with Stack(tmp_path / "off", conversations_mb=0) as s:
        off = s.client().responses.create(model="banditroute", input="Hi.", extra_body=only("mid"))
        assert off.store is False and len(s.gateway.stored.conversations) == 0
        follow = s.client().responses.create(model="banditroute", input="And?", previous_response_id=off.id)
        assert follow.model in ("cheap", "strong") and s.fake.received[-1]["previous_response_id"] == off.id


def test_a_kept_conversation_is_continued_only_with_the_api_key_that_made_it(tmp_path):
    with Stack(tmp_path, models=CHAT_ONLY) as s:
        first = s.client(api_key="key-a").responses.create(model="banditroute", input="My PIN is 1234.")
        with pytest.raises(openai.NotFoundError, match="not a response the gateway keeps"):
            s.client(api_key="key-b").responses.create(model="banditroute", input="My PIN?",
                                                       previous_response_id=first.id)
        s.client(api_key="key-a").responses.create(model="banditroute", input="My PIN?", previous_response_id=first.id)
        assert s.fake.received[-1]["messages"][0]["content"] == "My PIN is 1234."


CHAT_ONLY = {"cheap": {"capabilities": ["json"]}, "strong": {"capabilities": ["json", "tools", "vision"]}}


def test_kept_conversations_outlive_a_restart_and_their_memory_where_prompts_are_stored(tmp_path):
    """With ``storage.store_prompts`` each kept turn is in the log before the answer goes out, and a
    conversation no longer in memory (a restart, an eviction) is read back from there, for its owner only."""
    stored = {"store_prompts": True}
    with Stack(tmp_path, models=CHAT_ONLY, storage=stored) as s:
        c = s.client(api_key="key-a")
        first = c.responses.create(model="banditroute", input="My name is Ann.")
        second = c.responses.create(model="banditroute", input="What is my name?", previous_response_id=first.id)
        rows = s.query("SELECT response_id, parent, owner, items FROM responses ORDER BY ts")
        assert [(r["response_id"], r["parent"]) for r in rows] == [(first.id, None), (second.id, first.id)]
        assert rows[0]["owner"] == rows[1]["owner"] and rows[0]["owner"].startswith("key:")
        assert json.loads(rows[1]["items"])[0]["content"] == "What is my name?"
    with Stack(tmp_path, models=CHAT_ONLY, storage=stored, conversations_mb=0.0012) as s:  # 1258 bytes: one turn
        with pytest.raises(openai.NotFoundError, match="not a response the gateway keeps"):
            s.client(api_key="key-b").responses.create(model="banditroute", input="Name?", previous_response_id=second.id)
        c = s.client(api_key="key-a")
        third = c.responses.create(model="banditroute", input="Spell it.", previous_response_id=second.id)
        assert [m["content"] for m in s.fake.received[-1]["messages"]] == [
            "My name is Ann.", first.output_text, "What is my name?", second.output_text, "Spell it."]
        assert first.id not in s.gateway.stored.conversations  # evicted again: memory holds about one turn
        c.responses.create(model="banditroute", input="Once more.", previous_response_id=third.id)
        assert len(s.fake.received[-1]["messages"]) == 7


def test_a_logged_conversation_the_log_cannot_read_now_is_a_503_to_retry_not_a_404(tmp_path, monkeypatch):
    stored = {"store_prompts": True}
    with Stack(tmp_path, models=CHAT_ONLY, storage=stored) as s:
        first = s.client().responses.create(model="banditroute", input="My name is Ann.")
    with Stack(tmp_path, models=CHAT_ONLY, storage=stored) as s:
        c = s.client(max_retries=0)

        def failing(*args, **kwargs):
            raise duckdb.IOException("IO Error: injected: the disk failed the read")

        with monkeypatch.context() as m:
            m.setattr(s.service.store, "response_chain", failing)
            with pytest.raises(openai.InternalServerError) as err:
                c.responses.create(model="banditroute", input="Name?", previous_response_id=first.id)
            assert err.value.status_code == 503 and err.value.response.headers["retry-after"]
            assert "cannot be read right now" in err.value.body["message"]
        again = c.responses.create(model="banditroute", input="Name?", previous_response_id=first.id)
        assert [m["content"] for m in s.fake.received[-1]["messages"]][:2] == ["My name is Ann.", first.output_text]
        assert again.store is True


def test_a_conversation_older_than_the_retention_period_cannot_be_continued(tmp_path, monkeypatch):
    """``storage.retention_days``: a turn older than that is forgotten, in memory as it is read and in the
    log by the periodic pass; between passes a chain read from the log with such a turn is unknown too."""
    from banditroute.service import retention

    stored = {"store_prompts": True, "retention_days": 2 / 86_400}
    with Stack(tmp_path, models=CHAT_ONLY, storage=stored) as s:
        c = s.client()
        first = c.responses.create(model="banditroute", input="My name is Ann.")
        c.responses.create(model="banditroute", input="Name?", previous_response_id=first.id)  # young: kept
        old = c.responses.create(model="banditroute", input="Remember me.")
        time.sleep(2.2)
        with pytest.raises(openai.NotFoundError):
            c.responses.create(model="banditroute", input="Name?", previous_response_id=first.id)
        assert first.id not in s.gateway.stored.conversations
    monkeypatch.setattr(retention.Retention, "expire", lambda self, now=None: None)  # no pass: the read checks
    with Stack(tmp_path, models=CHAT_ONLY, storage=stored) as s:
        assert s.query(f"SELECT count(*) AS n FROM responses WHERE response_id = '{old.id}'")[0]["n"] == 1
        with pytest.raises(openai.NotFoundError):
            s.client().responses.create(model="banditroute", input="And?", previous_response_id=old.id)
    monkeypatch.undo()
    with Stack(tmp_path, models=CHAT_ONLY, storage=stored) as s:  # the pass at start-up deletes them
        deadline = time.monotonic() + 10
        while s.query("SELECT count(*) AS n FROM responses")[0]["n"]:
            assert time.monotonic() < deadline, "the old turns were not deleted"
            time.sleep(0.05)
        assert s.service.retention.turns == 3


def test_a_client_deletes_a_kept_response_from_memory_and_the_log_and_only_its_own(tmp_path):
    with Stack(tmp_path, models=CHAT_ONLY, storage={"store_prompts": True}) as s:
        c, other = s.client(api_key="key-a"), s.client(api_key="key-b", max_retries=0)
        first = c.responses.create(model="banditroute", input="My name is Ann.")
        second = c.responses.create(model="banditroute", input="Name?", previous_response_id=first.id)
        with pytest.raises(openai.NotFoundError):  # another key's: unknown to it, and kept
            other.responses.delete(first.id)
        assert c.responses.delete(first.id) is None  # the SDK returns nothing for a 200
        assert first.id not in s.gateway.stored.conversations
        assert [r["response_id"] for r in s.query("SELECT response_id FROM responses")] == [second.id]
        with pytest.raises(openai.NotFoundError):  # its conversation is no longer whole
            c.responses.create(model="banditroute", input="Again?", previous_response_id=second.id)
        with pytest.raises(openai.NotFoundError):
            c.responses.delete(first.id)
        raw = c.responses.with_raw_response.delete(second.id)
        assert raw.http_response.json() == {"id": second.id, "object": "response.deleted", "deleted": True}
        ResponseDeleted.model_validate(raw.http_response.json())  # the route table's response model
    with Stack(tmp_path, models=CHAT_ONLY, storage={"store_prompts": True}) as s:  # after a restart: gone
        assert s.query("SELECT count(*) AS n FROM responses")[0]["n"] == 0


def test_a_provider_stored_response_is_deleted_by_its_provider(tmp_path):
    with Stack(tmp_path) as s:
        c = s.client(max_retries=0)
        first = c.responses.create(model="banditroute", input=QUESTION, extra_body=only("cheap"))
        s.wait_for("SELECT * FROM responses", 1)
        ResponseDeleted.model_validate(c.responses.with_raw_response.delete(first.id).http_response.json())
        assert s.fake.received[-1]["method"] == "DELETE" and s.fake.received[-1]["path"] == f"/v1/responses/{first.id}"
        assert first.id not in s.gateway.stored._stored and s.query("SELECT count(*) AS n FROM responses")[0]["n"] == 0
        with pytest.raises(openai.NotFoundError):
            c.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError, match="not a response the gateway keeps"):
            c.responses.delete("resp_unknown")


def test_a_provider_stored_response_is_retrieved_from_its_provider_even_after_a_restart(tmp_path):
    with Stack(tmp_path) as s:
        c = s.client()
        first = c.responses.create(model="banditroute", input=QUESTION, extra_body=only("strong"))
        s.wait_for("SELECT * FROM responses", 1)
        got = c.responses.retrieve(first.id)
        assert got.id == first.id and got.output_text == first.output_text
        items = c.responses.input_items.list(first.id)
        assert [i.content for i in items.data] == [QUESTION]
        assert c.responses.cancel(first.id).status == "cancelled"
    with Stack(tmp_path) as s:  # known from the log: still relayed to its provider, a new fake that lost it
        with pytest.raises(openai.NotFoundError, match="not found"):
            s.client().responses.retrieve(first.id)
        assert s.fake.received[-1]["method"] == "GET" and s.fake.received[-1]["path"] == f"/v1/responses/{first.id}"


def test_a_response_the_gateway_made_is_retrieved_with_its_input_items_by_its_own_key(tmp_path):
    """As at OpenAI: retrieve gives the response object the client got; input_items the request's own
    input (not the conversation it continued), newest first by default, paged; cancel refuses a response
    not made in the background; another key does not see it."""
    with Stack(tmp_path, models=CHAT_ONLY) as s:
        c = s.client(max_retries=0)
        first = c.responses.create(model="banditroute", input="My name is Ann.")
        turn = [{"role": "user", "content": "What is my name?"}, {"role": "user", "content": "Spell it."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Briefly."}]}]
        second = c.responses.create(model="banditroute", input=turn, previous_response_id=first.id)
        got = c.responses.retrieve(second.id)
        assert got.model_dump() == second.model_dump()
        streamed = list(c.responses.create(model="banditroute", input="Hi.", stream=True))[-1].response
        assert c.responses.retrieve(streamed.id).model_dump() == streamed.model_dump()
        assert c.responses.retrieve(streamed.id).model == streamed.model != ""  # the pool's name
        items = c.responses.input_items.list(second.id)
        texts = [i.content[0].text for i in items.data]
        assert texts == ["Briefly.", "Spell it.", "What is my name?"] and not items.has_more
        assert all(i.type == "message" and i.role == "user" and i.id for i in items.data)
        page = c.responses.input_items.list(second.id, order="asc", limit=2)
        assert [i.content[0].text for i in page.data] == ["What is my name?", "Spell it."] and page.has_more
        rest = c.responses.input_items.list(second.id, order="asc", after=page.data[-1].id)
        assert [i.content[0].text for i in rest.data] == ["Briefly."] and not rest.has_more
        for bad, why in (({"limit": 0}, "limit"), ({"order": "up"}, "order"), ({"after": "nope"}, "after")):
            with pytest.raises(openai.UnprocessableEntityError, match=why):
                c.responses.input_items.list(second.id, **bad)
        with pytest.raises(openai.BadRequestError, match="background"):
            c.responses.cancel(second.id)
        with pytest.raises(openai.UnprocessableEntityError, match="not replayed as a stream"):
            c.responses.retrieve(second.id, stream=True)
        with pytest.raises(openai.NotFoundError, match="nor one the gateway keeps"):
            s.client(api_key="another", max_retries=0).responses.retrieve(second.id)
        c.responses.delete(second.id)
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(second.id)


def test_a_gateway_made_response_is_retrieved_from_the_log_after_a_restart_where_prompts_are_stored(tmp_path):
    stored = {"store_prompts": True}
    with Stack(tmp_path, models=CHAT_ONLY, storage=stored) as s:
        c = s.client(api_key="key-a")
        first = c.responses.create(model="banditroute", input="My name is Ann.")
        row = s.query(f"SELECT response FROM responses WHERE response_id = '{first.id}'")[0]
        assert json.loads(row["response"])["output"][0]["content"][0]["text"] == first.output_text
    with Stack(tmp_path, models=CHAT_ONLY, storage=stored) as s:
        c = s.client(api_key="key-a", max_retries=0)
        assert c.responses.retrieve(first.id).model_dump() == first.model_dump()
        assert [i.content[0].text for i in c.responses.input_items.list(first.id).data] == ["My name is Ann."]
        with pytest.raises(openai.NotFoundError):
            s.client(api_key="key-b", max_retries=0).responses.retrieve(first.id)
        # a turn logged before response objects were kept: its conversation goes on, retrieval says why not
        s.service.store.query(f"UPDATE responses SET response = NULL WHERE response_id = '{first.id}'")
        s.gateway.stored.conversations.drop(first.id)
        with pytest.raises(openai.NotFoundError, match="before it kept response objects"):
            c.responses.retrieve(first.id)
        c.responses.create(model="banditroute", input="Name?", previous_response_id=first.id)
        # a row damaged outside the service: a 404 naming the damage, not a 500, and the service goes on
        s.service.store.query(f"UPDATE responses SET response = '{{not json' WHERE response_id = '{first.id}'")
        with pytest.raises(openai.NotFoundError, match="damaged"):
            c.responses.retrieve(first.id)
        c.responses.create(model="banditroute", input="Name?", previous_response_id=first.id)  # its items are whole
        s.service.store.query(f"UPDATE responses SET items = '{{\"a\": 1}}' WHERE response_id = '{first.id}'")
        s.gateway.stored.conversations.drop(first.id)
        for attempt in (lambda: c.responses.retrieve(first.id),
                        lambda: c.responses.create(model="banditroute", input="Name?", previous_response_id=first.id)):
            with pytest.raises(openai.NotFoundError, match="damaged"):
                attempt()
        assert c.responses.create(model="banditroute", input="Still here?").output_text


def test_without_stored_prompts_a_kept_response_is_retrieved_from_memory_until_a_restart(tmp_path):
    with Stack(tmp_path, models=CHAT_ONLY) as s:
        first = s.client().responses.create(model="banditroute", input="Hello.")
        assert s.client().responses.retrieve(first.id).id == first.id
    with Stack(tmp_path, models=CHAT_ONLY) as s, pytest.raises(openai.NotFoundError):
        s.client(max_retries=0).responses.retrieve(first.id)


def test_without_stored_prompts_kept_conversations_stay_in_memory_only(tmp_path):
    with Stack(tmp_path, models=CHAT_ONLY) as s:
        first = s.client().responses.create(model="banditroute", input="My PIN is 1234.")
        assert first.store is True and s.query("SELECT count(*) AS n FROM responses")[0]["n"] == 0
    with Stack(tmp_path, models=CHAT_ONLY) as s, pytest.raises(openai.NotFoundError, match="storage.store_prompts"):
        s.client().responses.create(model="banditroute", input="My PIN?", previous_response_id=first.id)


def test_a_provider_stored_response_is_still_sent_to_its_provider_after_a_restart(tmp_path):
    with Stack(tmp_path, gone=True) as s:
        first = s.client().responses.create(model="banditroute", input=QUESTION, extra_body=only("cheap"))
        s.wait_for("SELECT * FROM responses", 1)
    with Stack(tmp_path, gone=True) as s:
        s.client().responses.create(model="banditroute", input="And of Spain?", previous_response_id=first.id)
        assert s.gateway.stored._stored[first.id][0] == "cheap" and s.fake.received[-1]["previous_response_id"] == first.id


def test_a_turn_the_log_cannot_take_is_answered_but_not_kept(tmp_path, monkeypatch):
    """The writer fails the commit that carries the turn: the client still gets its answer, which says
    ``store: false``, and the response cannot be continued; the service recovers as after any failed write."""
    from banditroute.log import store as store_module

    real = store_module.write_batch

    def failing(cur, rows):
        if rows.get("responses"):
            raise OSError("injected: the disk refused the turn")
        return real(cur, rows)

    monkeypatch.setattr(store_module, "write_batch", failing)
    with Stack(tmp_path, models=CHAT_ONLY, storage={"store_prompts": True}) as s:
        c = s.client(max_retries=0)
        answer = c.responses.create(model="banditroute", input="Remember this.")
        assert answer.store is False and answer.output_text.startswith("answer from ")
        assert answer.id not in s.gateway.stored.conversations
        monkeypatch.setattr(store_module, "write_batch", real)
        deadline = time.monotonic() + 30
        while not ready(s.port):
            assert time.monotonic() < deadline, "the service did not recover from the failed write"
            time.sleep(0.05)
        with pytest.raises(openai.NotFoundError, match="not a response the gateway keeps"):
            c.responses.create(model="banditroute", input="And?", previous_response_id=answer.id)
        again = c.responses.create(model="banditroute", input="Remember this.")
        assert again.store is True and s.query(f"SELECT count(*) AS n FROM responses WHERE response_id = '{again.id}'")[0]["n"] == 1


def ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz").status == 200
    except OSError:
        return False


def test_kept_conversations_stay_within_their_memory_dropping_the_least_recently_used():
    c = Conversations(max_bytes=400)
    turn = [{"role": "user", "content": "x" * 50}]
    assert c.put("r1", None, turn) and c.put("r2", "r1", turn) and c.put("r3", "r2", turn)
    assert [i["content"] for i in c.history("r3")] == ["x" * 50] * 3
    c.put("other", None, turn)
    assert c.history("r3") is not None  # used last: the chain r1-r3 is the most recent
    for i in range(4):
        c.put(f"n{i}", None, turn)
    assert c.bytes <= 400 and c.evicted > 0
    assert "r1" not in c and c.history("r3") is None  # its first turn is gone: the chain cannot be rebuilt
    assert not c.put("huge", None, [{"content": "y" * 500}]) and "huge" not in c
    c.put("loop", "loop", turn)
    assert c.history("loop") is None  # a cycle is not a conversation
    c.put("mine", None, turn, owner="a")
    assert c.history("mine", "a") == turn and c.history("mine", "b") is None and c.history("mine") is None
    # a turn kept with its response object: its output is read from the object, not kept twice
    answer = {"id": "resp_1", "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                                          "content": [{"type": "output_text", "text": "y" * 50}]}]}
    c = Conversations(max_bytes=10_000)
    c.put("kept", None, turn, response=orjson.dumps(answer))
    assert c.history("kept") == turn + bridge.as_input(answer["output"])
    assert c.turn("kept") == (turn, orjson.dumps(answer))
    assert c.bytes == len("kept") + len(orjson.dumps(turn)) + len(orjson.dumps(answer))


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
    assert sorted(req.needs()) == ["json", "tools", "vision"]  # chat completions can serve it too
    assert req.routing_text() == "last question"
    tokens = req.prompt_tokens(lambda t: len(t) / 4.0)
    text = len("Be brief.") + len("first question") + len('{"x": 1}') + len("42") + len("last question")
    assert tokens == pytest.approx(5 * 4 + text / 4.0 + 85 + len(str(req.tools)) / 4.0)
    body = ResponsesRequest.model_validate({"model": "banditroute", "input": "hi", "store": False,
                                            "banditroute": {"models": ["a"]}}).upstream_body("up", True)
    assert body == {"model": "up", "input": "hi", "store": False}
    assert ResponsesRequest.usage_tokens({"input_tokens": 3, "output_tokens": 4}) == (3, 4, None)
    assert ResponsesRequest.usage_tokens({"input_tokens": 3, "output_tokens": 4,
                                          "input_tokens_details": {"cached_tokens": 2}}) == (3, 4, 2)
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
    {"input": [{"type": {"a": 1}}]}, {"input": [{"type": ["message"]}]},
    {"input": [{"role": "assistant", "content": [{"type": "output_text", "text": {"a": 1}}]}]},
])
def test_odd_shapes_of_a_responses_body_are_read_without_failing(odd):
    """Fields the gateway reads but passes on as they are (the upstream judges them): any JSON in them
    leaves the request routable (hostile shapes once gave 500s)."""
    req = ResponsesRequest.model_validate({"model": "banditroute", "input": "hi", **odd})
    assert "json" not in req.needs()
    assert isinstance(req.routing_text(), str)
    assert req.prompt_tokens(lambda t: len(t) / 4.0) >= 0
    if req.native_only() is None:
        assert bridge.chat_body(req, "up", False)["model"] == "up"


def test_a_responses_request_translates_into_chat_completions():
    req = ResponsesRequest.model_validate({
        "model": "banditroute", "instructions": "Be brief.", "temperature": 0.2, "store": True,
        "metadata": {"k": "v"}, "reasoning": {"effort": "low"}, "tool_choice": {"type": "function", "name": "f"},
        "input": [{"role": "developer", "content": "Use tools."},
                  {"role": "user", "content": [{"type": "input_text", "text": "q"},
                                               {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
                  {"type": "reasoning", "id": "rs_1", "summary": []},
                  {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                  {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{\"a\": 1}"},
                  {"type": "function_call_output", "call_id": "c1", "output": "one"},
                  {"type": "function_call_output", "call_id": "c2", "output": {"two": 2}},
                  {"role": "assistant", "content": [{"type": "output_text", "text": "done"}]}],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}],
        "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}, "strict": True}},
        "max_output_tokens": 50, "stream": True, "user": "u1"})
    assert bridge.chat_body(req, "up", include_usage=True) == {
        "model": "up", "temperature": 0.2, "user": "u1", "max_tokens": 50, "reasoning_effort": "low",
        "stream": True, "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": [{"type": "text", "text": "q"},
                                         {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
            {"role": "tool", "tool_call_id": "c2", "content": "{\"two\":2}"},
            {"role": "assistant", "content": "done"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"},
                                                                   "strict": True}}}


@pytest.mark.parametrize("body, why", [
    ({"tools": [{"type": "web_search"}]}, "built-in tool 'web_search'"),
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "item_reference"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input_file"),
])
def test_what_only_the_responses_api_can_serve_needs_a_model_that_speaks_it(body, why):
    req = ResponsesRequest.model_validate({"model": "banditroute", "input": "hi", **body})
    assert "responses" in req.needs() and why in req.native_only()
    with pytest.raises(bridge.Untranslatable, match=why):
        bridge.chat_body(req, "up", False)


def test_a_chat_completion_translates_into_a_response_the_sdk_reads():
    req = ResponsesRequest.model_validate({"model": "banditroute", "input": "hi", "max_output_tokens": 5})
    answer = {"id": "chatcmpl-1", "created": 1700000000, "model": "up", "choices": [
        {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "Hello", "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8,
                  "completion_tokens_details": {"reasoning_tokens": 2}}}
    response = Response.model_validate(bridge.response_from_chat(answer, req))
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Hello" and response.output[1].call_id == "call_9"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (3, 5)
    assert response.usage.output_tokens_details.reasoning_tokens == 2


def test_a_chat_stream_with_text_and_parallel_tool_calls_becomes_the_responses_event_sequence():
    req = ResponsesRequest.model_validate({"model": "banditroute", "input": "hi", "stream": True})
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me "}}]},
        {"choices": [{"index": 0, "delta": {"content": "check."}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"x\""}},
                                                           {"index": 1, "id": "call_b", "function": {"name": "g"}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}},
                                                           {"index": 1, "function": {"arguments": "{}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13}},
    ]
    b = bridge.StreamBridge(req)
    events = b.start() + [e for c in chunks for e in b.feed(c)] + b.end()
    parsed = [TypeAdapter(ResponseStreamEvent).validate_python(e) for e in events]
    assert [e.sequence_number for e in parsed] == list(range(len(parsed)))
    kinds = [e.type for e in parsed]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-1] == "response.completed" and kinds.count("response.output_item.done") == 3
    final = parsed[-1].response
    assert final.output_text == "Let me check."
    assert [(o.call_id, o.name, o.arguments) for o in final.output[1:]] == [("call_a", "f", '{"x": 1}'),
                                                                            ("call_b", "g", "{}")]
    deltas = "".join(e.delta for e in parsed if e.type == "response.function_call_arguments.delta"
                     and e.output_index == 1)
    assert deltas == '{"x": 1}' and final.usage.output_tokens == 9
