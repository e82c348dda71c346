"""Where the online reward goes on a large pool: how much of the traffic is exploration, and what it earns.

Usage (about ten minutes on 2 cores)::

    python experiments/exploration_share.py [--seeds 1 2 3] [--name exploration_share]

For RouterBench (11 models) and ZeroEval (28 models), the default policy and the same with
``exploration_pool_scaling``, at the default cost weight: one pass over the train split from scratch
(``simulate``, its decision log exported), then, per quarter of the pass, the share of decisions that
were not the policy's greedy choice at the time (the eligible model with the best logged
``pred_quality - w pred_cost``) and the mean reward (quality minus w times cost) of greedy and of
non-greedy decisions, against the best fixed model's mean reward on the train split. Medians over
seeds. Writes ``experiments/results/<name>.json`` and ``.md``; progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from multiprocessing import Pool
from pathlib import Path

import duckdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import median_present
from suite import DATA, save_results

from banditroute.config import PolicyConfig
from banditroute.core.types import net_score
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.simulate import simulate

TABLES = ("routerbench_subset", "zeroeval_gsm_math_crux")
CONFIGS = {"default": {}, "exploration_pool_scaling": {"exploration_pool_scaling": True}}
QUARTERS = 4


def run(job: tuple[str, str, int]) -> dict:
    table, config, seed = job
    print(f"{table}: {config} seed {seed}", file=sys.stderr, flush=True)
    outcomes = load_outcomes(DATA / f"{table}.parquet")
    settings = PolicyConfig(**CONFIGS[config])
    w = settings.cost_weight
    with tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "log.parquet")
        res = simulate(outcomes, "lints", w, seed, settings=settings, log=log)
        rows = duckdb.sql(f"SELECT chosen, eligible, pred_quality, pred_cost, quality, cost_usd FROM '{log}' "
                          "ORDER BY ts, decision_id").fetchall()
    train = outcomes.subset("train")
    best_fixed = float(net_score(train.quality, train.cost, w).mean(axis=0).max())
    quarters = []
    for part in np.array_split(np.arange(len(rows)), QUARTERS):
        greedy, other = [], []
        for i in part:
            chosen, eligible, pq, pc, q, c = rows[i]
            best = eligible[int(np.argmax(net_score(np.array(pq), np.array(pc), w)))]
            (greedy if chosen == best else other).append(float(net_score(q, c, w)))
        quarters.append({"non_greedy_share": len(other) / len(part),
                         "greedy_reward": float(np.mean(greedy)) if greedy else None,
                         "non_greedy_reward": float(np.mean(other)) if other else None})
    return {"table": table, "config": config, "seed": seed, "best_fixed_reward": best_fixed,
            "regret_vs_best_fixed": res["online"]["regret"]["vs_best_fixed"], "quarters": quarters}


def markdown(runs: list[dict], seeds: list[int]) -> str:
    lines = ["# Exploration on the large pools: its share of the traffic and what it earns", "",
             (f"Command: `python experiments/exploration_share.py --seeds {' '.join(map(str, seeds))}`. One pass over "
             "the train split from scratch at the default cost weight; per quarter of the pass, the share of "
             "decisions that were not the policy's greedy choice at the time, and the mean reward (quality minus "
             "weight times cost) of greedy and of non-greedy decisions; medians over seeds. The best fixed "
             "model's mean reward on the same prompts is the bar the online reward has to pass."), ""]
    for table in TABLES:
        mine = [r for r in runs if r["table"] == table]
        lines += [f"## {table} (best fixed model's mean reward {mine[0]['best_fixed_reward']:.3f})", "",
                  "| configuration | quarter | non-greedy share | greedy reward | non-greedy reward |",
                  "| --- | --- | --- | --- | --- |"]
        for config in CONFIGS:
            rs = [r for r in mine if r["config"] == config]
            for k in range(QUARTERS):
                share = median_present([r["quarters"][k]["non_greedy_share"] for r in rs])
                g = median_present([r["quarters"][k]["greedy_reward"] for r in rs])
                o = median_present([r["quarters"][k]["non_greedy_reward"] for r in rs])
                lines.append(f"| {config} | {k + 1} | {share:.2f} | {g:.3f} | {o:.3f} |")
            regret = median_present([r["regret_vs_best_fixed"] for r in rs])
            lines.append(f"| {config} | regret at the end | {regret:.1f} | | |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="exploration_share")
    args = ap.parse_args()
    jobs = [(t, c, s) for t in TABLES for c in CONFIGS for s in args.seeds]
    with Pool(args.workers) as pool:
        runs = pool.map(run, jobs, chunksize=1)
    save_results(args.name, {"seeds": args.seeds, "runs": runs}, markdown(runs, args.seeds))


if __name__ == "__main__":
    main()
