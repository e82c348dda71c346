import numpy as np
import pytest
from scipy import stats

from banditroute.config import PolicyConfig, parse_settings
from banditroute.core.features import Featurizer
from banditroute.core.policies import POLICY_CLASSES, BayesLinear, Policy, make_policy
from banditroute.core.policies.cost import CostModel, phi
from banditroute.core.router import Router
from banditroute.core.state import StateError, dumps_state, load_state, loads_state, save_state
from banditroute.core.types import Context

MODELS = ["big", "coder", "mathy", "tiny"]
PRICES = [(10.0, 30.0), (1.0, 2.0), (1.0, 2.0), (0.2, 0.2)]
NAMES = ["lints", "linucb", "squarecb", "egreedy", "random", "fixed:coder"]
F = Featurizer()


def ctx(prompt: str) -> Context:
    return Context(F.transform(prompt), F.input_tokens(prompt))


def mask(arms, k: int = len(MODELS)) -> np.ndarray:
    m = np.zeros((1, k), dtype=bool)
    m[0, arms] = True
    return m


def one(pol: Policy, prompt: str, arms, cost_weight: float, rng=None, greedy: bool = False):
    """The policy's answer for one prompt, a batch of one, restricted to ``arms``: (probabilities, scores)."""
    c = ctx(prompt)
    if greedy:
        s = pol.greedy(c.x[None], [c.input_tokens], mask(arms), cost_weight)
    else:
        s = pol.probabilities(c.x[None], [c.input_tokens], mask(arms), cost_weight, rng or np.random.default_rng(0))
    return s.probabilities[0], s


def trained(name: str, floor: float = 0.05, n: int = 60) -> Policy:
    pol = make_policy(name, MODELS, F.dim, PRICES,  # a constant floor, per model as given
                      PolicyConfig(floor=floor, floor_decay=None, floor_share=None))
    rng = np.random.default_rng(0)
    for i in range(n):
        c = ctx(f"Write a Python function number {i}")
        for arm in range(len(MODELS)):
            pol.update(c, arm, quality=float(rng.random() < 0.3 + 0.15 * arm), cost_usd=0.001 * (4 - arm),
                       propensity=float(rng.uniform(0.05, 1.0)))
    return pol


