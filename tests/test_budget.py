"""Budgets with pacing: the controller, the router's eligibility under a budget, the server (burst,
restart, /budgets, metrics, 429), rules that name a budget, the gateway's refunds and simulate."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from banditroute.config import ConfigError, parse_settings
from banditroute.core.budget import Budgets, Pacer, period_bounds
from banditroute.core.reward import Feedback
from banditroute.core.router import Router, RouteRequest
from banditroute.errors import BudgetExhausted
from banditroute.http.app import create_app
from banditroute.http.handlers import SERVICE
from banditroute.log.store import Store
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.simulate import budget_per_request, simulate
from banditroute.service.service import Service

MODELS = [{"name": m, "input_price_per_mtok": p, "output_price_per_mtok": 4 * p}
          for m, p in (("big", 10.0), ("mid", 1.0), ("small", 0.1))]


def settings(budgets: list[dict], rules: list | None = None, **extra) -> dict:
    return {"policy": {"warm_start": "none"}, "models": MODELS, "budgets": budgets, "rules": rules or [], **extra}


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_calendar_periods_are_utc_hours_days_and_months():
    t = datetime(2026, 2, 14, 13, 45, 7, tzinfo=UTC).timestamp()
    assert period_bounds("hour", t) == (datetime(2026, 2, 14, 13, tzinfo=UTC).timestamp(),
                                        datetime(2026, 2, 14, 14, tzinfo=UTC).timestamp())
    assert period_bounds("day", t)[1] - period_bounds("day", t)[0] == 86400
    assert period_bounds("month", t) == (datetime(2026, 2, 1, tzinfo=UTC).timestamp(),
                                         datetime(2026, 3, 1, tzinfo=UTC).timestamp())


@pytest.mark.parametrize("budget, message", [
    ({"name": "b", "usd": 0}, "budgets.0.usd"),
    ({"name": "b", "usd": 1, "tenant": "header.x"}, "tenant must be user, api_key or metadata.FIELD"),
    ({"name": "b", "usd": 1, "period": "week"}, "budgets.0.period"),
])
def test_a_bad_budget_fails_the_configuration_with_its_place_named(budget, message):
    with pytest.raises(ConfigError, match=message):
        parse_settings(settings([budget]))
    with pytest.raises(ConfigError, match="no budget named 'nope'"):
        parse_settings(settings([], [{"name": "r", "budget": "nope"}]))


def test_the_multiplier_rises_while_spend_runs_ahead_and_falls_while_behind():
    p = Pacer("b", "t", amount=100.0, start=0.0, end=100.0, step=0.05, prior_rate=1.0)
    for t in range(10):  # each request expected to cost 3 while 1 is the pace
        p.charge(float(t), expected=3.0, cost=3.0, weight=1.0)
    assert p.preference > 0.5 and p.spent == 30.0
    high = p.preference
    for t in range(10, 20):
        p.charge(float(t), expected=0.1, cost=0.1, weight=1.0)
    assert p.preference < high
    p.report(charged=0.1, cost=0.3)  # a reported cost corrects the spend and the calibration
    assert p.spent == pytest.approx(31.2) and p.calibration > 1.0


def test_the_reserve_and_the_floor_leave_out_what_the_budget_cannot_pay_for():
    cost = np.array([1.0, 0.1, 0.01])
    mask = np.ones(3, dtype=bool)
    roomy = Pacer("b", "t", amount=1000.0, start=0.0, end=100.0, step=0.05, prior_rate=1.0)
    assert roomy.affordable(0.0, cost, mask, floor=0.01).tolist() == [True, True, True]
    tight = Pacer("b", "t", amount=1.2, start=0.0, end=100.0, step=0.05, prior_rate=1.0)  # 0.012 per request
    assert tight.affordable(0.0, cost, mask, floor=0.01).tolist() == [False, True, True]
    assert tight.affordable(0.0, cost, mask, floor=0.0).tolist() == [False, True, True]  # the reserve alone
    tight.spent = 1.195
    assert tight.affordable(99.0, cost, mask, 0.01) is None  # less than the cheapest is left


def test_a_model_with_no_cost_estimate_neither_skews_the_calibration_nor_makes_the_reserve_free():
    p = Pacer("b", "t", amount=1.2, start=0.0, end=100.0, step=0.05, prior_rate=1.0)  # 0.012 per request
    p.charge(0.0, expected=0.0, cost=0.0, weight=1.0)  # an untried, unpriced model: predicted 0
    p.report(charged=0.0, cost=0.5)  # the call cost 0.5: the spend counts it, the calibration does not
    assert p.spent == pytest.approx(0.5) and p.calibration == 1.0
    p.report(charged=0.01, cost=0.02)
    assert p.calibration > 1.0
    # 0.7 left for 99 requests: reckoned at the cheapest estimated cost (0.01) the reserve keeps only that
    # model and the untried one (reckoned at the untried model's 0, the rest of the period would look
    # free), and with no slack left to explore with, the floor may only go to the untried model
    cost, mask = np.array([0.3, 0.01, 0.0]), np.ones(3, dtype=bool)
    q = Pacer("b", "t", amount=1.2, start=0.0, end=100.0, step=0.05, prior_rate=1.0, spent=0.5, requests=1)
    assert q.affordable(1.0, cost, mask, floor=0.0).tolist() == [False, True, True]  # the reserve alone
    assert q.affordable(1.0, cost, mask, floor=0.01).tolist() == [False, False, True]
    roomy = Pacer("b", "t", amount=100.0, start=0.0, end=100.0, step=0.05, prior_rate=1.0)
    assert roomy.affordable(0.0, cost, mask, floor=0.01).tolist() == [True, True, True]


def test_a_router_under_a_budget_spends_what_it_is_given_and_logs_budget_tenant_and_pace():
    clock = Clock(0.0)
    cfg = parse_settings(settings([{"name": "b", "usd": 0.05, "tenant": "user"}]))
    router = Router(cfg, seed=1, budgets=Budgets(cfg.budgets, clock=clock, window=(0.0, 400.0), rate=1.0))
    spent = 0.0
    for t in range(400):
        clock.now = float(t)
        d = router.route("Summarise the following report in three bullet points.", RouteRequest(
            prompt="x", user="alice"))
        cost = float(d.pred_cost[d.eligible.index(d.model)])
        router.apply(d.pending(), Feedback(cost_usd=cost))
        spent += cost
        assert (d.budget, d.tenant) == ("b", "alice") and 0.0 < d.pace < 1.0
    assert 0.9 * 0.05 <= spent <= 0.05 * 1.0001
    # another user and a request without one are charged to their own budget and to none
    assert router.route("hi", RouteRequest(prompt="x", user="bob")).tenant == "bob"
    assert router.route("hi", RouteRequest(prompt="x")).budget is None


def test_the_budget_prices_every_request_of_a_tenant_alike_whatever_its_length():
    """The multiplier is one price per USD (a Lagrange multiplier of total spend): a prompt far
    longer, whose models' predicted costs spread more than twice as wide, gets the same cost weight from the
    budget, not a fraction of it (a weight relative to each request's own spread would let long prompts
    take the budget whatever they gain)."""
    clock = Clock(0.0)
    cfg = parse_settings(settings([{"name": "b", "usd": 1000.0, "tenant": "user"}]))
    router = Router(cfg, seed=1, budgets=Budgets(cfg.budgets, clock=clock, window=(0.0, 1000.0), rate=1.0))
    short, long = "Name a prime number.", "Name a prime number. " * 300
    def spread(d):
        return float(d.pred_cost.max() - d.pred_cost.min())

    first = router.route(short, RouteRequest(prompt="x", user="u"))  # the period's first sets the reference
    pacer = router.budgets.pacers["b", "u"]
    a, b = router.route_many([short, long], [RouteRequest(prompt="x", user="u")] * 2)
    assert spread(b) > 2 * spread(a)
    assert a.cost_weight == b.cost_weight > 0
    assert pacer.requests == 3 and pacer.spread_sum == pytest.approx(spread(first) + spread(a) + spread(b))


def test_refuse_says_429_with_retry_after_and_cheapest_serves_the_cheapest():
    clock = Clock(0.0)
    for mode in ("refuse", "cheapest"):
        cfg = parse_settings(settings([{"name": "b", "usd": 1e-9, "when_exhausted": mode}]))
        router = Router(cfg, seed=1, budgets=Budgets(cfg.budgets, clock=clock, window=(0.0, 50.0), rate=1.0))
        if mode == "refuse":
            with pytest.raises(BudgetExhausted) as err:
                router.route("hello", RouteRequest(prompt="x", user="u"))
            assert err.value.status == 429 and err.value.headers() == {"Retry-After": "50"}
            assert err.value.body()["error"] == "budget_exhausted"
        else:
            d = router.route("hello", RouteRequest(prompt="x", user="u"))
            assert d.model == "small" and d.propensity == 1.0 and d.eligible == ["small"]
        assert router.budgets.view()[0]["exhausted_requests"] == 1


def test_a_rule_charges_its_requests_to_the_budget_it_names():
    cfg = parse_settings(settings(
        [{"name": "per-user", "usd": 1.0}, {"name": "team", "usd": 5.0, "tenant": "metadata.team"}],
        [{"name": "teams pay as teams", "when": {"metadata": {"billing": "team"}}, "budget": "team"}]))
    router = Router(cfg, seed=1)
    d = router.route("hi", RouteRequest(prompt="x", user="alice", metadata={"billing": "team", "team": "red"}))
    assert (d.budget, d.tenant, d.rule) == ("team", "red", "teams pay as teams")
    d = router.route("hi", RouteRequest(prompt="x", user="alice", metadata={"team": "red"}))
    assert (d.budget, d.tenant) == ("per-user", "alice")


def test_a_new_period_starts_from_zero_and_keeps_the_multiplier():
    clock = Clock(datetime(2026, 3, 1, 10, 59, tzinfo=UTC).timestamp())
    cfg = parse_settings(settings([{"name": "b", "usd": 0.001, "period": "hour"}]))
    router = Router(cfg, seed=1, budgets=Budgets(cfg.budgets, clock=clock))
    for _ in range(20):
        router.route("Explain quantum computing in detail.", RouteRequest(prompt="x", user="u"))
    before = router.budgets.pacers["b", "u"]
    assert before.spent > 0
    clock.now += 120.0  # 11:01, the next hour
    router.route("hi", RouteRequest(prompt="x", user="u"))
    after = router.budgets.pacers["b", "u"]
    assert after is not before and after.requests == 1 and after.start == before.end
    assert after.prior_rate == pytest.approx(20 / 3600)


@pytest.mark.parametrize("priced", [True, False])
def test_budget_state_survives_a_restart(tmp_path, priced):
    path = str(tmp_path / "r.duckdb")
    models = MODELS if priced else [{"name": m["name"]} for m in MODELS]  # unpriced: first predictions are 0
    cfg = parse_settings(settings([{"name": "b", "usd": 10.0, "period": "month"}], models=models))
    service = Service(cfg, Store(path, flush_interval=3600.0, group_commit=False), seed=1)
    for i in range(30):
        (d,) = service.route_many([RouteRequest(prompt=f"question {i}", user="alice" if i % 3 else "bob")])
        if i % 2:  # half report a cost, the others stay charged at their prediction
            service.record_feedback(service.pending.get(d.decision_id), Feedback(cost_usd=0.002))
    before = {(v["tenant"]): v for v in service.router.budgets.view()}
    calibration = {key[1]: p.calibration for key, p in service.router.budgets.pacers.items()}
    spreads = {key[1]: p.spread_sum for key, p in service.router.budgets.pacers.items()}
    service.store.flush().result()
    service.store.close()
    again = Service(cfg, Store(path, flush_interval=3600.0, group_commit=False), seed=2)
    again.recover()
    after = {(v["tenant"]): v for v in again.router.budgets.view()}
    assert set(after) == {"alice", "bob"}
    for tenant in after:
        assert after[tenant]["spent_usd"] == pytest.approx(before[tenant]["spent_usd"], rel=1e-9)
        assert after[tenant]["requests"] == before[tenant]["requests"]
        assert after[tenant]["cost_preference"] == pytest.approx(before[tenant]["cost_preference"], rel=1e-9)
    assert {key[1]: p.calibration for key, p in again.router.budgets.pacers.items()} == pytest.approx(calibration)
    assert {key[1]: p.spread_sum for key, p in again.router.budgets.pacers.items()} == pytest.approx(spreads)
    if not priced:  # a cost reported for a decision predicted at 0 corrected the spend, not the calibration
        assert any(c != 1.0 for c in calibration.values())
    again.store.close()


async def test_a_burst_in_a_running_server_stays_within_the_budget_and_shows_in_budgets_and_metrics(
        aiohttp_client, tmp_path):
    cfg = parse_settings(settings([{"name": "daily", "usd": 0.01, "when_exhausted": "refuse"}],
                                  storage={"db": str(tmp_path / "r.duckdb")}))
    client = await aiohttp_client(create_app(cfg, seed=0))
    prompt = "Write a detailed essay about the history of the printing press. " * 5
    resps = await asyncio.gather(*(client.post("/route", data=json.dumps({"prompt": prompt, "user": "acme"}))
                                   for _ in range(300)))
    answered = [await r.json() for r in resps if r.status == 200]
    refused = [r for r in resps if r.status == 429]
    assert len(answered) + len(refused) == 300 and refused and answered
    body = await refused[0].json()
    assert body["error"] == "budget_exhausted" and "acme" in body["message"] and "Retry-After" in refused[0].headers
    predicted = sum(a["scores"][a["model"]]["cost_usd"] for a in answered)
    assert predicted <= 0.01 + 1e-12
    view = (await (await client.get("/budgets")).json())["budgets"]
    assert len(view) == 1 and view[0]["tenant"] == "acme" and view[0]["requests"] == len(answered)
    assert view[0]["spent_usd"] == pytest.approx(predicted) and view[0]["exhausted_requests"] >= len(refused)
    text = await (await client.get("/metrics")).text()
    samples = {(s.name, s.labels.get("tenant")): s.value for f in text_string_to_metric_families(text)
               for s in f.samples}
    assert samples["banditroute_budget_spent_usd", "acme"] == pytest.approx(predicted)
    assert samples["banditroute_budget_amount_usd", "acme"] == 0.01
    service = client.app[SERVICE]
    await asyncio.wrap_future(service.store.flush())
    logged = service.store.query("SELECT count(*) AS n FROM decisions WHERE budget = 'daily' AND tenant = 'acme'")
    assert logged.to_pylist() == [{"n": len(answered)}]


async def test_budgets_lists_narrow_by_budget_and_tenant_and_reject_what_is_not_configured(aiohttp_client, tmp_path):
    cfg = parse_settings(settings([{"name": "daily", "usd": 1.0}, {"name": "team", "usd": 5.0,
                                                                   "tenant": "metadata.team"}],
                                  storage={"db": str(tmp_path / "r.duckdb")}))
    client = await aiohttp_client(create_app(cfg, seed=0))
    for body in ({"prompt": "hi", "user": "alice"}, {"prompt": "hi", "user": "bob"},
                 {"prompt": "hi", "metadata": {"team": "red"}}):
        assert (await client.post("/route", data=json.dumps(body))).status == 200

    async def listed(query: str) -> list[tuple[str, str]]:
        r = await client.get("/budgets" + query)
        assert r.status == 200
        return [(b["budget"], b["tenant"]) for b in (await r.json())["budgets"]]

    assert await listed("") == [("daily", "alice"), ("daily", "bob"), ("team", "red")]
    assert await listed("?budget=daily") == [("daily", "alice"), ("daily", "bob")]
    assert await listed("?budget=daily&tenant=bob") == [("daily", "bob")]
    assert await listed("?tenant=red") == [("team", "red")]
    assert await listed("?tenant=nobody") == []
    for query, named in (("?budget=weekly", "weekly"), ("?tenants=bob", "tenants")):
        r = await client.get("/budgets" + query)
        assert r.status == 422 and named in (await r.json())["message"]


async def test_budget_metrics_keep_a_series_for_the_biggest_spenders_and_sum_the_rest(aiohttp_client, tmp_path):
    cfg = parse_settings(settings([{"name": "daily", "usd": 1.0, "metrics_tenants": 1}],
                                  storage={"db": str(tmp_path / "r.duckdb")}))
    client = await aiohttp_client(create_app(cfg, seed=0))
    long_prompt = "Write a detailed essay about the history of the printing press. " * 20
    for user, prompt, n in (("alice", long_prompt, 3), ("bob", "hi", 1), ("carol", "hi", 1)):
        for _ in range(n):
            assert (await client.post("/route", data=json.dumps({"prompt": prompt, "user": user}))).status == 200
    view = {b["tenant"]: b for b in (await (await client.get("/budgets")).json())["budgets"]}
    text = await (await client.get("/metrics")).text()
    samples = {(s.name, s.labels.get("tenant")): s.value for f in text_string_to_metric_families(text)
               for s in f.samples if s.name.startswith("banditroute_budget")}
    tenants = {t for (_, t) in samples if t is not None}
    assert tenants == {"alice", "_other"}  # alice spent the most; bob and carol are summed
    assert samples["banditroute_budget_spent_usd", "alice"] == pytest.approx(view["alice"]["spent_usd"])
    assert samples["banditroute_budget_spent_usd", "_other"] == pytest.approx(
        view["bob"]["spent_usd"] + view["carol"]["spent_usd"])
    assert samples["banditroute_budget_amount_usd", "_other"] == pytest.approx(2.0)
    assert ("banditroute_budget_pace", "_other") not in samples
    assert samples["banditroute_budget_tenants", None] == 3


def test_simulate_under_a_budget_reports_it_and_spends_close_to_it(outcomes_path):
    outcomes = load_outcomes(outcomes_path)
    unconstrained = simulate(outcomes, seed=1, cost_weight=0.0)
    per_request = 0.3 * unconstrained["online"]["cost_usd"] / unconstrained["online"]["n"]
    r = simulate(outcomes, seed=1, budget=budget_per_request(per_request))
    b = r["budget"]
    assert b["usd_per_request"] == pytest.approx(per_request) and b["refused"] == 0
    assert 0.9 <= b["spent_share"] <= 1.02
    assert r["online"]["cost_usd"] == pytest.approx(b["spent_usd"])
    refused = simulate(outcomes, seed=1, cost_weight=0.0, budget=budget_per_request(per_request, "refuse", pacing=False))
    assert refused["budget"]["refused"] > 0 and refused["budget"]["spent_share"] <= 1.0


def test_simulate_cli_runs_a_budget_and_a_cascade(capsys, outcomes_path):
    from banditroute.cli.main import main

    assert main(["simulate", str(outcomes_path), "--seed", "2", "--budget-usd-per-request", "0.001", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["budget"]["usd_per_request"] == 0.001 and out["budget"]["spent_share"] <= 1.05
    assert main(["simulate", str(outcomes_path), "--cascade-to", "big", "--false-pass", "0.2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["n"] > 0
    assert main(["simulate", str(outcomes_path), "--cascade-to", "nope"]) != 0


def test_tenants_come_from_the_api_key_as_a_hash_or_from_a_metadata_field():
    cfg = parse_settings(settings([{"name": "keys", "usd": 1.0, "tenant": "api_key"},
                                   {"name": "teams", "usd": 1.0, "tenant": "metadata.team"}]))
    router = Router(cfg, seed=1)
    keyed = RouteRequest(prompt="x", metadata={"team": "red"})
    keyed.set_api_key("sk-secret-key")
    d = router.route("hi", keyed)
    assert d.budget == "keys" and d.tenant.startswith("key:") and "sk-secret" not in d.tenant
    d = router.route("hi", RouteRequest(prompt="x", metadata={"team": 7}))
    assert (d.budget, d.tenant) == ("teams", "7")
    assert router.route("hi", RouteRequest(prompt="x", metadata={"team": {"nested": 1}})).budget is None
    long = router.route("hi", RouteRequest(prompt="x", metadata={"team": "x" * 10_000}))  # hostile: kilobytes
    assert long.budget == "teams" and long.tenant.startswith("sha256:") and len(long.tenant) == 7 + 64
    assert router.route("hi", RouteRequest(prompt="x", metadata={"team": "x" * 10_000})).tenant == long.tenant


def test_tenants_are_bounded_new_ones_beyond_the_bound_are_refused_until_old_periods_end():
    clock = Clock(datetime(2026, 3, 1, 10, 0, tzinfo=UTC).timestamp())
    cfg = parse_settings(settings([{"name": "b", "usd": 1.0, "period": "hour", "max_tenants": 3,
                                    "when_exhausted": "refuse"}]))
    router = Router(cfg, seed=1, budgets=Budgets(cfg.budgets, clock=clock))
    for user in ("u1", "u2", "u3"):
        router.route("hi", RouteRequest(prompt="x", user=user))
    with pytest.raises(BudgetExhausted, match="tracks 3 tenants"):
        router.route("hi", RouteRequest(prompt="x", user="u4"))
    clock.now += 3600.0  # the next hour: the old periods are pruned, their multipliers carried (bounded too)
    for user in ("u4", "u5", "u6"):
        router.route("hi", RouteRequest(prompt="x", user=user))
    assert len(router.budgets.pacers) == 3 and len(router.budgets.carried) <= 3
