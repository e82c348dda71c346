"""How much of the filled sweep's qauc gain is selection? ``tune`` with and without filling cost gaps,
scored in-sample and cross-fitted on halves of the test split.

Usage (about 3 minutes with the default tables)::

    python experiments/frontier_fill.py [--tables routellm_gsm8k routellm_mt_bench] [--seeds 1 2 3 4 5]

``tune`` (``banditroute.offline.tune``) learns one router per cost weight and scores each greedily on
the test split; qauc then takes, for each budget, the best of the points that fit. With more points
(filling every gap of more than ``FILL_GAP`` of the best model's cost) some of the gain can be luck:
the best of more noisy points. Cross-fitted, each budget's point is chosen by its quality and cost on
one half of the test split (even rows, then odd rows) and scored on the other half, against that half's
best single model; the two directions are averaged. A gain that holds cross-fitted is not selection.
Writes ``experiments/results/frontier_fill.json`` and ``.md``; progress on stderr.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite import DATA, save_results

import banditroute.offline.tune as tune_module
from banditroute.config import PolicyConfig
from banditroute.offline.frontier import BUDGETS
from banditroute.offline.outcomes import load_outcomes


def cross_fitted_qauc(points: dict[float, list], test, halves) -> float:
    """Mean over both directions of: per budget, the point best on one half (within the budget on that
    half), scored on the other half, in % of the other half's best single model."""
    refs = []
    for h in halves:
        best = int(np.argmax(test.quality[h].mean(axis=0)))
        refs.append((float(test.quality[h, best].mean()), float(test.cost[h, best].sum())))
    scores = []
    for a, b in ((0, 1), (1, 0)):
        values = []
        for budget in BUDGETS:
            fit = [w for w, v in points.items() if v[a][1] <= budget * refs[a][1]]
            if not fit:
                values.append(0.0)
                continue
            w = max(fit, key=lambda w: points[w][a][0])
            values.append(100.0 * points[w][b][0] / refs[b][0])
        scores.append(statistics.fmean(values))
    return statistics.fmean(scores)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", nargs="+", default=["routellm_gsm8k", "routellm_mt_bench"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--name", default="frontier_fill")
    args = ap.parse_args()
    fill = tune_module.FILL
    rows = []
    for table in args.tables:
        outcomes = load_outcomes(DATA / f"{table}.parquet")
        test = outcomes.subset("test")
        halves = [np.arange(len(test)) % 2 == 0, np.arange(len(test)) % 2 == 1]
        try:
            for rounds in (0, fill):
                tune_module.FILL = rounds
                for seed in args.seeds:
                    res = tune_module.tune(outcomes, "lints", seed, settings=PolicyConfig(name="lints"), per_prompt=True)
                    # each point's mean quality and total cost on each half of the test split
                    sides = {p["cost_weight"]: [(float(p["per_prompt"][0][h].mean()), float(p["per_prompt"][1][h].sum()))
                                                for h in halves] for p in res["points"]}
                    rows.append({"table": table, "fill_rounds": rounds, "seed": seed, "points": len(sides),
                                 "qauc": res["qauc"], "cross_fitted_qauc": cross_fitted_qauc(sides, test, halves)})
                    print(f"{table} fill {rounds} seed {seed}: qauc {res['qauc']:.2f}, cross-fitted "
                          f"{rows[-1]['cross_fitted_qauc']:.2f} ({len(sides)} points)", file=sys.stderr, flush=True)
        finally:
            tune_module.FILL = fill
    command = "python experiments/frontier_fill.py " + " ".join(sys.argv[1:])
    lines = ["# Filling the tune sweep's cost gaps: in-sample and cross-fitted qauc", "",
             (f"Command: `{command.strip()}`. `tune` at the defaults (`lints`), without filling (0 rounds) and "
             f"with it ({fill} rounds of midpoints wherever neighbouring points' test costs are more than "
             f"{tune_module.FILL_GAP:.0%} of the best model's cost apart); medians over seeds "
             f"{', '.join(map(str, args.seeds))}, per-seed values in brackets. In-sample: qauc as `tune` reports it. "
             "Cross-fitted: each budget's point chosen on one half of the test split and scored on the other "
             "(both directions averaged), so the best of more noisy points gains nothing by luck."), "",
             "| table | fill rounds | points | qauc, in-sample | qauc, cross-fitted |", "| --- | --- | --- | --- | --- |"]
    for table in args.tables:
        for rounds in (0, fill):
            rs = [r for r in rows if r["table"] == table and r["fill_rounds"] == rounds]
            med = {k: statistics.median(r[k] for r in rs) for k in ("points", "qauc", "cross_fitted_qauc")}
            per = {k: ", ".join(f"{r[k]:.1f}" for r in rs) for k in ("qauc", "cross_fitted_qauc")}
            lines.append(f"| {table} | {rounds} | {med['points']:g} | {med['qauc']:.2f} [{per['qauc']}] | "
                         f"{med['cross_fitted_qauc']:.2f} [{per['cross_fitted_qauc']}] |")
    save_results(args.name, {"command": command.strip(), "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
