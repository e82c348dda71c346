import math

import pytest
from pydantic import ValidationError

from banditroute.config import ModelSpec, SignalWeights
from banditroute.core.reward import Feedback, Signal, mean_quality


@pytest.mark.parametrize(
    "kind, value, scale, quality",
    [
        ("thumbs", True, None, 1.0), ("thumbs", False, None, 0.0), ("thumbs", -1, None, 0.0),
        ("rating", 5, None, 1.0), ("rating", 2, None, 0.25),
        ("score", 10, None, 1.0), ("score", 0.7, None, 0.7), ("score", 1, "1-10", 0.0),
        ("quality", 0.3, None, 0.3),
    ],
)
def test_signals_normalise(kind, value, scale, quality):
    assert Signal(source="judge", kind=kind, value=value, scale=scale).quality() == pytest.approx(quality)


@pytest.mark.parametrize(
    "kind, value",
    [("quality", 1.5), ("quality", -0.1), ("rating", 6), ("rating", 0), ("score", 11), ("thumbs", 0.5),
     ("quality", math.nan), ("quality", math.inf), ("rating", True)],
)
def test_bad_signal_values_are_rejected(kind, value):
    with pytest.raises(ValidationError):
        Signal(source="user", kind=kind, value=value)


def test_unknown_source_and_kind():
    with pytest.raises(ValidationError, match="source"):
        Signal(source="robot", kind="quality", value=1)
    with pytest.raises(ValidationError, match="kind"):
        Signal(source="user", kind="stars", value=1)


def test_weights_errors_and_cost():
    fb = Feedback(signals=[Signal(source="user", kind="thumbs", value=True),
                           Signal(source="judge", kind="score", value=4, scale="1-10")], error="timeout")
    pairs = fb.weighted_qualities(SignalWeights())
    assert pairs == [(1.0, 1.0), (pytest.approx(1 / 3), 0.8), (0.0, 0.5)]
    assert mean_quality(pairs) == pytest.approx((1.0 + 0.8 / 3) / 2.3)
    spec = ModelSpec(name="m", input_price_per_mtok=2.0, output_price_per_mtok=4.0)
    assert Feedback(input_tokens=1000, output_tokens=500).cost(spec) == pytest.approx(0.004)
    assert Feedback(cost_usd=0.5, input_tokens=10).cost(spec) == 0.5
    assert Feedback().cost(spec) is None
    with pytest.raises(ValidationError):
        Feedback(cost_usd=math.nan)
    with pytest.raises(ValidationError):
        Feedback(cost_usd=-1)
