"""Vowpal Wabbit's contextual bandit as a peer, on the suite's protocol, beside banditroute's default.

For every shared outcome table and seed, VW (``--cb_explore_adf --squarecb``, its defaults otherwise;
the prompt's words in a shared namespace, the model as an action feature, crossed with ``-q SA``)
learns online from scratch over the train split with bandit feedback: each prompt's model is sampled
from VW's probabilities, and VW learns the chosen model's loss ``-(quality - w cost)`` with that
propensity. It is then evaluated greedily on the test split (the model VW gives the most probability,
which under inverse gap weighting is the one with the lowest predicted loss). One learner per cost
weight ``w``, over :func:`banditroute.offline.tune.default_grid` extended upward as ``tune`` does, so
its frontier is summarised exactly as the suite's (qauc, cost_at_95, quality_at_25, AIQ; % of the best
single model). The train order is the same permutation of the seed as ``simulate``'s.

At the default cost weight (100 quality points per USD) the online regret at the end of the train pass
against the best fixed model in hindsight is reported as in the suite. banditroute's default
(``lints``) runs on the same tables and seeds in the same run.

    python experiments/vw_peer.py                       # about 11 minutes on 2 cores
    python experiments/vw_peer.py --tables routellm_mt_bench --seeds 1
    python experiments/vw_peer.py --our-features       # also VW on banditroute's features

Needs ``pip install -e '.[experiments]'`` (vowpalwabbit). Results: ``experiments/results/vw_peer.md``
and ``.json``; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
from suite import _median, fmt, per_table

from banditroute.core.features import Featurizer
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.outcomes import Outcomes, load_outcomes
from banditroute.offline.simulate import simulate
from banditroute.offline.tune import EXTEND, default_grid, tune

RESULTS = Path(__file__).resolve().parent / "results"
VW_ARGS = "--cb_explore_adf --squarecb -q SA --quiet"
DEFAULT_WEIGHT = 100.0
OURS_IN_VW = "vw squarecb, banditroute features"
METRICS = ("qauc", "cost_at_95", "quality_at_25", "aiq")
_NOT_WORD = re.compile(r"[^0-9a-z_]+")


def words(prompt: str) -> str:
    """The prompt as VW features: lowercase words, without VW's separators (``|``, ``:``, spaces)."""
    return " ".join(w for w in _NOT_WORD.sub(" ", prompt.lower()).split() if w)


def dense(x: np.ndarray) -> str:
    """banditroute's feature vector as VW features (``f<i>:<value>``, zeros left out)."""
    return " ".join(f"f{i}:{v:.6g}" for i, v in enumerate(x) if v != 0.0)


def examples(text: str, k: int) -> list[str]:
    """A VW ADF example: the shared prompt line, then one line per model."""
    return [f"shared |S {text}", *(f"|A m{a}" for a in range(k))]


def run_weight(outcomes: Outcomes, texts: dict[str, list[str]], order: np.ndarray, weight: float, seed: int) -> dict:
    """One VW learner at cost weight ``weight``: online over the train split, greedy on test."""
    from vowpalwabbit import Workspace

    train, test = outcomes.subset("train"), outcomes.subset("test")
    k = len(outcomes.models)
    vw = Workspace(f"{VW_ARGS} --random_seed {seed}")
    rng = np.random.default_rng(seed)
    rewards = np.empty(len(order))
    for t, i in enumerate(order):
        text = texts["train"][i]
        pmf = np.asarray(vw.predict(examples(text, k)), dtype=float)
        pmf /= pmf.sum()
        a = int(rng.choice(k, p=pmf))
        q, c = float(train.quality[i, a]), float(train.cost[i, a])
        lines = examples(text, k)
        lines[1 + a] = f"0:{-(q - weight * c):.9g}:{float(pmf[a]):.9g} {lines[1 + a]}"
        vw.learn(lines)
        rewards[t] = q - weight * c
    picks = np.array([int(np.argmax(vw.predict(examples(text, k)))) for text in texts["test"]])
    vw.finish()
    rows = np.arange(len(test))
    return {"cost_weight": weight, "quality": float(test.quality[rows, picks].mean()),
            "cost_usd": float(test.cost[rows, picks].sum()), "rewards": rewards}


def regret(outcomes: Outcomes, order: np.ndarray, rewards: np.ndarray, weight: float) -> dict:
    """The suite's regret figures: the best fixed model's cumulative reward on the train stream minus
    the learner's at the end, and the decision from which the learner stays at or above it."""
    train = outcomes.subset("train")
    fixed = train.quality[order] - weight * train.cost[order]
    best = int(np.argmax(fixed.sum(axis=0)))
    gap = np.cumsum(rewards) - np.cumsum(fixed[:, best])
    behind = np.flatnonzero(gap < 0)
    passes = None if len(behind) and behind[-1] == len(gap) - 1 else (int(behind[-1]) + 2 if len(behind) else 1)
    return {"vs_best_fixed": float(-gap[-1]), "passes_best_fixed_at": passes, "best_fixed": train.models[best]}


