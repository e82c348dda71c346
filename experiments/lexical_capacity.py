"""Where the full-information TF-IDF router's lead comes from: lexical capacity, inverse document
frequencies, stop words or word pairs?

With every train outcome revealed, one ridge regression per model (scikit-learn's ``Ridge``, for
quality and for cost) is fitted on each representation of the prompts, and swept over the fine grid
of cost weights on the test split, as the TF-IDF ridge of ``baselines.py`` (the reference: word
unigrams and bigrams, ``min_df`` 2, sublinear term frequencies, IDF, L2 norm, ``alpha`` 1):

* the same without IDF, and without IDF and English stop words, and with unigrams only;
* word unigrams and bigrams hashed into 64 to 2^18 buckets (signed, L2 norm; the hashing trick as
  banditroute's features use it), at ``alpha`` 0.3, 1 and 3;
* banditroute's own feature vector (its 64 hashed buckets, static embedding and signals).

This separates the representations from the bandit and from banditroute's own Bayesian ridge and
priors (``feature_alternatives.py`` measures those). Writes ``experiments/results/<name>.json`` and
``.md``; progress on stderr; about a minute on 2 cores.

    python experiments/lexical_capacity.py [--name lexical_capacity]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import frontier_from_predictions
from suite import full_information_setup, per_table, save_results

from banditroute.core.features import Featurizer
from banditroute.offline.frontier import frontier_summary

BUCKETS = (64, 256, 1024, 4096, 2**18)
ALPHAS = (0.3, 1.0, 3.0)


def one_table(job) -> dict:
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer
    from sklearn.linear_model import Ridge

    (path,) = job
    outcomes, test, ref, grid = full_information_setup(path)
    train = outcomes.subset("train")
    out = {"table": path.stem, "rows": {}}

    def fit(name: str, Xtr, Xte, alpha: float = 1.0) -> None:
        q = Ridge(alpha=alpha).fit(Xtr, train.quality).predict(Xte)
        c = Ridge(alpha=alpha).fit(Xtr, train.cost).predict(Xte)
        points = frontier_from_predictions(test, q, c, grid)
        out["rows"][name] = frontier_summary(points, ref["best_quality"], ref["best_cost_usd"])

    tfidf = {"TF-IDF (reference)": {},
             "TF without IDF": {"use_idf": False},
             "TF without IDF or stop words": {"use_idf": False, "stop_words": "english"},
             "TF-IDF, unigrams only": {"ngram_range": (1, 1)}}
    for name, kw in tfidf.items():
        vec = TfidfVectorizer(**{"ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True, **kw})
        fit(name, vec.fit_transform(train.prompts), vec.transform(test.prompts))
    for d in BUCKETS:
        vec = HashingVectorizer(n_features=d, ngram_range=(1, 2), norm="l2")
        Xtr, Xte = vec.transform(train.prompts), vec.transform(test.prompts)
        for alpha in ALPHAS:
            fit(f"hashed {d}, alpha {alpha:g}", Xtr, Xte, alpha)
    f = Featurizer()
    fit(f"banditroute features ({f.version})", f.transform_many(train.prompts), f.transform_many(test.prompts))
    print(f"  {path.stem} done", file=sys.stderr, flush=True)
    return out


def markdown(results: list[dict], seconds: float, name: str) -> str:
    tables = [r["table"] for r in results]
    lines = ["# Lexical capacity with full information: what the TF-IDF router's lead is made of", "",
             (f"Command: `python experiments/lexical_capacity.py --name {name}` ({seconds:.0f} s on 2 cores). One "
             "scikit-learn ridge per model for quality and for cost, every train outcome revealed, swept over the "
             "fine grid of cost weights on the test split; qauc (higher is better) / cost_at_95 (lower is better), "
             "in % of the best single model. Hashed: word unigrams and bigrams hashed into that many signed "
             "buckets, L2 norm. The representations alone, apart from the bandit and from banditroute's own "
             "priors."), "",
             "| representation | " + " | ".join(tables) + " |",
             "| --- |" + " --- |" * len(tables)]
    for row in results[0]["rows"]:
        cells = []
        for r in results:
            s = r["rows"][row]
            c95 = "never" if s["cost_at_95"] is None else f"{s['cost_at_95']:.1f}"
            cells.append(f"{s['qauc']:.1f} / {c95}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="lexical_capacity")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    t0 = time.time()
    results = per_table(one_table, (), workers=args.workers)
    save_results(args.name, {"tables": results}, markdown(results, time.time() - t0, args.name))


if __name__ == "__main__":
    main()
