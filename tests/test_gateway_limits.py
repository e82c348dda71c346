"""Provider rate limits per model (``rpm``, ``tpm``): the gateway keeps each model's calls of the last
minute within them, routing around a model at its limit and refusing with 429 only when every model
that could serve the request is."""

from __future__ import annotations

import openai
import pytest
from test_gateway import ASK, Stack, only

from banditroute.config import parse_settings
from banditroute.gateway.limits import WINDOW, RateLimits


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def limits(clock, **model) -> RateLimits:
    cfg = parse_settings({"models": [{"name": "m", **model}, {"name": "free"}]})
    return RateLimits({s.name: s for s in cfg.models}, clock)


def test_requests_a_minute_in_a_sliding_window():
    clock = Clock()
    rl = limits(clock, rpm=2)
    assert rl.full("free", 1e9) is None and rl.view("free") is None  # no limits configured
    rl.take("m", 10)
    clock.t += 30
    rl.take("m", 10)
    assert "rpm limit" in rl.full("m", 10)
    assert rl.retry_after(["m"]) == 30  # the first call leaves the window 60 s after it started
    clock.t += 30  # the first call's minute is over
    assert rl.full("m", 10) is None
    assert rl.view("m")["requests_last_minute"] == 1


def test_tokens_a_minute_are_estimated_at_the_start_and_settled_with_the_usage():
    clock = Clock()
    rl = limits(clock, tpm=1000)
    entry = rl.take("m", 900)  # estimated: prompt + max_tokens
    assert "tpm limit" in rl.full("m", 200)
    rl.settle("m", entry, 300)  # it used 300
    assert rl.full("m", 200) is None and rl.view("m")["tokens_last_minute"] == 300
    clock.t += WINDOW
    assert rl.view("m")["tokens_last_minute"] == 0
    assert rl.full("m", 5000) is None  # alone in the window, a call larger than the limit may go
    rl.settle("m", entry, 50)  # a late settle of a call out of the window changes nothing
    assert rl.view("m")["tokens_last_minute"] == 0


def test_the_gateway_routes_around_a_model_at_its_limit_and_refuses_when_all_are(tmp_path):
    with Stack(tmp_path, models={"cheap": {"rpm": 2}, "mid": {"tpm": 2000}}) as s:
        c = s.client()
        for _ in range(2):
            assert c.chat.completions.create(model="banditroute", messages=ASK, extra_body=only("cheap")).model == "cheap"
        with pytest.raises(openai.RateLimitError, match="cheap at its rpm limit") as err:
            c.chat.completions.create(model="banditroute", messages=ASK, extra_body=only("cheap"))
        assert 1 <= int(err.value.response.headers["Retry-After"]) <= 60
        assert err.value.response.json()["error"]["code"] == "rate_limited"
        raw = c.chat.completions.with_raw_response.create(model="banditroute", messages=ASK,
                                                          extra_body=only("cheap", "mid"))
        assert raw.headers["x-banditroute-model"] == "mid"
        decision = s.query(f"SELECT eligible, propensity FROM decisions WHERE decision_id = "
                           f"'{raw.headers['x-banditroute-decision-id']}'")[0]
        assert decision["eligible"] == ["mid"] and decision["propensity"] == 1.0  # logged as it was sampled
        with pytest.raises(openai.RateLimitError, match="cheap at its rpm limit"):  # a direct call too
            c.chat.completions.create(model="cheap", messages=ASK)
        models = {m["model"]: m for m in s.run(_models(s))}
        assert models["cheap"]["rate_limits"]["requests_last_minute"] == 2
        assert models["cheap"]["rate_limits"]["requests_refused"] == 3
        assert models["mid"]["rate_limits"]["tpm"] == 2000 and models["mid"]["rate_limits"]["tokens_last_minute"] > 0
        assert models["strong"]["rate_limits"] is None
        assert len(s.query("SELECT * FROM calls")) == 3  # nothing refused went upstream


def test_a_tpm_limit_counts_a_prompt_in_the_models_own_tokens(tmp_path):
    """mid's provider counts three times the prompt tokens the gateway estimates (tpm 4,000). Once its
    answers have shown that, a prompt of about 1,000 estimated tokens (3,000 in mid's count) no longer fits
    what is left of mid's minute, though it would by the estimate alone: mid is left out before the
    call instead of being sent a request its provider would refuse."""
    with Stack(tmp_path, models={"mid": {"tpm": 4000}}) as s:
        s.fault("mid", prompt_token_scale=3.0)
        c = s.client()
        small = [{"role": "user", "content": "word " * 16}]
        for _ in range(21):
            c.chat.completions.create(model="mid", messages=small, max_tokens=8)
        assert s.models_view()["mid"]["prompt_tokens"]["ratio"] == pytest.approx(3.0, rel=0.2)
        left = 4000 - s.models_view()["mid"]["rate_limits"]["tokens_last_minute"]
        big = [{"role": "user", "content": "word " * 800}]  # 4,000 characters: about 1,000 tokens by the estimate
        assert 1100 < left < 2900
        with pytest.raises(openai.RateLimitError, match="mid at its tpm limit"):
            c.chat.completions.create(model="banditroute", messages=big, max_tokens=8, extra_body=only("mid"))
        raw = c.chat.completions.with_raw_response.create(model="banditroute", messages=big, max_tokens=8,
                                                          extra_body=only("mid", "strong"))
        assert raw.headers["x-banditroute-model"] == "strong"
        with pytest.raises(openai.RateLimitError, match="mid at its tpm limit"):  # a direct call too
            c.chat.completions.create(model="mid", messages=big, max_tokens=8)


async def _models(s) -> list[dict]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{s.port}/models") as r:
        return (await r.json())["models"]
