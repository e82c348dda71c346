"""A model added to a pool that has already learned: does a prior informed by its price help?

Usage (about five minutes on 2 cores)::

    python experiments/new_model.py [--seeds 1 2] [--name new_model]

For RouterBench (11 models) and ZeroEval (28 models), with every model priced at its mean train cost
(``baselines.priced_pool``), and each model of the table held out in turn: the default policy learns online over the first half of the train split on the pool
without the held-out model; its state then moves (``core.state.transfer``) into a policy over the
whole pool, in which the held-out model starts from the pooled fit (``price_prior`` off) or from the
pooled fit moved by its price (``price_prior`` on, in both halves), and learning goes on over the
second half. Reported per newcomer (medians over seeds) and over newcomers: the second half's regret
against the best fixed model of that half, the share of its decisions the newcomer took, and the
greedy test quality (% of the best single model's). Writes
``experiments/results/<name>.json`` and ``.md``; progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import median_present, priced_pool
from suite import DATA, save_results

from banditroute.config import PolicyConfig
from banditroute.core.policies import make_policy
from banditroute.core.policies.bayes_linear import single_threaded_blas
from banditroute.core.state import transfer
from banditroute.core.types import net_score
from banditroute.offline.outcomes import Outcomes, load_outcomes
from banditroute.offline.simulate import build_service, evaluate_greedy, run_online

TABLES = ("routerbench_subset", "zeroeval_gsm_math_crux")


def without(o: Outcomes, model: str) -> Outcomes:
    keep = [k for k, m in enumerate(o.models) if m != model]
    return Outcomes(o.prompt_ids, o.prompts, o.tasks, o.splits, [o.models[k] for k in keep], o.quality[:, keep],
                    o.cost[:, keep])


def rows(o: Outcomes, idx: np.ndarray) -> Outcomes:
    return Outcomes(o.prompt_ids[idx], [o.prompts[i] for i in idx], o.tasks[idx], o.splits[idx], o.models,
                    o.quality[idx], o.cost[idx])


def run(job: tuple[str, str, bool, int]) -> dict:
    table, newcomer, price_prior, seed = job
    print(f"{table}: {newcomer} price_prior={price_prior} seed {seed}", file=sys.stderr, flush=True)
    outcomes = load_outcomes(DATA / f"{table}.parquet")
    settings = PolicyConfig(price_prior=price_prior)
    w = settings.cost_weight
    train = outcomes.subset("train")
    order = np.random.default_rng(seed).permutation(len(train))
    first, second = rows(train, np.sort(order[: len(order) // 2])), rows(train, np.sort(order[len(order) // 2:]))
    before = without(outcomes, newcomer)
    with single_threaded_blas():
        svc = build_service(before, "lints", w, seed, pool=priced_pool(before), settings=settings)
        run_online(svc, without(first, newcomer), seed)
        source = svc.router.policy
        svc.store.close()
        pool = priced_pool(outcomes)
        prices = [(m.input_price_per_mtok, m.output_price_per_mtok) for m in pool.models]
        target = make_policy("lints", outcomes.models, source.dim, prices, settings)
        target.feature_version = source.feature_version
        transfer(source, target)
        svc = build_service(outcomes, target, w, seed, pool=pool, settings=settings)
        online = run_online(svc, second, seed)
        (test,) = evaluate_greedy(svc.router, outcomes.subset("test"))
        row = next(r for r in svc.stats.table() if r["model"] == newcomer)
        svc.store.close()
    k = outcomes.models.index(newcomer)
    ref = outcomes.subset("test").reference()
    picked = None if row["mean_quality"] is None else row["mean_quality"] - w * (row["mean_cost_usd"] or 0.0)
    return {"table": table, "newcomer": newcomer, "price_prior": price_prior, "seed": seed,
            "regret_vs_best_fixed": online["regret"]["vs_best_fixed"], "newcomer_share": row["share"],
            "newcomer_reward_when_picked": picked,
            "newcomer_mean_reward": float(net_score(second.quality, second.cost, w)[:, k].mean()),
            "test_quality_pct": 100.0 * test["quality"] / ref["best_quality"],
            "test_cost_pct": 100.0 * test["cost_usd"] / ref["best_cost_usd"]}


def markdown(runs: list[dict], seeds: list[int]) -> str:
    lines = ["# A model added to a pool that has already learned", "",
             (f"Command: `python experiments/new_model.py --seeds {' '.join(map(str, seeds))}`. Priced pools; the "
              "policy learns the first half of the train split without the newcomer, then the whole pool learns "
              "the second half (module docstring); every model of the table is the newcomer in turn. Regret: "
              "the second half's, against its best fixed model, reward units. Share: the newcomer's share of the "
              "second half's decisions. Test: greedy quality and cost, % of the best single model's. Medians over seeds "
              "(per newcomer) and over newcomers (the first row); price_prior off / on."), ""]
    keys = ("regret_vs_best_fixed", "newcomer_share", "test_quality_pct", "test_cost_pct")
    for table in TABLES:
        mine = [r for r in runs if r["table"] == table]
        header = ("| newcomer | its mean reward | regret off / on | share off / on | "
                  "test quality off / on | test cost off / on |")
        lines += [f"## {table}", "", header, "| --- | --- | --- | --- | --- | --- |"]
        per = {}
        for newcomer in dict.fromkeys(r["newcomer"] for r in mine):
            per[newcomer] = {pp: {k: median_present([r[k] for r in mine if r["newcomer"] == newcomer
                                              and r["price_prior"] == pp]) for k in keys + ("newcomer_mean_reward",)}
                             for pp in (False, True)}
        overall = {pp: {k: median_present([per[n][pp][k] for n in per]) for k in keys} for pp in (False, True)}
        cells = [overall[False], overall[True]]
        lines.append(f"| every newcomer (median) | | {cells[0][keys[0]]:.1f} / {cells[1][keys[0]]:.1f} | "
                     f"{cells[0][keys[1]]:.3f} / {cells[1][keys[1]]:.3f} | {cells[0][keys[2]]:.1f} / "
                     f"{cells[1][keys[2]]:.1f} | {cells[0][keys[3]]:.1f} / {cells[1][keys[3]]:.1f} |")
        for newcomer, m in sorted(per.items(), key=lambda kv: -kv[1][False]["newcomer_mean_reward"]):
            off, on = m[False], m[True]
            lines.append(f"| {newcomer} | {off['newcomer_mean_reward']:.3f} | {off[keys[0]]:.1f} / {on[keys[0]]:.1f} | "
                         f"{off[keys[1]]:.3f} / {on[keys[1]]:.3f} | {off[keys[2]]:.1f} / {on[keys[2]]:.1f} | "
                         f"{off[keys[3]]:.1f} / {on[keys[3]]:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="new_model")
    args = ap.parse_args()
    jobs = []
    for table in TABLES:
        for newcomer in load_outcomes(DATA / f"{table}.parquet").models:
            jobs += [(table, newcomer, pp, seed) for pp in (False, True) for seed in args.seeds]
    with Pool(args.workers) as pool:
        runs = pool.map(run, jobs, chunksize=1)
    save_results(args.name, {"seeds": args.seeds, "runs": runs}, markdown(runs, args.seeds))


if __name__ == "__main__":
    main()
