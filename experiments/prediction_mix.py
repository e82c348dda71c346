"""Where the full-information gap to the TF-IDF router lies: its quality predictions or its cost predictions?

Usage (about 15 seconds on one core)::

    python experiments/prediction_mix.py [--tables routellm_gsm8k ...] [--name prediction_mix]

Issue 11's diagnostic compares banditroute's features, fitted with every outcome revealed, with a TF-IDF
ridge router (``experiments/baselines.py``) by the frontier each traces over a fine sweep of cost weights.
A router's frontier depends on two predictions per (prompt, model): quality and cost. This experiment
crosses them: for each table, the frontier of every pairing of {banditroute's, TF-IDF's} quality with
{banditroute's, TF-IDF's, the true} cost, each routing the test split greedily by
``argmax_k q_k(x) - w c_k(x)``. When swapping in TF-IDF's quality closes the gap and swapping its cost
does not, the features' quality prediction is where the gap is. Metrics as in the suite
(:mod:`banditroute.offline.frontier`: qauc, cost_at_95, quality_at_25, in % of the best single model).
Writes ``experiments/results/<name>.json`` and ``.md``; progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import frontier_from_predictions
from suite import DATA, fmt, full_information_setup, save_results

from banditroute.core.features import Featurizer
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.pretrain import pretrain

TABLES = ("routellm_gsm8k", "routellm_mmlu", "routellm_mt_bench", "routerbench_subset", "zeroeval_gsm_math_crux")
METRICS = ("qauc", "cost_at_95", "quality_at_25")


def predictions(outcomes, test) -> dict[str, tuple]:
    """Test-split (quality, cost) predictions of banditroute's full-information fit and of the TF-IDF ridge
    (the same fits as ``baselines.full_information`` and ``baselines.tfidf_ridge``, which return frontiers)."""
    f = Featurizer()
    ours = pretrain(outcomes, "lints").predict(f.transform_many(test.prompts), [f.input_tokens(p) for p in test.prompts])
    return {"banditroute": ours, "TF-IDF": tfidf_predictions(outcomes)}


def tfidf_predictions(outcomes) -> tuple:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    train, test = outcomes.subset("train"), outcomes.subset("test")
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    xtr, xte = vec.fit_transform(train.prompts), vec.transform(test.prompts)
    return (Ridge(alpha=1.0).fit(xtr, train.quality).predict(xte), Ridge(alpha=1.0).fit(xtr, train.cost).predict(xte))


def one_table(table: str) -> dict:
    outcomes, test, ref, grid = full_information_setup(DATA / f"{table}.parquet")
    pred = predictions(outcomes, test)
    costs = {"banditroute": pred["banditroute"][1], "TF-IDF": pred["TF-IDF"][1], "true": test.cost}
    rows = {}
    for q_name in ("banditroute", "TF-IDF"):
        for c_name, c in costs.items():
            points = frontier_from_predictions(test, pred[q_name][0], c, grid)
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
