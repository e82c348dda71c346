"""How much a list price should count in the cost model: the choice of ``cost_prior_strength``.

A priced model's cost model starts at its list price and moves halfway to the observed costs after
``cost_prior_strength`` calls (:mod:`banditroute.core.policies.cost`). Learned too fast, the noise of a
few calls decides between models of about the same price, and the router keeps sending prompts to the
one that looked cheaper on them; under a budget that leaves nothing but the cheapest models, that
choice costs more than always the cheapest would, and the budget overspends. Learned too slowly, a
list price that misjudges output lengths stays wrong for longer.

For each outcome table in ../shared/data, seeds 1-5 and each candidate strength, with every model
priced at its mean train cost per request (as ``budget_pacing.py --priced``), the online stream of
``simulate`` (lints, bandit feedback) runs:

* paced, under the five budgets of ``budget_pacing.py`` (the cheapest model's mean cost per request
  to the best model's): spend as a share of the budget, online quality;
* with no budget at the default cost weight: online quality and cost per request, and the greedy
  test split's quality and cost (what the cost model does to routing when nothing is binding).

Score per table (lower is better): the mean |spend share - 1| over the budgets that bind (routing for
quality alone would spend more) plus the mean paced quality's shortfall to the best candidate's;
the default is the candidate with the best median rank over tables. Writes
``experiments/results/cost_prior.json`` and ``.md``; progress on stderr.

    python experiments/cost_prior.py [--strengths 1 10 30 100 300] [--seeds 1 2 3 4 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import priced_pool
from budget_pacing import DATA, TABLES, budgets_for
from suite import save_results

from banditroute.config import PolicyConfig
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.simulate import budget_per_request, simulate

STRENGTHS = (1.0, 10.0, 30.0, 100.0, 300.0)


def run(job: tuple[str, int, float]) -> dict:
    table, seed, strength = job
    outcomes = load_outcomes(DATA / f"{table}.parquet")
    pool = priced_pool(outcomes)
    pool = pool.model_copy(update={"policy": pool.policy.model_copy(update={"cost_prior_strength": strength})})
    budgets = budgets_for(outcomes)
    paced = []
    for b in budgets:
        r = simulate(outcomes, "lints", seed=seed, pool=pool, budget=budget_per_request(b))
        paced.append({"budget": b, "spent_share": r["budget"]["spent_share"], "quality": r["online"]["quality"]})
    free = simulate(outcomes, "lints", seed=seed, pool=pool)
    unconstrained = simulate(outcomes, "lints", seed=seed, pool=pool, cost_weight=0.0)
    n = max(free["online"]["n"], 1)
    print(f"  {table} seed {seed} strength {strength:g} done", file=sys.stderr, flush=True)
    return {"table": table, "seed": seed, "strength": strength, "paced": paced,
            "binding": [unconstrained["online"]["cost_usd"] / max(unconstrained["online"]["n"], 1) > b for b in budgets],
            "free": {"online_quality": free["online"]["quality"], "online_cost_per_request": free["online"]["cost_usd"] / n,
                     "test_quality": free["test"]["quality"], "test_cost_usd": free["test"]["cost_usd"]}}


def summarise(rows: list[dict], seeds: list[int], tables: list[str], strengths: list[float]) -> dict:
    med = statistics.median
    out = {}
    for t in tables:
        per = {}
        for s in strengths:
            mine = [r for r in rows if r["table"] == t and r["strength"] == s]
            levels = []
            for i in range(len(mine[0]["paced"])):
                shares = [r["paced"][i]["spent_share"] for r in mine]
                levels.append({"spent_share": med(shares), "spent_share_min": min(shares), "spent_share_max": max(shares),
                               "quality": med(r["paced"][i]["quality"] for r in mine),
                               "binding_seeds": sum(r["binding"][i] for r in mine)})
            per[str(s)] = {"levels": levels,
                           **{k: med(r["free"][k] for r in mine) for k in mine[0]["free"]}}
        out[t] = per
    ranks = {str(s): [] for s in strengths}
    for t, per in out.items():
        quality = {s: float(np.mean([lv["quality"] for lv in v["levels"]])) for s, v in per.items()}
        best = max(quality.values())
        score = {}
        for s, v in per.items():
            miss = [abs(lv["spent_share"] - 1) for lv in v["levels"] if lv["binding_seeds"] > len(seeds) / 2]
            score[s] = (float(np.mean(miss)) if miss else 0.0) + best - quality[s]
            v["score"] = score[s]
        for rank, s in enumerate(sorted(score, key=score.get), start=1):
            ranks[s].append(rank)
    median_rank = {s: med(r) for s, r in ranks.items()}
    return {"tables": out, "ranks": ranks, "median_rank": median_rank,
            "mean_rank": {s: float(np.mean(r)) for s, r in ranks.items()}}


def markdown(summary: dict, seeds: list[int], strengths: list[float], seconds: float) -> str:
    default = PolicyConfig().cost_prior_strength
    lines = ["# How much a list price counts in the cost model (`cost_prior_strength`)", "",
             (f"Command: `python experiments/cost_prior.py --strengths {' '.join(f'{s:g}' for s in strengths)} "
             f"--seeds {' '.join(map(str, seeds))}` ({seconds / 60:.0f} min on 2 cores). Every model priced at its "
             "mean train cost per request; online stream of `simulate` (lints, bandit feedback), medians over seeds. "
             "Tightest and next budgets: the cheapest model's mean cost per request and the next of the five budgets "
             "of `budget_pacing.py`; spend is the share of the budget spent (min-max over seeds). Paced quality: the "
             "mean over the five budgets of the online quality. Unbudgeted: the default cost weight, online quality "
             "and USD per request, and the greedy test split's quality. Score: mean |spend share - 1| at binding "
             "budgets plus the paced quality's shortfall to the best candidate's (lower is better). Defaults are "
             "chosen by their median rank over all tables, never on one table."), "",
             f"Default: {default:g}. Median rank over tables (1 is best; mean rank in brackets): "
             + ", ".join(f"{float(s):g}: {summary['median_rank'][s]:g} ({summary['mean_rank'][s]:.1f})"
                         for s in summary["median_rank"]), ""]
    for t, per in summary["tables"].items():
        lines += [f"## {t}", "",
                  ("| cost_prior_strength | tightest budget spend | next budget spend | paced quality | score | "
                  "unbudgeted online quality | unbudgeted online USD/request | unbudgeted test quality |"),
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for s, v in per.items():
            lv0, lv1 = v["levels"][0], v["levels"][1]
            lines.append(
                f"| {float(s):g} | {lv0['spent_share']:.3f} ({lv0['spent_share_min']:.3f}-{lv0['spent_share_max']:.3f}) | "
                f"{lv1['spent_share']:.3f} ({lv1['spent_share_min']:.3f}-{lv1['spent_share_max']:.3f}) | "
                f"{np.mean([lv['quality'] for lv in v['levels']]):.4f} | {v['score']:.4f} | {v['online_quality']:.4f} | "
                f"{v['online_cost_per_request']:.3g} | {v['test_quality']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strengths", type=float, nargs="+", default=list(STRENGTHS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tables", nargs="+", default=list(TABLES))
    ap.add_argument("--name", default="cost_prior")
    args = ap.parse_args()
    t0 = time.time()
    jobs = [(t, s, lam) for t in args.tables for s in args.seeds for lam in args.strengths]
    jobs.sort(key=lambda j: j[0] != "routellm_mmlu")  # the largest table first
    print(f"{len(jobs)} runs", file=sys.stderr, flush=True)
    with Pool(args.workers) as pool:
        rows = list(pool.imap_unordered(run, jobs))
    summary = summarise(rows, args.seeds, args.tables, args.strengths)
    result = {"seeds": args.seeds, "strengths": args.strengths, "rows": rows, **summary}
    save_results(args.name, result, markdown(summary, args.seeds, args.strengths, time.time() - t0))


if __name__ == "__main__":
    main()
