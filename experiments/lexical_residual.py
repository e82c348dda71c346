"""Does a sparse word model on top of the default policy close the GSM8K gap? (a design probe)

``vw_peer.py --our-features`` showed that on GSM8K Vowpal Wabbit learns 3 points of qauc more from the
prompt's words than from banditroute's 149 features, with the same learner. This probe adds to the
default ``lints`` policy, per model, a sparse linear model over hashed words (2^18 buckets, the word
vector L2-normalised) trained online by AdaGrad (Duchi, Hazan & Singer, 2011) on the residual of the
dense model, while the dense model learns the residual of the sparse one (online backfitting):

    q_k(x) = dense_k(x) + s_k . h(x),    s_k,j -= eta g_j / sqrt(G_j),  g_j = -(q - q_k(x)) h_j(x).

Decisions are sampled from ``lints``' probabilities with the sparse part added to its mean quality
(the exploration is the dense posterior's), so only the prediction changes.
Learned online from scratch over the train split with bandit feedback (the same seed's order as
``simulate``), one learner per cost weight over :func:`banditroute.offline.tune.default_grid`
extended upward as ``tune`` extends it (no midpoint refinement), greedy on test; frontier summarised
as in the suite. ``eta = 0`` is the default policy alone, run by the same loop.

The word model is AdaGrad (``--etas``), a diagonal Gaussian posterior (``--priors``), its assumed
density filtering form (``--adf-priors``), or that with a block shared by every model plus per-model
deviations (``--shared-ratios``, :class:`SharedSparse`).

    python experiments/lexical_residual.py --tables routellm_gsm8k routellm_mt_bench routerbench_subset \
        zeroeval_gsm_math_crux --seeds 1 2 3 --etas 0 0.1          # lexical_residual.md, about 25 minutes
    python experiments/lexical_residual.py --tables routellm_gsm8k --seeds 1 2

Recordings made before the grid was extended (lexical_residual.md, lexical_residual_small_eta.md,
lexical_residual_diagonal*.md) say so; their RouterBench and ZeroEval rows compare only with each
other.

Results: ``experiments/results/lexical_residual.md`` and ``.json``; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
import zlib
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from banditroute.config import PolicyConfig
from banditroute.core.features import Featurizer
from banditroute.core.policies import LinTS, make_policy
from banditroute.core.types import Context
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.outcomes import Outcomes, load_outcomes
from banditroute.offline.tune import default_grid, extend_upward

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import table_paths

RESULTS = Path(__file__).resolve().parent / "results"
BITS = 18
CLIP = 3.0  # |L| bound of the mixed variant, so that evidence against the word model early can be outweighed later
METRICS = ("qauc", "cost_at_95", "quality_at_25", "aiq")
_WORD = re.compile(r"[0-9a-z]+")


def hashed(prompt: str) -> tuple[np.ndarray, np.ndarray]:
    """The prompt's distinct lowercase words as (bucket indices, values), L2-normalised."""
    idx = np.unique([zlib.crc32(w.encode()) & ((1 << BITS) - 1) for w in _WORD.findall(prompt.lower())] or [0])
    return idx, np.full(len(idx), 1.0 / np.sqrt(len(idx)))


def adf_step(w: np.ndarray, prec: np.ndarray, idx: np.ndarray, cov: np.ndarray, residual: float,
             denom: float) -> None:
    """In place: ``w_j += cov_j r / denom``, ``1/prec_j -= cov_j^2 / denom`` over ``idx``."""
    w[idx] += cov * residual / denom
    prec[idx] = 1.0 / (1.0 / prec[idx] - cov * cov / denom)


