"""Cascades against direct routing on the shared tables: where does checking a cheap answer and
escalating pay off, and where does it lose?

For each outcome table in ../shared/data and seeds 1-5, ``simulate`` (lints online on the train
split, greedy on the test split) at cost preferences 0, 0.25, 0.5, 0.75 and 0.9 gives a frontier of
(test cost, test quality) points:

* direct: the router picks the model that answers;
* cascade, false pass f: the router picks the model to start at; its answer is checked and, when the
  check fails, the best model of the train split answers instead (:mod:`banditroute.offline.cascade`:
  the check passes when the table's quality is at least 0.5, or by mistake with probability f, for f
  in 0, 0.2 and 0.5); learning sees the final quality and the total cost;
* the static cascade without a router: always start at the cheapest model (by mean train cost), and
  always the best model.

Each frontier is summarised against the best single model of the test split (its quality and cost on
the plain table) by ``qauc``, ``cost_at_95`` and ``quality_at_25`` (:mod:`banditroute.offline.frontier`),
medians over seeds. Writes ``experiments/results/cascades.json`` and ``.md``; progress on stderr.

    python experiments/cascades.py [--seeds 1 2 3 4 5] [--workers 2]
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

from banditroute.config import PolicyConfig
from banditroute.offline.cascade import cascade_outcomes
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.simulate import simulate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
TABLES = ("routellm_gsm8k", "routellm_mmlu", "routellm_mt_bench", "routerbench_subset", "zeroeval_gsm_math_crux")
PREFERENCES = (0.0, 0.25, 0.5, 0.75, 0.9)
FALSE_PASS = (0.0, 0.2, 0.5)
SETTINGS = ("direct", *(f"cascade, false pass {f}" for f in FALSE_PASS))
METRICS = ("qauc", "cost_at_95", "quality_at_25")


def run(job: tuple[str, int]) -> list[dict]:
    table, seed = job
    outcomes = load_outcomes(DATA / f"{table}.parquet")
    train, test = outcomes.subset("train"), outcomes.subset("test")
    top = outcomes.models[int(np.argmax(train.quality.mean(axis=0)))]
    cheapest = int(np.argmin(train.cost.mean(axis=0)))
    ref = test.reference()
    out = []
    for setting in SETTINGS:
        table_used = outcomes if setting == "direct" else cascade_outcomes(
            outcomes, top, float(setting.rsplit(" ", 1)[1]), seed=seed)
        points = []
        for p in PREFERENCES:
            r = simulate(table_used, "lints", seed=seed, settings=PolicyConfig(cost_preference=p))
            points.append({"preference": p, "quality": r["test"]["quality"], "cost_usd": r["test"]["cost_usd"]})
        out.append({"table": table, "seed": seed, "setting": setting, "points": points,
                    **frontier_summary(points, ref["best_quality"], ref["best_cost_usd"])})
    static = cascade_outcomes(outcomes, top, 0.0, seed=seed).subset("test")
    fixed = [{"quality": float(static.quality[:, cheapest].mean()), "cost_usd": float(static.cost[:, cheapest].sum())},
             {"quality": ref["best_quality"], "cost_usd": ref["best_cost_usd"]}]
    out.append({"table": table, "seed": seed, "setting": "static cascade (cheapest, then best), perfect check",
                "points": fixed, **frontier_summary(fixed, ref["best_quality"], ref["best_cost_usd"])})
    print(f"  {table} seed {seed} done", file=sys.stderr, flush=True)
    return out


def markdown(rows: list[dict], seeds: list[int], tables: list[str], seconds: float) -> str:
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    lines = ["# Cascades against direct routing", "",
             (f"`python experiments/cascades.py` ({seconds / 60:.0f} min on 2 cores); seeds "
             f"{', '.join(map(str, seeds))}, medians. Frontier over cost preferences "
             f"{', '.join(map(str, PREFERENCES))} (test split, greedy after online learning on the train split), "
             "against the best single model of the test split: qauc (higher is better), cost_at_95 (% of the "
             "best model's cost to reach 95% of its quality; lower is better; - when never reached), "
             "quality_at_25 (% of its quality at 25% of its cost). A cascade escalates to the best model of "
             "the train split when its simulated check fails (the table's quality < 0.5, let through by mistake "
             "with the false-pass probability)."), ""]
    for metric in METRICS:
        lines += [f"## {metric}", "", "| setting | " + " | ".join(tables) + " |",
                  "| --- | " + " | ".join("---" for _ in tables) + " |"]
        for s in settings:
            cells = []
            for t in tables:
                vals = [r[metric] for r in rows if r["setting"] == s and r["table"] == t]
                known = [v for v in vals if v is not None]
                cells.append(f"{statistics.median(known):.1f}" if len(known) > len(vals) / 2 else "-")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tables", nargs="+", default=list(TABLES))
    args = ap.parse_args()
    t0 = time.time()
    jobs = sorted(((t, s) for t in args.tables for s in args.seeds), key=lambda j: j[0] != "routellm_mmlu")
    print(f"{len(jobs)} runs", file=sys.stderr, flush=True)
    with Pool(args.workers) as pool:
        rows = [row for part in pool.imap_unordered(run, jobs) for row in part]
    rows.sort(key=lambda r: (r["table"], r["seed"]))
    seconds = time.time() - t0
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cascades.json").write_text(json.dumps(rows, indent=1))
    text = markdown(rows, args.seeds, args.tables, seconds)
    (RESULTS / "cascades.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
