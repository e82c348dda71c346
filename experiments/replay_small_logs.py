"""Off-policy intervals on small logs: coverage where the truth is known (ZeroEval, 15 models, 200 decisions).

Usage (a few minutes on 2 cores)::

    python experiments/replay_small_logs.py [--seeds 100] [--decisions 200] [--models 15] [--workers 2]

Writes ``experiments/results/replay_small_logs.{json,md}``.

For each seed, ``--decisions`` prompts are drawn from the ZeroEval table's train split and the first
``--models`` models of the table (in its order) are kept; the default policy (``lints``, cold, at the
pool's default cost weight) learns online over those prompts and logs its decisions with their
propensities (``simulate --log``). Candidates: always the best of those models on the train split,
always the cheapest, uniform random, and a ``lints`` state fitted with full information on the whole
train split acting greedily. Each is evaluated on the log by IPS, SNIPS, DM and DR; the truth is
(1/n) sum_i sum_a pi(a | x_i) Q(i, a) over the logged prompts. Coverage is the share of estimable
(seed, candidate) pairs whose 95% interval holds the truth; a candidate whose models the log never
observed is reported as not estimable and counted apart.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import replace
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from banditroute.core.state import save_state
from banditroute.offline.candidates import candidate_probabilities
from banditroute.offline.evaluate import evaluate
from banditroute.offline.logs import load_log
from banditroute.offline.outcomes import Outcomes, load_outcomes
from banditroute.offline.pretrain import pretrain
from banditroute.offline.simulate import simulate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "zeroeval_gsm_math_crux.parquet"
RESULTS = Path(__file__).resolve().parent / "results"
ESTIMATORS = ("ips", "snips", "dm", "dr")
OUTCOMES = ("quality", "cost_usd", "reward")
COST_WEIGHT = 100.0


def pool_outcomes(n_models: int) -> Outcomes:
    o = load_outcomes(DATA)
    return replace(o, models=o.models[:n_models], quality=o.quality[:, :n_models], cost=o.cost[:, :n_models])


def rows_of(o: Outcomes, idx: np.ndarray, split: str) -> Outcomes:
    return Outcomes(o.prompt_ids[idx], [o.prompts[i] for i in idx], o.tasks[idx], np.array([split] * len(idx)),
                    o.models, o.quality[idx], o.cost[idx])


def one_seed(job) -> list[dict]:
    seed, n_models, n_decisions, state = job
    o = pool_outcomes(n_models)
    train = o.subset("train")
    pick = np.random.default_rng(seed).choice(len(train), n_decisions, replace=False)
    small = rows_of(train, pick, "train")
    probe = rows_of(train, pick[:1], "test")  # simulate also scores a test split: one row, unused here
    both = Outcomes(np.concatenate([small.prompt_ids, probe.prompt_ids]), small.prompts + probe.prompts,
                    np.concatenate([small.tasks, probe.tasks]), np.concatenate([small.splits, probe.splits]),
                    small.models, np.vstack([small.quality, probe.quality]), np.vstack([small.cost, probe.cost]))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "log.parquet"
        simulate(both, "lints", COST_WEIGHT, seed, log=str(path))
        log = load_log(path)
        order = np.random.default_rng(seed).permutation(n_decisions)  # the simulator's order of the train rows
    cols = np.array([small.models.index(m) for m in log.models])
    Q, C = small.quality[order][:, cols], small.cost[order][:, cols]
    best = train.models[int(np.argmax(train.quality.mean(axis=0)))]
    cheapest = train.models[int(np.argmin(train.cost.mean(axis=0)))]
    out = []
    for name, kwargs in ((f"always {best}", {"policy": f"fixed:{best}"}),
                         (f"always {cheapest}", {"policy": f"fixed:{cheapest}"}),
                         ("random", {"policy": "random"}),
                         ("lints state, greedy", {"policy": "", "state": state, "greedy": True})):
        pi = candidate_probabilities(log, kwargs["policy"], COST_WEIGHT, state=kwargs.get("state"),
                                     greedy=kwargs.get("greedy", False), seed=seed)
        truth = {"quality": float((pi * Q).sum(1).mean()), "cost_usd": float((pi * C).sum(1).mean())}
        truth["reward"] = truth["quality"] - COST_WEIGHT * truth["cost_usd"]
        res = evaluate(log, pi, COST_WEIGHT, ESTIMATORS, n_boot=400, seed=seed)
        bare = evaluate(log, pi, COST_WEIGHT, ESTIMATORS, n_boot=400, seed=seed, widen=False)
        out.append({"seed": seed, "candidate": name.replace(best, "the best model").replace(cheapest, "the cheapest"),
                    "truth": truth, "ess": res["ess"], "estimates": res["estimates"],
                    "bootstrap_only": bare["estimates"]})
    return out


def covered(e: dict, truth: float) -> bool | None:
    """Whether the interval holds the truth; None when not estimable."""
    if e["value"] is None:
        return None
    return e["low"] <= truth <= e["high"]


def summarise(rows: list[dict], kind: str) -> dict:
    """Per candidate, estimator and outcome: coverage, seeds not estimable, zero-width and median width."""
    summary = {}
    for cand in dict.fromkeys(r["candidate"] for r in rows):
        rs = [r for r in rows if r["candidate"] == cand]
        summary[cand] = {"ess_median": statistics.median(r["ess"] for r in rs)}
        for est in ESTIMATORS:
            for outcome in OUTCOMES:
                es = [r[kind][est][outcome] for r in rs]
                marks = [covered(e, r["truth"][outcome]) for e, r in zip(es, rs)]
                known = [m for m in marks if m is not None]
                widths = [e["high"] - e["low"] for e in es if e["value"] is not None and e["low"] is not None]
                summary[cand][f"{est}/{outcome}"] = {
                    "coverage": float(np.mean(known)) if known else None, "not_estimable": marks.count(None),
                    "zero_width": int(sum(w <= 0 for w in widths)),
                    "median_width": float(np.median(widths)) if widths else None}
    return summary


def table(summary: dict) -> list[str]:
    lines = ["| candidate | median ESS | outcome | " + " | ".join(f"{e} cover (n/e, width)" for e in ESTIMATORS) + " |",
             "| --- | --- | --- |" + " --- |" * len(ESTIMATORS)]
    for cand, s in summary.items():
        for outcome in OUTCOMES:
            cells = []
            for e in ESTIMATORS:
                c = s[f"{e}/{outcome}"]
                cov = "-" if c["coverage"] is None else f"{c['coverage']:.2f}"
                width = "-" if c["median_width"] is None else f"{c['median_width']:.3g}"
                zero = f", {c['zero_width']} zero-width" if c["zero_width"] else ""
                cells.append(f"{cov} ({c['not_estimable']}, {width}{zero})")
            lines.append(f"| {cand} | {s['ess_median']:.0f} | {outcome} | " + " | ".join(cells) + " |")
    return lines


def overall(summary: dict) -> dict:
    """Coverage pooled over candidates (estimable seeds), per estimator and outcome."""
    out = {}
    for est in ESTIMATORS:
        for outcome in OUTCOMES:
            cs = [s[f"{est}/{outcome}"]["coverage"] for s in summary.values() if s[f"{est}/{outcome}"]["coverage"] is not None]
            out[f"{est}/{outcome}"] = float(np.mean(cs)) if cs else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--decisions", type=int, default=200)
    ap.add_argument("--models", type=int, default=15)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    o = pool_outcomes(args.models)
    with tempfile.TemporaryDirectory() as d:
        state = str(Path(d) / "lints.state")
        save_state(pretrain(o, "lints"), state)
        with Pool(args.workers) as pool:
            jobs = [(s, args.models, args.decisions, state) for s in range(1, args.seeds + 1)]
            rows = []
            for done, chunk in enumerate(pool.imap(one_seed, jobs), start=1):
                rows += chunk
                print(f"seed {done}/{args.seeds}", file=sys.stderr, flush=True)
    summary = {kind: summarise(rows, kind) for kind in ("estimates", "bootstrap_only")}
    result = {"command": "python experiments/replay_small_logs.py " + " ".join(sys.argv[1:]), "seeds": args.seeds,
              "decisions": args.decisions, "models": o.models, "cost_weight": COST_WEIGHT, "summary": summary,
              "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "replay_small_logs.json").write_text(json.dumps(result) + "\n")
    lines = ["# Off-policy intervals on small logs (ZeroEval, first 15 models, 200 decisions)", "",
             f"Command: `{result['command']}`", "",
             (f"{args.seeds} logs of {args.decisions} decisions each by cold `lints` at cost weight {COST_WEIGHT:g} over "
             f"{args.models} models ({', '.join(o.models)}); 95% intervals (Poisson bootstrap with 400 replicates, "
             "widened to Wilson's interval at the effective sample size where the sample is small). Coverage: share of "
             "estimable seeds whose interval holds the true value; `n/e`: seeds where the candidate was not estimable "
             "(it needs a model the log never observed); zero-width intervals counted."), "",
             ]
    lines += ["## With the small-sample widening (what replay reports)", "", *table(summary["estimates"]), "",
              "## Bootstrap intervals alone (before)", "", *table(summary["bootstrap_only"]), "",
              "## Coverage pooled over candidates", "", "| estimator | outcome | widened | bootstrap alone |",
              "| --- | --- | --- | --- |"]
    pooled = {kind: overall(summary[kind]) for kind in summary}
    result["coverage"] = pooled
    (RESULTS / "replay_small_logs.json").write_text(json.dumps(result) + "\n")
    for e in ESTIMATORS:
        for outcome in OUTCOMES:
            lines.append(f"| {e} | {outcome} | {pooled['estimates'][f'{e}/{outcome}']:.3f} | "
                         f"{pooled['bootstrap_only'][f'{e}/{outcome}']:.3f} |")
    (RESULTS / "replay_small_logs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
