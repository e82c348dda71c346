import pickle

import numpy as np
import pytest
from scipy import stats

from banditroute.config import PolicyConfig, parse_pool
from banditroute.core.features import Featurizer
from banditroute.core.policies import BayesLinear, Context, Policy, make_policy
from banditroute.core.policies.cost import CostModel
from banditroute.core.router import Router

MODELS = ["big", "coder", "mathy", "tiny"]
PRICES = [(10.0, 30.0), (1.0, 2.0), (1.0, 2.0), (0.2, 0.2)]
NAMES = ["lints", "linucb", "egreedy", "random", "fixed:coder"]
F = Featurizer()


def ctx(prompt: str) -> Context:
    return Context(F.transform(prompt), F.input_tokens(prompt))


def trained(name: str, floor: float = 0.05, n: int = 60) -> Policy:
    pol = make_policy(name, MODELS, F.dim, PRICES, PolicyConfig(floor=floor))
    rng = np.random.default_rng(0)
    for i in range(n):
        c = ctx(f"Write a Python function number {i}")
        for arm in range(len(MODELS)):
            pol.update(c, arm, quality=float(rng.random() < 0.3 + 0.15 * arm), cost_usd=0.001 * (4 - arm))
    return pol


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("arms", [[0, 1, 2, 3], [1, 3], [2]])
def test_probabilities_sum_to_one_respect_floor_and_eligibility(name, arms):
    floor = 0.05
    pol = trained(name, floor)
    rng = np.random.default_rng(1)
    for prompt in ["Write a Python function", "How many apples?", "Tell me a story"]:
        for cw in (0.0, 10.0, 1e4):
            s = pol.probabilities(ctx(prompt), arms, cw, rng)
            assert s.probabilities.shape == (len(arms),) == s.quality.shape == s.cost.shape
            assert s.probabilities.sum() == pytest.approx(1.0)
            assert np.all(s.probabilities >= 0)
            if not name.startswith("fixed"):
                assert np.all(s.probabilities >= min(floor, 1 / len(arms)) - 1e-12)
            g = pol.greedy(ctx(prompt), arms, cw)
            assert g.probabilities.sum() == pytest.approx(1.0)


def test_linucb_softmax_rule_orders_probabilities_by_optimistic_score():
    from banditroute.core.policies import LinUCB

    pol = LinUCB(MODELS, F.dim, rule="softmax", temperature=0.05, floor=0.0)
    c = ctx("Write a Python function number 1")
    for _ in range(40):
        for arm, q in enumerate([0.9, 0.7, 0.5, 0.1]):
            pol.update(c, arm, quality=q)
    p = pol.probabilities(c, np.arange(4), 0.0, np.random.default_rng(0)).probabilities
    assert p.sum() == pytest.approx(1.0) and np.all(np.diff(p) < 0)
    s = pol.scores(c, np.arange(4))
    u = s.net(0.0) + pol.exploration * pol.noise_sd * np.sqrt(pol.quality.variance(c.x, np.arange(4)))
    assert p[0] / p[1] == pytest.approx(np.exp((u[0] - u[1]) / 0.05), rel=1e-6)
    with pytest.raises(ValueError, match="rule"):
        LinUCB(MODELS, F.dim, rule="boltzmann")


def test_fixed_policy_is_always_its_model_and_falls_back_when_ineligible():
    pol = make_policy("fixed:coder", MODELS, F.dim)
    s = pol.probabilities(ctx("hi there"), [0, 1, 3], 0.0, np.random.default_rng(0))
    assert list(s.probabilities) == [0.0, 1.0, 0.0]
    s = pol.probabilities(ctx("hi there"), [0, 3], 0.0, np.random.default_rng(0))
    assert list(s.probabilities) == [0.5, 0.5]
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        make_policy("fixed:nope", MODELS, F.dim)
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("thompson", MODELS, F.dim)


def test_cost_weight_moves_choice_to_cheaper_model():
    pol = trained("lints", n=120)
    c = ctx("Write a Python function number 7")
    arms = np.arange(4)
    assert pol.greedy(c, arms, 0.0).probabilities.argmax() == 3  # tiny has the highest quality here
    expensive_best = make_policy("lints", MODELS, F.dim, PRICES)
    for _ in range(100):
        for arm, q in enumerate([0.9, 0.6, 0.5, 0.2]):
            expensive_best.update(c, arm, quality=q, cost_usd=[0.05, 0.001, 0.001, 0.0001][arm])
    assert expensive_best.greedy(c, arms, 0.0).probabilities.argmax() == 0
    assert expensive_best.greedy(c, arms, 100.0).probabilities.argmax() == 1


