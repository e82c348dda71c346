"""Where does online learning lose against full information: in seeing one outcome per prompt, or in
where the router chooses to look?

Usage::

    python experiments/logging_bias.py [--seeds 1 2 3] [--name logging_bias]

For every shared table, the default policy's quality and cost models are fitted on the train split
three ways and swept over the same fine grid of cost weights on the test split:

* ``full information``: every model's outcome on every train prompt (``pretrain``);
* ``one model per prompt, uniform``: for each train prompt one model drawn uniformly at random, and
  only its outcome revealed (what a uniformly random logging policy collects: as many observations as
  the online router gets, none of them chosen);
* ``online default``: the default policy learned online from scratch at each cost weight of ``tune``'s
  sweep (the suite's protocol: one point per cost weight).

If the uniform fit is close to full information while the online router is well below both, the loss
comes from the adaptive choice of what to observe (each model is seen mostly where the router already
expected it to win), which is what importance-weighted learning (``importance_cap``) addresses, and
not from the bandit feedback as such. qauc and cost_at_95 in % of the best single model's. Writes
``experiments/results/<name>.json`` and ``.md``; progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import frontier_from_predictions
from suite import DATA, _median, fine_grid, fmt, per_table, save_results, table_paths

from banditroute.config import PolicyConfig
from banditroute.core.features import Featurizer
from banditroute.core.policies import make_policy
from banditroute.core.policies.bayes_linear import single_threaded_blas
from banditroute.core.types import Context
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.tune import tune


def fitted(outcomes, revealed: np.ndarray, f: Featurizer, Xtr, Xte) -> tuple[np.ndarray, np.ndarray]:
    """Predicted quality and cost on test of the default policy fitted on the train outcomes where
    ``revealed`` (train rows x models) is True (with the uniform propensity 1/K where one is revealed)."""
    train, test = outcomes.subset("train"), outcomes.subset("test")
    k = len(outcomes.models)
    policy = make_policy("lints", outcomes.models, f.dim, None, PolicyConfig())
    one = revealed.sum(axis=1) == 1
    with single_threaded_blas():
        for i, prompt in enumerate(train.prompts):
            ctx = Context(Xtr[i], f.input_tokens(prompt))
            for arm in np.flatnonzero(revealed[i]):
                policy.update(ctx, int(arm), quality=float(train.quality[i, arm]), cost_usd=float(train.cost[i, arm]),
                              propensity=1.0 / k if one[i] else None)
    return policy.predict(Xte, [f.input_tokens(p) for p in test.prompts])


def one_table(job) -> dict:
    path, seeds = job
    outcomes = load_outcomes(path)
    train, test = outcomes.subset("train"), outcomes.subset("test")
    ref = test.reference()
    grid = fine_grid(train.cost.mean(axis=0))
    f = Featurizer()
    Xtr, Xte = f.transform_many(train.prompts), f.transform_many(test.prompts)
    k = len(outcomes.models)

    def summary(q, c) -> dict:
        s = frontier_summary(frontier_from_predictions(test, q, c, grid), ref["best_quality"], ref["best_cost_usd"])
        return {"qauc": s["qauc"], "cost_at_95": s["cost_at_95"]}

    rows = {"full information": {"all": summary(*fitted(outcomes, np.ones((len(train), k), bool), f, Xtr, Xte))}}
    uniform, online = {}, {}
    for seed in seeds:
        print(f"{Path(path).stem}: seed {seed}", file=sys.stderr, flush=True)
        arm = np.random.default_rng(seed).integers(0, k, len(train))
        revealed = np.zeros((len(train), k), bool)
        revealed[np.arange(len(train)), arm] = True
        uniform[seed] = summary(*fitted(outcomes, revealed, f, Xtr, Xte))
        res = tune(outcomes, "lints", seed)
        online[seed] = {"qauc": res["qauc"], "cost_at_95": res["cost_at_95"]}
    rows["one model per prompt, uniform"] = uniform
    rows["online default"] = online
    return {"table": Path(path).stem, "models": k, "train": len(train), "rows": rows}


def markdown(results: list[dict], command: str, seeds: list[int]) -> str:
    lines = ["# Online learning against full information: seeing one outcome, or choosing where to look", "",
             (f"Command: `{command}`. The default policy's models fitted on the train split with every outcome "
              "revealed, with one uniformly drawn model's outcome per prompt, and learned online at each "
              "cost weight of tune's sweep (the suite's protocol); the first two swept over the same fine "
              "grid of cost weights. Cells: qauc / cost_at_95 in % of the best single model's (higher / "
              f"lower is better), medians over seeds {', '.join(map(str, seeds))} with per-seed qauc in "
              "brackets."), "",
             "| table | models | train prompts | full information | one model per prompt, uniform | online default |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        cells = []
        for name in ("full information", "one model per prompt, uniform", "online default"):
            runs = list(r["rows"][name].values())
            q, c = _median([x["qauc"] for x in runs]), _median([x["cost_at_95"] for x in runs])
            per_seed = "" if len(runs) == 1 else " [" + ", ".join(fmt(x["qauc"]) for x in runs) + "]"
            cells.append(f"{fmt(q)}{per_seed} / {fmt(c)}")
        lines.append(f"| {r['table']} | {r['models']} | {r['train']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="logging_bias")
    args = ap.parse_args()
    if not table_paths():
        sys.exit(f"no outcome tables in {DATA}")
    results = per_table(one_table, (args.seeds,), workers=args.workers)
    command = "python experiments/logging_bias.py " + " ".join(sys.argv[1:])
    save_results(args.name, {"command": command.strip(), "seeds": args.seeds, "tables": results},
                 markdown(results, command.strip(), args.seeds))


if __name__ == "__main__":
    main()
