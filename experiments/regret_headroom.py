"""How much room the online-regret target leaves: can a router pass the best fixed model in one pass?

Usage (about five minutes on 2 cores)::

    python experiments/regret_headroom.py [--seeds 1 2 3 4 5] [--name regret_headroom]

Issue 11 asks the online router's cumulative reward (quality minus the default cost weight times cost)
to pass the best single model's in hindsight before the end of the train pass, on RouterBench and
ZeroEval. A diagnostic for that target, on those two tables:

* headroom: on the test split, at the default cost weight, the mean reward per prompt of the best
  fixed model (chosen on train), of banditroute's own model fitted with every outcome revealed and of
  the TF-IDF ridge (``experiments/baselines.py``), all routing greedily, against the per-prompt oracle.
  What full information gains over the best fixed model bounds what learning may cost per prompt;
* exploration: the online regret against the best fixed model at the end of the train pass (reward
  units; negative is ahead) and the step from which the router stays ahead, for the default policy,
  smaller exploration scales, and pure greedy (no floor, no posterior exploration: not a usable
  policy, since its propensities of 1 break replay, but the bound on what exploring costs);
* where the default's regret goes: along its pass (windows of decisions), the mean reward per decision
  of the model it sampled (in expectation over the probabilities it logged), of the model it would
  have chosen greedily at that moment (the highest predicted quality minus cost weight times cost),
  and of the best fixed model, with the median probability of its most likely model. Greedy at or
  above the best fixed model while the sampled choice stays below says the regret is what exploring
  costs, not what is learned.
Writes ``experiments/results/<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import full_information, tfidf_ridge
from suite import DATA, fmt, save_results

from banditroute.config import PolicyConfig
from banditroute.core.types import net_score
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.simulate import build_service, run_online, simulate

TABLES = ("routerbench_subset", "zeroeval_gsm_math_crux")
CONFIGS = {
    "default": {},
    "exploration 0.25": {"exploration": 0.25},
    "exploration 0.1": {"exploration": 0.1},
    "greedy (no floor, no exploration)": {"exploration": 0.0, "floor": 0.0, "floor_min": 0.0, "floor_decay": None},
}


def headroom(table: str) -> dict:
    outcomes = load_outcomes(DATA / f"{table}.parquet")
    train, test = outcomes.subset("train"), outcomes.subset("test")
    w = PolicyConfig().cost_weight
    reward = net_score(test.quality, test.cost, w)
    best = int(np.argmax(net_score(train.quality, train.cost, w).sum(axis=0)))
    rows = np.arange(len(test))
    mean_cost = np.tile(train.cost.mean(axis=0), (len(test), 1))  # the same cost estimate for both routers
    out = {"best fixed model": float(reward[:, best].mean()), "oracle": float(reward.max(axis=1).mean())}
    for name, fit in (("banditroute model, full information", full_information), ("TF-IDF ridge, full information",
                                                                                   tfidf_ridge)):
        q = fit(outcomes, [w])[1]
        out[name] = float(reward[rows, np.argmax(net_score(q, mean_cost, w), axis=1)].mean())
    return {"table": table, "best_fixed": outcomes.models[best], "reward_per_prompt": out}


def online(job) -> tuple[str, str, int, dict]:
    table, name, seed = job
    r = simulate(load_outcomes(DATA / f"{table}.parquet"), "lints", None, seed,
                 settings=PolicyConfig(**CONFIGS[name]))["online"]["regret"]
    print(f"{table}: {name} seed {seed}", file=sys.stderr, flush=True)
    return table, name, seed, {"regret": r["vs_best_fixed"], "passes": r["passes_best_fixed_at"]}


WINDOWS = (0, 250, 500, 1000, 1500)  # the windows' first decisions; the last runs to the end of the pass


def decomposition(job) -> tuple[str, int, list[dict]]:
    """The default's rewards per window of its pass on ``table`` with ``seed`` (module docstring)."""
    table, seed = job
    outcomes = load_outcomes(DATA / f"{table}.parquet")
    train = outcomes.subset("train")
    settings = PolicyConfig()
    svc = build_service(outcomes, "lints", settings.cost_weight, seed, settings=settings)
    reward = net_score(train.quality, train.cost, settings.cost_weight)
    best = int(np.argmax(reward.sum(axis=0)))
    col = {m: k for k, m in enumerate(train.models)}
    rows = []

    def seen(i: int, d) -> None:
        r = reward[i, [col[m] for m in d.eligible]]
        greedy = int(np.argmax(net_score(d.pred_quality, d.pred_cost, settings.cost_weight)))
        rows.append((float(d.probabilities @ r), r[greedy], reward[i, best], float(d.probabilities.max())))

    run_online(svc, train, seed, on_decision=seen)
    svc.store.close()
    a, bounds = np.array(rows), [*WINDOWS, len(rows)]
    out = [{"from": lo, "to": hi, "sampled": float(a[lo:hi, 0].mean()), "greedy": float(a[lo:hi, 1].mean()),
            "best_fixed": float(a[lo:hi, 2].mean()), "top_probability": float(np.median(a[lo:hi, 3]))}
           for lo, hi in itertools.pairwise(bounds) if hi > lo]
    print(f"{table}: decomposition seed {seed}", file=sys.stderr, flush=True)
    return table, seed, out