def test_every_policy_class_has_a_command_line_name():
    assert set(POLICY_CLASSES) == {n.split(":")[0] for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("arms", [[0, 1, 2, 3], [1, 3], [2]])
def test_probabilities_sum_to_one_respect_floor_and_eligibility(name, arms):
    floor = 0.05
    pol = trained(name, floor)
    rng = np.random.default_rng(1)
    off = [a for a in range(len(MODELS)) if a not in arms]
    for prompt in ["Write a Python function", "How many apples?", "Tell me a story"]:
        for cw in (0.0, 10.0, 1e4):
            p, s = one(pol, prompt, arms, cw, rng)
            assert p.shape == s.quality[0].shape == s.cost[0].shape == (len(MODELS),)
            assert p.sum() == pytest.approx(1.0)
            assert np.all(p >= 0) and np.all(p[off] == 0)
            if not name.startswith("fixed"):
                assert np.all(p[arms] >= min(floor, 1 / len(arms)) - 1e-12)
            g, _ = one(pol, prompt, arms, cw, greedy=True)
            assert g.sum() == pytest.approx(1.0) and np.all(g[off] == 0)


@pytest.mark.parametrize("name", NAMES)
def test_a_batch_of_one_equals_the_same_prompt_inside_a_larger_batch(name):
    """The server decides in micro-batches, the simulator and replay one at a time: for the same
    sampling draws a prompt gets the same probabilities alone or among others."""
    pol = trained(name, floor=0.02, n=200)
    prompts = ["Write a Python function", "How many apples?", "Tell me a story", "Compare Rust and Go", "2+2?"]
    X = F.transform_many(prompts)
    tokens = np.array([F.input_tokens(p) for p in prompts])
    eligible = np.ones((len(prompts), len(MODELS)), dtype=bool)
    eligible[1, 0] = eligible[3, [1, 2]] = False
    cws = np.array([0.0, 10.0, 100.0, 1e4, 5.0])
    batch = pol.probabilities(X, tokens, eligible, cws, np.random.default_rng(0))
    assert batch.probabilities.shape == batch.quality.shape == batch.cost.shape == (len(prompts), len(MODELS))
    for i in range(len(prompts)):
        alone = pol.probabilities(X[i:i + 1], tokens[i:i + 1], eligible[i:i + 1], cws[i], np.random.default_rng(0))
        np.testing.assert_allclose(alone.probabilities[0], batch.probabilities[i], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(alone.quality[0], batch.quality[i], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(alone.cost[0], batch.cost[i], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_bad_batches_are_refused_at_the_boundary(name):
    pol = trained(name, n=2)
    x = F.transform("hi")[None]
    with pytest.raises(ValueError, match="X must have shape"):
        pol.probabilities(x[:, :10], [1.0], None, 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="eligible must have shape"):
        pol.probabilities(x, [1.0], np.ones((1, 2), dtype=bool), 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least one eligible model"):
        pol.greedy(x, [1.0], np.zeros((1, 4), dtype=bool), 0.0)


def test_linucb_softmax_rule_orders_probabilities_by_optimistic_score():
    from banditroute.core.policies import LinUCB

    pol = LinUCB(MODELS, F.dim, rule="softmax", temperature=0.05, floor=0.0)
    c = ctx("Write a Python function number 1")
    for _ in range(40):
        for arm, q in enumerate([0.9, 0.7, 0.5, 0.1]):
            pol.update(c, arm, quality=q)
    p, _ = one(pol, "Write a Python function number 1", [0, 1, 2, 3], 0.0)
    assert p.sum() == pytest.approx(1.0) and np.all(np.diff(p) < 0)
    quality, _ = pol.predict(c.x[None], [c.input_tokens])
    u = (quality + pol.exploration_scale(c.x[None]))[0]
    assert p[0] / p[1] == pytest.approx(np.exp((u[0] - u[1]) / 0.05), rel=1e-6)
    with pytest.raises(ValueError, match="rule"):
        LinUCB(MODELS, F.dim, rule="boltzmann")


def test_squarecb_weights_each_model_by_its_gap_to_the_best_mean_score():
    """p_k = 1 / (K + gamma (net_b - net_k)) on the eligible models, the rest on the best, then the floor."""
    pol = trained("squarecb", floor=0.01)
    c = ctx("Write a Python function number 3")
    for arms in ([0, 1, 2, 3], [0, 2, 3], [1, 3]):
        p, s = one(pol, "Write a Python function number 3", arms, 50.0)
        net = s.quality[0] - 50.0 * s.cost[0]
        best = arms[int(np.argmax(net[arms]))]
        gamma = 10.0 * np.sqrt(pol.quality_observations.sum() + 1.0) / (2.0 * pol.exploration)
        raw = {k: 1.0 / (len(arms) + gamma * (net[best] - net[k])) for k in arms if k != best}
        raw[best] = 1.0 - sum(raw.values())
        for k in range(len(MODELS)):
            want = 0.01 + (1 - len(arms) * 0.01) * raw[k] if k in arms else 0.0
            assert p[k] == pytest.approx(want, rel=1e-9, abs=1e-15)
    assert pol.params()["gamma_scale"] == 10.0 and c.x.shape == (F.dim,)


def test_squarecb_explores_less_as_it_learns_and_not_at_all_without_exploration():
    from banditroute.core.policies import SquareCB

    net = np.array([[0.8, 0.7, 0.2]])
    pol = SquareCB(["a", "b", "c"], dim=3, floor=0.0, exploration=0.5)
    early = pol._raw_probabilities(None, net, None, None)[0]
    pol.quality_observations[:] = [300, 300, 299]  # n = 899: gamma grows 30-fold
    late = pol._raw_probabilities(None, net, None, None)[0]
    assert early[1] > early[2] and late[1] > late[2]  # the closer call gets more of the exploration
    assert late[1] == pytest.approx(1.0 / (3 + 300.0 * 0.1)) and late[1] < early[1] / 8
    assert late[0] > early[0] > 0.5
    greedy = SquareCB(["a", "b", "c"], dim=3, floor=0.0, exploration=0.0)
    assert greedy._raw_probabilities(None, net, None, None)[0].tolist() == [1.0, 0.0, 0.0]


def test_fixed_policy_is_always_its_model_and_falls_back_when_ineligible():
    pol = make_policy("fixed:coder", MODELS, F.dim)
    p, _ = one(pol, "hi there", [0, 1, 3], 0.0)
    assert list(p) == [0.0, 1.0, 0.0, 0.0]
    p, _ = one(pol, "hi there", [0, 3], 0.0)
    assert list(p) == [0.5, 0.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        make_policy("fixed:nope", MODELS, F.dim)
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("thompson", MODELS, F.dim)


def test_cost_weight_moves_choice_to_cheaper_model():
    pol = trained("lints", n=120)
    prompt = "Write a Python function number 7"
    c = ctx(prompt)
    arms = [0, 1, 2, 3]
    assert one(pol, prompt, arms, 0.0, greedy=True)[0].argmax() == 3  # tiny has the highest quality here
    expensive_best = make_policy("lints", MODELS, F.dim, PRICES)
    for _ in range(100):
        for arm, q in enumerate([0.9, 0.6, 0.5, 0.2]):
            expensive_best.update(c, arm, quality=q, cost_usd=[0.05, 0.001, 0.001, 0.0001][arm])
    assert one(expensive_best, prompt, arms, 0.0, greedy=True)[0].argmax() == 0
    assert one(expensive_best, prompt, arms, 100.0, greedy=True)[0].argmax() == 1


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
    assert bl.predict(x[None])[0, 1] == pytest.approx(mu0 + theta @ x)
    assert bl.variance(x[None])[0, 1] == pytest.approx(x @ np.linalg.solve(A, x), rel=1e-5)


@pytest.mark.parametrize("rho", [1.0, 8.0])
def test_pooled_posterior_with_a_tighter_deviation_prior_equals_its_closed_form(rho):
    """``theta_k = (Lambda + X_k^T W X_k)^{-1} (X_k^T W (y_k - mu0) + Lambda beta)`` with ``Lambda =
    diag(lambda, rho lambda, ...)`` and ``beta`` the ridge fit of every arm's data at ``lambda I``."""
    rng = np.random.default_rng(5)
    d, lam, mu0, n = 6, 2.0, 0.5, 160  # n a multiple of POOL_EVERY: beta is the fit of every update
    bl = BayesLinear(3, d, prior_strength=lam, prior_mean=mu0, refresh_every=10_000, pooled=True,
                     deviation_strength=rho)
    X = np.c_[np.ones(n), rng.normal(size=(n, d - 1))]
    arm = rng.integers(0, 2, size=n)  # arm 2 never observed
    y = rng.random(n)
    for xi, ai, yi in zip(X, arm, y):
        bl.update(xi, int(ai), yi)
    beta = np.linalg.solve(lam * np.eye(d) + X.T @ X, X.T @ (y - mu0))
    prior = np.diag([lam] + [rho * lam] * (d - 1))
    for k in range(2):
        Xk, yk = X[arm == k], y[arm == k]
        A = prior + Xk.T @ Xk
        np.testing.assert_allclose(bl.theta[k], np.linalg.solve(A, Xk.T @ (yk - mu0) + prior @ beta), atol=1e-9)
        x = rng.normal(size=d)
        assert bl.variance(x[None])[0, k] == pytest.approx(x @ np.linalg.solve(A, x), rel=1e-5)
    np.testing.assert_allclose(bl.theta[2], beta, atol=1e-9)  # an unobserved arm predicts the pool's fit
    assert bl.variance(np.eye(d)[1:2])[0, 2] == pytest.approx(1.0 / (rho * lam), rel=1e-6)


def test_a_deviation_prior_needs_pooling():
    with pytest.raises(ValueError, match="pooled"):
        BayesLinear(2, 3, deviation_strength=4.0)


def reloaded(bl: BayesLinear) -> BayesLinear:
    """A new posterior given ``bl``'s arrays, as a snapshot reload does."""
    k, d = bl.b.shape
    again = BayesLinear(k, d, bl.prior_strength, bl.prior_mean, bl.refresh_every)
    again.load_arrays(bl.arrays())
    return again


@pytest.mark.parametrize("fold_every", [3, 64])
def test_update_is_the_eager_outer_product_formula(monkeypatch, fold_every):
    """The in-place BLAS updates, the precision matrix folded in chunks, and the lazily refreshed
    theta / float32 inverse agree, to rounding, with the formula written with np.outer and applied in
    full after every update, including across exact re-inversions and a reload from arrays."""
    monkeypatch.setattr("banditroute.core.policies.bayes_linear.FOLD_EVERY", fold_every)
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
            bl = reloaded(bl)
    assert np.allclose(bl.A_inv, A_inv, rtol=1e-12, atol=1e-15) and np.allclose(bl.A, A, rtol=1e-12, atol=1e-15)
    assert np.allclose(bl.theta, theta, rtol=1e-12, atol=1e-15)


def test_bayes_linear_state_does_not_depend_on_when_it_is_folded_or_reloaded():
    """Recovery rebuilds a snapshot's state by replay: folds and snapshots must not change a bit."""
    rng = np.random.default_rng(3)
    k, d = 3, 6
    steady, interrupted = BayesLinear(k, d, refresh_every=50), BayesLinear(k, d, refresh_every=50)
    for i in range(400):
        x, arm, y, w = rng.normal(size=d), int(rng.integers(k)), float(rng.random()), float(rng.uniform(0.2, 2))
        steady.update(x, arm, y, w)
        interrupted.update(x, arm, y, w)
        if i % 37 == 0:
            interrupted = reloaded(interrupted)  # folds every arm's pending observations
    for name in ("A_inv", "A", "theta", "A_inv32", "b"):
        assert np.array_equal(getattr(steady, name), getattr(interrupted, name)), name


def test_cost_model_starts_at_list_price_and_learns_real_costs():
    pol = make_policy("lints", MODELS, F.dim, PRICES, PolicyConfig(expected_output_tokens=100))
    c = ctx("a" * 4000)  # 1000 input tokens
    assert pol.cost_model.predict(c.x[None], [c.input_tokens])[0, 0] == pytest.approx((1000 * 10 + 100 * 30) / 1e6)
    unpriced = make_policy("lints", MODELS, F.dim)
    assert unpriced.cost_model.predict(c.x[None], [c.input_tokens])[0, 0] == 0.0
    for _ in range(200):
        unpriced.update(c, 0, cost_usd=0.02)
    assert unpriced.cost_model.predict(c.x[None], [c.input_tokens])[0, 0] == pytest.approx(0.02, rel=0.02)


def test_cost_model_is_the_bayesian_linear_regression_posterior_mean():
    """w_k = (I + Phi^T Phi)^{-1} Phi^T r on milli-USD residuals over list price (Bishop, eq. 3.53-3.54)."""
    cm = CostModel(MODELS, PRICES, expected_output_tokens=50)
    rng = np.random.default_rng(4)
    prompts = [f"Write code {i} " + "word " * int(rng.integers(1, 400)) for i in range(80)]
    X = F.transform_many(prompts)
    tokens = np.array([F.input_tokens(p) for p in prompts])
    costs = rng.uniform(0.0, 0.01, size=80)
    for x, t, c in zip(X, tokens, costs):
        cm.update(Context(x, t), 2, float(c))
    Phi = phi(X, tokens)
    r = (costs - cm.list_price(tokens)[:, 2]) * 1000.0
    w = np.linalg.solve(np.eye(4) + Phi.T @ Phi, Phi.T @ r)
    expected = np.maximum(cm.list_price(tokens)[:, 2] + Phi @ w / 1000.0, 0.0)
    np.testing.assert_allclose(cm.predict(X, tokens)[:, 2], expected, rtol=1e-9, atol=1e-15)
    assert cm.observations.tolist() == [0, 0, 80, 0]


def _cost_data(n: int = 60, seed: int = 4):
    rng = np.random.default_rng(seed)
    prompts = [f"Write code {i} " + "word " * int(rng.integers(1, 400)) for i in range(n)]
    X = F.transform_many(prompts)
    return X, np.array([F.input_tokens(p) for p in prompts]), rng.uniform(0.0, 0.01, size=n)


def test_cost_model_trusts_a_list_price_for_cost_prior_strength_calls():
    """Priced: w_k = (lambda I + Phi^T Phi)^{-1} Phi^T r; unpriced: lambda 1, whatever cost_prior_strength."""
    prices = [(1.0, 2.0), None]
    cm = CostModel(["priced", "free"], prices, expected_output_tokens=50, cost_prior_strength=100.0)
    X, tokens, costs = _cost_data()
    for x, t, c in zip(X, tokens, costs):
        cm.update(Context(x, t), 0, float(c))
        cm.update(Context(x, t), 1, float(c))
    Phi = phi(X, tokens)
    for k, lam in ((0, 100.0), (1, 1.0)):
        r = (costs - cm.list_price(tokens)[:, k]) * 1000.0
        w = np.linalg.solve(lam * np.eye(4) + Phi.T @ Phi, Phi.T @ r)
        expected = np.maximum(cm.list_price(tokens)[:, k] + Phi @ w / 1000.0, 0.0)
        np.testing.assert_allclose(cm.predict(X, tokens)[:, k], expected, rtol=1e-9, atol=1e-15)
    # a constant surprise is learned as n / (n + lambda) of itself
    one = CostModel(["priced"], [(0.0, 1.0)], expected_output_tokens=1000, cost_prior_strength=30.0)
    x0 = np.zeros(F.dim)
    for _ in range(30):
        one.update(Context(x0, 0.0), 0, 0.002)  # the list price says 0.001
    assert one.predict(x0[None], [0.0])[0, 0] == pytest.approx(0.001 + 0.001 * 30 / 60, rel=1e-9)


def test_a_cost_model_state_moves_exactly_to_the_loading_policys_price_prior():
    """Learned at lambda 1 (or at 100) and loaded where lambda is 100 (or 1): the same predictions as
    learning the same calls there from the start."""
    X, tokens, costs = _cost_data(seed=5)

    def learned(lam):
        cm = CostModel(MODELS, PRICES, cost_prior_strength=lam)
        for i, (x, t, c) in enumerate(zip(X, tokens, costs)):
            cm.update(Context(x, t), i % 4, float(c))
        return cm

    for before, after in ((1.0, 100.0), (100.0, 1.0)):
        moved = CostModel(MODELS, PRICES, cost_prior_strength=after)
        moved.load_arrays(learned(before).arrays())
        np.testing.assert_allclose(moved.predict(X, tokens), learned(after).predict(X, tokens), rtol=1e-8, atol=1e-15)
    # a state saved before the scale was recorded was learned at lambda 1
    old = {k: v for k, v in learned(1.0).arrays().items() if k != "scale"}
    moved = CostModel(MODELS, PRICES, cost_prior_strength=100.0)
    moved.load_arrays(old)
    np.testing.assert_allclose(moved.predict(X, tokens), learned(100.0).predict(X, tokens), rtol=1e-8, atol=1e-15)
    assert make_policy("lints", MODELS, F.dim, PRICES).cost_model.cost_prior_strength == \
        PolicyConfig().cost_prior_strength == 10.0


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_gives_the_same_policy(tmp_path, name):
    pol = trained(name)
    path = tmp_path / "state.brs"
    save_state(pol, path, seq=12)
    again = load_state(path)
    assert again.describe() == pol.describe() and again.models == pol.models
    for prompt in ("Write a Python function number 3", "How many apples?"):
        a, sa = one(pol, prompt, [0, 1, 2, 3], 5.0, np.random.default_rng(9))
        b, sb = one(again, prompt, [0, 1, 2, 3], 5.0, np.random.default_rng(9))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(sa.quality, sb.quality)
        np.testing.assert_array_equal(sa.cost, sb.cost)
    c = ctx("next")  # and they go on learning alike
    pol.update(c, 1, quality=0.3, cost_usd=0.002, propensity=0.05)
    again.update(c, 1, quality=0.3, cost_usd=0.002, propensity=0.05)
    np.testing.assert_array_equal(one(pol, "next", [0, 1, 2, 3], 5.0)[0], one(again, "next", [0, 1, 2, 3], 5.0)[0])


@pytest.mark.parametrize("where", ["header", "checksum", "payload", "end"])
def test_a_state_with_one_flipped_byte_is_refused(where):
    data = bytearray(dumps_state(trained("lints"), seq=5))
    first, second, third = _newlines(data)
    pos = {"header": first + 10, "checksum": second + 5, "payload": third + 200, "end": len(data) - 3}[where]
    data[pos] ^= 0x01
    with pytest.raises(StateError, match="checksum mismatch|not a banditroute"):
        loads_state(bytes(data))


def _newlines(data: bytearray) -> tuple[int, int, int]:
    first = data.index(b"\n")
    second = data.index(b"\n", first + 1)
    return first, second, data.index(b"\n", second + 1)


@pytest.mark.parametrize("content, message", [
    (b"not a state", "not a banditroute policy state"),
    (b"\x80\x04\x95pickle", "not a banditroute policy state"),  # an older pickled snapshot is never unpickled
    (b"banditroute-state 2\n{}\nabc\npayload", "checksum mismatch"),
])
def test_unreadable_states_are_named(tmp_path, content, message):
    (tmp_path / "junk").write_bytes(content)
    with pytest.raises(StateError, match=message):
        load_state(tmp_path / "junk")
    with pytest.raises(StateError, match="cannot read policy state"):
        load_state(tmp_path / "missing")


def test_sampled_frequencies_match_logged_propensities():
    """Chi-square goodness of fit of the router's sampled models to the propensities it logged."""
    pool = parse_settings({"models": [{"name": m} for m in MODELS], "policy": {"floor": 0.05, "floor_decay": None}})
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


@pytest.mark.parametrize("name", ["lints", "squarecb"])
def test_regret_on_synthetic_contexts(name):
    """Three kinds of prompt, each with a different best model; Bernoulli rewards, cost weight 0.

    The best model wins by 0.25-0.5 quality in every context. Over 1,500 rounds, uniform random
    play has expected regret of about 0.33 per round (~500); we require the policy's (default settings)
    cumulative expected regret to stay under 150 and under 0.06 per round over the last 500.
    """
    quality = {"code": [0.3, 0.85, 0.35, 0.3], "math": [0.4, 0.3, 0.9, 0.2], "chat": [0.6, 0.35, 0.3, 0.3]}
    prompts = {
        "code": "Write a Python function that {} a list",
        "math": "How many {} are left if I calculate 3 + 4?",
        "chat": "Tell me a nice story about {}",
    }
    words = ["sorts", "apples", "dragons", "filters", "pears", "kings"]
    pool = parse_settings({"models": [{"name": m} for m in MODELS], "policy": {"name": name, "cost_weight": 0}})
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

        router.apply(d.pending(), Feedback(signals=[Signal(source="user", kind="quality",
                                                                value=float(rng.random() < q[MODELS.index(d.model)]))]))
    assert sum(regret) < 150
    assert np.mean(regret[-500:]) < 0.06




def test_a_decaying_floor_shrinks_with_evidence_to_its_minimum_and_survives_a_state_round_trip():
    pol = make_policy("lints", MODELS, F.dim, PRICES, PolicyConfig(floor=0.05, floor_decay=100.0, floor_min=0.002,
                                                                    pooled=False, floor_share=None))
    assert pol.current_floor() == 0.05
    c = ctx("Write a Python function")
    for _ in range(300):
        pol.update(c, 0, quality=1.0)
    assert pol.current_floor() == pytest.approx(0.05 * (100 / 400) ** 0.5)  # 0.025
    p, _ = one(pol, "Write a Python function", [0, 1, 2, 3], 0.0)
    assert p.min() >= 0.025 - 1e-12 and p.min() < 0.05
    pol.quality_observations[:] += 25_000
    assert pol.current_floor() == 0.002  # the documented minimum propensity
    again = loads_state(dumps_state(pol))[1]
    assert again.current_floor() == 0.002 and again.params() == pol.params()


@pytest.mark.parametrize("name", ["lints", "linucb"])
def test_annealed_exploration_narrows_the_scale_by_its_schedule_and_survives_a_state_round_trip(name):
    settings = PolicyConfig(exploration=0.5, exploration_decay=100.0, floor_share=None)
    pol = make_policy(name, MODELS, F.dim, PRICES, settings)
    constant = make_policy(name, MODELS, F.dim, PRICES, settings.model_copy(update={"exploration_decay": None}))
    X = F.transform_many(["Write a Python function", "What is the capital of France?"])
    np.testing.assert_array_equal(pol.exploration_scale(X), constant.exploration_scale(X))  # n = 0: the same
    for p in (pol, constant):
        for _ in range(300):
            p.update(ctx("Write a Python function"), 0, quality=1.0)
    assert pol.current_exploration() == pytest.approx(0.5 * (100 / 400) ** 0.5)
    np.testing.assert_allclose(pol.exploration_scale(X), 0.5 * constant.exploration_scale(X), rtol=1e-12)
    again = loads_state(dumps_state(pol))[1]
    assert again.params() == pol.params() and again.current_exploration() == pol.current_exploration()


@pytest.mark.parametrize("name", ["lints", "linucb", "squarecb"])
def test_learned_noise_is_the_inverse_gamma_posterior_of_the_residuals_and_survives_a_state_round_trip(name):
    """sigma_k^2 = (nu0 0.5^2 + sum w r^2) / (nu0 + sum w), r the residual against the prediction before
    each observation; a model whose outcomes are predictable explores less than one whose are not."""
    pol = make_policy(name, MODELS, F.dim, PRICES, PolicyConfig(noise_prior=10.0, importance_cap=None))
    fixed = make_policy(name, MODELS, F.dim, PRICES, PolicyConfig(importance_cap=None))
    X = F.transform_many(["Write a Python function", "What is the capital of France?"])
    np.testing.assert_array_equal(pol.exploration_scale(X), fixed.exploration_scale(X))  # no evidence yet
    rng = np.random.default_rng(2)
    prompts = [f"Question {i}: what is {i} times {i + 3}?" for i in range(60)]
    residuals = {0: [], 3: []}
    for i, prompt in enumerate(prompts):
        c = ctx(prompt)
        for arm, q in ((0, 1.0), (3, float(rng.random() < 0.5))):  # "big" always right, "tiny" a coin
            residuals[arm].append(q - pol.predict(c.x[None], [c.input_tokens])[0][0, arm])
            pol.update(c, arm, quality=q)
            fixed.update(c, arm, quality=q)
    sigma = pol.noise()
    for arm, r in residuals.items():
        assert sigma[arm] == pytest.approx(np.sqrt((10 * 0.25 + np.sum(np.square(r))) / (10 + len(r))))
    assert sigma[1] == sigma[2] == 0.5  # no observations: the prior
    assert sigma[0] < 0.3 and sigma[3] > 0.4
    np.testing.assert_allclose(pol.exploration_scale(X), fixed.exploration_scale(X) * sigma / 0.5, rtol=1e-12)
    again = loads_state(dumps_state(pol))[1]
    assert again.params() == pol.params()
    np.testing.assert_array_equal(again.noise(), sigma)


@pytest.mark.parametrize("n_models", [2, 4, 11, 28])
def test_the_floor_takes_at_most_its_share_of_traffic_however_large_the_pool(n_models):
    models = [f"m{i}" for i in range(n_models)]
    settings = PolicyConfig(floor=0.01, floor_min=0.001, floor_share=0.05)
    pol = make_policy("lints", models, F.dim, None, settings)
    scale = min(1.0, 0.05 / (0.01 * n_models))
    assert pol.floor == pytest.approx(0.01 * scale) and pol.floor_min == pytest.approx(0.001 * scale)
    c = ctx("Translate this sentence into French")
    p = pol.probabilities(c.x[None], [c.input_tokens], None, 0.0, np.random.default_rng(0)).probabilities[0]
    assert p.min() >= pol.floor - 1e-12 and n_models * pol.current_floor() <= 0.05 + 1e-12
    pol.quality_observations[:] += 10_000_000
    assert pol.current_floor() == pytest.approx(0.001 * scale)  # the minimum scales with it
    per_model = make_policy("lints", models, F.dim, None, settings.model_copy(update={"floor_share": None}))
    assert per_model.floor == 0.01 and per_model.floor_min == 0.001


def test_pooled_learning_lets_one_models_feedback_move_every_model():
    """Partial pooling: feedback on one model informs the others (through the pooled weights); without
    pooling the others stay at their prior."""
    c = ctx("Prove that the square root of two is irrational")
    x = c.x[None]
    for pooled, moves in ((False, False), (True, True)):
        pol = make_policy("lints", MODELS, F.dim, PRICES, PolicyConfig(pooled=pooled))
        before = pol.predict(x, [c.input_tokens])[0][0]
        for _ in range(40):
            pol.update(c, 0, quality=0.0)  # model "big" fails this prompt every time
        after = pol.predict(x, [c.input_tokens])[0][0]
        assert after[0] < before[0] - 0.3
        assert (abs(after[1:] - before[1:]) > 0.05).all() == moves
        assert (after[1:] < before[1:]).all() == moves  # the others now expect this prompt to be hard too


def test_pooled_state_round_trips_and_a_plain_state_is_pooled_when_loaded():
    pol = make_policy("lints", MODELS, F.dim, PRICES, PolicyConfig(pooled=True))
    rng = np.random.default_rng(1)
    for i in range(50):
        pol.update(ctx(f"question {i}"), i % 4, quality=float(rng.random() < 0.5))
    _, back = loads_state(dumps_state(pol))
    X = F.transform_many(["question 3", "another prompt"])
    np.testing.assert_allclose(back.predict(X, [10.0, 10.0])[0], pol.predict(X, [10.0, 10.0])[0], atol=1e-12)
    plain = make_policy("lints", MODELS, F.dim, PRICES, PolicyConfig())
    for i in range(50):
        plain.update(ctx(f"question {i}"), i % 4, quality=float(i % 3 == 0))
    pooled = make_policy("lints", MODELS, F.dim, PRICES, PolicyConfig(pooled=True))
    pooled.load_arrays(plain.arrays())
    assert pooled.quality.pool_updates == 50
    np.testing.assert_allclose(pooled.quality.pool_b, plain.quality.b.sum(axis=0))


def test_a_pooled_batch_of_one_equals_the_same_prompt_inside_a_larger_batch():
    pol = make_policy("lints", MODELS, F.dim, PRICES, PolicyConfig(pooled=True, drift_threshold=15.0))
    for i in range(100):
        pol.update(ctx(f"Write a Python function number {i}"), i % 4, quality=float(i % 5 == 0))
    prompts = ["Write a Python function", "How many apples?", "Tell me a story"]
    X = F.transform_many(prompts)
    batch = pol.probabilities(X, [5.0] * 3, None, 10.0, np.random.default_rng(0)).probabilities
    for i in range(3):
        alone = pol.probabilities(X[i:i + 1], [5.0], None, 10.0, np.random.default_rng(0)).probabilities[0]
        np.testing.assert_allclose(alone, batch[i], atol=1e-12)


def test_a_model_added_to_a_pooled_pool_starts_from_what_the_pool_learned():
    from banditroute.core.state import transfer

    source = make_policy("lints", MODELS, F.dim, PRICES, PolicyConfig(pooled=True))
    hard, easy = ctx("Prove the Riemann hypothesis in full"), ctx("Say hello")
    for _ in range(30):
        for arm in range(len(MODELS)):
            source.update(hard, arm, quality=0.0)
            source.update(easy, arm, quality=1.0)
    models = ["big", "coder", "newcomer"]
    target = make_policy("lints", models, F.dim, None, PolicyConfig(pooled=True))
    target.feature_version = source.feature_version = F.version
    assert transfer(source, target) == ["big", "coder"]
    q = target.predict(np.vstack([hard.x, easy.x]), [10.0, 10.0])[0]
    assert q[1, 2] - q[0, 2] > 0.5  # the newcomer already expects the easy prompt to go better than the hard one
    np.testing.assert_allclose(q[:, :2], source.predict(np.vstack([hard.x, easy.x]), [10.0, 10.0])[0][:, :2])
    unpooled = make_policy("lints", models, F.dim, None, PolicyConfig(pooled=False))
    unpooled.feature_version = F.version
    transfer(source, unpooled)
    assert unpooled.predict(hard.x[None], [10.0])[0][0, 2] == pytest.approx(0.5)  # the prior, as before


def test_a_learned_noise_moves_model_by_model_and_starts_afresh_from_a_state_without_one():
    from banditroute.core.state import transfer

    learning = PolicyConfig(noise_prior=10.0)
    source = make_policy("lints", MODELS, F.dim, PRICES, learning)
    for i in range(20):
        source.update(ctx(f"Say hello {i}"), 0, quality=1.0)
        source.update(ctx(f"Flip a coin {i}"), 3, quality=float(i % 2))
    models = ["tiny", "newcomer", "big"]
    target = make_policy("lints", models, F.dim, None, learning)
    plain = make_policy("lints", models, F.dim, None, PolicyConfig())
    for p in (source, target, plain):
        p.feature_version = F.version
    assert transfer(source, target) == ["tiny", "big"]
    np.testing.assert_array_equal(target.noise(), [source.noise()[3], 0.5, source.noise()[0]])
    transfer(source, plain)  # a policy with a fixed noise takes the rest and keeps its own
    assert plain.noise() == 0.5
    fresh = make_policy("lints", models, F.dim, None, learning)
    fresh.feature_version = F.version
    transfer(plain, fresh)
    np.testing.assert_array_equal(fresh.noise(), 0.5)


def test_importance_weights_are_inverse_propensities_over_their_running_mean_capped():
    pol = make_policy("lints", ["a", "b"], 2, settings=PolicyConfig(importance_cap=3.0))
    got = [pol.importance(0, p) for p in (0.5, 0.1, 0.5, 0.01)]
    inv = np.array([2.0, 10.0, 2.0, 100.0])
    expected = [min(3.0, inv[t] / inv[:t + 1].mean()) for t in range(4)]
    np.testing.assert_allclose(got, expected)
    assert pol.importance(1, None) == 1.0 and pol.weighted_observations[1] == 0  # no propensity: weight one
    unweighted = make_policy("lints", ["a", "b"], 2, settings=PolicyConfig(importance_cap=None))
    assert unweighted.importance(0, 0.01) == 1.0


def test_importance_weighted_learning_fits_the_whole_population_where_plain_learning_fits_where_it_chose():
    """A linear fit of a curved quality, logged mostly where the curve is low: the weighted fit agrees with
    the fit over every prompt (what a full-information router learns), the unweighted one does not."""
    rng = np.random.default_rng(0)
    z = rng.random(4000)
    x = np.column_stack([np.ones_like(z), z])
    quality = z ** 2
    propensity = np.where(z < 0.5, 0.9, 0.1)
    chosen = rng.random(len(z)) < propensity
    population = np.linalg.lstsq(x, quality, rcond=None)[0]
    fits = {}
    for cap in (None, 20.0):
        pol = make_policy("lints", ["a", "b"], 2, settings=PolicyConfig(importance_cap=cap, pooled=False,
                                                                        prior_strength=1e-3, prior_quality=0.0))
        for i in np.flatnonzero(chosen):
            pol.update(Context(x[i], 1.0), 0, quality=float(quality[i]), propensity=float(propensity[i]))
        fits[cap] = pol.quality.theta[0]
    assert np.abs(fits[20.0] - population).max() < 0.03
    assert np.abs(fits[None] - population).max() > 0.1


def test_a_state_saved_before_importance_weights_loads_and_starts_their_means_afresh(tmp_path):
    pol = trained("lints")
    state = pol.arrays()
    del state["weighted_observations"], state["inverse_propensity_sum"]
    again = make_policy("lints", MODELS, F.dim, PRICES, PolicyConfig(floor=0.05, floor_decay=None, floor_share=None))
    again.load_arrays(state)
    assert not again.weighted_observations.any()
    assert again.importance(0, 0.25) == 1.0  # the first weighted observation is its own mean
    np.testing.assert_array_equal(again.quality.theta, pol.quality.theta)


def test_a_price_prior_makes_a_model_with_no_evidence_expect_what_models_at_its_price_do():
    """Six models whose quality rises with log price; five are observed, the sixth (the dearest) never:
    with the price prior it is predicted near the trend, without it near the pool's mean."""
    models = [f"m{i}" for i in range(6)]
    prices = [(0.1 * 3.0 ** i, 0.4 * 3.0 ** i) for i in range(6)]
    prompts = [ctx(f"Explain topic number {i}") for i in range(40)]
    rng = np.random.default_rng(0)
    got = {}
    for price_prior in (False, True):
        pol = make_policy("lints", models, F.dim, prices, PolicyConfig(price_prior=price_prior))
        for c in prompts:
            for arm in range(5):
                pol.update(c, arm, quality=float(rng.random() < 0.15 + 0.15 * arm))
        got[price_prior] = pol.predict(np.stack([c.x for c in prompts]), [10.0] * len(prompts))[0].mean(axis=0)
    truth = 0.15 + 0.15 * np.arange(6)
    assert got[True][5] > got[True][0] + 0.3  # the unobserved model follows the trend upwards
    assert got[True][5] > got[False][5] + 0.2 and abs(got[True][5] - truth[5]) < abs(got[False][5] - truth[5])
    np.testing.assert_allclose(got[True][:5], got[False][:5], atol=0.1)  # the observed keep to their evidence
    with pytest.raises(ValueError, match="price_prior applies only with pooled"):  # it sits on the pooled fit
        PolicyConfig(price_prior=True, pooled=False)


def test_a_price_prior_needs_two_distinct_prices_and_survives_a_state_round_trip():
    from banditroute.core.policies.linear import price_covariate

    assert not price_covariate(CostModel(["a", "b"], [(1.0, 2.0), None])).any()
    assert not price_covariate(CostModel(["a", "b"], [(1.0, 2.0), (1.0, 2.0)])).any()
    pol = make_policy("lints", MODELS, F.dim, PRICES, PolicyConfig(price_prior=True))
    for i in range(64):
        pol.update(ctx(f"question {i}"), i % 3, quality=float(i % 3 == 0))
    assert pol.quality._gamma != 0.0
    _, back = loads_state(dumps_state(pol))
    X = F.transform_many(["question 3", "another prompt"])
    np.testing.assert_array_equal(back.predict(X, [10.0, 10.0])[0], pol.predict(X, [10.0, 10.0])[0])
    for i in range(64, 80):  # learning goes on identically after the reload (the slope is recomputed)
        for p in (pol, back):
            p.update(ctx(f"question {i}"), i % 4, quality=float(i % 2 == 0))
    assert back.quality._gamma == pol.quality._gamma
    np.testing.assert_array_equal(back.predict(X, [10.0, 10.0])[0], pol.predict(X, [10.0, 10.0])[0])


def test_pool_scaled_exploration_leaves_two_models_alone_and_narrows_the_posterior_draws_of_many():
    from banditroute.core.policies import exploration_for

    scaled = PolicyConfig(exploration_pool_scaling=True)
    assert exploration_for(scaled, 2) == scaled.exploration == exploration_for(PolicyConfig(), 28)
    many = [f"m{i}" for i in range(28)]
    pol = make_policy("lints", many, F.dim, None, scaled)
    assert pol.exploration == pytest.approx(scaled.exploration * np.sqrt(np.log(2) / np.log(28)))
    plain = make_policy("lints", many, F.dim, None, PolicyConfig())
    c = ctx("What is the capital of France?")
    for p in (pol, plain):  # one model clearly ahead: the narrower draws leave it more of the traffic
        for _ in range(3):
            p.update(c, 0, quality=0.8)
            for arm in range(1, 28):
                p.update(c, arm, quality=0.7)
    lead = [p.probabilities(c.x[None], [c.input_tokens], None, 0.0, np.random.default_rng(0)).probabilities[0, 0]
            for p in (pol, plain)]
    assert lead[0] > lead[1]
