import math

import numpy as np
import pytest
from pydantic import ValidationError

from banditroute.config import load_pool, parse_pool
from banditroute.core.reward import Feedback, Signal
from banditroute.core.router import Pending, RouteOptions, Router, RoutingError, UnknownDecision


class ListSink:
    def __init__(self):
        self.decisions, self.feedbacks = [], []

    def decision(self, d):
        self.decisions.append(d)

    def feedback(self, d, fb, result):
        self.feedbacks.append((d.decision_id, result))


@pytest.fixture
def router():
    return Router(load_pool(), seed=1, sink=ListSink())


def test_route_returns_a_complete_decision(router):
    d = router.route("Write a Python function that reverses a list")
    assert d.model in d.eligible and len(d.eligible) == 11
    assert d.propensity == pytest.approx(d.probabilities[d.eligible.index(d.model)])
    assert d.probabilities.sum() == pytest.approx(1.0)
    assert set(d.scores()) == set(d.eligible)
    s = d.scores()[d.model]
    assert s["score"] == pytest.approx(s["quality"] - d.cost_weight * s["cost_usd"])
    assert router.sink.decisions == [d]
    assert d.prompt is None and len(d.prompt_hash) == 64
    row = d.log_row()
    assert row["chosen"] == d.model and row["quality"] is None and len(row["x"]) == router.featurizer.dim


def test_options_restrict_the_choice(router):
    d = router.route("hello", RouteOptions(models=["claude-v1", "gpt-3.5-turbo-1106"]))
    assert sorted(d.eligible) == ["claude-v1", "gpt-3.5-turbo-1106"]
    d = router.route("hello", RouteOptions(require=["json"]))
    assert sorted(d.eligible) == ["gpt-3.5-turbo-1106", "gpt-4-1106-preview"]
    d = router.route("hello " * 100, RouteOptions(max_cost_usd=0.0002))
    assert all(v["cost_usd"] <= 0.0002 for v in d.scores().values())
    assert "gpt-4-1106-preview" not in d.eligible
    d = router.route("hello", RouteOptions(cost_weight=0.0))
    assert d.cost_weight == 0.0


def test_bad_route_requests_get_clear_errors(router):
    with pytest.raises(RoutingError, match="unknown models: gpt-9"):
        router.route("hi", RouteOptions(models=["gpt-9"]))
    with pytest.raises(RoutingError, match="non-empty"):
        router.route("   ")
    with pytest.raises(RoutingError, match="capabilities"):
        router.route("hi", RouteOptions(require=["telepathy"]))
    with pytest.raises(RoutingError, match="cost at most"):
        router.route("hi", RouteOptions(max_cost_usd=1e-12))
    with pytest.raises(ValidationError):
        RouteOptions(cost_weight=math.nan)
    with pytest.raises(ValidationError):
        RouteOptions(cost_weight=-1)
    with pytest.raises(ValidationError):
        RouteOptions(models=[])


def test_feedback_updates_the_chosen_model(router):
    d = router.route("Write a Python function that sorts")
    arm = router.policy.models.index(d.model)
    before = router.policy.quality_observations[arm]
    r = router.feedback(d.decision_id, Feedback(
        signals=[Signal(source="user", kind="thumbs", value=True), Signal(source="judge", kind="rating", value=3)],
        input_tokens=100, output_tokens=50))
    assert router.policy.quality_observations[arm] == before + 2
    assert r.quality == pytest.approx((1.0 * 1.0 + 0.5 * 0.8) / 1.8)
    spec = router.pool.spec(d.model)
    assert r.cost_usd == pytest.approx(spec.price_usd(100, 50))
    # a second feedback adds signals but never counts the cost twice
    r2 = router.feedback(d.decision_id, Feedback(signals=[Signal(source="user", kind="quality", value=0.0)], cost_usd=9.0))
    pending = router.pending[d.decision_id]
    assert r2.cost_usd is None and pending.cost_usd == pytest.approx(spec.price_usd(100, 50))
    assert len(pending.signals) == 3
    d.join(pending)
    assert d.log_row()["n_signals"] == 3 and d.log_row()["cost_usd"] == pending.cost_usd
    assert len(router.sink.feedbacks) == 2


