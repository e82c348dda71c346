"""A word model of low rank across models: does it keep the GSM8K gain without the large pools' loss?
(a design probe)

``lexical_residual.py`` found that per-model word weights beside the default policy gain on GSM8K and
lose on the large pools. Routing needs only the differences between models on a prompt, and on a pool of
28 models a free word vector per model is mostly noise; a reduced-rank model keeps the few directions in
which the models' word residuals move together (reduced-rank regression; Izenman, 1975; Velu & Reinsel,
1998). Two parts:

**Full information** (every train outcome revealed, about 2 minutes): banditroute's own full-information
fit (``pretrain``), then a ridge per model over 2^18 hashed word unigrams and bigrams (scikit-learn,
L2-normalised) on its train residuals, centred across models per prompt (a shift common to every model
changes no decision). ``per model``: those ridges' predictions added to the quality; ``rank r``: their
predictions projected on the top ``r`` right singular vectors ``V_r`` of the fitted train values (the
reduced-rank regression estimator):

    q_k(x) = dense_k(x) + [V_r V_r^T u(x)]_k,    u(x) = (ridge_1(x), ..., ridge_K(x)) - its mean.

The rows ``one outcome a prompt`` fit the word models on what a bandit sees: for each train prompt one
model's residual, the model drawn uniformly (the dense fit keeps every outcome, so only the word models
are starved); ``bilinear rank r`` fits the module's bilinear model to those outcomes by alternating
least squares (:func:`bilinear_fit`), its word matrix from every model's outcomes (``shared first``: the
first component's loadings fixed at 1, a word vector shared by every model, beside a second fitted). The rows
``one outcome on x% of the prompts`` give the per-model word models (alpha 3) a share of those outcomes only:
as many outcomes per model as a pool with more models would leave each.

**Online** (``--online``): learned from scratch over the train split with bandit feedback, one learner
per cost weight of the default grid extended upward as ``tune`` extends it (no midpoint refinement;
rows compare with each other only), greedy on test. The default policy (``lints``, importance-weighted)
fits the quality minus the word part; decisions are sampled from its probabilities with the word part
added to its mean quality. The word part is

- ``per model``: :class:`lexical_residual.Sparse` (diagonal Gaussian posterior per word weight, prior 1);
- ``projected rank r``: the same, its centred predictions projected on the top ``r`` eigenvectors of
  their running second moment over the prompts seen (the online form of the estimator above);
- ``bilinear rank r``: ``s_k(x) = b_k . W^T h(x)``, one word matrix ``W`` (2^18 x r) shared by every
  model and ``r`` loadings per model (a factorisation machine's low-rank interaction of words and models;
  Rendle, 2010): each feedback updates ``W`` by the assumed-density-filtering step of ``Sparse`` with
  the chosen model's loadings fixed, then that model's loadings by exact Bayesian linear regression on
  ``z = W^T h(x)`` (prior ``N(m_0, I)``, ``m_0`` 1 on the first component and a fixed draw on the others);
- ``grown``: the per-model word models, model k's prediction weighted by ``n_k / (n_k + m)`` with ``n_k``
  its outcomes so far (:class:`Grown`; ``--grow m``): capacity that comes with each model's own evidence.

    python experiments/word_rank.py                            # full information, every table
    python experiments/word_rank.py --online --kinds grown --grow 300 --name word_rank_grown
    python experiments/word_rank.py --online --tables routellm_gsm8k routellm_mt_bench --seeds 1 2 3 4 5

Results: ``experiments/results/word_rank.md`` (``word_rank_online.md`` with ``--online``) and ``.json``;
progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from banditroute.config import PolicyConfig
from banditroute.core.features import Featurizer
from banditroute.core.policies import LinTS, make_policy
from banditroute.core.types import Context
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.outcomes import Outcomes
from banditroute.offline.pretrain import pretrain

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import frontier_from_predictions, tfidf_ridge
from lexical_residual import BITS, METRICS, Sparse, adf_step, frontier_points, run_table, summary, table_sections
from suite import full_information_setup, per_table, save_results

RANKS = (1, 2, 4)
ALPHAS = (1.0, 3.0, 10.0)
SHARES = (0.1, 0.25, 0.5)  # of the train prompts, for the per-model word models' data-size rows
REFRESH = 25  # decisions between recomputations of the projection


# -- full information -----------------------------------------------------------------------------
def full_information_table(job) -> dict:
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import Ridge

    (path,) = job
    outcomes, test, ref, grid = full_information_setup(path)
    train = outcomes.subset("train")
    f = Featurizer()
    pol = pretrain(outcomes, "lints", featurizer=f)
    q_train = pol.predict(f.transform_many(train.prompts), [f.input_tokens(p) for p in train.prompts])[0]
    q_test, c_test = pol.predict(f.transform_many(test.prompts), [f.input_tokens(p) for p in test.prompts])
    out = {"table": path.stem, "models": len(outcomes.models), "rows": {}}

    def add(name: str, points: list[dict]) -> None:
        out["rows"][name] = frontier_summary(points, ref["best_quality"], ref["best_cost_usd"])

    add("TF-IDF ridge", tfidf_ridge(outcomes, grid)[0])
    add("banditroute features", frontier_from_predictions(test, q_test, c_test, grid))
    vec = HashingVectorizer(n_features=1 << BITS, ngram_range=(1, 2), norm="l2")
    h_train, h_test = vec.transform(train.prompts), vec.transform(test.prompts)
    residual = train.quality - q_train
    residual -= residual.mean(axis=1, keepdims=True)
    k = len(outcomes.models)
    for alpha in ALPHAS:
        ridge = Ridge(alpha=alpha).fit(h_train, residual)
        u_test = ridge.predict(h_test)
        add(f"+ words per model, alpha {alpha:g}", frontier_from_predictions(test, q_test + u_test, c_test, grid))
        for r, proj in rank_projections(ridge.predict(h_train)):
            add(f"+ words rank {r}, alpha {alpha:g}", frontier_from_predictions(test, q_test + u_test @ proj, c_test, grid))
    # the word models fitted on a bandit's share of the outcomes: one model's, chosen uniformly, per prompt
    shown = np.random.default_rng(0).integers(k, size=len(train))
    raw = train.quality - q_train
    for alpha in ALPHAS:
        fits = [Ridge(alpha=alpha).fit(h_train[shown == m], raw[shown == m, m]) for m in range(k)]
        u_test = np.column_stack([f.predict(h_test) for f in fits])
        u_test -= u_test.mean(axis=1, keepdims=True)
        add(f"+ words per model, alpha {alpha:g}, one outcome a prompt",
            frontier_from_predictions(test, q_test + u_test, c_test, grid))
        fitted = np.column_stack([f.predict(h_train) for f in fits])
        for r, proj in rank_projections(fitted - fitted.mean(axis=1, keepdims=True)):
            add(f"+ words rank {r}, alpha {alpha:g}, one outcome a prompt",
                frontier_from_predictions(test, q_test + u_test @ proj, c_test, grid))
        for r, shared in ((1, False), (2, False), (2, True)):
            b, w = bilinear_fit(h_train, shown, raw[np.arange(len(train)), shown], k, r, alpha, shared)
            add(f"+ words bilinear rank {r}{', shared first' if shared else ''}, alpha {alpha:g}, one outcome a prompt",
                frontier_from_predictions(test, q_test + (h_test @ w) @ b.T, c_test, grid))
    # as much data per model as a larger pool leaves it: one outcome on a share of the train prompts only
    order = np.random.default_rng(1).permutation(len(train))
    for share in SHARES:
        kept = np.zeros(len(train), bool)
        kept[order[: int(share * len(train))]] = True
        fits = [Ridge(alpha=3.0).fit(h_train[kept & (shown == m)], raw[kept & (shown == m), m]) for m in range(k)]
        u_test = np.column_stack([f.predict(h_test) for f in fits])
        add(f"+ words per model, alpha 3, one outcome on {share:.0%} of the prompts",
            frontier_from_predictions(test, q_test + u_test, c_test, grid))
    out["train_prompts"] = len(train)
    print(f"  {path.stem} done", file=sys.stderr, flush=True)
    return out


def rank_projections(fitted: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``(r, V_r V_r^T)`` for each rank r of :data:`RANKS` below ``K - 1``, ``V_r`` the top r right singular
    vectors of the fitted train values ``fitted`` (n, K), each row centred across models (so of rank
    ``K - 1`` at most: higher ranks would be the per-model predictions themselves)."""
    v = np.linalg.svd(fitted - fitted.mean(axis=0), full_matrices=False)[2]
    return [(r, v[:r].T @ v[:r]) for r in RANKS if r < fitted.shape[1] - 1]


