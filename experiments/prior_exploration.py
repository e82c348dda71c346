"""Prior strength and exploration of the default policy: RouterBench cost_at_95 over seeds.

Usage (about 12 minutes on 2 cores)::

    python experiments/prior_exploration.py [--priors 1 2.5 5 10] [--explorations 0.5 1 2] [--seeds 1 2 3 4 5]

Writes ``experiments/results/prior_exploration.{json,md}``: for each (prior strength, exploration)
the online ``lints`` router's ``cost_at_95`` per seed (``tune`` on the default grid) and its median.
The defaults of ``PolicyConfig`` (prior strength 5, exploration 1) were chosen from this table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from multiprocessing import Pool
from pathlib import Path

from banditroute.config import PolicyConfig
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.tune import tune

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routerbench_subset.parquet"
RESULTS = Path(__file__).resolve().parent / "results"


def one(job):
    prior, exploration, seed = job
    settings = PolicyConfig(prior_strength=prior, exploration=exploration)
    res = tune(load_outcomes(DATA), "lints", seed, settings=settings)
    return prior, exploration, seed, res["cost_at_95"], res["quality_at_25"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--priors", type=float, nargs="+", default=[1.0, 2.5, 5.0, 10.0])
    ap.add_argument("--explorations", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="prior_exploration", help="results file name (e.g. for held-out seeds)")
    args = ap.parse_args()
    jobs = [(p, e, s) for p in args.priors for e in args.explorations for s in args.seeds]
    with Pool(args.workers) as pool:
        rows = pool.map(one, jobs)
    lines = ["# Prior strength and exploration of lints (RouterBench subset, cost_at_95 in % of gpt-4's cost)", "",
             f"Command: `python experiments/prior_exploration.py --priors {' '.join(f'{p:g}' for p in args.priors)} "
             f"--explorations {' '.join(f'{e:g}' for e in args.explorations)} --seeds {' '.join(map(str, args.seeds))}"
             + ("" if args.name == "prior_exploration" else f" --name {args.name}") + "`",
             "", "A seed with no frontier point reaching 95% of gpt-4's quality counts as infinite in the median.", "",
             "| prior strength | exploration | cost_at_95 per seed | median | max |", "| --- | --- | --- | --- | --- |"]
    for p in args.priors:
        for e in args.explorations:
            vals = [r[3] for r in rows if r[0] == p and r[1] == e]
            finite = [v if v is not None else float("inf") for v in vals]
            lines.append(f"| {p:g} | {e:g} | " + ", ".join("none" if v is None else f"{v:.1f}" for v in vals)
                         + f" | {statistics.median(finite):.1f} | {max(finite):.1f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(
        [{"prior_strength": r[0], "exploration": r[1], "seed": r[2], "cost_at_95": r[3], "quality_at_25": r[4]}
         for r in rows], indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
