"""Prompt caching: input tokens a provider served from its cache cost the model's cached input price, in
the gateway's accounting (calls rows, the cost it learns) and in reported feedback."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from test_api import THUMBS_UP, make_config, post

from banditroute.config import ModelSpec
from banditroute.core.reward import Feedback
from banditroute.http.app import create_app
from tests.test_gateway import ASK, Stack


def test_cached_input_tokens_cost_the_cached_price_and_must_be_part_of_the_input():
    spec = ModelSpec(name="m", input_price_per_mtok=2.0, output_price_per_mtok=8.0, cached_input_price_per_mtok=0.5)
    assert spec.price_usd(1000, 100, 600) == pytest.approx((400 * 2.0 + 600 * 0.5 + 100 * 8.0) / 1e6)
    assert spec.price_usd(1000, 100, 5000) == pytest.approx((1000 * 0.5 + 100 * 8.0) / 1e6)  # at most all
    undiscounted = ModelSpec(name="n", input_price_per_mtok=2.0, output_price_per_mtok=8.0)
    assert undiscounted.price_usd(1000, 100, 600) == undiscounted.price_usd(1000, 100)
    assert Feedback(input_tokens=1000, output_tokens=100, cached_input_tokens=600).cost(spec) == spec.price_usd(
        1000, 100, 600)
    for bad in ({"cached_input_tokens": 5}, {"input_tokens": 3, "cached_input_tokens": 5}):
        with pytest.raises(ValidationError, match="cached_input_tokens counts part of input_tokens"):
            Feedback(**bad)


async def test_feedback_reports_cached_tokens_and_a_contradiction_is_a_422(aiohttp_client, tmp_path):
    cfg = make_config(tmp_path)  # every model's cached input free: a fully cached prompt costs its output only
    cfg = cfg.model_copy(update={"models": [m.model_copy(update={"cached_input_price_per_mtok": 0.0}) for m in cfg.models]})
    client = await aiohttp_client(create_app(cfg, seed=0))
    r = await post(client, "/route", {"prompt": "Write a Python function that sorts a list"})
    f = await post(client, "/feedback", {"decision_id": r["decision_id"], "signals": THUMBS_UP,
                                         "input_tokens": 2000, "output_tokens": 10, "cached_input_tokens": 2000})
    assert f["cost_usd"] == pytest.approx(10 * cfg.spec(r["model"]).output_price_per_mtok / 1e6)
    bad = await post(client, "/feedback", {"decision_id": r["decision_id"], "cached_input_tokens": 3}, status=422)
    assert "cached_input_tokens counts part of input_tokens" in str(bad)


def test_the_gateway_prices_cached_prompt_tokens_and_logs_them(tmp_path):
    with Stack(tmp_path, models={"mid": {"cached_input_price_per_mtok": 0.25}}) as s:
        s.fault("mid", cached_tokens=4)
        c = s.client()
        answer = c.chat.completions.create(model="mid", messages=ASK)
        usage = answer.usage
        assert usage.prompt_tokens_details.cached_tokens == 4
        (row,) = s.wait_for("SELECT input_tokens, output_tokens, cached_input_tokens, cost_usd FROM calls", 1)
        assert row["cached_input_tokens"] == 4
        fresh = row["input_tokens"] - 4
        assert row["cost_usd"] == pytest.approx((fresh * 1.0 + 4 * 0.25 + row["output_tokens"] * 4.0) / 1e6)
        (fb,) = s.wait_for("SELECT cost_usd, reported FROM feedback", 1)
        assert fb["cost_usd"] == pytest.approx(row["cost_usd"]) and '"cached_input_tokens":4' in fb["reported"]
        # the responses API reports them as input_tokens_details
        s.client().responses.create(model="mid", input="What is the capital of France? Answer in one word.")
        rows = s.wait_for("SELECT cached_input_tokens FROM calls ORDER BY ts", 2)
        assert rows[-1]["cached_input_tokens"] == 4