def vw_frontier(outcomes: Outcomes, seed: int, features: str = "words") -> dict:
    """VW's frontier over the default grid, extended upward as ``tune`` extends it, and its regret;
    ``features``: the prompt's words, or banditroute's own feature vector (``ours``)."""
    train = outcomes.subset("train")
    order = np.random.default_rng(seed).permutation(len(train))
    if features == "ours":
        f = Featurizer()
        texts = {split: [dense(x) for x in f.transform_many(outcomes.subset(split).prompts)]
                 for split in ("train", "test")}
    else:
        texts = {split: [words(p) for p in outcomes.subset(split).prompts] for split in ("train", "test")}
    cheapest = float(outcomes.subset("test").cost.sum(axis=0).min())
    points = {w: run_weight(outcomes, texts, order, w, seed) for w in default_grid(outcomes)}
    top = max(points)
    for _ in range(EXTEND):
        if top <= 0 or points[top]["cost_usd"] <= 1.05 * cheapest:
            break
        top = float(f"{3 * top:.4g}")
        points[top] = run_weight(outcomes, texts, order, top, seed)
    at_default = run_weight(outcomes, texts, order, DEFAULT_WEIGHT, seed)
    ref = outcomes.subset("test").reference()
    ordered = [{k: v for k, v in points[w].items() if k != "rewards"} for w in sorted(points)]
    return {**frontier_summary(ordered, ref["best_quality"], ref["best_cost_usd"]),
            "regret": regret(outcomes, order, at_default["rewards"], DEFAULT_WEIGHT)}


def one_table(job) -> dict:
    path, seeds, routers = job
    t0 = time.time()
    outcomes = load_outcomes(path)
    out = {"table": path.stem, "prompts": len(outcomes), "models": len(outcomes.models), "routers": {}}
    for name in routers:
        runs = {}
        for seed in seeds:
            print(f"{path.stem}: {name} seed {seed} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
            if name.startswith("vw squarecb"):
                runs[seed] = vw_frontier(outcomes, seed, "ours" if name == OURS_IN_VW else "words")
            else:
                res = tune(outcomes, "lints", seed)
                runs[seed] = {m: res[m] for m in METRICS} | {
                    "regret": simulate(outcomes, "lints", DEFAULT_WEIGHT, seed)["online"]["regret"]}
        out["routers"][name] = {"per_seed": runs, "median": {m: _median([r[m] for r in runs.values()]) for m in METRICS}
                                | {"regret": _median([r["regret"]["vs_best_fixed"] for r in runs.values()])}}
    out["seconds"] = round(time.time() - t0)
    print(f"{path.stem}: done in {out['seconds']} s", file=sys.stderr, flush=True)
    return out


def markdown(tables: list[dict], seeds: list[int], command: str) -> str:
    lines = ["# Vowpal Wabbit's contextual bandit beside banditroute's default", "",
             (f"Command: `{command}` (seeds {', '.join(map(str, seeds))}). Both learn online from scratch over the "
             "train split with bandit feedback and are evaluated greedily on the test split, one learner per cost "
             f"weight; VW is `{VW_ARGS}` on the prompt's words (see the script's docstring). Medians over seeds, "
             "per-seed values in brackets; qauc, cost_at_95 and quality_at_25 in % of the best single model "
             "(higher, lower, higher is better); regret: the best fixed model's cumulative reward minus the "
             f"router's at the end of the train pass at cost weight {DEFAULT_WEIGHT:g} (lower is better)."), ""]
    for t in tables:
        lines += [f"## {t['table']} ({t['prompts']} prompts x {t['models']} models)", "",
                  "| router | qauc | cost_at_95 | quality_at_25 | AIQ | regret at the end |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, r in t["routers"].items():
            cells = []
            for m in METRICS:
                digits = 3 if m == "aiq" else 1
                per = ", ".join(fmt(float("inf") if s[m] is None else s[m], digits) for s in r["per_seed"].values())
                cells.append(f"{fmt(r['median'][m], digits)} [{per}]")
            per = ", ".join(fmt(s["regret"]["vs_best_fixed"]) for s in r["per_seed"].values())
            cells.append(f"{fmt(r['median']['regret'])} [{per}]")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", default=None, help="table names (default: every table in ../shared/data)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="vw_peer")
    ap.add_argument("--our-features", action="store_true",
                    help="also VW on banditroute's feature vector instead of words (learner against features)")
    args = ap.parse_args()
    routers = ["vw squarecb", *([OURS_IN_VW] if args.our_features else []), "banditroute default"]
    tables = per_table(one_table, (args.seeds, routers), args.tables, args.workers)
    command = "python experiments/vw_peer.py" + "".join(f" {a}" for a in sys.argv[1:])
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"command": command, "seeds": args.seeds,
                                                            "tables": tables}, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(tables, args.seeds, command) + "\n")
    print(markdown(tables, args.seeds, command))


if __name__ == "__main__":
    main()
