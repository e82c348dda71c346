"""Decision and update latency of the default policy with 11 models, and simulate throughput.

Usage (river, the baseline, comes with ``pip install -e ".[bench]"``)::

    python benchmarks/bench_engine.py [--runs 5] [--calls 3000] [--features VERSION ...] [--out benchmarks/results/engine.json]

Per run, ``--calls`` RouterBench prompts (or generated prompts when ../shared/data is absent) go
through the bundled 11-model pool with the default policy (lints) and the default features (149
numbers); ``--features`` names other feature versions (``v1-d64``: 85 numbers, no embedding) measured
in the same runs, alternating with the default, under ``by_features`` in the output:

* ``route``: ``Router.route`` end to end (features, probabilities, sampling, decision record);
* ``features``, ``probabilities``: its two main parts alone (a batch of one);
* ``feedback``: ``Router.apply`` with one quality signal and a cost (the policy update);
* ``river_linucb_pull`` / ``river_linucb_update``: river's ``LinUCBDisjoint`` on the same feature
  vectors (as dicts), the baseline measured in the same run (it returns an arm, not propensities);
* ``route_many_B``: ``Router.route_many`` on batches of B prompts (the server's micro-batches), in
  microseconds per decision (each batch's time divided by B).

Each figure is the median over runs of that run's p50 / p99. ``simulate`` is prompts per second of
``simulate()`` on the RouterBench subset (train + test prompts), median over runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from banditroute.config import load_settings
from banditroute.core.features import Featurizer
from banditroute.core.policies import make_policy
from banditroute.core.reward import Feedback, Signal
from banditroute.core.router import Router, RouteRequest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routerbench_subset.parquet"


def prompts(n: int) -> list[str]:
    if DATA.exists():
        from banditroute.offline.outcomes import load_outcomes

        ps = load_outcomes(DATA).prompts
        return [ps[i % len(ps)] for i in range(n)]
    rng = np.random.default_rng(0)
    words = ["the", "a", "model", "route", "prompt", "python", "function", "list", "sort", "compute", "answer", "question", "why", "how"]
    return [" ".join(rng.choice(words, size=300)) for _ in range(n)]


def timed(fn, items) -> np.ndarray:
    out = np.empty(len(items))
    for i, item in enumerate(items):
        t0 = time.perf_counter_ns()
        fn(item)
        out[i] = time.perf_counter_ns() - t0
    return out / 1000.0


BATCHES = (4, 16, 32)


def one_run(ps: list[str], seed: int, features: str | None = None) -> dict[str, np.ndarray]:
    settings = load_settings()
    f = Featurizer() if features is None else Featurizer.from_version(features)
    prices = [(m.input_price_per_mtok, m.output_price_per_mtok) for m in settings.models]
    router = Router(settings, policy=make_policy("lints", settings.names, f.dim, prices, settings.policy),
                    featurizer=f, seed=seed)
    fb = Feedback(signals=[Signal(source="judge", kind="quality", value=1.0)], cost_usd=0.001)
    for p in ps[:500]:  # warm: a policy with some history
        router.apply(router.route(p).pending(), fb)
    res = {}
    res["features"] = timed(router.featurizer.transform, ps)
    ctxs = [router.context(p) for p in ps]
    res["probabilities"] = timed(lambda c: router.policy.probabilities(c.x[None], [c.input_tokens], None, 100.0,
                                                                       router.rng), ctxs)
    decisions = []
    res["route"] = timed(lambda p: decisions.append(router.route(p)), ps)
    res["feedback"] = timed(lambda d: router.apply(d.pending(), fb), decisions)
    options = [RouteRequest(prompt=p) for p in ps]
    for b in BATCHES:
        starts = list(range(0, len(ps) - b + 1, b))
        res[f"route_many_{b}"] = timed(lambda i, b=b: router.route_many(ps[i : i + b], options[i : i + b]), starts) / b

    from river import bandit

    lin = bandit.LinUCBDisjoint(alpha=1.0, seed=seed)
    names = router.pool.names
    dicts = [dict(enumerate(c.x.tolist())) for c in ctxs]
    chosen = []
    res["river_linucb_pull"] = timed(lambda x: chosen.append(lin.pull(names, context=x)), dicts)
    res["river_linucb_update"] = timed(lambda ax: lin.update(ax[0], ax[1], 1.0), list(zip(chosen, dicts)))
    return res


def simulate_rate() -> float | None:
    if not DATA.exists():
        return None
    from banditroute.offline.outcomes import load_outcomes
    from banditroute.offline.simulate import simulate

    o = load_outcomes(DATA)
    t0 = time.perf_counter()
    simulate(o, "lints", 30.0, seed=1)
    return len(o) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--features", nargs="*", default=[], help="other feature versions to measure alongside")
    ap.add_argument("--out", default="benchmarks/results/engine.json")
    args = ap.parse_args()
    ps = prompts(args.calls)
    runs, others = [], {v: [] for v in args.features}
    for seed in range(args.runs):
        runs.append(one_run(ps, seed))
        for v in args.features:
            others[v].append(one_run(ps, seed, v))

    def summary(rs):
        return {key: {"p50_us": round(statistics.median(float(np.percentile(r[key], 50)) for r in rs), 1),
                      "p99_us": round(statistics.median(float(np.percentile(r[key], 99)) for r in rs), 1)}
                for key in rs[0]}

    table = summary(runs)
    rates = [simulate_rate() for _ in range(3)]
    result = {
        "machine": f"{platform.machine()} {platform.python_version()}",
        "runs": args.runs,
        "calls_per_run": args.calls,
        "latency": table,
        "route_vs_river_linucb_pull_p50": round(table["route"]["p50_us"] / table["river_linucb_pull"]["p50_us"], 3),
        "simulate_prompts_per_s": None if rates[0] is None else round(statistics.median(rates)),
        "features": Featurizer().version,
        "by_features": {v: summary(rs) for v, rs in others.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    other = {v: summary(rs) for v, rs in others.items()}
    print(f"{'call':24}" + "".join(f"{'p50 ' + n:>24}" for n in ["default", *other]))
    for key, v in table.items():
        print(f"{key:24}{v['p50_us']:>24}" + "".join(f"{o[key]['p50_us']:>24}" for o in other.values()))
    print(f"simulate: {result['simulate_prompts_per_s']} prompts/s")


if __name__ == "__main__":
    main()
