"""How many hashed n-gram buckets: featurisation speed against learning quality (RouterBench subset).

Usage (about 6 minutes on 2 cores)::

    python experiments/feature_dimension.py [--dims 16 32 64 128 256] [--seeds 1 2 3]

Writes ``experiments/results/feature_dimension.{json,md}``. For each hash dimension D (the
vector has 1 + 20 + D numbers): the median time to featurise a RouterBench prompt, the
full-information model's ``cost_at_95`` (``pretrain``, swept over the default cost-weight grid),
the online-learned ``lints`` router's ``cost_at_95`` (``tune``), median over seeds, and, on RouteLLM
MMLU (57 subjects, where the hashed words carry the subject), the full-information model's APGR.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import frontier_from_predictions
from suite import save_results

from banditroute.core.features import Featurizer
from banditroute.offline.frontier import frontier_summary, routellm_metrics
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.pretrain import pretrain
from banditroute.offline.tune import default_grid, tune

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routerbench_subset.parquet"
MMLU = DATA.with_name("routellm_mmlu.parquet")
RESULTS = Path(__file__).resolve().parent / "results"


def online(job):
    dim, seed = job
    return dim, seed, tune(load_outcomes(DATA), "lints", seed, featurizer=Featurizer(dim))["cost_at_95"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    o = load_outcomes(DATA)
    test = o.subset("test")
    ref = test.reference()
    grid = default_grid(o)
    mmlu = load_outcomes(MMLU)
    mmlu_test = mmlu.subset("test")
    strong = mmlu.models.index("gpt-4-1106-preview")
    rows = {}
    for dim in args.dims:
        f = Featurizer(dim)
        for p in o.prompts[:300]:
            f.transform(p)
        times = []
        for p in o.prompts:
            t0 = time.perf_counter()
            f.transform(p)
            times.append(time.perf_counter() - t0)
        pol = pretrain(o, "lints", featurizer=f)
        quality, cost = pol.predict(f.transform_many(test.prompts), [f.input_tokens(p) for p in test.prompts])
        pts = frontier_from_predictions(test, quality, cost, grid)
        mpol = pretrain(mmlu, "lints", featurizer=f)
        q, _ = mpol.predict(f.transform_many(mmlu_test.prompts), [f.input_tokens(p) for p in mmlu_test.prompts])
        apgr = routellm_metrics(q[:, strong] - q[:, 1 - strong], mmlu_test.quality[:, strong],
                                mmlu_test.quality[:, 1 - strong])["apgr"]
        rows[dim] = {"dim": f.dim, "features_p50_us": round(1e6 * statistics.median(times), 1),
                     "full_information_cost_at_95": frontier_summary(pts, ref["best_quality"], ref["best_cost_usd"])["cost_at_95"],
                     "mmlu_full_information_apgr": apgr}
    with Pool(args.workers) as pool:
        for dim, seed, c95 in pool.map(online, [(d, s) for d in args.dims for s in args.seeds]):
            rows[dim].setdefault("online_cost_at_95", {})[seed] = c95
    lines = ["# Hash dimension: speed against learning quality (RouterBench subset, test split)", "",
             (f"Command: `python experiments/feature_dimension.py --dims {' '.join(map(str, args.dims))} "
             f"--seeds {' '.join(map(str, args.seeds))}`"), "",
             ("| hash buckets D | vector length | featurise p50 (us) | full-information cost_at_95 (%) | "
             "online lints cost_at_95 (%), per seed | median | MMLU full-information APGR |"),
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for dim, r in rows.items():
        vals = [r["online_cost_at_95"][s] for s in args.seeds]
        finite = [v if v is not None else float("inf") for v in vals]
        lines.append(f"| {dim} | {r['dim']} | {r['features_p50_us']} | {r['full_information_cost_at_95']:.1f} | "
                     + ", ".join("none" if v is None else f"{v:.1f}" for v in vals)
                     + f" | {statistics.median(finite):.1f} | {r['mmlu_full_information_apgr']:.3f} |")
    save_results("feature_dimension", rows, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
