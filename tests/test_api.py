"""The HTTP API in-process (aiohttp test client): contracts, errors, idempotency, late feedback, swaps."""

import json

import pytest
from conftest import cold_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from banditroute.http.app import create_app
from banditroute.http.handlers import SERVICE

THUMBS_UP = [{"source": "user", "kind": "thumbs", "value": True}]


def make_config(tmp_path, **storage):
    cfg = cold_settings()
    return cfg.model_copy(update={
        "storage": cfg.storage.model_copy(update={"db": str(tmp_path / "r.duckdb"), "flush_interval_ms": 5, **storage}),
        "server": cfg.server.model_copy(update={"max_body_bytes": 64 * 1024}),
    })


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await aiohttp_client(create_app(make_config(tmp_path), seed=0))


def samples(text: str) -> dict:
    """``{(name, frozenset(labels)): value}`` of a Prometheus exposition, read by prometheus_client's parser."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def post(client, path, body, status=200, raw=False):
    resp = await client.post(path, data=body if raw else json.dumps(body))
    data = await resp.json()
    assert resp.status == status, data
    return data


async def test_route_and_feedback_contract(client):
    r = await post(client, "/route", {"prompt": "Write a Python function that sorts a list", "user": "u1",
                                      "metadata": {"app": "test"}})
    assert set(r) == {"decision_id", "model", "propensity", "probabilities", "scores", "cost_weight", "policy", "rule",
                      "budget", "tenant"}
    assert r["rule"] is None
    assert r["probabilities"][r["model"]] == r["propensity"]
    assert abs(sum(r["probabilities"].values()) - 1) < 1e-9
    assert set(r["scores"][r["model"]]) == {"quality", "cost_usd", "score"}
    f = await post(client, "/feedback", {"decision_id": r["decision_id"], "signals": THUMBS_UP,
                                         "input_tokens": 100, "output_tokens": 50, "latency_ms": 900})
    assert f["applied_signals"] == 1 and f["quality"] == 1.0 and f["cost_usd"] > 0 and not f["duplicate"]
    models = (await (await client.get("/models")).json())["models"]
    row = next(m for m in models if m["model"] == r["model"])
    assert row["decisions"] == 1 and row["mean_quality"] == 1.0 and row["share"] == 1.0


async def test_route_options(client):
    r = await post(client, "/route", {"prompt": "hi", "models": ["claude-3-5-haiku-20241022", "gpt-4o-mini-2024-07-18"], "cost_weight": 0})
    assert set(r["probabilities"]) == {"claude-3-5-haiku-20241022", "gpt-4o-mini-2024-07-18"} and r["cost_weight"] == 0
    r = await post(client, "/route", {"prompt": "hi", "require": ["json"]})
    assert set(r["probabilities"]) == {"gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18"}


@pytest.mark.parametrize(
    "path, body, status, error",
    [
        ("/route", "{not json", 400, "malformed_json"),
        ("/route", '{"prompt": NaN}', 400, "malformed_json"),
        ("/route", '{"prompt": "x", "cost_weight": Infinity}', 400, "malformed_json"),
        ("/route", "[1, 2]", 422, "validation_error"),
        ("/route", "{}", 422, "validation_error"),
        ("/route", '{"prompt": ""}', 422, "validation_error"),
        ("/route", '{"prompt": 5}', 422, "validation_error"),
        ("/route", '{"prompt": "x", "cost_weight": "high"}', 422, "validation_error"),
        ("/route", '{"prompt": "x", "cost_weight": 1e400}', 400, "malformed_json"),
        ("/route", '{"prompt": "x", "models": ["gpt-9"]}', 422, "routing_error"),
        ("/route", '{"prompt": "x", "colour": "red"}', 422, "validation_error"),
        ("/feedback", '{"signals": []}', 422, "validation_error"),
        ("/feedback", '{"decision_id": "nope"}', 404, "unknown_decision"),
        ("/feedback", '{"decision_id": "x", "signals": [{"source": "user", "kind": "quality", "value": 1.5}]}', 422,
         "validation_error"),
        ("/feedback", '{"decision_id": "x", "cost_usd": -1}', 422, "validation_error"),
        ("/policy", '{"policy": "nope"}', 422, "validation_error"),
    ],
)
async def test_bad_input_gets_a_json_4xx(client, path, body, status, error):
    method = client.put if path == "/policy" else client.post
    resp = await method(path, data=body)
    data = await resp.json()
    assert resp.status == status, data
    assert data["error"] == error and data["message"]


async def test_oversized_body_is_413(client):
    data = await post(client, "/route", json.dumps({"prompt": "x" * 100_000}), status=413, raw=True)
    assert data["error"] == "body_too_large"


async def test_unknown_path_and_method_are_json(client):
    resp = await client.get("/nowhere")
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    resp = await client.get("/route")
    assert resp.status == 405 and (await resp.json())["error"] == "method_not_allowed"


async def test_idempotency_key_is_not_counted_twice(client):
    r = await post(client, "/route", {"prompt": "hello there"})
    body = {"decision_id": r["decision_id"], "signals": THUMBS_UP, "idempotency_key": "k1"}
    first = await post(client, "/feedback", body)
    again = await post(client, "/feedback", body)
    assert first["applied_signals"] == 1 and again["duplicate"] and again["applied_signals"] == 0
    service = client.app[SERVICE]
    assert service.router.policy.quality_observations.sum() == 1
    rows = service.store.query("SELECT count(*) AS n FROM feedback").column(0)[0].as_py()
    assert rows == 1


async def test_late_feedback_is_read_back_from_the_log(client):
    service = client.app[SERVICE]
    r = await post(client, "/route", {"prompt": "an old question"})
    await post(client, "/feedback", {"decision_id": r["decision_id"], "cost_usd": 0.01})
    service.pending.window.clear()  # as if the pending window had passed (or the server restarted)
    before = service.router.policy.quality_observations.sum()
    f = await post(client, "/feedback", {"decision_id": r["decision_id"], "signals": THUMBS_UP, "cost_usd": 0.5})
    assert f["late"] and f["applied_signals"] == 1 and f["cost_usd"] is None  # the cost was known already
    assert service.router.policy.quality_observations.sum() == before + 1
    again = await post(client, "/feedback", {"decision_id": r["decision_id"], "signals": THUMBS_UP})
    assert not again["late"]  # kept in memory (recalled) after the late feedback
    assert r["decision_id"] in service.pending.recalled and not service.pending.window
    assert again["quality"] == 1.0
    m = samples(await (await client.get("/metrics")).text())
    assert m["banditroute_feedback_total", frozenset({"duplicate": "false", "late": "true"}.items())] == 1
    assert m["banditroute_feedback_total", frozenset({"duplicate": "false", "late": "false"}.items())] == 2


async def test_concurrent_late_feedback_shares_lookups(client):
    import asyncio

    service = client.app[SERVICE]
    ids = [(await post(client, "/route", {"prompt": f"old question {i}"}))["decision_id"] for i in range(12)]
    await asyncio.wrap_future(service.store.flush())
    service.pending.window.clear()
    rounds = []
    lookup = service.store.decisions
    service.store.decisions = lambda wanted: rounds.append(sorted(wanted)) or lookup(wanted)
    bodies = [{"decision_id": i, "signals": THUMBS_UP} for i in ids] + [{"decision_id": "f" * 32, "signals": THUMBS_UP}]
    resps = await asyncio.gather(*(client.post("/feedback", data=json.dumps(b)) for b in bodies))
    assert [r.status for r in resps] == [200] * 12 + [404]
    assert all([(await r.json())["late"] for r in resps[:12]])
    assert sorted(i for r in rounds for i in r) == sorted(ids + ["f" * 32]) and len(rounds) < len(bodies)


async def test_policy_hot_swap_is_logged_and_rebuilt_from_the_log(client):
    for i in range(5):
        r = await post(client, "/route", {"prompt": f"question {i}"})
        await post(client, "/feedback", {"decision_id": r["decision_id"], "signals": THUMBS_UP})
    view = await (await client.put("/policy", data=json.dumps({"policy": "linucb", "cost_weight": 7}))).json()
    assert view["policy"] == "linucb" and view["cost_weight"] == 7
    service = client.app[SERVICE]
    assert service.router.policy.quality_observations.sum() == 5  # learned from the whole log
    r = await post(client, "/route", {"prompt": "after the swap"})
    assert r["policy"] == "linucb" and r["cost_weight"] == 7
    events = service.store.query("SELECT event FROM events").column(0).to_pylist()
    assert json.loads(events[-1])["policy"] == "linucb"


async def test_token_guards_everything_but_healthz(aiohttp_client, tmp_path):
    cfg = make_config(tmp_path)
    cfg = cfg.model_copy(update={"server": cfg.server.model_copy(update={"token": "s3cret"})})
    client = await aiohttp_client(create_app(cfg, seed=0))
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"},
                    {"Authorization": "s3cret"}, {"Authorization": "Bearer s3cret2"}):
        resp = await client.post("/route", data='{"prompt": "x"}', headers=headers)
        assert resp.status == 401 and (await resp.json())["error"] == "unauthorized"
    for scheme in ("Bearer", "bearer", "BEARER"):  # RFC 7235: the scheme is case-insensitive
        resp = await client.post("/route", data='{"prompt": "x"}', headers={"Authorization": f"{scheme} s3cret"})
        assert resp.status == 200
    assert (await client.get("/metrics")).status == 401


async def test_metrics_openapi_and_export(client):
    r = await post(client, "/route", {"prompt": "count me"})
    await post(client, "/feedback", {"decision_id": r["decision_id"], "signals": THUMBS_UP})
    resp = await client.get("/metrics")
    assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
    m = samples(await resp.text())
    assert m["banditroute_requests_total", frozenset({"method": "POST", "path": "/route", "status": "200"}.items())] == 1
    assert m["banditroute_request_seconds_count", frozenset({"path": "/route"}.items())] == 1
    buckets = sorted((float(le), v) for (name, labels), v in m.items() if name == "banditroute_request_seconds_bucket"
                     and ("path", "/route") in labels for k, le in labels if k == "le")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets) and buckets[-1] == (float("inf"), 1)
    assert m["banditroute_fallbacks_total", frozenset()] == 0  # a counter without labels reads 0 from the start
    assert m["banditroute_committed_seq", frozenset()] == 1 and m["banditroute_route_batches_total", frozenset()] == 1
    assert m["banditroute_model_share", frozenset({"model": r["model"]}.items())] == 1.0
    assert m["process_resident_memory_bytes", frozenset()] > 0
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.") and {"/route", "/feedback", "/models", "/policy"} <= set(doc["paths"])
    assert "RouteRequest" in doc["components"]["schemas"]
    resp = await client.get("/export?format=jsonl")
    rows = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert len(rows) == 1 and rows[0]["quality"] == 1.0 and rows[0]["chosen"] == r["model"]


async def test_metrics_show_the_event_loop_blocked(client):
    """A handler that holds the loop (injected: 120 ms of blocking work on it) shows in the loop-lag
    histogram as a sample over 100 ms; an idle loop's samples stay under it."""
    import asyncio
    import time

    async def lag() -> tuple[float, float]:
        """The loop-lag samples so far, and how many were over 100 ms."""
        m = samples(await (await client.get("/metrics")).text())
        count = m["banditroute_event_loop_lag_seconds_count", frozenset()]
        return count, count - m["banditroute_event_loop_lag_seconds_bucket", frozenset({"le": "0.1"}.items())]

    await asyncio.sleep(0.2)
    count, over = await lag()
    assert count >= 3 and over == 0
    time.sleep(0.12)  # noqa: ASYNC251 - the fault: on the server's loop (the test's own), as a blocking handler
    await asyncio.sleep(0.05)
    assert (await lag())[1] == 1


