"""Change detection: a model whose quality changes mid-stream is re-learned (issue 11, item 6)."""

import numpy as np
import pytest

from banditroute.core.drift import PageHinkley
from banditroute.core.policies.linear import LinTS
from banditroute.core.state import dumps_state, loads_state
from banditroute.core.types import Context

DIM = 21  # the cost model reads a few of the signal columns


def stream(threshold, seed, before=2000, after=1000, **kwargs):
    """Two models; model a (first) answers well 80% of the time, b 60%, until a drops to 30%.

    Returns the policy and the number of decisions after the change until a's share over the last 100
    decisions falls below 20% (None if it never does)."""
    rng = np.random.default_rng(seed)
    pol = LinTS(["a", "b"], dim=DIM, floor=0.01, drift_threshold=threshold, **kwargs)
    good = [0.8, 0.6]
    chosen = []
    for t in range(before + after):
        if t == before:
            good = [0.3, 0.6]
        x = np.concatenate([[1.0], rng.normal(0.0, 0.3, DIM - 1)])
        p = pol.probabilities(x[None], [100.0], None, 0.0, rng).probabilities[0]
        k = int(rng.choice(2, p=p))
        pol.update(Context(x, 100.0), k, quality=float(rng.random() < good[k]))
        chosen.append(k)
    share = np.convolve(np.array(chosen[before:]) == 0, np.ones(100) / 100, mode="valid") if after else []
    below = np.flatnonzero(np.asarray(share) < 0.2)
    return pol, (int(below[0]) + 100 if below.size else None)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_model_that_got_worse_is_relearned_within_400_decisions(seed):
    pol, adapted = stream(15.0, seed)
    assert adapted is not None and adapted <= 400
    assert pol.drift.alarms[0] >= 1


def test_without_change_detection_the_router_keeps_the_model_that_got_worse():
    _, adapted = stream(None, 1)
    assert adapted is None or adapted > 1000


def test_no_alarm_on_a_stationary_stream():
    rng = np.random.default_rng(0)
    ph = PageHinkley(1, threshold=15.0, delta=0.1)
    residuals = (rng.random(20_000) < 0.7) - 0.7  # a well-calibrated model of a 0/1 outcome
    assert not any(ph.update(0, float(r)) for r in residuals)
    assert ph.update(0, 0.0) is False
    alarms = [ph.update(0, -0.7) for _ in range(60)]  # the model now always fails
    assert any(alarms) and alarms.index(True) < 40


def test_the_detector_state_survives_a_snapshot():
    pol, _ = stream(15.0, 1, before=300, after=0)
    _, back = loads_state(dumps_state(pol))
    np.testing.assert_array_equal(back.drift.state, pol.drift.state)
    assert back.drift.threshold == 15.0 and back.drift_keep == pol.drift_keep


def test_an_alarm_forgets_the_models_learned_noise_with_what_it_learned():
    """With a learned noise, the residuals a model had before an alarm were the old model's: they are kept
    in the same share ``drift_keep`` as the rest of what it learned."""
    pol, _ = stream(15.0, 1, noise_prior=20.0, drift_keep=0.0)
    assert pol.drift.alarms[0] >= 1
    n_a, n_b = pol.noise_n
    assert n_a < pol.quality_observations[0] and n_b == pol.quality_observations[1]
