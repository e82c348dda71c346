"""How much of the suite's gap to the TF-IDF ridge is the one train/test split of each shared table?

Usage (one process per table; about 35 minutes on 2 cores with the defaults)::

    python experiments/resplit.py [--splits 10] [--online-splits 10] [--tables ...] [--name resplit]

The suite (``experiments/suite.py``) varies the seed over a fixed split: every table's ``split``
column. Here each table is split again ``--splits`` times at random (split 0 is the table's own; the
others draw the same number of test prompts within each ``task``, so a task's share of the test split
is kept), and on every split, with the suite's protocol and metrics:

* the full-information TF-IDF (1-2 grams) ridge router and banditroute's features and quality model
  fitted with every outcome revealed (``pretrain``), swept over the suite's fine grid of cost weights;
* on the first ``--online-splits`` splits, the default configuration online (``tune``, seed = the
  split's number + 1): from scratch over the train split with bandit feedback, greedy on test.

Reported per table: the median over splits of qauc and cost_at_95 of each router, and the paired
differences (banditroute minus TF-IDF on the same split): their mean, standard deviation and how many
splits banditroute wins, beside the figures on the table's own split. Writes
``experiments/results/<name>.json`` and ``.md``; progress on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import full_information, tfidf_ridge
from suite import fine_grid, per_table, save_results

from banditroute.config import PolicyConfig
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.outcomes import Outcomes, load_outcomes
from banditroute.offline.tune import tune

ROUTERS = ("TF-IDF ridge, full information", "banditroute features, full information", "default (online)")


def resplit(outcomes: Outcomes, seed: int) -> Outcomes:
    """``outcomes`` with a new random split: within each task, as many test prompts as the table's own
    split has."""
    rng = np.random.default_rng(seed)
    splits = np.full(len(outcomes), "train", dtype=object)
    for task in np.unique(outcomes.tasks):
        idx = np.flatnonzero(outcomes.tasks == task)
        n_test = int((outcomes.splits[idx] == "test").sum())
        splits[rng.choice(idx, n_test, replace=False)] = "test"
    return dataclasses.replace(outcomes, splits=splits)


def summary(points: list[dict], ref: dict) -> dict:
    s = frontier_summary(points, ref["best_quality"], ref["best_cost_usd"])
    return {"qauc": s["qauc"], "cost_at_95": s["cost_at_95"]}


def one_table(job) -> dict:
    path, n_splits, n_online = job
    t0 = time.time()
    table = load_outcomes(path)
    out = {"table": path.stem, "prompts": len(table), "models": len(table.models), "splits": []}
    for s in range(n_splits):
        outcomes = table if s == 0 else resplit(table, 1000 + s)
        ref = outcomes.subset("test").reference()
        grid = fine_grid(outcomes.subset("train").cost.mean(axis=0))
        row = {ROUTERS[0]: summary(tfidf_ridge(outcomes, grid)[0], ref),
               ROUTERS[1]: summary(full_information(outcomes, grid)[0], ref)}
        if s < n_online:
            res = tune(outcomes, "lints", s + 1, settings=PolicyConfig(name="lints"))
            row[ROUTERS[2]] = {"qauc": res["qauc"], "cost_at_95": res["cost_at_95"]}
        out["splits"].append(row)
        print(f"{path.stem}: split {s} ({time.time() - t0:.0f} s) "
              + ", ".join(f"{k.split(',')[0].split(' (')[0]} {v['qauc']:.1f}" for k, v in row.items()),
              file=sys.stderr, flush=True)
    out["seconds"] = round(time.time() - t0)
    return out


def _fmt(v, digits: int = 1) -> str:
    return "never" if v is None else f"{v:.{digits}f}"


def _median(values: list) -> float | None:
    """Median with a router that never reached 95% (None) counted as the dearest."""
    if not values:
        return None
    ordered = sorted(values, key=lambda v: (v is None, v if v is not None else 0.0))
    mid = ordered[(len(ordered) - 1) // 2: len(ordered) // 2 + 1]
    return None if any(v is None for v in mid) else statistics.fmean(mid)


def paired(rows: list[dict], a: str, b: str, metric: str) -> dict | None:
    """``a`` minus ``b`` on the splits where both ran and both values exist."""
    d = [r[a][metric] - r[b][metric] for r in rows
         if a in r and b in r and r[a][metric] is not None and r[b][metric] is not None]
    if not d:
        return None
    better = [x > 0 if metric == "qauc" else x < 0 for x in d]
    return {"mean": statistics.fmean(d), "sd": statistics.pstdev(d), "wins": sum(better), "n": len(d)}


def markdown(tables: list[dict], command: str) -> str:
    lines = [
        "# The suite's figures on other train/test splits of the same tables",
        "",
        (f"Command: `{command}`. Split 0 is each table's own split (the suite's); the others are random with the "
        "same number of test prompts per task. Full-information routers on every split, the default online "
        "(seed = split + 1) on the first splits as stated. qauc (higher is better) and cost_at_95 (lower is "
        "better) in % of the best single model on that split's test prompts; medians over splits (`never`: "
        "95% not reached, counted as the dearest). Paired: banditroute minus TF-IDF on the same split, mean "
        "and standard deviation over splits, and the splits where banditroute is better."),
        "",
    ]
    for t in tables:
        rows = t["splits"]
        n_online = sum(ROUTERS[2] in r for r in rows)
        lines += [(f"## {t['table']} ({t['prompts']} prompts x {t['models']} models; {len(rows)} splits, "
                  f"{n_online} online)"), "",
                  "| router | qauc, own split | qauc, median | cost_at_95, own split | cost_at_95, median |",
                  "| --- | --- | --- | --- | --- |"]
        for name in ROUTERS:
            vals = [r[name] for r in rows if name in r]
            if not vals:
                continue
            lines.append(f"| {name} | {_fmt(rows[0][name]['qauc'])} | {_fmt(_median([v['qauc'] for v in vals]))} | "
                         f"{_fmt(rows[0][name]['cost_at_95'])} | {_fmt(_median([v['cost_at_95'] for v in vals]))} |")
        lines += ["", "| paired difference | qauc: mean (sd) | better on | cost_at_95: mean (sd) | better on |",
                  "| --- | --- | --- | --- | --- |"]
        for name in ROUTERS[1:]:
            q, c = paired(rows, name, ROUTERS[0], "qauc"), paired(rows, name, ROUTERS[0], "cost_at_95")
            if q is None:
                continue
            cost = f"{c['mean']:+.1f} ({c['sd']:.1f}) | {c['wins']}/{c['n']}" if c else "- | -"
            lines.append(f"| {name} minus TF-IDF | {q['mean']:+.2f} ({q['sd']:.2f}) | {q['wins']}/{q['n']} | {cost} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--online-splits", type=int, default=10, help="splits on which the default also runs online")
    ap.add_argument("--tables", nargs="+", help="table names (file stems); default: every shared table")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="resplit")
    args = ap.parse_args()
    tables = per_table(one_table, (args.splits, args.online_splits), args.tables, args.workers)
    command = "python experiments/resplit.py " + " ".join(sys.argv[1:])
    save_results(args.name, {"command": command.strip(), "tables": tables}, markdown(tables, command.strip()))


if __name__ == "__main__":
    main()