async def test_cost_metrics_report_the_bill_and_what_routing_saves_and_survive_a_restart(aiohttp_client, tmp_path):
    """banditroute_cost_usd_total: the costs reported per model; banditroute_predicted_cost_usd_total and
    _priciest_cost_usd_total: each decision's predicted cost and that of its priciest eligible model."""
    client = await aiohttp_client(create_app(make_config(tmp_path), seed=0))
    routed = [await post(client, "/route", {"prompt": f"question {i}?"}) for i in range(4)]
    for r in routed:
        await post(client, "/feedback", {"decision_id": r["decision_id"], "cost_usd": 0.002, "signals": THUMBS_UP})

    async def costs(c) -> dict[str, dict[str, float]]:
        m = samples(await (await c.get("/metrics")).text())
        return {name: {dict(labels)["model"]: v for (n, labels), v in m.items() if n == name}
                for name in ("banditroute_cost_usd_total", "banditroute_predicted_cost_usd_total",
                             "banditroute_priciest_cost_usd_total")}

    before = await costs(client)
    expect = {"banditroute_cost_usd_total": {}, "banditroute_predicted_cost_usd_total": {},
              "banditroute_priciest_cost_usd_total": {}}
    for r in routed:
        m = r["model"]
        for name, v in (("banditroute_cost_usd_total", 0.002),
                        ("banditroute_predicted_cost_usd_total", r["scores"][m]["cost_usd"]),
                        ("banditroute_priciest_cost_usd_total", max(x["cost_usd"] for x in r["scores"].values()))):
            expect[name][m] = expect[name].get(m, 0.0) + v
    for name, per_model in expect.items():
        assert {m: v for m, v in before[name].items() if v} == pytest.approx(per_model)
    assert sum(before["banditroute_priciest_cost_usd_total"].values()) > sum(
        before["banditroute_predicted_cost_usd_total"].values())
    rows = {r["model"]: r for r in (await (await client.get("/models")).json())["models"]}
    for m, v in expect["banditroute_priciest_cost_usd_total"].items():  # /models shows the same sums
        assert rows[m]["priciest_cost_usd"] == pytest.approx(v)
        assert rows[m]["predicted_cost_usd"] == pytest.approx(expect["banditroute_predicted_cost_usd_total"][m])
        assert rows[m]["cost_usd"] == pytest.approx(expect["banditroute_cost_usd_total"][m])
    await client.close()
    again = await aiohttp_client(create_app(make_config(tmp_path), seed=0))  # rebuilt from the log
    after = await costs(again)
    for name in expect:
        assert after[name] == pytest.approx(before[name])


JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["prompt", "models", "cost_weight", "max_cost_usd", "require", "user", "metadata", "decision_id",
          "signals", "cost_usd", "input_tokens", "output_tokens", "latency_ms", "error", "idempotency_key"]
BODIES = st.one_of(
    JSON,
    st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6),
    st.fixed_dictionaries({"prompt": st.text(max_size=50)}, optional={"cost_weight": JSON, "models": JSON}),
    st.fixed_dictionaries({"decision_id": st.text(max_size=10), "signals": st.lists(
        st.fixed_dictionaries({"source": st.sampled_from(["user", "judge", "x"]),
                               "kind": st.sampled_from(["thumbs", "rating", "score", "quality"]), "value": JSON}),
        max_size=3)}),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/route", "/feedback", "/policy"]), body=BODIES)
async def test_fuzzed_bodies_never_get_a_5xx(client, path, body):
    method = client.put if path == "/policy" else client.post
    resp = await method(path, data=json.dumps(body))
    assert resp.status < 500
    data = await resp.json()
    if resp.status >= 400:
        assert data["error"] and data["message"]


async def test_the_policy_view_shows_the_floor_decaying_with_feedback(client):
    before = await (await client.get("/policy")).json()
    # the bundled pool's 11 models: the 1% floor (and its 0.1% minimum) scaled to take 5% of the traffic
    assert before["floor"] == pytest.approx(0.05 / 11) and before["floor_min"] == pytest.approx(0.005 / 11)
    assert before["floor_decay"] == 500.0
    assert before["floor_min"] <= before["current_floor"] <= before["floor"]
    assert before["exploration_decay"] is None and before["current_exploration"] == before["exploration"] == 0.5
    for i in range(30):
        now = (await (await client.get("/policy")).json())["current_floor"]
        r = await post(client, "/route", {"prompt": f"What is {i} + {i}?"})
        assert min(r["probabilities"].values()) >= now - 1e-12
        await post(client, "/feedback", {"decision_id": r["decision_id"],
                                         "signals": [{"source": "user", "kind": "thumbs", "value": True}]})
    after = await (await client.get("/policy")).json()
    assert before["floor_min"] <= after["current_floor"] < before["current_floor"]


