"""Throughput of off-policy evaluation: logged decisions per second.

Usage (about a minute)::

    python benchmarks/bench_replay.py [--rows 200000] [--runs 3]

The shipped log (replay_logs/routerbench_lints_cw30_seed1.parquet, 2,212 decisions) is tiled to
``--rows`` decisions. The candidate is a linear policy state (lints, learned from the log itself)
acting greedily at cost weight 30. Timed, per run:

* ``ips_snips``: the candidate's probabilities for every decision (vectorised) plus the IPS and
  SNIPS point estimates of quality, cost and reward;
* ``dr``: the same plus the cross-fitted reward models (5 folds, ridge per model) and DR;
* ``bootstrap``: 500 Poisson-bootstrap replicates of one estimator's interval;
* ``loop_baseline``: the candidate scored one decision at a time (``Policy.greedy``) on the first
  20,000 decisions, the per-decision path a non-vectorised replay would take.

Figures are medians over runs, in decisions per second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from banditroute.core.policies import make_policy
from banditroute.core.types import net_score
from banditroute.offline.estimators import IPS, SNIPS, DoublyRobust, bootstrap_ci, estimate
from banditroute.offline.logs import load_log
from banditroute.offline.reward_models import reward_models

HERE = Path(__file__).resolve().parent
LOG = HERE.parent / "replay_logs" / "routerbench_lints_cw30_seed1.parquet"
CW = 30.0


def tiled(log, rows: int):
    reps = -(-rows // len(log))
    idx = np.tile(np.arange(len(log)), reps)[:rows]
    return replace(log, decision_ids=[log.decision_ids[i] for i in idx], X=log.X[idx],
                   input_tokens=log.input_tokens[idx], eligible=log.eligible[idx], mu=log.mu[idx],
                   chosen=log.chosen[idx], propensity=log.propensity[idx], cost_weight=log.cost_weight[idx],
                   quality=log.quality[idx], cost=log.cost[idx])


def one_run(log, policy) -> dict[str, float]:
    n = len(log)
    rows = np.arange(n)
    r = net_score(log.quality, log.cost, CW)
    out = {}
    t0 = time.perf_counter()
    pi = policy.greedy(log.X, log.input_tokens, log.eligible, CW).probabilities
    w = pi[rows, log.chosen] / log.propensity
    for y in (log.quality, log.cost, r):
        estimate(*IPS().terms(w, y, None, None))
        estimate(*SNIPS().terms(w, y, None, None))
    out["ips_snips"] = n / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    pi = policy.greedy(log.X, log.input_tokens, log.eligible, CW).probabilities
    w = pi[rows, log.chosen] / log.propensity
    q_hat, c_hat = reward_models(log)
    for y, yhat in ((log.quality, q_hat), (log.cost, c_hat), (r, q_hat - CW * c_hat)):
        estimate(*DoublyRobust().terms(w, y, (pi * yhat).sum(1), yhat[rows, log.chosen]))
    out["dr"] = n / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    bootstrap_ci(w * log.quality, w, n_boot=500)
    out["bootstrap"] = n / (time.perf_counter() - t0)

    m = min(n, 20_000)
    t0 = time.perf_counter()
    for i in range(m):
        policy.greedy(log.X[i:i + 1], log.input_tokens[i:i + 1], log.eligible[i:i + 1], CW)
    out["loop_baseline"] = m / (time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "replay.json"))
    args = ap.parse_args()
    base = load_log(LOG)
    policy = make_policy("lints", base.models, base.X.shape[1])
    for i in range(len(base)):
        policy.update(base.context(i), int(base.chosen[i]), float(base.quality[i]), float(base.cost[i]))
    log = tiled(base, args.rows)
    runs = [one_run(log, policy) for _ in range(args.runs)]
    result = {"rows": args.rows, "runs": args.runs,
              "decisions_per_s": {k: round(statistics.median(r[k] for r in runs)) for k in runs[0]}}
    result["vectorised_vs_loop"] = round(result["decisions_per_s"]["ips_snips"] / result["decisions_per_s"]["loop_baseline"], 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