def markdown(result: dict) -> str:
    lines = ["# Headroom for the online-regret target", "", (f"Command: `{result['command']}`. Reward = quality "
             f"minus {PolicyConfig().cost_weight:g} x cost (USD), per prompt of the test split, greedy routing."), ""]
    for h in result["headroom"]:
        lines += [f"## {h['table']} (best fixed model: {h['best_fixed']})", "", "| router | reward per prompt |",
                  "| --- | --- |", *[f"| {k} | {v:.4f} |" for k, v in h["reward_per_prompt"].items()], ""]
        lines += ["| online policy | regret at the end of the train pass, median [per seed] | passes it at |",
                  "| --- | --- | --- |"]
        for name, runs in result["online"][h["table"]].items():
            regret = [runs[s]["regret"] for s in result["seeds"]]
            passes = ", ".join("never" if runs[s]["passes"] is None else str(runs[s]["passes"]) for s in result["seeds"])
            lines.append(f"| {name} | {fmt(statistics.median(regret))} [{', '.join(fmt(r) for r in regret)}] | "
                         f"{passes} |")
        lines.append("")
        windows = result["decomposition"][h["table"]]
        lines += ["Where the default's regret goes, along its train pass (reward per decision, medians over seeds):", "",
                  ("| decisions | sampled (expected) | greedy at that moment | best fixed model | most likely model's "
                   "probability |"), "| --- | --- | --- | --- | --- |"]
        for k, w in enumerate(windows[result["seeds"][0]]):
            cells = [statistics.median(windows[s][k][f] for s in result["seeds"])
                     for f in ("sampled", "greedy", "best_fixed", "top_probability")]
            lines.append(f"| {w['from'] + 1}-{w['to']} | " + " | ".join(f"{c:.3f}" for c in cells[:3])
                         + f" | {cells[3]:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="regret_headroom")
    args = ap.parse_args()
    with Pool(args.workers) as pool:
        heads = pool.map(headroom, TABLES)
        runs = pool.map(online, [(t, n, s) for t in TABLES for n in CONFIGS for s in args.seeds])
        parts = pool.map(decomposition, [(t, s) for t in TABLES for s in args.seeds])
    result = {"command": "python experiments/regret_headroom.py " + " ".join(sys.argv[1:]), "seeds": args.seeds,
              "headroom": heads, "online": {t: {n: {} for n in CONFIGS} for t in TABLES},
              "decomposition": {t: {} for t in TABLES}}
    result["command"] = result["command"].strip()
    for t, n, s, r in runs:
        result["online"][t][n][s] = r
    for t, s, windows in parts:
        result["decomposition"][t][s] = windows
    save_results(args.name, result, markdown(result))


if __name__ == "__main__":
    main()
