"""Thompson sampling's Monte Carlo counts: the C core against numpy, its specification."""

import numpy as np
import pytest

from banditroute.core.policies import linear
from banditroute.core.policies.linear import thompson_wins


def test_c_core_is_built():
    """The Monte Carlo core ships with the package (setup.py); without it every batch takes numpy's slower path."""
    assert linear._native is not None


def test_numpy_counts_on_a_hand_made_case():
    scale = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    net = np.array([[0.5, 0.0, -np.inf], [0.0, 0.0, 0.0]])
    z = np.array([[0.0, 1.0, 9.0], [0.0, 0.2, 9.0], [5.0, 5.0, 5.0]])
    wins = thompson_wins(scale, net, z, native=False)
    # row 0: 0.5 against 1.0, 0.2, 5.0 (the -inf model never wins); row 1: z itself, the tie to the first model
    assert wins.tolist() == [[1.0, 2.0, 0.0], [1.0, 0.0, 2.0]]
    assert thompson_wins(scale, net, z[2:], native=False).tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


@pytest.mark.skipif(linear._native is None, reason="the C core is not built")
def test_the_c_core_counts_exactly_as_numpy():
    """Random shapes and scales, ties, ineligible (-inf) models, rows with nothing eligible, NaN."""
    rng = np.random.default_rng(7)
    for _ in range(1500):
        b, k, s = int(rng.integers(1, 30)), int(rng.integers(1, 25)), int(rng.integers(1, 160))
        scale = rng.random((b, k)) * rng.choice([0.0, 1e-3, 1.0, 10.0])
        net = rng.random((b, k))
        if rng.random() < 0.3:
            net = np.round(net, 1)  # ties between models
        net[rng.random((b, k)) < rng.choice([0.0, 0.3])] = -np.inf
        if rng.random() < 0.05:
            net[0] = -np.inf
        if rng.random() < 0.05:
            net[rng.random((b, k)) < 0.1] = np.nan
        z = rng.standard_normal((s, k))
        assert np.array_equal(thompson_wins(scale, net, z), thompson_wins(scale, net, z, native=False))


@pytest.mark.skipif(linear._native is None, reason="the C core is not built")
def test_the_c_core_rejects_what_it_cannot_read():
    wins = np.zeros((2, 3))
    with pytest.raises(ValueError):
        linear._native.wins(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((5, 3)), wins)
    with pytest.raises(ValueError):
        linear._native.wins(np.zeros((2, 3), dtype=np.float32), np.zeros((2, 3)), np.zeros((5, 3)), wins)
    with pytest.raises((ValueError, BufferError)):
        linear._native.wins(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((5, 3)), np.zeros((3, 2)).T)
