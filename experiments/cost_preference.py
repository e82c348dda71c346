"""Does ``cost_preference`` mean the same trade-off in every pool, where one ``cost_weight`` does not?

For each outcome table in ../shared/data and seeds 1-5: ``simulate`` (lints online on the train split
with bandit feedback, greedy on the test split), once per setting below; the result is the test
quality as a percentage of the best single model's, and the cost as a percentage of its cost (median
over seeds per table). The spread of a setting is the largest minus the smallest of its per-table
quality percentages: a knob that means the same everywhere has a small spread. Settings:

* ``cost_preference`` 0.25, 0.5 and 0.75 at the default ``preference_scale`` (0.1), and 0.5 at the
  scales 0.05 and 0.2 (the choice of that default);
* ``cost_weight`` 30, 100 (the default) and 300, the knob before.

Writes ``experiments/results/cost_preference.json`` and ``.md``; progress on stderr.

    python experiments/cost_preference.py [--seeds 1 2 3 4 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from multiprocessing import Pool
from pathlib import Path

from banditroute.config import PolicyConfig
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.simulate import simulate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
TABLES = ("routellm_gsm8k", "routellm_mmlu", "routellm_mt_bench", "routerbench_subset", "zeroeval_gsm_math_crux")
SETTINGS = {
    "preference 0.25": {"cost_preference": 0.25},
    "preference 0.5": {"cost_preference": 0.5},
    "preference 0.75": {"cost_preference": 0.75},
    "preference 0.5, scale 0.05": {"cost_preference": 0.5, "preference_scale": 0.05},
    "preference 0.5, scale 0.2": {"cost_preference": 0.5, "preference_scale": 0.2},
    "weight 30": {"cost_weight": 30.0},
    "weight 100 (default)": {"cost_weight": 100.0},
    "weight 300": {"cost_weight": 300.0},
}


def run(job: tuple[str, int]) -> list[dict]:
    table, seed = job
    outcomes = load_outcomes(DATA / f"{table}.parquet")
    out = []
    for name, setting in SETTINGS.items():
        settings = PolicyConfig(**setting)
        r = simulate(outcomes, "lints", settings.cost_weight, seed, settings=settings)
        ref = r["reference"]
        out.append({"table": table, "seed": seed, "setting": name,
                    "quality_pct_of_best": 100.0 * r["test"]["quality"] / ref["best_quality"],
                    "cost_pct_of_best": 100.0 * r["test"]["cost_usd"] / ref["best_cost_usd"]})
    print(f"  {table} seed {seed} done", file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="cost_preference")
    args = ap.parse_args()
    t0 = time.time()
    jobs = [(t, s) for t in TABLES for s in args.seeds]
    print(f"{len(jobs)} runs of {len(SETTINGS)} settings", file=sys.stderr, flush=True)
    with Pool(args.workers) as pool:
        rows = [row for part in pool.imap_unordered(run, jobs) for row in part]
    summary = {}
    for name in SETTINGS:
        per_table = {}
        for t in TABLES:
            mine = [r for r in rows if r["setting"] == name and r["table"] == t]
            per_table[t] = {"quality_pct_of_best": round(statistics.median(r["quality_pct_of_best"] for r in mine), 1),
                            "cost_pct_of_best": round(statistics.median(r["cost_pct_of_best"] for r in mine), 1)}
        q = [v["quality_pct_of_best"] for v in per_table.values()]
        summary[name] = {"per_table": per_table, "quality_spread": round(max(q) - min(q), 1)}
    result = {"seeds": args.seeds, "tables": TABLES, "settings": SETTINGS, "summary": summary, "runs": rows,
              "seconds": round(time.time() - t0, 1)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    intro = ("Test quality as % of the best single model's (cost as % of its cost), median of seeds "
             f"{', '.join(map(str, args.seeds))}; `python experiments/cost_preference.py`. The spread is the "
             "largest minus the smallest quality percentage over the tables.")
    lines = ["# cost_preference against cost_weight across the shared tables", "", intro, "",
             "| setting | " + " | ".join(TABLES) + " | spread |", "| --- |" + " --- |" * (len(TABLES) + 1)]
    for name, s in summary.items():
        cells = [f"{v['quality_pct_of_best']} ({v['cost_pct_of_best']})" for v in s["per_table"].values()]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {s['quality_spread']} |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
