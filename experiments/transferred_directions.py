"""Word directions learned on other pools: do they carry routing evidence to a table never seen?
(a design probe for issue 11's "learned projection")

Per-model word weights learned online need a few hundred outcomes a model before they pay
(``word_rank.py``); a pool of 28 models never gives them that. A projection of the words learned
*offline*, on public full-information tables, would leave the bandit a handful of coefficients per model
to learn. Which directions: for each source table, the word directions that predict its outcomes,

* ``difficulty``: a ridge of the prompt's mean quality over the models on 2^18 hashed word unigrams and
  bigrams (L2-normalised; scikit-learn's ``HashingVectorizer``);
* ``spread r``: the top ``r`` directions of a reduced-rank regression (Izenman, 1975) of the outcomes
  centred across models and over prompts: a ridge per model, then its coefficient matrix projected on the
  top right singular vectors of the fitted values, ``W = B V_r`` (what separates the models; on a
  2-model table one direction, the first model's advantage).

Each direction's projection ``h(x) . w`` is scaled to standard deviation ``scale`` over its source's
prompts and appended to banditroute's features (a :class:`Directed` featurizer); the policies learn one
coefficient per direction and model. Leave-one-table-out: the directions for table T are learned on
every other table, minus any prompt that T also holds (ZeroEval carries all 1,319 RouteLLM GSM8K
prompts), so no outcome or prompt of T is seen. The ``in-table`` rows learn them on T's own train split
with every outcome revealed: the ceiling of the idea, not something a bandit has.

Full information (default): banditroute's full-information fit (``pretrain``) on the default and the
directed features, swept over the fine grid of cost weights, beside the TF-IDF ridge. ``--online``:
``tune`` as the suite runs it (online from scratch, bandit feedback, the default sweep), seeds 1-5.

    python experiments/transferred_directions.py                                 # about a minute
    python experiments/transferred_directions.py --scales 1 --ranks 0 1 --name transferred_directions_ranks
    python experiments/transferred_directions.py --online --scales 1             # 30 minutes
    python experiments/transferred_directions.py --online --scales 1 --ranks 0 --name transferred_directions_online_difficulty
    python experiments/transferred_directions.py --online --scales 0.5 --ranks 0 --tables zeroeval_gsm_math_crux \
        routellm_gsm8k routellm_mt_bench --name transferred_directions_online_difficulty_half

Results: ``experiments/results/transferred_directions.md`` (``_online`` with ``--online``) and ``.json``;
progress on stderr. The tokens are scikit-learn's, not banditroute's: a probe of the idea, not of a
shippable artefact.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

from banditroute.core.features import Featurizer
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.tune import tune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import full_information, tfidf_ridge
from lexical_residual import BITS, table_sections
from suite import METRICS, _median, full_information_setup, per_table, save_results, table_paths

SPREAD_RANK = 2
ALPHA = 1.0
SCALES = (0.25, 1.0)


def _key(prompt: str) -> str:
    return re.sub(r"\W+", " ", prompt.lower()).strip()


def vectorizer():
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(n_features=1 << BITS, ngram_range=(1, 2), norm="l2")


def directions(prompts: list[str], quality: np.ndarray, rank: int = SPREAD_RANK, alpha: float = ALPHA) -> np.ndarray:
    """The word directions of one source (module docstring), as columns of a (2^18, 1 + r) matrix whose
    projections have standard deviation 1 over ``prompts``: difficulty, then ``r`` spread directions
    (``r = min(rank, K - 1)``; ``rank`` 0: difficulty alone)."""
    from sklearn.linear_model import Ridge

    h = vectorizer().transform(prompts)
    mean = quality.mean(axis=1)
    cols = [Ridge(alpha=alpha).fit(h, mean - mean.mean()).coef_[:, None]]
    k = quality.shape[1]
    if k > 1 and rank > 0:
        centred = quality - quality.mean(axis=1, keepdims=True)
        centred -= centred.mean(axis=0)
        b = Ridge(alpha=alpha).fit(h, centred).coef_.T  # (2^18, K)
        fitted = h @ b
        v = np.linalg.svd(fitted - fitted.mean(axis=0), full_matrices=False)[2]
        cols.append(b @ v[: min(rank, k - 1)].T)
    w = np.hstack(cols)
    z = h @ w
    return w / np.maximum(z.std(axis=0), 1e-12)


def transferred(target: Path, rank: int = SPREAD_RANK) -> np.ndarray:
    """The directions of every shared table but ``target``, learned without ``target``'s prompts."""
    held = {_key(p) for p in load_outcomes(target).prompts}
    ws = []
    for path in table_paths():
        if path == target:
            continue
        src = load_outcomes(path)
        keep = np.array([_key(p) not in held for p in src.prompts])
        if not keep.any():  # every prompt of the RouteLLM GSM8K table is in ZeroEval
            continue
        ws.append(directions([p for p, k in zip(src.prompts, keep) if k], src.quality[keep], rank))
    return np.hstack(ws)


