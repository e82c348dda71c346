"""Prior strength with full information: does the quality model's ridge penalty explain the gap to TF-IDF?

Usage::

    python experiments/prior_full_information.py [--priors 1 3 10 30 100]

For every shared outcome table, banditroute's default features and quality model are fitted on every
train outcome (``pretrain``) at each prior strength (the ridge penalty ``lambda``), then swept over a
fine grid of cost weights on the test split; the TF-IDF ridge router is computed in the same run.
Writes ``experiments/results/prior_full_information.json`` and ``.md`` (qauc / cost_at_95).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import frontier_from_predictions, tfidf_ridge
from suite import full_information_setup, per_table, save_results

from banditroute.config import PolicyConfig
from banditroute.core.features import Featurizer
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.pretrain import pretrain


def one_table(job) -> dict:
    path, priors = job
    o, test, ref, grid = full_information_setup(path)
    f = Featurizer()
    X, tokens = f.transform_many(test.prompts), [f.input_tokens(p) for p in test.prompts]
    out = {"table": path.stem,
           "TF-IDF ridge": frontier_summary(tfidf_ridge(o, grid)[0], ref["best_quality"], ref["best_cost_usd"])}
    for strength in priors:
        print(f"{path.stem}: prior strength {strength:g}", file=sys.stderr, flush=True)
        pol = pretrain(o, "lints", featurizer=f, settings=PolicyConfig(prior_strength=strength))
        q, c = pol.predict(X, tokens)
        out[f"prior {strength:g}"] = frontier_summary(frontier_from_predictions(test, q, c, grid),
                                                      ref["best_quality"], ref["best_cost_usd"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--priors", type=float, nargs="+", default=[1, 3, 10, 30, 100])
    args = ap.parse_args()
    tables = per_table(one_table, (args.priors,))
    command = "python experiments/prior_full_information.py " + " ".join(sys.argv[1:])
    rows = ["TF-IDF ridge", *(f"prior {s:g}" for s in args.priors)]

    def cell(s: dict) -> str:
        c95 = "never" if s["cost_at_95"] is None else f"{s['cost_at_95']:.1f}"
        return f"{s['qauc']:.1f} / {c95}"

    lines = ["# Prior strength with full information", "",
             (f"Command: `{command.strip()}`. banditroute's default features and quality model fitted on every train "
             "outcome at each prior strength (the default is 10), swept over cost weights on the test split; "
             "qauc / cost_at_95 in % of the best single model."), "",
             "| model | " + " | ".join(t["table"] for t in tables) + " |",
             "| --- | " + " | ".join("---" for _ in tables) + " |"]
    lines += [f"| {r} | " + " | ".join(cell(t[r]) for t in tables) + " |" for r in rows]
    save_results("prior_full_information", {"command": command, "tables": tables}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