async def test_promotion_loop_log_replay_switch(client, tmp_path):
    """Log traffic, export it, replay a candidate on it, and switch the running service to it."""
    from banditroute.offline.evaluate import replay

    rng = __import__("random").Random(0)
    sent = []
    for i in range(60):
        r = await post(client, "/route", {"prompt": f"Write a Python function number {i}"})
        good = r["model"] in ("gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18") or rng.random() < 0.2
        sent.append(float(good))
        await post(client, "/feedback", {"decision_id": r["decision_id"], "cost_usd": 0.001,
                                         "signals": [{"source": "user", "kind": "thumbs", "value": good}]})
    resp = await client.get("/export?format=parquet")
    path = tmp_path / "traffic.parquet"
    path.write_bytes(await resp.read())
    candidate = replay(str(path), "linucb", cost_weight=20.0, n_boot=100)
    incumbent = candidate["logged"]
    assert candidate["n"] == 60 and set(candidate["estimates"]) == {"ips", "snips", "dm", "dr"}
    assert incumbent["quality"] == pytest.approx(sum(sent) / len(sent)) and incumbent["cost_usd"] == pytest.approx(0.001)
    assert incumbent["reward"] == pytest.approx(sum(sent) / len(sent) - 20.0 * 0.001)
    for est in candidate["estimates"].values():  # 60 decisions may leave a model the candidate wants unseen
        q = est["quality"]
        assert q["low"] <= q["value"] <= q["high"] if q["value"] is not None else "not estimable" in q["not_estimable"]
    view = await (await client.put("/policy", data=json.dumps({"policy": "linucb", "cost_weight": 20.0}))).json()
    assert view["policy"] == "linucb" and view["cost_weight"] == 20.0
    assert (await post(client, "/route", {"prompt": "after promotion"}))["policy"] == "linucb"