class Sparse:
    """Per-model sparse linear models over hashed words: AdaGrad with step ``eta``, or (``prior`` set) a
    diagonal Gaussian posterior per weight, prior ``N(0, 1/prior)``, unit noise. ``adf=False``:

        lambda_j += h_j^2,    s_j += h_j r / lambda_j    (r: the residual before the update),

    so a word's weight moves only as its evidence outweighs the prior (recursive least squares with the
    off-diagonal terms dropped; the words of one prompt together absorb nearly all of ``r``).
    ``adf=True``: the Kalman update of the whole block, its covariance then projected back to a
    diagonal (assumed density filtering; Opper, 1998), with ``v = sum_j h_j^2 / lambda_j``:

        s_j += (h_j / lambda_j) r / (1 + v),    1/lambda_j -= (h_j / lambda_j)^2 / (1 + v),

    so one prompt moves the prediction by ``r v / (1 + v)`` only."""

    def __init__(self, k: int, eta: float, prior: float | None = None, adf: bool = False):
        self.w = np.zeros((k, 1 << BITS))
        self.g2 = np.full((k, 1 << BITS), 1e-8 if prior is None else prior)
        self.eta = eta
        self.prior = prior
        self.adf = adf

    def predict(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        return self.w[:, idx] @ val

    def update(self, arm: int, idx: np.ndarray, val: np.ndarray, residual: float) -> None:
        if self.prior is not None and self.adf:
            cov = val / self.g2[arm, idx]
            adf_step(self.w[arm], self.g2[arm], idx, cov, residual, 1.0 + float(val @ cov))
            return
        if self.prior is not None:
            self.g2[arm, idx] += val * val
            self.w[arm, idx] += val * residual / self.g2[arm, idx]
            return
        g = -residual * val
        self.g2[arm, idx] += g * g
        self.w[arm, idx] -= self.eta * g / np.sqrt(self.g2[arm, idx])


class SharedSparse(Sparse):
    """The ADF word model with a block shared by every model: ``s_k(x) = (u + w_k) . h(x)``, ``u`` with
    prior ``N(0, 1/prior)`` and each ``w_k`` with prior ``N(0, 1/(prior * ratio))`` (a hierarchical prior:
    what a word says about every model, plus each model's own deviation; Li et al., 2010, hybrid
    LinUCB). One feedback updates ``u`` and the chosen model's ``w`` jointly, by the ADF step of
    :class:`Sparse` over both, so every feedback moves every model's prediction."""

    def __init__(self, k: int, prior: float, ratio: float):
        super().__init__(k, 0.0, prior * ratio, adf=True)
        self.u = np.zeros(1 << BITS)
        self.u_prec = np.full(1 << BITS, prior)

    def predict(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        return super().predict(idx, val) + float(self.u[idx] @ val)

    def update(self, arm: int, idx: np.ndarray, val: np.ndarray, residual: float) -> None:
        cov_w, cov_u = val / self.g2[arm, idx], val / self.u_prec[idx]
        denom = 1.0 + float(val @ cov_w) + float(val @ cov_u)
        adf_step(self.w[arm], self.g2[arm], idx, cov_w, residual, denom)
        adf_step(self.u, self.u_prec, idx, cov_u, residual, denom)


def word_model(k: int, variant: dict) -> Sparse:
    """The posterior word model of ``variant``: shared block plus deviations when it has a ``ratio``."""
    if variant.get("ratio"):
        return SharedSparse(k, variant["prior"], variant["ratio"])
    return Sparse(k, 0.0, variant["prior"], adf=variant.get("adf", False))


def run_weight(outcomes: Outcomes, feats: dict, order: np.ndarray, weight: float, seed: int, variant: dict) -> dict:
    """One learner at one cost weight: online over the train split, then greedy on test."""
    if variant.get("mix"):
        return run_weight_mixed(outcomes, feats, order, weight, seed, variant)
    train, test = outcomes.subset("train"), outcomes.subset("test")
    k = len(outcomes.models)
    pol: LinTS = make_policy("lints", outcomes.models, feats["dim"], None, PolicyConfig())
    eta, prior, adf = variant.get("eta", 0.0), variant.get("prior"), variant.get("adf", False)
    sparse = (SharedSparse(k, prior, variant["ratio"]) if variant.get("ratio")
              else Sparse(k, eta, prior, adf))
    learns = eta > 0 or prior is not None
    rng = np.random.default_rng(seed)
    base = pol._predict_quality
    for i in order:
        x, tokens, (idx, val) = feats["train"][0][i], feats["train"][1][i], feats["train"][2][i]
        s = sparse.predict(idx, val)
        pol._predict_quality = lambda X, s=s: base(X) + s  # the sparse part joins the mean quality
        p = pol.probabilities(x[None], [tokens], None, weight, rng).probabilities[0]
        pol._predict_quality = base
        a = int(rng.choice(k, p=p / p.sum()))
        q, c = float(train.quality[i, a]), float(train.cost[i, a])
        # Gauss-Seidel for ADF (the word block fits what the updated dense model leaves), Jacobi otherwise
        dense = None if adf else float(base(x[None])[0, a])
        pol.update(Context(x, tokens), a, quality=q - s[a] if learns else q, cost_usd=c)
        if learns:
            dense = float(base(x[None])[0, a]) if adf else dense
            sparse.update(a, idx, val, q - dense - s[a])
    Xt, tt = feats["test"][0], feats["test"][1]
    q_pred = base(Xt) + np.stack([sparse.predict(idx, val) for idx, val in feats["test"][2]])
    c_pred = pol.cost_model.predict(Xt, tt)
    picks = np.argmax(q_pred - weight * c_pred, axis=1)
    rows = np.arange(len(test))
    return {"cost_weight": weight, "quality": float(test.quality[rows, picks].mean()),
            "cost_usd": float(test.cost[rows, picks].sum())}


def run_weight_mixed(outcomes: Outcomes, feats: dict, order: np.ndarray, weight: float, seed: int,
                     variant: dict) -> dict:
    """:func:`run_weight` with the word model used only as far as it earns its place: the default
    policy alone (``a``) and the dense-plus-words model (``b``: its own dense part fitted on the word
    model's residual) both predict each outcome before learning it, and their predictions are mixed by
    the posterior probability of ``b`` under Gaussian noise ``sigma = noise_sd`` (Bayesian model
    averaging, prequential form; Dawid, 1984):

        alpha = 1 / (1 + exp(-L)),    L = clip(L + ((q - a)^2 - (q - b)^2) / (2 sigma^2), -CLIP, CLIP)

    Decisions are sampled from ``a``'s probabilities with the mean ``(1 - alpha) a + alpha b``."""
    train, test = outcomes.subset("train"), outcomes.subset("test")
    k = len(outcomes.models)
    alone: LinTS = make_policy("lints", outcomes.models, feats["dim"], None, PolicyConfig())
    resid: LinTS = make_policy("lints", outcomes.models, feats["dim"], None, PolicyConfig())
    sparse = word_model(k, variant)
    rng = np.random.default_rng(seed)
    base = alone._predict_quality
    log_odds, two_var = 0.0, 2 * alone.noise_sd ** 2
    for i in order:
        x, tokens, (idx, val) = feats["train"][0][i], feats["train"][1][i], feats["train"][2][i]
        sw = sparse.predict(idx, val)
        qa, qb = base(x[None])[0], resid._predict_quality(x[None])[0] + sw
        alpha = 1.0 / (1.0 + np.exp(-log_odds))
        alone._predict_quality = lambda X, m=(1 - alpha) * qa + alpha * qb: m[None]
        p = alone.probabilities(x[None], [tokens], None, weight, rng).probabilities[0]
        alone._predict_quality = base
        a = int(rng.choice(k, p=p / p.sum()))
        q, c = float(train.quality[i, a]), float(train.cost[i, a])
        log_odds = float(np.clip(log_odds + ((q - qa[a]) ** 2 - (q - qb[a]) ** 2) / two_var, -CLIP, CLIP))
        ctx = Context(x, tokens)
        alone.update(ctx, a, quality=q, cost_usd=c)
        resid.update(ctx, a, quality=q - sw[a])
        sparse.update(a, idx, val, q - float(resid._predict_quality(x[None])[0, a]) - sw[a])
    Xt, tt = feats["test"][0], feats["test"][1]
    alpha = 1.0 / (1.0 + np.exp(-log_odds))
    words = np.stack([sparse.predict(idx, val) for idx, val in feats["test"][2]])
    q_pred = (1 - alpha) * base(Xt) + alpha * (resid._predict_quality(Xt) + words)
    picks = np.argmax(q_pred - weight * alone.cost_model.predict(Xt, tt), axis=1)
    rows = np.arange(len(test))
    return {"cost_weight": weight, "quality": float(test.quality[rows, picks].mean()),
            "cost_usd": float(test.cost[rows, picks].sum()), "alpha": float(alpha)}


def frontier_points(outcomes: Outcomes, feats: dict, seed: int, variant: dict, learner=None) -> dict[float, dict]:
    """``learner`` (default :func:`run_weight`) at each cost weight of the default grid, extended upward
    as ``tune`` extends it (no midpoint refinement): its test points by weight."""
    learner = learner or run_weight
    order = np.random.default_rng(seed).permutation(len(outcomes.subset("train")))
    points: dict[float, dict] = {}

    def run(w: float) -> dict:
        if w not in points:
            points[w] = learner(outcomes, feats, order, w, seed, variant)
        return points[w]

    for w in default_grid(outcomes):
        run(w)
    extend_upward(run, max(points), float(outcomes.subset("test").cost.sum(axis=0).min()))
    return points


def summary(outcomes: Outcomes, points: dict[float, dict]) -> dict:
    ref = outcomes.subset("test").reference()
    return frontier_summary([points[w] for w in sorted(points)], ref["best_quality"], ref["best_cost_usd"])


def frontier(outcomes: Outcomes, feats: dict, seed: int, variant: dict) -> dict:
    return summary(outcomes, frontier_points(outcomes, feats, seed, variant))


def table_features(outcomes: Outcomes) -> dict:
    """Each split's default feature vectors, input tokens and hashed words (:func:`hashed`)."""
    f = Featurizer()
    feats = {"dim": f.dim}
    for split in ("train", "test"):
        prompts = outcomes.subset(split).prompts
        feats[split] = (f.transform_many(prompts), np.array([f.input_tokens(p) for p in prompts]),
                        [hashed(p) for p in prompts])
    return feats


def variant_name(v: dict) -> str:
    if v.get("prior") is None:
        return f"eta {v.get('eta', 0.0):g}"
    name = f"{'ADF' if v.get('adf') else 'diagonal'} posterior, prior {v['prior']:g}"
    if v.get("ratio"):
        name += f", shared block, per-model prior x{v['ratio']:g}"
    if v.get("mix"):
        name += ", mixed with the default by its evidence"
    return name


def run_table(path: Path, seeds: list[int], variants: list[dict], frontier_of=None, name_of=None,
              metrics: tuple[str, ...] = METRICS) -> dict:
    """Every variant's frontier (``frontier_of``, default :func:`frontier`; named by ``name_of``, default
    :func:`variant_name`) on one table for each seed, with the medians over seeds of ``metrics``."""
    frontier_of, name_of = frontier_of or frontier, name_of or variant_name
    t0 = time.time()
    outcomes = load_outcomes(path)
    feats = table_features(outcomes)
    out = {"table": path.stem, "routers": {}}
    for variant in variants:
        name = name_of(variant)
        runs = {}
        for seed in seeds:
            print(f"{path.stem}: {name} seed {seed} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
            runs[seed] = frontier_of(outcomes, feats, seed, variant)
        out["routers"][name] = {"per_seed": runs, "median": {
            m: statistics.median([float("inf") if r[m] is None else r[m] for r in runs.values()]) for m in metrics}}
    return out


def one_table(job) -> dict:
    return run_table(*job)


def cell(r: dict, m: str) -> str:
    """A router's median of ``m`` with its per-seed values in brackets (``never``: not reached; AIQ to three
    decimals, the percentages to one); a router without per-seed values (a full-information fit) shows its
    one value."""
    d = 3 if m == "aiq" else 1  # AIQ is a fraction, the others percentages
    med = "never" if r["median"][m] in (None, float("inf")) else f"{r['median'][m]:.{d}f}"
    if "per_seed" not in r:
        return med
    return med + " [" + ", ".join("never" if s[m] is None else f"{s[m]:.{d}f}" for s in r["per_seed"].values()) + "]"


def markdown(tables: list[dict], command: str, extended: bool = True) -> str:
    lines = ["# A sparse word model on the default policy's residual (design probe)", "",
             (f"Command: `{command}`. Online from scratch over the train split, bandit feedback, greedy on test, one "
             "learner per cost weight of the default grid; medians over seeds, per-seed values in brackets; qauc "
             "and quality_at_25 higher is better, cost_at_95 lower (% of the best single model). eta 0 is the "
             "default policy alone, run by the same loop. ") + (
             "The grid is the default grid extended upward as `tune` extends it (no midpoint refinement): "
             "compare the rows with each other; the suite's figures refine the grid and use seeds 1-5."
             if extended else
             "The grid is the default grid only, not extended to the cheap end as `tune` extends it, so on "
             "RouterBench and ZeroEval the frontier stops short and the figures are below the suite's: "
             "compare the rows with each other, not with suite.md."), ""]
    return "\n".join(lines + table_sections(tables, ("qauc", "cost_at_95", "quality_at_25")))


def table_sections(tables: list[dict], metrics, extra_columns=(), extra=None) -> list[str]:
    """One markdown section per table: each router's :func:`cell` of ``metrics``, then the columns
    ``extra_columns`` filled by ``extra(name, router)``."""
    lines = []
    for t in tables:
        columns = (*metrics, *extra_columns)
        lines += [f"## {t['table']}", "", "| router | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
        for name, r in t["routers"].items():
            cells = [cell(r, m) for m in metrics] + (list(extra(name, r)) if extra else [])
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--etas", type=float, nargs="*", default=[0.0, 0.1, 0.3])
    ap.add_argument("--priors", type=float, nargs="*", default=[],
                    help="also the diagonal-posterior word model with these prior precisions")
    ap.add_argument("--adf-priors", type=float, nargs="*", default=[],
                    help="also the assumed-density-filtering word model with these prior precisions")
    ap.add_argument("--shared-ratios", type=float, nargs="*", default=[],
                    help="also, for each ADF prior, a shared word block plus per-model deviations whose prior "
                         "precision is this many times the shared block's")
    ap.add_argument("--shared-only", action="store_true",
                    help="with --shared-ratios: leave out the ADF word model without the shared block")
    ap.add_argument("--mix", action="store_true",
                    help="the ADF and shared word models mixed with the default policy alone by their evidence")
    ap.add_argument("--name", default="lexical_residual")
    ap.add_argument("--render", help="only re-render this results JSON into the markdown")
    args = ap.parse_args()
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        (RESULTS / f"{args.name}.md").write_text(markdown(saved["tables"], saved["command"], saved.get("grid") == "extended") + "\n")
        return
    paths = table_paths(args.tables)
    with Pool(2) as pool:
        variants = ([{"eta": e} for e in args.etas] + [{"prior": p} for p in args.priors]
                    + [{"prior": p, "adf": True, "mix": args.mix} for p in args.adf_priors
                       if not args.shared_only]
                    + [{"prior": p, "adf": True, "ratio": r, "mix": args.mix}
                       for p in args.adf_priors for r in args.shared_ratios])
        tables = sorted(pool.map(one_table, [(p, args.seeds, variants) for p in paths], chunksize=1),
                        key=lambda t: t["table"])
    command = "python experiments/lexical_residual.py" + "".join(f" {a}" for a in sys.argv[1:])
    md = markdown(tables, command)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"command": command, "grid": "extended", "tables": tables}, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
