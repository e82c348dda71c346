"""Does a sparse word model on top of the default policy close the GSM8K gap? (a design probe)

``vw_peer.py --our-features`` showed that on GSM8K Vowpal Wabbit learns 3 points of qauc more from the
prompt's words than from banditroute's 149 features, with the same learner. This probe adds to the
default ``lints`` policy, per model, a sparse linear model over hashed words (2^18 buckets, the word
vector L2-normalised) trained online by AdaGrad (Duchi, Hazan & Singer, 2011) on the residual of the
dense model, while the dense model learns the residual of the sparse one (online backfitting):

    q_k(x) = dense_k(x) + s_k . h(x),    s_k,j -= eta g_j / sqrt(G_j),  g_j = -(q - q_k(x)) h_j(x).

Decisions are sampled from ``lints``' probabilities with the sparse part added to its mean quality
(the exploration is the dense posterior's), so only the prediction changes. Learned online from
scratch over the train split with bandit feedback (the same seed's order as ``simulate``), one learner
per cost weight over :func:`banditroute.offline.tune.default_grid`, greedy on test; frontier
summarised as in the suite. ``eta = 0`` is the default policy alone, run by the same loop.

    python experiments/lexical_residual.py --tables routellm_gsm8k routellm_mt_bench routerbench_subset \
        zeroeval_gsm_math_crux --seeds 1 2 3 --etas 0 0.1          # the recorded run, about 25 minutes
    python experiments/lexical_residual.py --tables routellm_gsm8k --seeds 1 2

The grid is the default grid only (not extended to the cheap end as ``tune`` extends it): on tables
where that grid stops short (RouterBench, ZeroEval) the figures are below the suite's, and only the
rows of one run compare.

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
from banditroute.offline.tune import default_grid

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
BITS = 18
METRICS = ("qauc", "cost_at_95", "quality_at_25", "aiq")
_WORD = re.compile(r"[0-9a-z]+")


def hashed(prompt: str) -> tuple[np.ndarray, np.ndarray]:
    """The prompt's distinct lowercase words as (bucket indices, values), L2-normalised."""
    idx = np.unique([zlib.crc32(w.encode()) & ((1 << BITS) - 1) for w in _WORD.findall(prompt.lower())] or [0])
    return idx, np.full(len(idx), 1.0 / np.sqrt(len(idx)))