@pytest.mark.parametrize("store_prompts", [False, True])
async def test_prompts_are_stored_only_when_configured(aiohttp_client, tmp_path, store_prompts):
    import hashlib
    import hmac

    client = await aiohttp_client(create_app(make_config(tmp_path, store_prompts=store_prompts), seed=0))
    await post(client, "/route", {"prompt": "my secret prompt"})
    rows = [json.loads(line) for line in (await (await client.get("/export?format=jsonl")).text()).splitlines()]
    key = bytes.fromhex((tmp_path / "r.duckdb.key").read_text())
    assert rows[0]["prompt_hash"] == hmac.new(key, b"my secret prompt", hashlib.sha256).hexdigest()
    assert rows[0]["prompt"] == ("my secret prompt" if store_prompts else None)
    assert len(rows[0]["x"]) == client.app[SERVICE].router.featurizer.dim


async def test_concurrent_routes_are_batched_and_each_is_logged(client):
    import asyncio

    service = client.app[SERVICE]
    sizes = []
    route_many = service.route_many
    service.route_many = lambda reqs: sizes.append(len(reqs)) or route_many(reqs)
    bodies = [{"prompt": f"question number {i}?"} for i in range(40)] + [{"prompt": "hi", "models": ["gpt-9"]}]
    resps = await asyncio.gather(*(client.post("/route", data=json.dumps(b)) for b in bodies))
    assert [r.status for r in resps] == [200] * 40 + [422]  # a bad request fails alone
    ids = [(await r.json())["decision_id"] for r in resps[:40]]
    assert len(set(ids)) == 40 and sum(sizes) == 41 and max(sizes) > 1
    await asyncio.wrap_future(service.store.flush())
    logged = service.store.query("SELECT decision_id FROM decisions").column(0).to_pylist()
    assert sorted(logged) == sorted(ids)


# answers that need an upstream to make: validated in the gateway's tests
VALIDATED_WITH_A_GATEWAY = {("DELETE", "/v1/responses/{response_id}")}


