"""Drift: one model's quality changes halfway through a stream; how many decisions until the router adapts?

Usage::

    python experiments/drift.py [--table routerbench_subset] [--seeds 1 2 3 4 5] [--threshold 15]

The train split of an outcome table is streamed twice in a seeded order (one pass to learn the pool,
then the change, then a second pass). At the change, the model the router chose most in the first pass
(at the default cost weight) starts failing: its quality becomes that of the pool's worst model on the
same prompt (a provider regression). The service is the simulator's (`build_service`), with and without
change detection (`drift_threshold`). Reported per seed: the changed model's share of decisions before
the change, the number of decisions after it until that share over the last 100 decisions falls below
a quarter of its share before, and the mean quality of the second pass. Writes
``experiments/results/drift.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite import DATA, save_results

from banditroute.config import PolicyConfig
from banditroute.core.policies.bayes_linear import single_threaded_blas
from banditroute.core.reward import Feedback, Signal
from banditroute.core.router import RouteRequest
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.simulate import build_service

WINDOW = 100


def stream(train, seed: int, threshold: float | None) -> dict:
    settings = PolicyConfig(drift_threshold=threshold)
    service = build_service(train, "lints", settings.cost_weight, seed, settings=settings)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(train)), rng.permutation(len(train))])
    half = len(train)
    col = {m: k for k, m in enumerate(train.models)}
    worst = int(np.argmin(train.quality.mean(axis=0)))
    chosen, quality, changed = [], [], None
    try:
        with single_threaded_blas():
            for step, i in enumerate(order):
                if step == half:
                    changed = int(np.bincount(chosen, minlength=len(col)).argmax())
                (d,) = service.route_many([RouteRequest(prompt=train.prompts[i])])
                k = col[d.model]
                q = float(train.quality[i, worst if k == changed else k])
                service.record_feedback(service.pending.get(d.decision_id), Feedback(
                    signals=[Signal(source="judge", kind="quality", value=q)], cost_usd=float(train.cost[i, k])))
                chosen.append(k)
                quality.append(q)
        alarms = service.router.policy.drift.alarms.tolist() if service.router.policy.drift is not None else None
    finally:
        service.store.close()
    after = np.array(chosen[half:]) == changed
    before_share = float(np.mean(np.array(chosen[half - 500:half]) == changed))
    share = np.convolve(after, np.ones(WINDOW) / WINDOW, mode="valid")
    below = np.flatnonzero(share < before_share / 4)
    return {"changed": train.models[changed], "share_before": before_share,
            "decisions_to_adapt": int(below[0]) + WINDOW if below.size else None,
            "second_pass_quality": float(np.mean(quality[half:])), "alarms": alarms,
            "share_curve": [round(float(v), 3) for v in share[::50]]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", default="routerbench_subset")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--threshold", type=float, default=15.0)
    args = ap.parse_args()
    train = load_outcomes(DATA / f"{args.table}.parquet").subset("train")
    runs = {}
    for name, th in (("no change detection", None), (f"Page-Hinkley, threshold {args.threshold:g}", args.threshold)):
        runs[name] = {}
        for seed in args.seeds:
            print(f"{name}: seed {seed}", file=sys.stderr, flush=True)
            runs[name][seed] = stream(train, seed, th)
    command = "python experiments/drift.py " + " ".join(sys.argv[1:])
    lines = ["# Drift: a model starts failing halfway through the stream", "",
             (f"Command: `{command.strip()}`. Table {args.table}, train split streamed twice ({len(train)} prompts a "
             "pass); at the start of the second pass the model chosen most in the first starts answering like the "
             "pool's worst model on each prompt. `adapt`: decisions after the change until that model's share "
             f"over the last {WINDOW} decisions falls below a quarter of its share before (`never`: not within "
             "the pass). Quality: mean over the second pass."), "",
             "| router | changed model | share before | adapt, per seed | median | quality, 2nd pass (median) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, per in runs.items():
        adapt = [r["decisions_to_adapt"] for r in per.values()]
        med = statistics.median([float("inf") if a is None else a for a in adapt])
        lines.append(f"| {name} | {', '.join(sorted({r['changed'] for r in per.values()}))} | "
                     f"{statistics.median(r['share_before'] for r in per.values()):.2f} | "
                     f"{', '.join('never' if a is None else str(a) for a in adapt)} | "
                     f"{'never' if med == float('inf') else int(med)} | "
                     f"{statistics.median(r['second_pass_quality'] for r in per.values()):.3f} |")
    save_results("drift", {"command": command, "runs": runs}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
