"""The scale-free cost knob: cost_preference as a cost weight per request."""

from __future__ import annotations

import numpy as np
import pytest

from banditroute.config import parse_settings
from banditroute.core.preference import preference_for_weight, preference_weights
from banditroute.core.router import Router, RouteRequest


def test_the_weight_puts_the_requests_price_spread_against_the_quality_scale():
    cost = np.array([[0.001, 0.004, 0.011], [0.002, 0.002, 0.002], [0.001, 0.004, 0.011]])
    mask = np.array([[True, True, True], [True, True, True], [False, True, False]])
    w = preference_weights(np.array([0.5, 0.5, 0.5]), cost, mask, 0.1)
    assert w[0] == pytest.approx(0.1 / 0.010)  # at 0.5 the whole spread is worth the scale
    assert w[1] == 0.0 and w[2] == 0.0  # nothing to trade: equal prices, or one model
    w = preference_weights(np.array([0.0, 0.75, 1.0]), cost[[0, 0, 0]], None, 0.1)
    assert w[0] == 0.0 and w[1] == pytest.approx(0.3 / 0.010) and np.isfinite(w[2]) and w[2] > 1e9
    assert preference_for_weight(w[1], 0.010, 0.1) == pytest.approx(0.75)


def pool(scale: float):
    return parse_settings({"policy": {"warm_start": "none"}, "models": [
        {"name": n, "input_price_per_mtok": p * scale, "output_price_per_mtok": 4 * p * scale}
        for n, p in (("big", 10.0), ("mid", 1.0), ("small", 0.1))]})


def test_the_same_preference_means_the_same_choice_whatever_the_pools_prices():
    """Prices 30 times lower: a cost weight stops counting, a preference does not change."""
    prompt = "Summarise the causes of the First World War."
    out = {}
    for scale in (1.0, 1 / 30):
        for opts in ({"cost_preference": 0.5}, {"cost_weight": 100.0}):
            router = Router(pool(scale), seed=7)
            d = router.route_many([prompt], [RouteRequest(prompt=prompt, **opts)])[0]
            out[scale, next(iter(opts))] = d
    a, b = out[1.0, "cost_preference"], out[1 / 30, "cost_preference"]
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-12)
    assert b.cost_weight == pytest.approx(30 * a.cost_weight)  # the weight that resulted is logged
    c, d = out[1.0, "cost_weight"], out[1 / 30, "cost_weight"]
    assert np.abs(c.probabilities - d.probabilities).max() > 0.1


def test_a_request_weight_wins_over_its_preference_and_the_default_preference_applies_otherwise():
    settings = pool(1.0)
    settings = settings.model_copy(update={"policy": settings.policy.model_copy(update={"cost_preference": 0.9})})
    router = Router(settings, seed=1)
    prompt = "hello there"
    d = router.route_many([prompt], [RouteRequest(prompt=prompt, cost_weight=5.0, cost_preference=0.1)])[0]
    assert d.cost_weight == 5.0
    low = router.route_many([prompt], [RouteRequest(prompt=prompt, cost_preference=0.1)])[0].cost_weight
    default = router.route_many([prompt], [RouteRequest(prompt=prompt)])[0].cost_weight
    assert default == pytest.approx(low * (0.9 / 0.1) / (0.1 / 0.9))


def test_tune_on_a_log_reports_each_weight_as_a_preference_at_the_logs_price_spread():
    from pathlib import Path

    from banditroute.offline.logs import median_cost_spread
    from banditroute.offline.tune import tune_on_log

    path = next((Path(__file__).resolve().parents[1] / "replay_logs").glob("*.parquet"))
    result = tune_on_log(str(path), "lints", [10.0, 100.0], estimator="snips", target_quality=0.0, n_boot=50)
    spread = median_cost_spread(path)
    assert result["median_cost_spread_usd"] == spread and spread > 0
    for p in result["points"]:
        pref = p["cost_preference"]
        back = preference_weights(np.array([pref]), np.array([[0.0, spread]]), None, 0.1)[0]
        assert back == pytest.approx(p["cost_weight"], rel=1e-3)  # the preference gives the weight back
    assert result["recommendation"]["cost_preference"] is not None