async def test_every_answer_validates_against_its_response_model(client):
    """Real answers of every endpoint of the route table, checked by the models the OpenAPI document
    publishes (which forbid unknown fields): a handler and its model cannot drift apart."""
    from banditroute.http.routes import ROUTES
    from banditroute.http.schemas import ErrorResponse

    r = await post(client, "/route", {"prompt": "Write a Python function", "models": ["claude-3-5-haiku-20241022", "gemini-1.5-flash"]})
    f = await post(client, "/feedback", {"decision_id": r["decision_id"], "signals": THUMBS_UP, "cost_usd": 0.01})
    keyed = {"decision_id": r["decision_id"], "idempotency_key": "k", "signals": THUMBS_UP}
    first, dup = await post(client, "/feedback", keyed), await post(client, "/feedback", keyed)
    answers = {("POST", "/route"): [r], ("POST", "/feedback"): [f, first, dup]}
    for method, path, body in [("GET", "/models", None), ("GET", "/policy", None), ("GET", "/healthz", None),
                               ("GET", "/budgets", None),
                               ("GET", "/readyz", None), ("PUT", "/policy", {"cost_weight": 5.0, "floor": 0.02})]:
        resp = await client.request(method, path, data=None if body is None else json.dumps(body))
        assert resp.status == 200
        answers[method, path] = [await resp.json()]
    checked = 0
    for route in ROUTES:
        if route.response is None or (route.method, route.path) in VALIDATED_WITH_A_GATEWAY:
            continue
        for answer in answers[route.method, route.path]:
            route.response.model_validate(answer)
            checked += 1
    assert checked == 10 and dup["duplicate"] and not first["duplicate"]
    for method, path, body in [("POST", "/route", "{"), ("POST", "/feedback", '{"decision_id": "nope"}'),
                               ("GET", "/nowhere", None), ("PUT", "/policy", '{"floor": 0.9}')]:
        resp = await client.request(method, path, data=body)
        assert resp.status >= 400
        ErrorResponse.model_validate(await resp.json())


async def test_the_openapi_document_is_the_route_table(client):
    from banditroute.http.routes import ROUTES

    doc = await (await client.get("/openapi.json")).json()
    assert {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops} == {(r.method, r.path) for r in ROUTES}
    assert doc["paths"]["/healthz"]["get"]["security"] == [] and doc["paths"]["/route"]["post"]["security"]
    assert doc["paths"]["/export"]["get"]["parameters"][0]["schema"]["enum"] == ["parquet", "jsonl"]
    for name in ("RouteResponse", "FeedbackResponse", "ModelsResponse", "PolicyView", "ErrorResponse"):
        assert name in doc["components"]["schemas"]


def nested(depth: int) -> str:
    """A route request whose metadata is nested ``depth`` levels deep, as JSON text."""
    return '{"prompt": "hi", "metadata": ' + '{"a": ' * depth + '{"leaf": 1}' + "}" * depth + "}"


async def test_oversized_or_deep_metadata_fails_alone_inside_a_batch(client):
    """A request with metadata nested 1,000 deep or over the size limit, sent among 30 ordinary ones
    arriving together: it gets a 422 naming the limit, the others are routed and logged, and /models
    counts exactly the decisions that exist."""
    import asyncio

    bad = [nested(1000), json.dumps({"prompt": "hi", "metadata": {"blob": "x" * 20_000}})]
    good = [json.dumps({"prompt": f"question {i}", "metadata": {"tenant": "t", "tags": [i]}}) for i in range(30)]
    responses = await asyncio.gather(*(client.post("/route", data=b) for b in [*good[:15], *bad, *good[15:]]))
    bodies = [await r.json() for r in responses]
    statuses = [r.status for r in responses]
    assert statuses[15:17] == [422, 422] and statuses[:15] + statuses[17:] == [200] * 30
    assert "nested deeper than 8" in bodies[15]["message"] and "limit of 16384" in bodies[16]["message"]
    service = client.server.app[SERVICE]
    await asyncio.wrap_future(service.store.flush())
    assert service.store.query("SELECT count(*) FROM decisions").column(0)[0].as_py() == 30
    assert sum(m["decisions"] for m in (await (await client.get("/models")).json())["models"]) == 30


