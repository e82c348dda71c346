"""Where the full-information gap to the TF-IDF router lies: its quality predictions or its cost predictions?

Usage (about a minute on one core)::

    python experiments/prediction_mix.py [--tables routellm_gsm8k ...] [--name prediction_mix]

Issue 11's diagnostic compares banditroute's features, fitted with every outcome revealed, with a TF-IDF
ridge router (``experiments/baselines.py``) by the frontier each traces over a fine sweep of cost weights.
A router's frontier depends on two predictions per (prompt, model): quality and cost. This experiment
crosses them: for each table, the frontier of every pairing of a quality source with a cost source, each
routing the test split greedily by ``argmax_k q_k(x) - w c_k(x)``. When swapping in TF-IDF's quality
closes the gap and swapping its cost does not, the features' quality prediction is where the gap is.

Quality sources: banditroute's full-information fit; the TF-IDF word 1-2-gram ridge; a TF-IDF ridge on
character 2-5-grams within words (scikit-learn's ``char_wb``: lexical evidence finer than words); and
banditroute's features with 128 hashed character 2-4-grams appended (signed counts, log-scaled, at half
norm like the v3 word block), fitted by a ridge (alpha 3): whether a small block of character n-grams
could carry that evidence into the online features. Cost sources: banditroute's cost model (list price
plus a residual on four regressors), a ridge per model on those regressors and the whole feature vector
(alpha 1: would a richer cost model pay?), the TF-IDF ridge's, and the true cost of each test call (the
bound on what better cost predictions could give). Metrics as in the suite
(:mod:`banditroute.offline.frontier`: qauc, cost_at_95, quality_at_25, in % of the best single model).
Writes ``experiments/results/<name>.json`` and ``.md``; progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import frontier_from_predictions
from suite import DATA, fmt, full_information_setup, save_results

from banditroute.core.features import Featurizer
from banditroute.core.policies.cost import phi
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.pretrain import pretrain

TABLES = ("routellm_gsm8k", "routellm_mmlu", "routellm_mt_bench", "routerbench_subset", "zeroeval_gsm_math_crux")
METRICS = ("qauc", "cost_at_95", "quality_at_25")


def predictions(outcomes, test) -> tuple[dict, dict]:
    """Test-split quality and cost predictions of every source (module docstring), each (n_test, K)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    train = outcomes.subset("train")
    f = Featurizer()
    xtr, xte = f.transform_many(train.prompts), f.transform_many(test.prompts)
    ttr, tte = [f.input_tokens(p) for p in train.prompts], [f.input_tokens(p) for p in test.prompts]
    q_ours, c_ours = pretrain(outcomes, "lints", featurizer=f).predict(xte, tte)
    words = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    wtr, wte = words.fit_transform(train.prompts), words.transform(test.prompts)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)
    ctr, cte = chars.fit_transform(train.prompts), chars.transform(test.prompts)
    quality = {"banditroute": q_ours, "TF-IDF": ridge(wtr, train.quality, wte),
               "TF-IDF characters": ridge(ctr, train.quality, cte),
               "banditroute + hashed characters": ridge(np.hstack([xtr, char_block(train.prompts)]), train.quality,
                                                        np.hstack([xte, char_block(test.prompts)]), alpha=3.0)}
    rich_tr, rich_te = np.hstack([phi(xtr, ttr), xtr[:, 1:]]), np.hstack([phi(xte, tte), xte[:, 1:]])
    cost = {"banditroute": c_ours, "ridge on all features": ridge(rich_tr, train.cost * 1e3, rich_te) / 1e3,
            "TF-IDF": ridge(wtr, train.cost, wte), "true": test.cost}
    return quality, cost


def ridge(x_train, y_train: np.ndarray, x_test, alpha: float = 1.0) -> np.ndarray:
    """A scikit-learn ridge per column of ``y_train``, as the TF-IDF baseline's: predictions (n_test, K)."""
    from sklearn.linear_model import Ridge

    return Ridge(alpha=alpha).fit(x_train, y_train).predict(x_test)


def char_block(prompts, dim: int = 128, scale: float = 0.5) -> np.ndarray:
    """Character 2-4-grams within words hashed into ``dim`` signed buckets, log-scaled counts, norm ``scale``."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.preprocessing import normalize

    counts = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=dim, alternate_sign=True,
                               norm=None).transform(prompts).toarray()
    return scale * normalize(np.sign(counts) * np.log1p(np.abs(counts)))


def one_table(table: str) -> dict:
    outcomes, test, ref, grid = full_information_setup(DATA / f"{table}.parquet")
    quality, cost = predictions(outcomes, test)
    rows = {}
    for q_name, q in quality.items():
        for c_name, c in cost.items():
            points = frontier_from_predictions(test, q, c, grid)
            summary = frontier_summary(points, ref["best_quality"], ref["best_cost_usd"])
            rows[f"{q_name} quality, {c_name} cost"] = {m: summary[m] for m in METRICS}
    return {"table": table, "rows": rows}


def markdown(result: dict) -> str:
    out = ["# Full-information predictions crossed: quality of one router, cost of another", "",
           f"Command: `{result['command']}`. Each row routes the test split greedily by one router's quality",
           "predictions and another's (or the true) cost over a fine sweep of cost weights; qauc / cost_at_95 /",
           "quality_at_25 in % of the best single model (`never`: 95% not reached). Both routers are fitted",
           "with every train outcome revealed (`experiments/baselines.py`).", ""]
    names = list(result["tables"][0]["rows"])
    out += ["| pairing | " + " | ".join(t["table"] for t in result["tables"]) + " |",
            "| --- |" + " --- |" * len(result["tables"])]
    for name in names:
        cells = [" / ".join(fmt(t["rows"][name][m]) for m in METRICS) for t in result["tables"]]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", default=list(TABLES))
    ap.add_argument("--name", default="prediction_mix")
    args = ap.parse_args()
    tables = []
    for t in args.tables:
        print(f"{t} ...", file=sys.stderr, flush=True)
        tables.append(one_table(t))
    result = {"command": ("python experiments/prediction_mix.py " + " ".join(sys.argv[1:])).strip(), "tables": tables}
    save_results(args.name, result, markdown(result))


if __name__ == "__main__":
    main()
