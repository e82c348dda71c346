"""The evaluation suite: every routing configuration on every shared outcome table, seeds 1-5.

Usage (one process per table; the default configuration alone takes about half an hour on 2 cores)::

    python experiments/suite.py [--configs default ...] [--seeds 1 2 3 4 5] [--workers 2] [--name suite]
    python experiments/suite.py --render results/a.json results/b.json --name both   # side by side, no runs

For each table in ../shared/data and each seed, ``tune`` (online from scratch over the train split with
bandit feedback, greedy on the test split, the default sweep of cost weights) for each configuration;
per table the median and per-seed qauc, cost_at_95, quality_at_25 and AIQ
(:mod:`banditroute.offline.frontier`), beside, computed in the same run:

* the fixed points: the best single model, the cheapest, uniform random and the per-prompt oracle;
* a full-information TF-IDF (1-2 grams) ridge router (``experiments/baselines.py``) and banditroute's
  own features and quality model fitted with every outcome revealed (``pretrain``), each swept over a
  fine grid of cost weights: the second measures the features apart from the bandit.

Defaults are chosen by their median rank over every table (by qauc), never on one table: with several
configurations the results end with that ranking. Writes ``experiments/results/<name>.json`` and
``<name>.md``; progress on stderr.
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

from baselines import full_information, oracle_point, priced_pool, tfidf_ridge, uniform_point

from banditroute.config import PolicyConfig
from banditroute.core.features import Featurizer
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.outcomes import Outcomes, load_outcomes
from banditroute.offline.simulate import simulate
from banditroute.offline.tune import tune

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("qauc", "cost_at_95", "quality_at_25", "aiq")
# Candidate configurations: a policy name, PolicyConfig fields over the defaults, and "features": Featurizer
# arguments (features other than the default; tune and simulate are given that featurizer).
FORMER = {"pooled": False, "floor_decay": None, "exploration": 1.0, "floor_share": None,
          "importance_cap": None}  # before issue 11's suite
UNWEIGHTED = {"importance_cap": None}  # the default before importance-weighted learning
CONFIGS = {
    "default": {"policy": "lints"},
    "importance_cap_1.5": {"policy": "lints", "importance_cap": 1.5},  # the default, named for its own run
    "importance_cap_3": {"policy": "lints", "importance_cap": 3.0},
    "importance_cap_10": {"policy": "lints", "importance_cap": 10.0},
    "unweighted": {"policy": "lints", **UNWEIGHTED},
    "exploration_0.75": {"policy": "lints", "exploration": 0.75},
    "exploration_1": {"policy": "lints", "exploration": 1.0},
    "floor_0.02": {"policy": "lints", "floor": 0.02},
    # with list prices (each model's mean train cost per request, as budget_pacing --priced)
    "priced": {"policy": "lints", "priced": True},
    "priced_price_prior": {"policy": "lints", "priced": True, "price_prior": True},
    "exploration_pool_scaling": {"policy": "lints", "exploration_pool_scaling": True},
    "exploration_decay_500": {"policy": "lints", "exploration_decay": 500.0},
    # both ways of exploring less at once: for deployments that value the reward earned while learning
    "decay_500_pool_scaling": {"policy": "lints", "exploration_decay": 500.0, "exploration_pool_scaling": True},
    "prior_5": {"policy": "lints", "prior_strength": 5.0},
    "prior_20": {"policy": "lints", "prior_strength": 20.0},
    # models' deviations from the pooled fit held tighter than its intercept (deviation_strength)
    "deviation_4": {"policy": "lints", "deviation_strength": 4.0},
    "deviation_16": {"policy": "lints", "deviation_strength": 16.0},
    # the quality noise learned per model (noise_prior observations' worth of the fixed 0.5)
    "noise_prior_10": {"policy": "lints", "noise_prior": 10.0},
    "noise_prior_100": {"policy": "lints", "noise_prior": 100.0},
    # other features (Featurizer arguments under "features")
    "hashed_half": {"policy": "lints", "features": {"hash_scale": 0.5, "unspaced_bigrams": False}},  # v3, the default before v4
    "v2_features": {"policy": "lints", "features": {"hash_scale": 1.0, "unspaced_bigrams": False}},  # the default before v3
    "hashed_128": {"policy": "lints", "features": {"hash_dim": 128}},
    "former_default": {"policy": "lints", **FORMER},
    "linucb": {"policy": "linucb", **FORMER},
    "lints_floor_0.002": {"policy": "lints", **FORMER, "floor": 0.002},
    "lints_prior_5": {"policy": "lints", **FORMER, "prior_strength": 5.0},
    "lints_floor_decay": {"policy": "lints", **FORMER, "floor_decay": 500.0, "floor_min": 0.001},
    "pooled_constant_floor": {"policy": "lints", **FORMER, "pooled": True},
    "linucb_pooled": {"policy": "linucb", **FORMER, "pooled": True},
    "former_default_drift": {"policy": "lints", **FORMER, "drift_threshold": 15.0},
    "pooled_constant_floor_drift": {"policy": "lints", **FORMER, "pooled": True, "drift_threshold": 15.0},
    "unweighted_drift": {"policy": "lints", **UNWEIGHTED, "drift_threshold": 15.0},
    # the default before floor_share
    "pooled_decaying_floor_per_model": {"policy": "lints", **UNWEIGHTED, "floor_share": None},
    "unweighted_exploration_0.25": {"policy": "lints", **UNWEIGHTED, "exploration": 0.25},
    "unweighted_prior_30": {"policy": "lints", **UNWEIGHTED, "prior_strength": 30.0},
    "squarecb": {"policy": "squarecb", **UNWEIGHTED},
    "squarecb_exploration_1": {"policy": "squarecb", **UNWEIGHTED, "exploration": 1.0},
    "squarecb_exploration_0.25": {"policy": "squarecb", **UNWEIGHTED, "exploration": 0.25},
}


def fine_grid(test_cost_means: np.ndarray) -> list[float]:
    """0 plus 80 weights from 1e-3 to 1e3 over the spread of mean cost: the full-information routers'
    sweep (each point is one argmax over predictions, so it can be fine)."""
    gap = float(test_cost_means.max() - test_cost_means.min()) or 1.0
    return [0.0] + list(np.geomspace(1e-3 / gap, 1e3 / gap, 80))


def full_information_setup(path: Path) -> tuple[Outcomes, Outcomes, dict, list[float]]:
    """What a full-information comparison on one table starts from: its outcomes, the test split, the
    test split's reference points (best model, oracle) and the :func:`fine_grid` of the train costs."""
    outcomes = load_outcomes(path)
    test = outcomes.subset("test")
    return outcomes, test, test.reference(), fine_grid(outcomes.subset("train").cost.mean(axis=0))