@pytest.mark.parametrize("floor, message", [(False, "valid number"), (0, "greater than 0"), (0.0, "greater than 0"),
                                            (0.2, "at most"), ("0.01", "valid number")])
async def test_put_policy_refuses_a_floor_that_would_break_off_policy_estimates(client, floor, message):
    err = await (await client.put("/policy", data=json.dumps({"floor": floor}))).json()
    assert err["error"] == "validation_error" and message in err["message"]
    assert (await (await client.get("/policy")).json())["floor"] == pytest.approx(0.05 / 11)
    ok = await client.put("/policy", data=json.dumps({"floor": 1 / 11}))
    assert ok.status == 200 and (await ok.json())["floor"] == 1 / 11


async def test_a_request_that_breaks_its_batch_fails_alone(client, monkeypatch):
    """A bug that one prompt triggers in the batched routing code: the batch is rerun one by one, so
    only that request gets the 500."""
    import asyncio

    service = client.server.app[SERVICE]
    real = service.router.route_many

    def fragile(prompts, options):
        if "poison" in prompts:
            raise RuntimeError("injected bug")
        return real(prompts, options)

    monkeypatch.setattr(service.router, "route_many", fragile)
    prompts = [f"question {i}" for i in range(20)]
    prompts.insert(7, "poison")
    responses = await asyncio.gather(*(client.post("/route", data=json.dumps({"prompt": p})) for p in prompts))
    statuses = [r.status for r in responses]
    assert statuses[7] == 500 and statuses.count(200) == 20
    assert (await responses[7].json())["error"] == "internal_error"


def _arrays(service) -> dict:
    return {k: v.copy() for k, v in service.router.policy.arrays().items()}


def _unchanged(before: dict, service) -> bool:
    after = service.router.policy.arrays()
    return all((before[k] == after[k]).all() for k in before)


@pytest.mark.parametrize("body, field, message", [
    ({"signals": THUMBS_UP * 1_000}, "signals", "at most 32 items"),
    ({"cost_usd": 1e12}, "cost_usd", "the most one call of"),
    ({"input_tokens": 10**9}, "input_tokens", "feedback.max_tokens"),
    ({"output_tokens": 10**9, "signals": THUMBS_UP}, "output_tokens", "feedback.max_tokens"),
])
async def test_feedback_beyond_its_bounds_is_refused_and_changes_nothing(client, body, field, message):
    service = client.app[SERVICE]
    r = await post(client, "/route", {"prompt": "bounded", "models": ["gpt-4o-2024-08-06"]})
    before = _arrays(service)
    err = await post(client, "/feedback", {"decision_id": r["decision_id"], **body}, status=422)
    assert err["error"] == "validation_error" and any(d["field"] == field for d in err["detail"])
    assert message in err["message"]
    assert _unchanged(before, service)
    scores = (await post(client, "/route", {"prompt": "bounded", "models": ["gpt-4o-2024-08-06"]}))["scores"]
    assert scores["gpt-4o-2024-08-06"]["cost_usd"] < 1.0
    assert (await post(client, "/feedback", {"decision_id": r["decision_id"], "cost_usd": 0.02}))["cost_usd"] == 0.02


async def test_one_decision_cannot_outvote_the_rest(client):
    """Signals on one decision add up to at most feedback.max_weight_per_decision, also when part of
    them came before the decision left memory (the weight is read back from the log)."""
    service = client.app[SERVICE]
    r = await post(client, "/route", {"prompt": "vote"})
    down = [{"source": "user", "kind": "thumbs", "value": False}]
    for _ in range(3):
        await post(client, "/feedback", {"decision_id": r["decision_id"], "signals": down})
    service.pending.window.clear()
    late = await post(client, "/feedback", {"decision_id": r["decision_id"], "signals": down})
    assert late["late"] and late["quality"] == 0.0
    before = _arrays(service)
    err = await post(client, "/feedback", {"decision_id": r["decision_id"], "signals": down}, status=422)
    assert "max_weight_per_decision" in err["message"] and _unchanged(before, service)
    judge = [{"source": "judge", "kind": "score", "value": 0.1}]
    assert "weight 4" in (await post(client, "/feedback", {"decision_id": r["decision_id"], "signals": judge},
                                     status=422))["message"]