def bilinear_fit(h, arms: np.ndarray, y: np.ndarray, k: int, rank: int, alpha: float, shared: bool = False,
                 sweeps: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``s_k(x) = b_k . W^T h(x)`` fitted to one outcome ``y_i`` of model ``arms[i]`` per row of ``h`` by
    alternating least squares: ``W`` by ridge (``alpha``) on the features ``h_i (x) b_{arms[i]}``, then each
    ``b_k`` by ridge (strength 1) towards ``m_0`` (1 on the first component, a fixed draw on the others)
    on ``z_i = W^T h_i``; ``shared``: the first component's loadings stay 1 (a word vector shared by every
    model, the others' loadings fitted on what it leaves). Returns ``(b (K, r), W (D, r))``."""
    from scipy import sparse
    from sklearn.linear_model import Ridge

    m0 = np.random.default_rng(0).normal(size=(k, rank))
    m0[:, 0] = 1.0
    b = m0.copy()
    for _ in range(sweeps):
        x = sparse.hstack([h.multiply(b[arms, c][:, None]) for c in range(rank)]).tocsr()
        w = Ridge(alpha=alpha, fit_intercept=False).fit(x, y).coef_.reshape(rank, -1).T
        z = h @ w
        free = slice(1 if shared else 0, rank)
        for m in range(k):
            rows = arms == m
            zf, target = z[rows][:, free], y[rows] - (z[rows, 0] if shared else 0.0)
            b[m, free] = np.linalg.solve(zf.T @ zf + np.eye(zf.shape[1]), zf.T @ target + m0[m, free])
    return b, w


def full_information_markdown(results: list[dict], command: str, seconds: float) -> str:
    tables = [f"{r['table']} ({r['models']} models, {r['train_prompts']} train prompts)" for r in results]
    lines = ["# A word model of low rank across models, with full information", "",
             (f"Command: `{command}` ({seconds:.0f} s on 2 cores). banditroute's full-information fit (`pretrain`), "
              "plus a ridge per model over 2^18 hashed word unigrams and bigrams on its train residuals centred across "
              "models; `rank r`: those predictions projected on the top r right singular vectors of the fitted train "
              "values (reduced-rank regression). On a 2-model table the centred residuals have rank 1, so only the "
              "per-model row is shown. `one outcome a prompt`: the word models fitted on what a bandit sees, one "
              "model's residual per train prompt, the model drawn uniformly (the dense fit keeps every outcome); "
              "`bilinear`: one word matrix shared by every model with r loadings per model, fitted to those outcomes "
              "by alternating least squares (`shared first`: the first component's loadings fixed at 1); `one outcome "
              "on x% of the prompts`: the per-model word models on that share of them only (outcomes per model: "
              "train prompts x share / models). qauc (higher is better) / cost_at_95 (lower is better), in % of the best "
              "single model, swept over the fine grid of cost weights on the test split."), "",
             "| router | " + " | ".join(tables) + " |", "| --- |" + " --- |" * len(tables)]
    names = max(results, key=lambda r: len(r["rows"]))["rows"]  # a 2-model table has no rank rows
    for name in names:
        cells = []
        for r in results:
            s = r["rows"].get(name)
            if s is None:
                cells.append("")
                continue
            c95 = "never" if s["cost_at_95"] is None else f"{s['cost_at_95']:.1f}"
            cells.append(f"{s['qauc']:.1f} / {c95}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- online ---------------------------------------------------------------------------------------
class Projected:
    """:class:`Sparse` per model, its centred predictions projected on the top ``rank`` eigenvectors of
    their running second moment ``C = sum_t u_t u_t^T`` (``u_t`` the centred prediction for the prompt
    of decision t, before its outcome is learned), recomputed every :data:`REFRESH` decisions; zero
    until the first. ``rank`` None: the per-model predictions as they are."""

    def __init__(self, k: int, rank: int | None, prior: float = 1.0):
        self.sparse = Sparse(k, 0.0, prior)
        self.rank = rank
        self.moment = np.zeros((k, k))
        self.proj = np.zeros((k, k))
        self.seen = 0

    def predict(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        u = self.sparse.predict(idx, val)
        return u if self.rank is None else self.proj @ (u - u.mean())

    def observe(self, idx: np.ndarray, val: np.ndarray) -> None:
        if self.rank is None:
            return
        u = self.sparse.predict(idx, val)
        u -= u.mean()
        self.moment += np.outer(u, u)
        self.seen += 1
        if self.seen % REFRESH == 0:
            vecs = np.linalg.eigh(self.moment)[1][:, ::-1][:, : self.rank]
            self.proj = vecs @ vecs.T

    def update(self, arm: int, idx: np.ndarray, val: np.ndarray, target: float) -> None:
        """Learn ``target`` (the dense model's residual) for ``arm``: each model's word model fits its own."""
        self.sparse.update(arm, idx, val, target - float(self.sparse.predict(idx, val)[arm]))


class Bilinear:
    """``s_k(x) = b_k . W^T h(x)`` (module docstring): ``W`` with a diagonal Gaussian posterior of prior
    precision ``prior``, ``b_k`` with ``N(m_0, I)`` and an exact ``r x r`` posterior."""

    def __init__(self, k: int, rank: int, prior: float = 1.0, seed: int = 0):
        self.rank = rank
        self.W = np.zeros((1 << BITS) * rank)  # row j of W at [j r, (j + 1) r)
        self.prec = np.full((1 << BITS) * rank, prior)
        m0 = np.random.default_rng(seed).normal(size=(k, rank))
        m0[:, 0] = 1.0
        self.b_prec = np.repeat(np.eye(rank)[None], k, axis=0)
        self.b_lin = m0.copy()  # precision times mean: the prior's part
        self.b = m0.copy()

    def z(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        return val @ self.W.reshape(-1, self.rank)[idx]

    def predict(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        return self.b @ self.z(idx, val)

    def observe(self, idx: np.ndarray, val: np.ndarray) -> None:
        pass

    def update(self, arm: int, idx: np.ndarray, val: np.ndarray, target: float) -> None:
        cells = (idx[:, None] * self.rank + np.arange(self.rank)).ravel()
        feat = np.outer(val, self.b[arm]).ravel()  # the prediction is feat . W[cells]
        cov = feat / self.prec[cells]
        adf_step(self.W, self.prec, cells, cov, target - float(feat @ self.W[cells]), 1.0 + float(feat @ cov))
        z = self.z(idx, val)
        self.b_prec[arm] += np.outer(z, z)
        self.b_lin[arm] += z * target
        self.b[arm] = np.linalg.solve(self.b_prec[arm], self.b_lin[arm])


class Grown(Projected):
    """The per-model word models (:class:`Projected` without a projection), model k's prediction weighted by
    ``n_k / (n_k + m)``, ``n_k`` the outcomes it has learned from: a word model that counts only as its
    model's evidence grows past ``m``."""

    def __init__(self, k: int, m: float, prior: float = 1.0):
        super().__init__(k, None, prior)
        self.m = m
        self.n = np.zeros(k)

    def predict(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        return super().predict(idx, val) * self.n / (self.n + self.m)

    def update(self, arm: int, idx: np.ndarray, val: np.ndarray, target: float) -> None:
        super().update(arm, idx, val, target)
        self.n[arm] += 1


def word_part(k: int, variant: dict, seed: int):
    kind = variant.get("kind")
    if kind == "per model":
        return Projected(k, None)
    if kind == "projected":
        return Projected(k, variant["rank"])
    if kind == "bilinear":
        return Bilinear(k, variant["rank"], seed=seed)
    if kind == "grown":
        return Grown(k, variant["m"])
    return None


def run_weight(outcomes: Outcomes, feats: dict, order: np.ndarray, weight: float, seed: int, variant: dict) -> dict:
    """One learner at one cost weight: online over the train split, then greedy on test."""
    train, test = outcomes.subset("train"), outcomes.subset("test")
    k = len(outcomes.models)
    pol: LinTS = make_policy("lints", outcomes.models, feats["dim"], None, PolicyConfig())
    words = word_part(k, variant, seed)
    rng = np.random.default_rng(seed)
    base = pol._predict_quality
    for i in order:
        x, tokens, (idx, val) = feats["train"][0][i], feats["train"][1][i], feats["train"][2][i]
        s = words.predict(idx, val) if words is not None else np.zeros(k)
        pol._predict_quality = lambda X, s=s: base(X) + s
        p = pol.probabilities(x[None], [tokens], None, weight, rng).probabilities[0]
        pol._predict_quality = base
        a = int(rng.choice(k, p=p / p.sum()))
        q, c = float(train.quality[i, a]), float(train.cost[i, a])
        ctx = Context(x, tokens)
        pol.update(ctx, a, quality=q - s[a], cost_usd=c, propensity=float(p[a]))
        if words is not None:
            words.observe(idx, val)
            words.update(a, idx, val, q - float(base(x[None])[0, a]))
    Xt, tt = feats["test"][0], feats["test"][1]
    q_pred = base(Xt)
    if words is not None:
        q_pred = q_pred + np.stack([words.predict(idx, val) for idx, val in feats["test"][2]])
    picks = np.argmax(q_pred - weight * pol.cost_model.predict(Xt, tt), axis=1)
    rows = np.arange(len(test))
    return {"cost_weight": weight, "quality": float(test.quality[rows, picks].mean()),
            "cost_usd": float(test.cost[rows, picks].sum())}


def frontier(outcomes: Outcomes, feats: dict, seed: int, variant: dict) -> dict:
    return summary(outcomes, frontier_points(outcomes, feats, seed, variant, run_weight))


def variant_name(v: dict) -> str:
    kind = v.get("kind")
    if kind is None:
        return "default alone"
    if kind == "grown":
        return f"words per model, weighted n / (n + {v['m']:g})"
    return "words per model" if kind == "per model" else f"words {kind} rank {v['rank']}"


def online_table(job) -> dict:
    path, seeds, variants = job
    return run_table(path, seeds, variants, frontier, variant_name)


def online_markdown(tables: list[dict], command: str) -> str:
    lines = ["# A word model of low rank across models, online (design probe)", "",
             (f"Command: `{command}`. Online from scratch over the train split, bandit feedback, greedy on test, one "
              "learner per cost weight of the default grid extended upward as `tune` extends it (no midpoint "
              "refinement: rows compare with each other, not with suite.md); medians over seeds, per-seed values in "
              "brackets."), ""]
    return "\n".join(lines + table_sections(tables, METRICS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--online", action="store_true")
    ap.add_argument("--tables", nargs="+", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--kinds", nargs="+", default=["per model", "projected", "bilinear"])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--grow", type=float, nargs="+", default=[300.0], help="m of the kind 'grown'")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    command = "python experiments/word_rank.py" + "".join(f" {a!r}" if " " in a else f" {a}" for a in sys.argv[1:])
    t0 = time.time()
    if not args.online:
        results = per_table(full_information_table, (), names=args.tables)
        save_results(args.name or "word_rank", {"command": command, "tables": results},
                     full_information_markdown(results, command, time.time() - t0))
        return
    variants = [{}]
    for kind in args.kinds:
        if kind == "grown":
            variants += [{"kind": kind, "m": m} for m in args.grow]
        else:
            variants += [{"kind": kind}] if kind == "per model" else [{"kind": kind, "rank": r} for r in args.ranks]
    tables = per_table(online_table, (args.seeds, variants), names=args.tables)
    save_results(args.name or "word_rank_online", {"command": command, "tables": tables},
                 online_markdown(tables, command) + "\n")


if __name__ == "__main__":
    main()
