"""Routed models (``[[gateway.routed_models]]``): a model name that routes among the pool with preset
options, for clients that can set nothing but ``model``; the request's own options apply on top."""

from __future__ import annotations

import openai
import pytest

from banditroute.config import ConfigError, parse_settings
from tests.test_gateway import ASK, Stack, only

ECONOMY = {"name": "economy", "models": ["cheap", "mid"], "cost_preference": 1.0, "max_cost_usd": 0.01}


def test_routed_models_must_name_what_exists_and_keep_to_one_knob():
    base = {"models": [{"name": "a"}, {"name": "b"}]}
    for entry, message in (({"name": "a"}, "taken by a pool model"), ({"name": "banditroute"}, "taken by the gateway"),
                           ({"name": "x", "models": ["a", "zz"]}, "unknown models zz"),
                           ({"name": "x", "cost_weight": 1, "cost_preference": 0.5}, "not both"),
                           ({"name": "x", "cascade": "nope"}, "no cascade named 'nope'"),
                           ({"name": "has space"}, "pattern")):
        with pytest.raises(ConfigError, match=message):
            parse_settings({**base, "gateway": {"routed_models": [entry]}})
    with pytest.raises(ConfigError, match="two named x"):
        parse_settings({**base, "gateway": {"routed_models": [{"name": "x"}, {"name": "x"}]}})


def test_a_routed_model_routes_with_its_preset_and_the_request_narrows_it(tmp_path):
    with Stack(tmp_path, routed_models=[ECONOMY]) as s:
        c = s.client()
        listed = [m.id for m in c.models.list()]
        assert listed[:2] == ["banditroute", "economy"] and "strong" in listed
        assert c.models.retrieve("economy").id == "economy"
        served = {c.chat.completions.create(model="economy", messages=ASK).model for _ in range(12)}
        assert served <= {"cheap", "mid"} and served
        rows = s.wait_for("SELECT eligible, policy FROM decisions", 12)
        assert all(r["eligible"] == ["cheap", "mid"] and r["policy"] != "direct" for r in rows)
        # the request's own models narrow the preset's; a request that leaves nothing gets a 422 naming both
        assert c.chat.completions.create(model="economy", messages=ASK, extra_body=only("mid")).model == "mid"
        with pytest.raises(openai.UnprocessableEntityError, match="none of the request's models"):
            c.chat.completions.create(model="economy", messages=ASK, extra_body=only("strong"))
        # the stricter cost cap wins: this one leaves nothing affordable
        with pytest.raises(openai.UnprocessableEntityError, match="predicted to cost at most 1e-12 USD"):
            c.chat.completions.create(model="economy", messages=ASK,
                                      extra_body={"banditroute": {"max_cost_usd": 1e-12}})
        # the responses API takes the same names
        assert c.responses.create(model="economy", input="Hi!").model in ("cheap", "mid")
        with pytest.raises(openai.NotFoundError, match="economy"):
            c.chat.completions.create(model="nonesuch", messages=ASK)