def test_sherman_morrison_equals_direct_solve():
    rng = np.random.default_rng(3)
    d, lam, mu0 = 12, 2.0, 0.5
    bl = BayesLinear(2, d, prior_strength=lam, prior_mean=mu0, refresh_every=10_000)
    X = rng.normal(size=(300, d))
    y = rng.random(300)
    w = rng.uniform(0.2, 1.5, size=300)
    for xi, yi, wi in zip(X, y, w):
        bl.update(xi, 1, yi, wi)
    A = lam * np.eye(d) + (X * w[:, None]).T @ X
    theta = np.linalg.solve(A, (X * w[:, None]).T @ (y - mu0))
    np.testing.assert_allclose(bl.A_inv[1], np.linalg.inv(A), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(bl.theta[1], theta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(bl.theta[0], 0.0)
    x = rng.normal(size=d)
    assert bl.mean(x, np.array([1]))[0] == pytest.approx(mu0 + theta @ x)
    assert bl.variance(x, np.array([1]))[0] == pytest.approx(x @ np.linalg.solve(A, x))


@pytest.mark.parametrize("fold_every", [3, 64])
def test_update_is_the_eager_outer_product_formula(monkeypatch, fold_every):
    """The in-place BLAS updates, the precision matrix folded in chunks, and the lazily refreshed
    theta / float32 inverse agree, to rounding, with the formula written with np.outer and applied in
    full after every update, including across exact re-inversions and a pickle round trip."""
    monkeypatch.setattr("banditroute.core.policies.linear.FOLD_EVERY", fold_every)
    rng = np.random.default_rng(5)
    k, d = 3, 10
    bl = BayesLinear(k, d, prior_strength=2.0, prior_mean=0.4, refresh_every=7)
    A = np.repeat(np.eye(d)[None] * 2.0, k, axis=0)
    A_inv = np.repeat(np.eye(d)[None] / 2.0, k, axis=0)
    b = np.zeros((k, d))
    theta = np.zeros((k, d))
    updates = np.zeros(k, dtype=int)
    for i in range(60):
        x, arm, y, w = rng.normal(size=d), int(rng.integers(k)), float(rng.random()), float(rng.uniform(0.2, 2))
        u = A_inv[arm] @ x
        A_inv[arm] -= np.outer(u, u) * (w / (1.0 + w * (x @ u)))
        A[arm] += w * np.outer(x, x)
        b[arm] += w * (y - 0.4) * x
        updates[arm] += 1
        if updates[arm] % 7 == 0:
            A_inv[arm] = np.linalg.inv(A[arm])
        theta[arm] = A_inv[arm] @ b[arm]
        bl.update(x, arm, y, w)
        if i % 9 == 0:  # a decision in between reads the refreshed values
            assert np.allclose(bl.theta, theta, rtol=1e-12, atol=1e-15)
            assert np.allclose(bl.A_inv32, A_inv.astype(np.float32), rtol=1e-6)
        if i == 30:
            bl = pickle.loads(pickle.dumps(bl))
    assert np.allclose(bl.A_inv, A_inv, rtol=1e-12, atol=1e-15) and np.allclose(bl.A, A, rtol=1e-12, atol=1e-15)
    assert np.allclose(bl.theta, theta, rtol=1e-12, atol=1e-15)


def test_bayes_linear_state_does_not_depend_on_when_it_is_folded_or_pickled():
    """Recovery rebuilds a snapshot's state by replay: folds and snapshots must not change a bit."""
    rng = np.random.default_rng(3)
    k, d = 3, 6
    steady, interrupted = BayesLinear(k, d, refresh_every=50), BayesLinear(k, d, refresh_every=50)
    for i in range(400):
        x, arm, y, w = rng.normal(size=d), int(rng.integers(k)), float(rng.random()), float(rng.uniform(0.2, 2))
        steady.update(x, arm, y, w)
        interrupted.update(x, arm, y, w)
        if i % 37 == 0:
            interrupted = pickle.loads(pickle.dumps(interrupted))  # folds every arm's pending observations
    for name in ("A_inv", "A", "theta", "A_inv32", "b"):
        assert np.array_equal(getattr(steady, name), getattr(interrupted, name)), name


def test_state_pickled_before_the_lazy_refresh_still_loads():
    bl = BayesLinear(2, 4)
    bl.update(np.ones(4), 1, 0.9)
    old = {"prior_strength": bl.prior_strength, "prior_mean": bl.prior_mean, "refresh_every": bl.refresh_every,
           "A": bl.A.copy(), "A_inv": bl.A_inv.copy(), "b": bl.b.copy(), "theta": bl.theta.copy(),
           "A_inv32": bl.A_inv32.copy(), "updates": bl.updates.copy()}  # the attributes as they were pickled
    loaded = BayesLinear.__new__(BayesLinear)
    loaded.__setstate__(old)
    assert np.array_equal(loaded.theta, bl.theta) and np.array_equal(loaded.A_inv32, bl.A_inv32)
    loaded.update(np.ones(4), 0, 0.1)
    bl.update(np.ones(4), 0, 0.1)
    assert np.array_equal(loaded.theta, bl.theta) and np.array_equal(loaded.A, bl.A)


def test_cost_model_starts_at_list_price_and_learns_real_costs():
    pol = make_policy("lints", MODELS, F.dim, PRICES, PolicyConfig(expected_output_tokens=100))
    c = ctx("a" * 4000)  # 1000 input tokens
    assert pol.cost_model.predict(c, [0])[0] == pytest.approx((1000 * 10 + 100 * 30) / 1e6)
    unpriced = make_policy("lints", MODELS, F.dim)
    assert unpriced.cost_model.predict(c, [0])[0] == 0.0
    for _ in range(200):
        unpriced.update(c, 0, cost_usd=0.02)
    assert unpriced.cost_model.predict(c, [0])[0] == pytest.approx(0.02, rel=0.02)


def test_cost_coefficients_read_back_lazily_survive_a_pickle():
    pol = make_policy("lints", MODELS, F.dim, PRICES, PolicyConfig(expected_output_tokens=100))
    c = ctx("a" * 4000)
    for i in range(30):
        pol.update(c, i % 2, cost_usd=0.01 * (1 + i % 2))
    loaded = pickle.loads(pickle.dumps(pol.cost_model))  # pickled while both arms' weights are unread
    phi = CostModel._phi(c)
    learned = [sum(reg.predict_one({n: 1.0}) * v for n, v in zip(("bias", "in_ktok", "code", "choice"), phi))
               for reg in pol.cost_model.regressors[:3]]  # read from river directly
    expected = np.maximum(pol.cost_model.list_price(c, [0, 1, 2]) + np.array(learned) / 1000.0, 0.0)
    np.testing.assert_allclose(loaded.predict(c, [0, 1, 2]), expected, rtol=1e-12)
    assert np.array_equal(loaded.predict(c, [0, 1, 2]), pol.cost_model.predict(c, [0, 1, 2]))
    old = {k: v for k, v in loaded.__dict__.items() if k != "_stale"}  # as states were pickled before
    again = CostModel.__new__(CostModel)
    again.__setstate__(old)
    assert np.array_equal(again.predict_many(c.x[None], np.array([c.input_tokens])),
                          pol.cost_model.predict_many(c.x[None], np.array([c.input_tokens])))


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_roundtrip(tmp_path, name):
    pol = trained(name)
    path = tmp_path / "state.pkl"
    pol.save(path)
    again = Policy.load(path)
    c = ctx("Write a Python function number 3")
    a = pol.probabilities(c, [0, 1, 2, 3], 5.0, np.random.default_rng(9))
    b = again.probabilities(c, [0, 1, 2, 3], 5.0, np.random.default_rng(9))
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    np.testing.assert_array_equal(a.quality, b.quality)
    (tmp_path / "junk").write_bytes(b"not a state")
    with pytest.raises(ValueError, match="cannot read policy state"):
        Policy.load(tmp_path / "junk")


def test_sampled_frequencies_match_logged_propensities():
    """Chi-square goodness of fit of the router's sampled models to the propensities it logged."""
    pool = parse_pool({"models": [{"name": m} for m in MODELS], "policy": {"floor": 0.05}})
    router = Router(pool, policy=trained("lints"), seed=123)
    prompt = "Write a Python function number 5"
    decisions = [router.route(prompt) for _ in range(4000)]
    probs = decisions[0].probabilities
    # the policy does not learn here, so every decision has (up to Monte Carlo noise) the same vector:
    # test each decision's logged propensity is the probability of its chosen model,
    for d in decisions:
        assert d.propensity == pytest.approx(d.probabilities[d.eligible.index(d.model)])
    # and that the sampled frequencies agree with the mean logged probability vector.
    mean_p = np.mean([d.probabilities for d in decisions], axis=0)
    counts = np.bincount([d.eligible.index(d.model) for d in decisions], minlength=len(MODELS))
    assert stats.chisquare(counts, mean_p * len(decisions)).pvalue > 0.001
    assert probs.min() >= 0.05 - 1e-12


def test_regret_of_default_policy_on_synthetic_contexts():
    """Three kinds of prompt, each with a different best model; Bernoulli rewards, cost weight 0.

    The best model wins by 0.25-0.5 quality in every context. Over 1,500 rounds, uniform random
    play has expected regret of about 0.33 per round (~500); we require the default policy's
    cumulative expected regret to stay under 150 and under 0.06 per round over the last 500.
    """
    quality = {"code": [0.3, 0.85, 0.35, 0.3], "math": [0.4, 0.3, 0.9, 0.2], "chat": [0.6, 0.35, 0.3, 0.3]}
    prompts = {
        "code": "Write a Python function that {} a list",
        "math": "How many {} are left if I calculate 3 + 4?",
        "chat": "Tell me a nice story about {}",
    }
    words = ["sorts", "apples", "dragons", "filters", "pears", "kings"]
    pool = parse_pool({"models": [{"name": m} for m in MODELS], "policy": {"cost_weight": 0}})
    router = Router(pool, seed=7)
    rng = np.random.default_rng(7)
    regret = []
    kinds = list(quality)
    for t in range(1500):
        kind = kinds[t % 3]
        d = router.route(prompts[kind].format(words[rng.integers(len(words))]))
        q = quality[kind]
        regret.append(max(q) - q[MODELS.index(d.model)])
        from banditroute.core.reward import Feedback, Signal

        router.feedback(d.decision_id, Feedback(signals=[Signal(source="user", kind="quality",
                                                                value=float(rng.random() < q[MODELS.index(d.model)]))]))
    assert sum(regret) < 150
    assert np.mean(regret[-500:]) < 0.06


@pytest.mark.parametrize("name", NAMES)
def test_batched_probabilities_agree_with_single(name):
    """probabilities_many over a batch: same predictions as one by one, valid vectors, same argmax
    when the scores are far apart (LinTS shares its normal draws across a batch's rows)."""
    pol = trained(name, floor=0.02, n=200)
    prompts = ["Write a Python function", "How many apples?", "Tell me a story", "Compare Rust and Go", "2+2?"]
    X = F.transform_many(prompts)
    tokens = np.array([F.input_tokens(p) for p in prompts])
    arms = np.tile([0, 2, 3], (len(prompts), 1))
    cws = np.array([0.0, 10.0, 100.0, 1e4, 5.0])
    batch = pol.probabilities_many(X, tokens, arms, cws, np.random.default_rng(0))
    assert batch.probabilities.shape == batch.quality.shape == batch.cost.shape == (len(prompts), 3)
    np.testing.assert_allclose(batch.probabilities.sum(axis=1), 1.0)
    assert batch.probabilities.min() >= 0.02 - 1e-12
    for i, p in enumerate(prompts):
        one = pol.probabilities(ctx(p), arms[i], cws[i], np.random.default_rng(0))
        np.testing.assert_allclose(batch.quality[i], one.quality, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(batch.cost[i], one.cost, rtol=1e-9, atol=1e-15)
        if name in ("fixed:coder", "random"):
            np.testing.assert_allclose(batch.probabilities[i], one.probabilities)
        elif cws[i] == 1e4:  # cost dominates: both put (almost) all the mass on the cheapest model
            assert np.argmax(batch.probabilities[i]) == np.argmax(one.probabilities) == 2


def test_batched_thompson_frequencies_match_single():
    """Over many batches the shared-draw estimate has the single-decision probabilities as its mean."""
    pol = trained("lints", floor=0.0, n=20)
    X = F.transform_many(["How many apples?"] * 8)
    tokens = np.full(8, 4.0)
    arms = np.tile([0, 1, 2, 3], (8, 1))
    rng = np.random.default_rng(3)
    batched = np.mean([pol.probabilities_many(X, tokens, arms, np.zeros(8), rng).probabilities.mean(axis=0)
                       for _ in range(300)], axis=0)
    single = np.mean([pol.probabilities(ctx("How many apples?"), [0, 1, 2, 3], 0.0, rng).probabilities
                      for _ in range(300)], axis=0)
    np.testing.assert_allclose(batched, single, atol=0.02)
