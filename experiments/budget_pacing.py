"""Budget pacing: does a paced budget spend what it is given, and buy as much quality with it as the
best fixed cost weight chosen in hindsight?

For each outcome table in ../shared/data and seeds 1-5, the online stream of ``simulate`` (lints,
bandit feedback, the train split in a seeded order) runs:

* under a budget of B USD per request on average, paced (:mod:`banditroute.core.budget`), for five
  budgets spaced geometrically from the cheapest model's mean cost per request to the best model's
  (on the train split), at each candidate ``pacing_step`` (the choice of its default);
* under the same budgets without pacing, refusing once the budget is spent (what LiteLLM and Portkey
  do): the default cost weight (100) routes until then, and each refused request scores 0;
* at fixed cost weights from 0 to 1e6 with no budget: the best fixed weight in hindsight for a budget
  is the one with the highest online quality among those whose online spend fits it.

With ``--priced`` every run is given list prices: each model's mean cost per request on the train
split as its price (an output price that makes 256 tokens cost that much), standing in for the list
prices a user configures; without it the models have no price, as the tables come, and their costs
are known only once they have been tried.

Reported per table and budget (median over seeds): spend as a share of the budget, online quality of
the paced budget, of the best fitting fixed weight and of refusing when exhausted. Quality is the
mean over all requests of the stream (a refused request counts 0). Writes
``experiments/results/budget_pacing.json`` and ``.md``; progress on stderr.

    python experiments/budget_pacing.py [--seeds 1 2 3 4 5] [--workers 2] [--priced]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import priced_pool

from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.simulate import budget_per_request, simulate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
TABLES = ("routellm_gsm8k", "routellm_mmlu", "routellm_mt_bench", "routerbench_subset", "zeroeval_gsm_math_crux")
WEIGHTS = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5, 1e6)
STEPS = (0.01, 0.05, 0.2)
DEFAULT_STEP = 0.2
LEVELS = 5


def budgets_for(outcomes) -> list[float]:
    """Five budgets per request from the cheapest model's mean cost to the best model's (train split)."""
    train = outcomes.subset("train")
    cost = train.cost.mean(axis=0)
    best = int(np.argmax(train.quality.mean(axis=0)))
    return np.geomspace(cost.min(), cost[best], LEVELS).tolist()


def first_calls(outcomes) -> float:
    """USD per request of the train stream that trying every model once costs beyond the cheapest model's
    mean: sum_k (mean cost_k - min_j mean cost_j) / n. Without list prices, what learning which model is
    cheap takes at least, whatever the pacing; at the tightest budget nothing can make it back."""
    cost = outcomes.subset("train").cost
    mean = cost.mean(axis=0)
    return float((mean - mean.min()).sum() / len(cost))


def run(job: tuple[str, int, bool]) -> list[dict]:
    table, seed, priced = job
    outcomes = load_outcomes(DATA / f"{table}.parquet")
    pool = priced_pool(outcomes) if priced else None
    out = []

    def online(**kw) -> dict:
        r = simulate(outcomes, "lints", seed=seed, pool=pool, **kw)
        row = {"table": table, "seed": seed, "quality": r["online"]["quality"],
               "spent_per_request": r["online"]["cost_usd"] / max(r["online"]["n"], 1)}
        if "budget" in r:
            row.update(spent_share=r["budget"]["spent_share"], refused=r["budget"]["refused"],
                       exhausted=r["budget"]["exhausted_requests"])
        return row

    for w in WEIGHTS:
        out.append({**online(cost_weight=w), "kind": "fixed", "cost_weight": w})
    for level, b in enumerate(budgets_for(outcomes)):
        for step in STEPS:
            out.append({**online(budget=budget_per_request(b, pacing_step=step)), "kind": "paced", "step": step,
                        "level": level, "budget": b})
        out.append({**online(budget=budget_per_request(b, when_exhausted="refuse", pacing=False)),
                    "kind": "refuse", "level": level, "budget": b})
    print(f"  {table} seed {seed} done", file=sys.stderr, flush=True)
    return out


def summarise(rows: list[dict], seeds: list[int], tables_run: list[str]) -> dict:
    """Per table and budget level, medians over seeds; per pacing step, its median rank over tables."""
    tables = {}
    for t in tables_run:
        levels = []
        for level in range(LEVELS):
            per_seed = []
            for s in seeds:
                mine = [r for r in rows if r["table"] == t and r["seed"] == s]
                fixed = [r for r in mine if r["kind"] == "fixed"]
                refuse = next(r for r in mine if r["kind"] == "refuse" and r["level"] == level)
                budget = refuse["budget"]
                fits = [r for r in fixed if r["spent_per_request"] <= budget]
                best_fit = max(fits, key=lambda r: r["quality"]) if fits else None
                paced = {r["step"]: r for r in mine if r["kind"] == "paced" and r["level"] == level}
                unconstrained = next(r for r in fixed if r["cost_weight"] == 0.0)
                per_seed.append({
                    "budget": budget, "paced": paced, "refuse": refuse, "best_fit": best_fit,
                    "binding": unconstrained["spent_per_request"] > budget})
            med = statistics.median
            entry = {"budget_usd_per_request": per_seed[0]["budget"],
                     "binding_seeds": sum(p["binding"] for p in per_seed),
                     "best_fixed_quality": med(p["best_fit"]["quality"] if p["best_fit"] else 0.0 for p in per_seed),
                     "best_fixed_weight": med(p["best_fit"]["cost_weight"] if p["best_fit"] else float("nan")
                                              for p in per_seed),
                     "refuse_quality": med(p["refuse"]["quality"] for p in per_seed),
                     "refuse_spent_share": med(p["refuse"]["spent_share"] for p in per_seed),
                     "paced": {}}
            for step in STEPS:
                shares = [p["paced"][step]["spent_share"] for p in per_seed]
                entry["paced"][str(step)] = {
                    "quality": med(p["paced"][step]["quality"] for p in per_seed),
                    "spent_share": med(shares), "spent_share_min": min(shares), "spent_share_max": max(shares),
                    "exhausted": med(p["paced"][step]["exhausted"] for p in per_seed)}
            levels.append(entry)
        tables[t] = levels
    # a step's score per table: mean over budget levels of |spent share - 1| (binding levels) and the
    # quality gap to the best fitting fixed weight; ranked per table, median rank over tables
    ranks = {str(s): [] for s in STEPS}
    for t, levels in tables.items():
        score = {}
        for step in map(str, STEPS):
            miss = [abs(lv["paced"][step]["spent_share"] - 1) for lv in levels if lv["binding_seeds"] > len(seeds) / 2]
            gap = [lv["best_fixed_quality"] - lv["paced"][step]["quality"] for lv in levels]
            score[step] = (float(np.mean(miss)) if miss else 0.0) + max(float(np.mean(gap)), 0.0)
        for rank, step in enumerate(sorted(score, key=score.get), start=1):
            ranks[step].append(rank)
    return {"tables": tables, "median_rank": {s: statistics.median(r) for s, r in ranks.items()}}


def markdown(summary: dict, seeds: list[int], seconds: float, priced: bool = False,
             discovery: dict[str, float] | None = None) -> str:
    lines = ["# Budget pacing on the shared tables" + (", with list prices" if priced else ""), "",
             f"Online stream of `simulate` (lints, bandit feedback), seeds {', '.join(map(str, seeds))}, medians "
             f"over seeds; `python experiments/budget_pacing.py{' --priced' if priced else ''}` "
             f"({seconds / 60:.0f} min on 2 cores). "
             + ("Every model is priced at its mean train cost per request (standing in for configured list "
                "prices). " if priced else "The models have no list prices: a cost is known once tried. ")
             + "Budgets per "
             "request run geometrically from the cheapest model's mean cost to the best model's. Spend is the "
             "share of the budget spent online (min-max over seeds); quality is the online mean quality over "
             "every request (refused: 0). Best fixed: the highest online quality among fixed cost weights "
             f"({', '.join(f'{w:g}' for w in WEIGHTS)}) whose spend fits the budget, chosen in hindsight. Refuse: "
             "no pacing, the default weight until the budget is spent, then 429s. A budget is binding when "
             "routing for quality alone (weight 0) would spend more (seeds out of the total)."
             + (" First calls: what calling every model once costs beyond the cheapest model's mean, as a share of "
                "the budget (:func:`first_calls`): spend above the budget that no pacing avoids where the cheapest "
                "model's mean is the budget." if discovery else ""), "",
             f"Pacing step default: {DEFAULT_STEP}; median rank over tables of each candidate (score: mean "
             "|spend share - 1| at binding budgets plus the mean quality gap to the best fixed weight): "
             + ", ".join(f"{s}: {r}" for s, r in summary["median_rank"].items()), "",
             ("| table | budget USD/request | binding | paced spend (min-max) | paced quality | best fixed quality "
              "(weight) | refuse quality (spend) | exhausted |" + (" first calls |" if discovery else "")),
             "| --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if discovery else "")]
    for t, levels in summary["tables"].items():
        for lv in levels:
            p = lv["paced"][str(DEFAULT_STEP)]
            lines.append(
                f"| {t} | {lv['budget_usd_per_request']:.3g} | {lv['binding_seeds']}/{len(seeds)} | "
                f"{p['spent_share']:.3f} ({p['spent_share_min']:.3f}-{p['spent_share_max']:.3f}) | "
                f"{p['quality']:.4f} | {lv['best_fixed_quality']:.4f} ({lv['best_fixed_weight']:g}) | "
                f"{lv['refuse_quality']:.4f} ({lv['refuse_spent_share']:.3f}) | {p['exhausted']:g} |"
                + (f" {discovery[t] / lv['budget_usd_per_request']:.3f} |" if discovery else ""))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tables", nargs="+", default=list(TABLES))
    ap.add_argument("--priced", action="store_true", help="give every model a list price (see above)")
    args = ap.parse_args()
    t0 = time.time()
    jobs = [(t, s, args.priced) for t in args.tables for s in args.seeds]
    # the largest table first, so that both workers stay busy to the end
    jobs.sort(key=lambda j: j[0] != "routellm_mmlu")
    print(f"{len(jobs)} runs", file=sys.stderr, flush=True)
    with Pool(args.workers) as pool:
        rows = [row for part in pool.imap_unordered(run, jobs) for row in part]
    summary = summarise(rows, args.seeds, args.tables)
    seconds = time.time() - t0
    name = "budget_pacing_priced" if args.priced else "budget_pacing"
    discovery = None if args.priced else {t: first_calls(load_outcomes(DATA / f"{t}.parquet")) for t in args.tables}
    text = markdown(summary, args.seeds, seconds, args.priced, discovery)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"summary": summary, "rows": rows, "first_calls": discovery},
                                                     indent=1))
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