def test_unknown_decision_and_bounded_pending():
    pool = parse_pool({"models": [{"name": "a"}, {"name": "b"}], "max_pending": 3})
    router = Router(pool, seed=0)
    with pytest.raises(UnknownDecision):
        router.feedback("nope", Feedback())
    ids = [router.route(f"prompt {i}").decision_id for i in range(5)]
    assert list(router.pending) == ids[2:]
    with pytest.raises(UnknownDecision):
        router.feedback(ids[0], Feedback())


def test_recalled_decisions_do_not_push_recent_ones_out_of_the_window(monkeypatch):
    monkeypatch.setattr("banditroute.core.router.RECALLED", 2)
    pool = parse_pool({"models": [{"name": "a"}, {"name": "b"}], "max_pending": 3})
    router = Router(pool, seed=0)
    decisions = [router.route(f"prompt {i}") for i in range(6)]
    for d in decisions[:3]:  # a sweep of late feedback over the three that left the window
        router.recall(Pending(d.decision_id, d.model, d.arm, d.context))
    assert list(router.pending) == [d.decision_id for d in decisions[3:]]
    assert list(router.recalled) == [d.decision_id for d in decisions[1:3]]
    assert router.held(decisions[2].decision_id) is router.recalled[decisions[2].decision_id]
    assert router.held(decisions[0].decision_id) is None
    router.feedback(decisions[2].decision_id, Feedback(signals=[Signal(source="user", kind="thumbs", value=True)]))


def test_same_seed_same_decisions():
    a = [Router(load_pool(), seed=5).route(f"p {i}") for i in range(1)]
    b = [Router(load_pool(), seed=5).route(f"p {i}") for i in range(1)]
    assert [(d.decision_id, d.model) for d in a] == [(d.decision_id, d.model) for d in b]
    np.testing.assert_array_equal(a[0].probabilities, b[0].probabilities)


def test_route_many_serves_each_request_on_its_own_terms(router):
    prompts = ["Write a Python function", "  ", "hi", "Tell me a story", "hi", "What is 2+2?"]
    options = [RouteOptions(), RouteOptions(), RouteOptions(models=["gpt-9"]),
               RouteOptions(models=["claude-v1", "gpt-3.5-turbo-1106"], cost_weight=0.0),
               RouteOptions(require=["json"]), RouteOptions(cost_weight=1e6)]
    out = router.route_many(prompts, options)
    assert isinstance(out[1], RoutingError) and "non-empty" in str(out[1])
    assert isinstance(out[2], RoutingError) and "gpt-9" in str(out[2])
    ok = [d for d in out if not isinstance(d, RoutingError)]
    assert len(ok) == 4 and len({d.decision_id for d in ok}) == 4
    assert set(out[3].eligible) == {"claude-v1", "gpt-3.5-turbo-1106"} and out[3].cost_weight == 0.0
    assert set(out[4].eligible) == {"gpt-4-1106-preview", "gpt-3.5-turbo-1106"}
    for d in ok:  # every decision is complete, logged and pending, its propensity its own probability
        assert d.propensity == d.probabilities[d.eligible.index(d.model)]
        assert d.probabilities.sum() == pytest.approx(1.0) and d.decision_id in router.pending
        np.testing.assert_array_equal(d.context.x, router.featurizer.transform(prompts[out.index(d)]))
    assert [d.decision_id for d in router.sink.decisions] == [d.decision_id for d in ok]
    cheapest = min(out[5].eligible, key=lambda m: out[5].pred_cost[out[5].eligible.index(m)])
    assert out[5].probabilities[out[5].eligible.index(cheapest)] == pytest.approx(0.9)  # all but the floors


def test_route_is_a_batch_of_one():
    """A single route and a batch of one consume the same random numbers (simulations stay reproducible)."""
    a = Router(load_pool(), seed=9).route("Explain step by step", RouteOptions(cost_weight=3.0))
    b = Router(load_pool(), seed=9).route_many(["Explain step by step"], [RouteOptions(cost_weight=3.0)])[0]
    assert (a.decision_id, a.model) == (b.decision_id, b.model)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