class Directed(Featurizer):
    """banditroute's default features with the projections ``h(x) . W`` appended (a probe: its version
    is the default's plus ``+directions=<label>``, which no installation rebuilds)."""

    def __init__(self, w: np.ndarray, label: str):
        super().__init__()
        self.base = Featurizer()
        self.w = w
        self.vec = vectorizer()
        self.dim += w.shape[1]
        self.version += f"+directions={label}"
        self._z: dict[str, np.ndarray] = {}

    def transform_many(self, prompts) -> np.ndarray:
        prompts = prompts if isinstance(prompts, list) else list(prompts)
        new = [p for p in dict.fromkeys(prompts) if p not in self._z]
        if new:
            self._z.update(zip(new, np.asarray(self.vec.transform(new) @ self.w)))
        return np.hstack([self.base.transform_many(prompts), np.array([self._z[p] for p in prompts])])


def variant(scale: float, rank: int) -> str:
    return f"scale {scale:g}" + ("" if rank == SPREAD_RANK else f", spread rank {rank}")


def directed(kind: str, w_of_rank, scales, ranks) -> dict[str, Directed]:
    """A :class:`Directed` featurizer per scale and rank, the directions of each rank (``w_of_rank(r)``, unit
    standard deviation) learned once and scaled."""
    out = {}
    for r in ranks:
        w = w_of_rank(r)
        for s in scales:
            out[f"+ {kind} directions, {variant(s, r)}"] = Directed(w * s, f"{kind}-{s:g}-{r}")
    return out


def featurizers(path: Path, scales, ranks) -> dict[str, Featurizer]:
    return {"banditroute features": Featurizer(), **directed("transferred", lambda r: transferred(path, r), scales, ranks)}


def full_information_table(job) -> dict:
    path, scales, ranks = job
    t0 = time.time()
    outcomes, _, ref, grid = full_information_setup(path)
    train = outcomes.subset("train")
    routers = {"TF-IDF ridge": tfidf_ridge(outcomes, grid)[0]}
    fs = featurizers(path, scales, ranks) | directed("in-table", lambda r: directions(train.prompts, train.quality, r),
                                                     scales, ranks)
    for name, f in fs.items():
        print(f"{path.stem}: {name} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
        routers[name] = full_information(outcomes, grid, featurizer=f)[0]
    return {"table": path.stem, "models": len(outcomes.models),
            "routers": {n: {"median": frontier_summary(p, ref["best_quality"], ref["best_cost_usd"])}
                        for n, p in routers.items()}}


def online_table(job) -> dict:
    path, scales, ranks, seeds = job
    t0 = time.time()
    outcomes = load_outcomes(path)
    routers = {}
    for name, f in featurizers(path, scales, ranks).items():
        runs = {}
        for seed in seeds:
            print(f"{path.stem}: {name} seed {seed} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
            res = tune(outcomes, "lints", seed, featurizer=f)
            runs[seed] = {m: res[m] for m in METRICS}
        routers[name] = {"per_seed": runs, "median": {m: _median([r[m] for r in runs.values()]) for m in METRICS}}
    return {"table": path.stem, "models": len(outcomes.models), "routers": routers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", default=None)
    ap.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    ap.add_argument("--ranks", type=int, nargs="+", default=[SPREAD_RANK],
                    help="spread directions per source (0: the difficulty direction alone)")
    ap.add_argument("--online", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    t0 = time.time()
    if args.online:
        results = per_table(online_table, (args.scales, args.ranks, args.seeds), args.tables, args.workers)
    else:
        results = per_table(full_information_table, (args.scales, args.ranks), args.tables, args.workers)
    name = args.name or ("transferred_directions_online" if args.online else "transferred_directions")
    result = {"command": "python experiments/transferred_directions.py " + " ".join(sys.argv[1:]),
              "seconds": round(time.time() - t0), "online": args.online, "seeds": args.seeds, "tables": results}
    save_results(name, result, markdown(result))


def markdown(result: dict) -> str:
    """The results file's table, from its JSON (``result``)."""
    how = ("online from scratch over the train split with bandit feedback, greedy on test, the default sweep "
           f"(`tune`); medians over seeds {', '.join(map(str, result['seeds']))}, per-seed values in brackets"
           if result["online"] else "full information (every train outcome revealed, `pretrain`), swept over the fine "
           "grid of cost weights")
    return "\n".join([
        "# Word directions learned on other pools, appended to banditroute's features", "",
        (f"Command: `{result['command'].strip()}` ({result['seconds']} s on 2 cores). {how}. `transferred`: the "
         "difficulty and the top 2 spread directions (unless the row says otherwise) of every other shared table "
         "(prompts this table holds removed), each scaled to the given standard deviation; `in-table`: the same "
         "learned on this table's own train split with every outcome revealed (a ceiling, not available to a "
         "bandit). qauc and quality_at_25 higher is better, cost_at_95 lower, in % of the best single model; AIQ: "
         "RouterBench's area under the frontier's hull."), "",
        *table_sections(result["tables"], METRICS)])


if __name__ == "__main__":
    main()
