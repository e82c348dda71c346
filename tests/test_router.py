import copy
import hashlib
import hmac
import math

import numpy as np
import pytest
from pydantic import ValidationError

from banditroute.config import load_settings, parse_settings
from banditroute.core.reward import Feedback, Signal
from banditroute.core.router import RouteOptions, Router, sample
from banditroute.errors import RoutingError
from banditroute.service.pending import PendingDecisions


@pytest.fixture
def router():
    return Router(load_settings(), seed=1)


def test_route_returns_a_complete_decision(router):
    d = router.route("Write a Python function that reverses a list")
    assert d.model in d.eligible and len(d.eligible) == 11
    assert d.propensity == pytest.approx(d.probabilities[d.eligible.index(d.model)])
    assert d.probabilities.sum() == pytest.approx(1.0)
    assert set(d.scores()) == set(d.eligible)
    s = d.scores()[d.model]
    assert s["score"] == pytest.approx(s["quality"] - d.cost_weight * s["cost_usd"])
    assert d.prompt is None and len(d.prompt_hash) == 64
    p = d.pending()
    assert (p.decision_id, p.model, p.arm, p.quality) == (d.decision_id, d.model, router.policy.models.index(d.model), None)


@pytest.mark.parametrize("key", [b"", b"k", b"team-secret", bytes(range(64)), bytes(range(200))])
def test_prompt_hash_is_rfc_2104_hmac_sha256(key):
    """The precomputed pads give HMAC-SHA256 exactly, for keys shorter than, equal to and longer than
    SHA-256's 64-byte block (hashed first), and on repeated use."""
    router = Router(load_settings(), seed=1, hash_key=key)
    for prompt in ["", "hello", "é" * 500, "x" * 10_000, "hello"]:
        assert router.prompt_hash(prompt) == hmac.new(key, prompt.encode(), hashlib.sha256).hexdigest()


def test_the_api_key_is_never_read_from_a_body_and_survives_copies():
    with pytest.raises(ValidationError):
        RouteOptions.model_validate({"api_key": "stolen"})
    with pytest.raises(ValidationError):
        RouteOptions.model_validate({"_api_key": "stolen"})
    opts = RouteOptions.model_validate({"user": "u"})
    assert opts.api_key is None
    opts.set_api_key("sk-1")
    assert opts.model_copy(update={"models": ["a"]}).api_key == "sk-1" and "api_key" not in opts.model_dump()
    assert opts.model_copy(deep=True).api_key == "sk-1" and copy.deepcopy(opts).api_key == "sk-1"


def test_options_restrict_the_choice(router):
    d = router.route("hello", RouteOptions(models=["claude-3-5-haiku-20241022", "gpt-4o-mini-2024-07-18"]))
    assert sorted(d.eligible) == sorted(["claude-3-5-haiku-20241022", "gpt-4o-mini-2024-07-18"])
    d = router.route("hello", RouteOptions(require=["json"]))
    assert sorted(d.eligible) == sorted(["gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06"])
    d = router.route("hello " * 100, RouteOptions(max_cost_usd=0.0002))
    assert all(v["cost_usd"] <= 0.0002 for v in d.scores().values())
    assert "gpt-4o-2024-08-06" not in d.eligible
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
    pending = d.pending()
    r = router.apply(pending, Feedback(
        signals=[Signal(source="user", kind="thumbs", value=True), Signal(source="judge", kind="rating", value=3)],
        input_tokens=100, output_tokens=50))
    assert router.policy.quality_observations[arm] == before + 2
    assert r.quality == pytest.approx((1.0 * 1.0 + 0.5 * 0.8) / 1.8)
    spec = router.pool.spec(d.model)
    assert r.cost_usd == pytest.approx(spec.price_usd(100, 50))
    # a second feedback adds signals but never counts the cost twice
    r2 = router.apply(pending, Feedback(signals=[Signal(source="user", kind="quality", value=0.0)], cost_usd=9.0))
    assert r2.cost_usd is None and pending.cost_usd == pytest.approx(spec.price_usd(100, 50))
    assert len(pending.signals) == 3 and r2.quality == pytest.approx((1.0 + 0.4 + 0.0) / 2.8)


def test_the_pending_window_is_bounded():
    router = Router(parse_settings({"models": [{"name": "a"}, {"name": "b"}]}), seed=0)
    held = PendingDecisions(window=3)
    ids = []
    for i in range(5):
        d = router.route(f"prompt {i}")
        held.remember(d.pending())
        ids.append(d.decision_id)
    assert list(held.window) == ids[2:]
    assert held.get(ids[0]) is None and held.get("nope") is None and held.get(ids[4]).decision_id == ids[4]