class Sparse:
    """Per-model sparse linear models over hashed words: AdaGrad with step ``eta``, or (``prior`` set) a
    diagonal Gaussian posterior per weight, prior ``N(0, 1/prior)``, unit noise:

        lambda_j += h_j^2,    s_j += h_j r / lambda_j    (r: the residual before the update),

    so a word's weight moves only as its evidence outweighs the prior (recursive least squares with the
    off-diagonal terms dropped)."""

    def __init__(self, k: int, eta: float, prior: float | None = None):
        self.w = np.zeros((k, 1 << BITS))
        self.g2 = np.full((k, 1 << BITS), 1e-8 if prior is None else prior)
        self.eta = eta
        self.prior = prior

    def predict(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        return self.w[:, idx] @ val

    def update(self, arm: int, idx: np.ndarray, val: np.ndarray, residual: float) -> None:
        if self.prior is not None:
            self.g2[arm, idx] += val * val
            self.w[arm, idx] += val * residual / self.g2[arm, idx]
            return
        g = -residual * val
        self.g2[arm, idx] += g * g
        self.w[arm, idx] -= self.eta * g / np.sqrt(self.g2[arm, idx])


def run_weight(outcomes: Outcomes, feats: dict, order: np.ndarray, weight: float, seed: int, eta: float,
               prior: float | None = None) -> dict:
    train, test = outcomes.subset("train"), outcomes.subset("test")
    k = len(outcomes.models)
    pol: LinTS = make_policy("lints", outcomes.models, feats["dim"], None, PolicyConfig())
    sparse = Sparse(k, eta, prior)
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
        dense = float(base(x[None])[0, a])
        ctx = Context(x, tokens)
        pol.update(ctx, a, quality=q - s[a] if learns else q, cost_usd=c)
        if learns:
            sparse.update(a, idx, val, q - dense - s[a])
    Xt, tt = feats["test"][0], feats["test"][1]
    q_pred = base(Xt) + np.stack([sparse.predict(idx, val) for idx, val in feats["test"][2]])
    c_pred = pol.cost_model.predict(Xt, tt)
    picks = np.argmax(q_pred - weight * c_pred, axis=1)
    rows = np.arange(len(test))
    return {"cost_weight": weight, "quality": float(test.quality[rows, picks].mean()),
            "cost_usd": float(test.cost[rows, picks].sum())}


def frontier(outcomes: Outcomes, feats: dict, seed: int, eta: float, prior: float | None = None) -> dict:
    order = np.random.default_rng(seed).permutation(len(outcomes.subset("train")))
    points = [run_weight(outcomes, feats, order, w, seed, eta, prior) for w in default_grid(outcomes)]
    ref = outcomes.subset("test").reference()
    return frontier_summary(points, ref["best_quality"], ref["best_cost_usd"])


def one_table(job) -> dict:
    path, seeds, etas, priors = job
    t0 = time.time()
    outcomes = load_outcomes(path)
    f = Featurizer()
    feats = {"dim": f.dim}
    for split in ("train", "test"):
        prompts = outcomes.subset(split).prompts
        feats[split] = (f.transform_many(prompts), np.array([f.input_tokens(p) for p in prompts]),
                        [hashed(p) for p in prompts])
    out = {"table": path.stem, "routers": {}}
    for eta, prior in [(e, None) for e in etas] + [(0.0, p) for p in priors]:
        name = f"eta {eta:g}" if prior is None else f"diagonal posterior, prior {prior:g}"
        runs = {}
        for seed in seeds:
            print(f"{path.stem}: {name} seed {seed} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
            runs[seed] = frontier(outcomes, feats, seed, eta, prior)
        out["routers"][name] = {"per_seed": runs, "median": {
            m: statistics.median([float("inf") if r[m] is None else r[m] for r in runs.values()]) for m in METRICS}}
    return out


def markdown(tables: list[dict], command: str) -> str:
    lines = ["# A sparse word model on the default policy's residual (design probe)", "",
             (f"Command: `{command}`. Online from scratch over the train split, bandit feedback, greedy on test, one "
             "learner per cost weight of the default grid; medians over seeds, per-seed values in brackets; qauc "
             "and quality_at_25 higher is better, cost_at_95 lower (% of the best single model). eta 0 is the "
             "default policy alone, run by the same loop. The grid is the default grid only, not extended to "
             "the cheap end as `tune` extends it, so on RouterBench and ZeroEval the frontier stops short and "
             "the figures are below the suite's: compare the rows with each other, not with suite.md."), ""]
    for t in tables:
        lines += [f"## {t['table']}", "", "| router | qauc | cost_at_95 | quality_at_25 |", "| --- | --- | --- | --- |"]
        for name, r in t["routers"].items():
            cells = [("never" if r["median"][m] == float("inf") else f"{r['median'][m]:.1f}") + " [" + ", ".join("never" if s[m] is None else f"{s[m]:.1f}"
                                                         for s in r["per_seed"].values()) + "]"
                     for m in ("qauc", "cost_at_95", "quality_at_25")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    ap.add_argument("--priors", type=float, nargs="*", default=[],
                    help="also the diagonal-posterior word model with these prior precisions")
    ap.add_argument("--name", default="lexical_residual")
    ap.add_argument("--render", help="only re-render this results JSON into the markdown")
    args = ap.parse_args()
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        (RESULTS / f"{args.name}.md").write_text(markdown(saved["tables"], saved["command"]) + "\n")
        return
    paths = sorted(DATA.glob("*.parquet"), key=lambda p: -p.stat().st_size)
    if args.tables:
        paths = [p for p in paths if p.stem in args.tables]
    with Pool(2) as pool:
        tables = sorted(pool.map(one_table, [(p, args.seeds, args.etas, args.priors) for p in paths], chunksize=1),
                        key=lambda t: t["table"])
    command = "python experiments/lexical_residual.py" + "".join(f" {a}" for a in sys.argv[1:])
    md = markdown(tables, command)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"command": command, "tables": tables}, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