async def test_idempotency_keys_are_scoped_to_their_decision_and_a_changed_payload_conflicts(client):
    service = client.app[SERVICE]
    a, b = [(await post(client, "/route", {"prompt": f"keyed {i}"}))["decision_id"] for i in range(2)]
    body = {"signals": THUMBS_UP, "cost_usd": 0.01, "idempotency_key": "retry-1"}
    assert not (await post(client, "/feedback", {"decision_id": a, **body}))["duplicate"]
    assert not (await post(client, "/feedback", {"decision_id": b, **body}))["duplicate"]  # another decision
    assert (await post(client, "/feedback", {"decision_id": a, **body}))["duplicate"]
    changed = {**body, "signals": [{"source": "user", "kind": "thumbs", "value": False}]}
    err = await post(client, "/feedback", {"decision_id": a, **changed}, status=409)
    assert err["error"] == "idempotency_conflict" and "retry-1" in err["message"]
    service.pending.window.clear()  # the keys of a decision read back from the log are its logged ones
    assert (await post(client, "/feedback", {"decision_id": a, **body}))["duplicate"]
    await post(client, "/feedback", {"decision_id": b, **changed}, status=409)
    rows = service.store.query("SELECT decision_id, idempotency_key FROM feedback").to_pylist()
    assert sorted(r["decision_id"] for r in rows) == sorted([a, b])


async def test_a_repeated_key_sent_at_once_on_a_late_decision_is_applied_once(client):
    """The service alone keeps keys unique (the log has no index to back it): copies of one late
    feedback that arrive together are one lookup, one application and one row."""
    import asyncio

    service = client.app[SERVICE]
    r = await post(client, "/route", {"prompt": "a question asked long ago"})
    await asyncio.wrap_future(service.store.flush())
    service.pending.window.clear()
    body = {"decision_id": r["decision_id"], "signals": THUMBS_UP, "idempotency_key": "once"}
    resps = await asyncio.gather(*(client.post("/feedback", data=json.dumps(body)) for _ in range(6)))
    acks = [await x.json() for x in resps]
    assert [x.status for x in resps] == [200] * 6 and sum(not a["duplicate"] for a in acks) == 1
    assert service.router.policy.quality_observations.sum() == 1
    rows = service.store.query("SELECT idempotency_key FROM feedback").to_pylist()
    assert rows == [{"idempotency_key": "once"}]


async def test_put_policy_cost_preference_is_the_default_until_a_weight_replaces_it_and_survives_a_restart(
        aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(make_config(tmp_path), seed=0))
    view = await (await client.put("/policy", data=json.dumps({"cost_preference": 0.5}))).json()
    assert view["cost_preference"] == 0.5
    a = await post(client, "/route", {"prompt": "Explain photosynthesis."})
    b = await post(client, "/route", {"prompt": "Explain photosynthesis.", "cost_preference": 0.5})
    assert a["cost_weight"] == pytest.approx(b["cost_weight"]) and a["cost_weight"] != 100.0
    both = await client.put("/policy", data=json.dumps({"cost_preference": 0.5, "cost_weight": 3.0}))
    assert both.status == 422 and "not both" in (await both.json())["message"]
    await client.close()
    client = await aiohttp_client(create_app(make_config(tmp_path), seed=0))  # the same log, restarted
    assert (await (await client.get("/policy")).json())["cost_preference"] == 0.5
    view = await (await client.put("/policy", data=json.dumps({"cost_weight": 3.0}))).json()
    assert view["cost_weight"] == 3.0 and view["cost_preference"] is None
    assert (await post(client, "/route", {"prompt": "Explain photosynthesis."}))["cost_weight"] == 3.0
    await client.close()
    client = await aiohttp_client(create_app(make_config(tmp_path), seed=0))
    assert (await (await client.get("/policy")).json())["cost_preference"] is None