def test_recalled_decisions_do_not_push_recent_ones_out_of_the_window(monkeypatch):
    monkeypatch.setattr("banditroute.service.pending.RECALLED", 2)
    router = Router(parse_settings({"models": [{"name": "a"}, {"name": "b"}]}), seed=0)
    held = PendingDecisions(window=3)
    decisions = [router.route(f"prompt {i}") for i in range(6)]
    for d in decisions[3:]:
        held.remember(d.pending())
    for d in decisions[:3]:  # a sweep of late feedback over the three that left the window
        held.recall(d.pending())
    assert list(held.window) == [d.decision_id for d in decisions[3:]]
    assert list(held.recalled) == [d.decision_id for d in decisions[1:3]]
    assert held.get(decisions[2].decision_id) is held.recalled[decisions[2].decision_id]
    assert held.get(decisions[0].decision_id) is None


def test_same_seed_same_decisions():
    a = [Router(load_settings(), seed=5).route(f"p {i}") for i in range(1)]
    b = [Router(load_settings(), seed=5).route(f"p {i}") for i in range(1)]
    # an id's first 48 bits are its decision's time; the rest come from the seeded generator
    assert [(d.decision_id[12:], d.model) for d in a] == [(d.decision_id[12:], d.model) for d in b]
    np.testing.assert_array_equal(a[0].probabilities, b[0].probabilities)


def test_route_many_serves_each_request_on_its_own_terms(router):
    prompts = ["Write a Python function", "  ", "hi", "Tell me a story", "hi", "What is 2+2?"]
    options = [RouteOptions(), RouteOptions(), RouteOptions(models=["gpt-9"]),
               RouteOptions(models=["claude-3-5-haiku-20241022", "gpt-4o-mini-2024-07-18"], cost_weight=0.0),
               RouteOptions(require=["json"]), RouteOptions(cost_weight=1e6)]
    out = router.route_many(prompts, options)
    assert isinstance(out[1], RoutingError) and "non-empty" in str(out[1])
    assert isinstance(out[2], RoutingError) and "gpt-9" in str(out[2])
    ok = [d for d in out if not isinstance(d, RoutingError)]
    assert len(ok) == 4 and len({d.decision_id for d in ok}) == 4
    assert set(out[3].eligible) == {"claude-3-5-haiku-20241022", "gpt-4o-mini-2024-07-18"} and out[3].cost_weight == 0.0
    assert set(out[4].eligible) == {"gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18"}
    for d in ok:  # every decision is complete, logged and pending, its propensity its own probability
        assert d.propensity == d.probabilities[d.eligible.index(d.model)]
        assert d.probabilities.sum() == pytest.approx(1.0)
        np.testing.assert_array_equal(d.context.x, router.featurizer.transform(prompts[out.index(d)]))
    cheapest = min(out[5].eligible, key=lambda m: out[5].pred_cost[out[5].eligible.index(m)])
    floors = (len(out[5].eligible) - 1) * router.policy.floor
    assert out[5].probabilities[out[5].eligible.index(cheapest)] == pytest.approx(1.0 - floors)  # all but the floors


def test_route_is_a_batch_of_one():
    """A single route and a batch of one consume the same random numbers (simulations stay reproducible)."""
    a = Router(load_settings(), seed=9).route("Explain step by step", RouteOptions(cost_weight=3.0))
    b = Router(load_settings(), seed=9).route_many(["Explain step by step"], [RouteOptions(cost_weight=3.0)])[0]
    assert (a.decision_id[12:], a.model) == (b.decision_id[12:], b.model)  # the ids' times aside
    np.testing.assert_array_equal(a.probabilities, b.probabilities)


def test_sampling_one_row_draws_what_the_batch_form_draws():
    """A batch of one row is sampled in Python: the same index, and the generator left in the same
    state, as the same row inside a batch (numpy's inverse CDF), zero-probability models included."""
    gen = np.random.default_rng(7)
    for trial in range(3000):
        k = int(gen.integers(1, 12))
        p = gen.random(k) ** 3
        p[gen.random(k) < (0.4 if trial % 2 else 0.0)] = 0.0
        p[int(gen.integers(k))] += 1e-3
        p /= p.sum()
        seed = int(gen.integers(1 << 30))
        one, two = np.random.default_rng(seed), np.random.default_rng(seed)
        alone = sample(p[None], one)
        in_batch = sample(np.vstack([p, np.full(k, 1.0 / k)]), two)
        assert alone.tolist() == in_batch[:1].tolist() and p[alone[0]] > 0
        assert one.random() == np.random.default_rng(seed).random(2)[1]  # one draw taken, as by a batch of one
