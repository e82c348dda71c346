"""Does choosing a default by its median rank over tables carry over to a table it was not chosen on?

Usage::

    python experiments/selection_transfer.py [SUITE_JSON] [--name selection_transfer]

No runs: it reads a suite's saved results (default ``experiments/results/suite_before_fill.json``, the
largest set of configurations measured on every shared table with the same sweep of cost weights) and,
for each table in turn held out, chooses a configuration on the other tables only, then scores the
choice on the held-out table by its median qauc over seeds:

- ``median rank``: the suite's rule (the lowest median rank over the other tables, ties broken by the
  mean rank);
- ``one table``: the best configuration of a single other table, averaged over those tables (tuning on
  one benchmark);
- ``random``: the mean over every configuration (choosing blindly).

Each choice's loss is the held-out table's best qauc minus the choice's, and its rank there (1 is the
best). This is leave-one-group-out cross-validation of the selection rule itself (Hastie, Tibshirani &
Friedman, 2009, sec. 7.10): what the rule loses on a table it did not see estimates what it loses on the
tables we do not have. Writes ``experiments/results/<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite import RESULTS, mean_ranks, save_results


def qauc_table(suite: dict) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Configurations measured on every table, and ``{table: {configuration: median qauc}}``."""
    tables = {t["table"]: {c: r["median"]["qauc"] or 0.0 for c, r in t["configs"].items()} for t in suite["tables"]}
    configs = sorted(set.intersection(*(set(s) for s in tables.values())))
    return configs, {t: {c: s[c] for c in configs} for t, s in tables.items()}


def by_median_rank(scores: dict[str, dict[str, float]], tables: list[str]) -> str:
    """The configuration with the lowest median rank over ``tables`` (ties: the lowest mean rank)."""
    ranks = [mean_ranks(scores[t]) for t in tables]
    configs = list(scores[tables[0]])
    return min(configs, key=lambda c: (statistics.median(r[c] for r in ranks), statistics.mean(r[c] for r in ranks)))


def held_out(scores: dict[str, dict[str, float]], table: str) -> dict:
    others = [t for t in scores if t != table]
    target = scores[table]
    ranks = mean_ranks(target)
    best = max(target.values())
    chosen = by_median_rank(scores, others)
    singles = {t: max(scores[t], key=scores[t].get) for t in others}
    return {
        "table": table, "best": max(target, key=target.get), "best_qauc": best,
        "median_rank": {"choice": chosen, "qauc": target[chosen], "loss": best - target[chosen], "rank": ranks[chosen]},
        "one_table": {"choices": singles, "loss": statistics.mean(best - target[c] for c in singles.values()),
                      "rank": statistics.mean(ranks[c] for c in singles.values())},
        "random": {"loss": statistics.mean(best - q for q in target.values()), "rank": (len(target) + 1) / 2},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", nargs="?", default=str(RESULTS / "suite_before_fill.json"))
    ap.add_argument("--name", default="selection_transfer")
    args = ap.parse_args()
    suite = json.loads(Path(args.suite).read_text())
    configs, scores = qauc_table(suite)
    rows = [held_out(scores, t) for t in scores]
    full = by_median_rank(scores, list(scores))
    command = "python experiments/selection_transfer.py " + " ".join(sys.argv[1:])
    source = Path(args.suite).name
    lines = ["# Choosing by median rank, scored on a table it was not chosen on", "",
             (f"Command: `{command.strip()}`. From `{source}` ({len(configs)} configurations on {len(scores)} tables, "
              "median qauc over seeds): each table held out in turn, a configuration chosen on the others and "
              "scored on it. Loss: the held-out table's best qauc minus the choice's; rank among the "
              f"{len(configs)} there (1 is the best). `one table`: the best configuration of a single other table, "
              "averaged over those tables; `random`: the mean over all configurations."), "",
             ("| held-out table | best there (qauc) | median rank's choice | its qauc | loss / rank | one table: loss / rank "
              "| random: loss / rank |"), "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        m, o, z = r["median_rank"], r["one_table"], r["random"]
        lines.append(f"| {r['table']} | {r['best']} ({r['best_qauc']:.1f}) | {m['choice']} | {m['qauc']:.1f} | "
                     f"{m['loss']:.2f} / {m['rank']:g} | {o['loss']:.2f} / {o['rank']:.1f} | {z['loss']:.2f} / {z['rank']:.1f} |")
    mean = {k: statistics.mean(r[k]["loss"] for r in rows) for k in ("median_rank", "one_table", "random")}
    lines += ["", (f"Mean loss over held-out tables: median rank {mean['median_rank']:.2f}, one table "
                   f"{mean['one_table']:.2f}, random {mean['random']:.2f} qauc points. Chosen on all {len(scores)} "
                   f"tables: {full}.")]
    save_results(args.name, {"command": command, "source": source, "configs": configs, "held_out": rows,
                             "mean_loss": mean, "chosen_on_all": full}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