def point(p: dict, ref: dict) -> dict:
    """A fixed point as quality and cost in percent of the best single model's."""
    return {"quality_pct": 100.0 * p["quality"] / ref["best_quality"],
            "cost_pct": 100.0 * p["cost_usd"] / ref["best_cost_usd"]}


def one_table(job) -> dict:
    path, configs, seeds = job
    t0 = time.time()
    outcomes, test, ref, grid = full_information_setup(path)
    out = {"table": path.stem, "prompts": len(outcomes), "models": len(outcomes.models), "reference": ref,
           "configs": {}, "full_information": {}}
    k_cheap = int(np.argmin(test.cost.sum(axis=0)))
    out["fixed"] = {
        "best model": point({"quality": ref["best_quality"], "cost_usd": ref["best_cost_usd"]}, ref),
        "cheapest model": point({"quality": float(test.quality[:, k_cheap].mean()),
                                 "cost_usd": float(test.cost[:, k_cheap].sum())}, ref),
        "random": point(uniform_point(test), ref),
        "oracle": point(oracle_point(test), ref),
    }
    for name, fit in (("TF-IDF ridge", tfidf_ridge), ("banditroute features", full_information)):
        points = fit(outcomes, grid)[0]
        out["full_information"][name] = frontier_summary(points, ref["best_quality"], ref["best_cost_usd"])
    for name in configs:
        spec = dict(CONFIGS[name])
        policy = spec.pop("policy")
        pool = priced_pool(outcomes) if spec.pop("priced", False) else None
        features = spec.pop("features", None)
        settings = PolicyConfig(name=policy, **spec)
        runs = {}
        for seed in seeds:
            print(f"{path.stem}: {name} seed {seed} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
            featurizer = None if features is None else Featurizer(**features)
            res = tune(outcomes, policy, seed, settings=settings, pool=pool, featurizer=featurizer)
            regret = simulate(outcomes, policy, settings.cost_weight, seed, settings=settings, pool=pool,
                              featurizer=featurizer)["online"]["regret"]
            runs[seed] = {m: res[m] for m in METRICS} | {"points": len(res["points"]),
                                                         "passes_best_fixed_at": regret["passes_best_fixed_at"],
                                                         "regret_vs_best_fixed": regret["vs_best_fixed"],
                                                         "best_fixed": regret["best_fixed"]}
        out["configs"][name] = {"per_seed": runs, "median": medians(runs)}
        out["train"] = len(outcomes.subset("train"))
    out["seconds"] = round(time.time() - t0)
    print(f"{path.stem}: done in {out['seconds']} s", file=sys.stderr, flush=True)
    return out


def table_paths(names=None) -> list[Path]:
    """The shared outcome tables (``names``: only those, by file stem), the largest first: with one process
    per table, the other workers take the smaller ones while the largest runs."""
    paths = sorted(DATA.glob("*.parquet"), key=lambda p: -p.stat().st_size)
    return [p for p in paths if not names or p.stem in names]


def per_table(fn, args: tuple, names=None, workers: int = 2) -> list:
    """``fn((path, *args))`` for each of :func:`table_paths` ``(names)`` in ``workers`` processes, the results
    in the order of the tables' names."""
    with Pool(workers) as pool:
        results = pool.map(fn, [(p, *args) for p in table_paths(names)], chunksize=1)
    return sorted(results, key=lambda r: r["table"])


def save_results(name: str, result: dict, md: str) -> None:
    """Write an experiment's ``result`` to ``results/<name>.json`` and its table ``md`` to ``<name>.md``,
    and print the table."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(md)
    print(md)


def _median(values: list) -> float | None:
    """The median, a missing value (cost_at_95 never reached) counting as the worst; None if all are."""
    if all(v is None for v in values):
        return None
    return statistics.median([float("inf") if v is None else v for v in values])


def medians(runs: dict[int, dict]) -> dict[str, float | None]:
    """A configuration's medians over its seeds' runs: every metric and where it passes the best fixed model."""
    keys = METRICS + (("passes_best_fixed_at",) if all("passes_best_fixed_at" in r for r in runs.values()) else ())
    return {m: _median([r[m] for r in runs.values()]) for m in keys}


def mean_ranks(score: dict[str, float]) -> dict[str, float]:
    """Rank of each name by its score (1 is the highest); ties share the mean of their ranks."""
    return {c: sum(o > v for o in score.values()) + (sum(o == v for o in score.values()) + 1) / 2
            for c, v in score.items()}


def fmt(v, digits: int = 1) -> str:
    if v is None:
        return "-"
    if v == float("inf"):
        return "never"
    return f"{v:.{digits}f}"


def markdown(tables: list[dict], configs: list[str], seeds: list[int], command: str) -> str:
    lines = ["# Evaluation suite: every configuration on every shared table", "",
             (f"Command: `{command}` ({', '.join(str(s) for s in seeds)} as seeds). Online: learned from scratch "
             "over the train split with bandit feedback, greedy on the test split, over the default sweep of cost "
             "weights; medians over seeds, per-seed values in brackets. Quality and cost in % of the best single "
             "model's on the test split; qauc: mean best quality within budgets of 5-100% of its cost; cost_at_95: "
             "the cost of 95% of its quality (`never`: not reached); quality_at_25: the best quality within 25% of "
             "its cost; AIQ: RouterBench's area under the frontier's hull. Full-information routers see every "
             "model's outcome on the train split. Defaults are chosen by their median rank over all tables, never "
             "on one table."), ""]
    for t in tables:
        ref = t["reference"]
        lines += [(f"## {t['table']} ({t['prompts']} prompts x {t['models']} models; best model {ref['best_model']}, "
                  f"quality {ref['best_quality']:.3f}; oracle {ref['oracle_quality']:.3f})"), "",
                  "| router | qauc | cost_at_95 | quality_at_25 | AIQ |", "| --- | --- | --- | --- | --- |"]
        for name in (n for n in configs if n in t["configs"]):
            c = t["configs"][name]
            cells = []
            for m in METRICS:
                per = ", ".join(fmt(c["per_seed"][s][m], 3 if m == "aiq" else 1) for s in seeds if s in c["per_seed"])
                cells.append(f"{fmt(c['median'][m], 3 if m == 'aiq' else 1)} [{per}]")
            lines.append(f"| {name} (online) | " + " | ".join(cells) + " |")
        for name, s in t["full_information"].items():
            lines.append(f"| {name}, full information | " + " | ".join(
                fmt(s[m], 3 if m == "aiq" else 1) for m in METRICS) + " |")
        lines += ["", "| fixed point | quality % | cost % |", "| --- | --- | --- |"]
        lines += [f"| {k} | {v['quality_pct']:.1f} | {v['cost_pct']:.1f} |" for k, v in t["fixed"].items()]
        lines.append("")
    lines += regret_section(tables, configs, seeds)
    if len(configs) > 1:
        lines += ["## Median rank over tables (by qauc; 1 is best)", "",
                  ("Ties in the median are broken by the mean rank; a configuration run on some tables only is ranked "
                  "on those (`-` elsewhere)."), "",
                  "| configuration | ranks | median | mean |", "| --- | --- | --- | --- |"]
        ranks = {c: [] for c in configs}
        for t in tables:
            table_ranks = mean_ranks({c: t["configs"][c]["median"]["qauc"] or 0.0 for c in configs if c in t["configs"]})
            for c in configs:
                ranks[c].append(table_ranks.get(c))

        def measured(c):
            return [r for r in ranks[c] if r is not None]

        for c in sorted(configs, key=lambda c: (statistics.median(measured(c)), statistics.mean(measured(c)))):
            lines.append(f"| {c} | {', '.join('-' if r is None else str(r) for r in ranks[c])} | "
                         f"{statistics.median(measured(c))} | {statistics.mean(measured(c)):.1f} |")
        lines.append("")
    return "\n".join(lines)


def regret_section(tables: list[dict], configs: list[str], seeds: list[int]) -> list[str]:
    """Where each run's cumulative online reward (quality minus the default cost weight times cost) passes
    the best fixed model's in hindsight for good, per table and configuration (runs saved before these
    figures were recorded are left out)."""
    rows = []
    for t in tables:
        for name in (n for n in configs if n in t["configs"]):
            per = t["configs"][name]["per_seed"]
            ran = [s for s in seeds if s in per]
            if "passes_best_fixed_at" not in per[ran[0]]:
                continue
            cells = ", ".join(fmt(per[s]["passes_best_fixed_at"], 0) if per[s]["passes_best_fixed_at"] is not None
                              else "never" for s in ran)
            regret = [per[s]["regret_vs_best_fixed"] for s in ran]
            rows.append(f"| {t['table']} | {name} | {t['train']} | {per[ran[0]]['best_fixed']} | "
                        f"{fmt(t['configs'][name]['median']['passes_best_fixed_at'] or float('inf'), 0)} [{cells}] | "
                        f"{fmt(statistics.median(regret))} [{', '.join(fmt(r) for r in regret)}] |")
    if not rows:
        return []
    return ["## Online reward against the best fixed model in hindsight", "",
            (f"At the default cost weight ({PolicyConfig().cost_weight:g} quality points per USD), one pass over the "
            "train split from scratch: the decision from which the router's cumulative reward (quality minus "
            "weight times cost) stays at or above the best single model's to the end of the pass (`never`: it "
            "ends below), and the regret at the end of the pass: the best fixed model's cumulative reward minus "
            "the router's (negative: the router is ahead)."), "",
            "| table | configuration | train prompts | best fixed model | passes it at | regret at the end |",
            "| --- | --- | --- | --- | --- | --- |", *rows, ""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", nargs="+", default=["default"], choices=sorted(CONFIGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="suite")
    ap.add_argument("--tables", nargs="+", help="table names (file stems) to run; default: every shared table")
    ap.add_argument("--render", nargs="+", metavar="JSON",
                    help="only write <name>.md and .json from saved results (several: their configurations side "
                         "by side, and a configuration's seeds in several files together)")
    ap.add_argument("--keep", nargs="+", metavar="CONFIG", help="with --render: only these configurations")
    ap.add_argument("--relabel", nargs="+", default=[], metavar="OLD=NEW",
                    help="with --render: rename configurations (results saved before a default changed)")
    args = ap.parse_args()
    if args.render:
        saved = [json.loads(Path(path).read_text()) for path in args.render]
        relabel = dict(r.split("=", 1) for r in args.relabel)
        for s in saved:  # each file's names are renamed once, before the files are merged
            for t in s["tables"]:
                t["configs"] = {relabel.get(k, k): v for k, v in t["configs"].items()}
        for s in saved:
            for t in s["tables"]:
                for c in t["configs"].values():
                    c["per_seed"] = {int(seed): run for seed, run in c["per_seed"].items()}  # JSON keys are text
        tables = {t["table"]: t for t in saved[0]["tables"]}
        for other in saved[1:]:
            for t in other["tables"]:
                mine = tables[t["table"]]["configs"]
                for name, c in t["configs"].items():
                    if name in mine:  # other seeds of a configuration already read: their union
                        mine[name]["per_seed"].update(c["per_seed"])
                        mine[name]["median"] = medians(mine[name]["per_seed"])
                    else:
                        mine[name] = c
        if args.keep:
            for t in tables.values():
                t["configs"] = {k: v for k, v in t["configs"].items() if k in args.keep}
        configs = list(dict.fromkeys(c for t in tables.values() for c in t["configs"]))  # some may cover some tables
        command = " + ".join(s["command"].strip() for s in saved)
        if args.relabel:
            command += f" (rendered with --relabel {' '.join(args.relabel)})"
        if args.keep:
            command += f" (rendered with --keep {' '.join(args.keep)})"
        ordered = sorted(tables.values(), key=lambda t: t["table"])
        seeds = sorted({seed for s in saved for seed in s["seeds"]})
        (RESULTS / f"{args.name}.json").write_text(json.dumps({"command": command, "seeds": seeds,
                                                               "tables": ordered}, indent=1) + "\n")
        md = markdown(ordered, configs, seeds, command)
        (RESULTS / f"{args.name}.md").write_text(md)
        print(md)
        return
    tables = per_table(one_table, (args.configs, args.seeds), args.tables, args.workers)
    command = "python experiments/suite.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"command": command, "seeds": args.seeds,
                                                           "tables": tables}, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(tables, args.configs, args.seeds, command.strip()))
    print((RESULTS / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
