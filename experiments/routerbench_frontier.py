"""RouterBench subset: quality-cost frontier of the online-learned router against baselines, and learning curves.

Usage (about 5 minutes on 2 cores)::

    python experiments/routerbench_frontier.py [--seeds 1 2 3 4 5] [--data ../shared/data/routerbench_subset.parquet]

Writes ``experiments/results/routerbench_frontier.{json,md,png}`` and
``experiments/results/routerbench_learning_curve.png``.

* online policies (``lints``, the default, and ``linucb``): ``banditroute tune`` per seed - for each
  cost weight of the default grid the router learns from scratch over the train split with partial
  feedback (only the chosen model's quality and cost) and is evaluated greedily on the test split;
* full-information routers trained on the train split: banditroute's own model fit on all
  outcomes (``pretrain``) and a TF-IDF ridge router, swept over the same cost weights;
* every single model, uniform random, and the per-prompt oracle (the cheapest best model).

Learning curve: at cost weight ``--curve-cost-weight`` the default policy's greedy test quality and
cost after every 200 train prompts, per seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import full_information, oracle_point, single_models, tfidf_ridge, uniform_point

from banditroute.offline.frontier import frontier_summary
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.simulate import build_service, evaluate_greedy, run_online
from banditroute.offline.tune import default_grid, tune

RESULTS = Path(__file__).resolve().parent / "results"


def _tune(job):
    path, policy, seed = job
    return policy, seed, tune(load_outcomes(path), policy, seed)


def _curve(job):
    path, seed, cw, every = job
    o = load_outcomes(path)
    service = build_service(o, "lints", cw, seed)
    test = o.subset("test")
    points = []

    def on_step(n):
        (r,) = evaluate_greedy(service.router, test)
        points.append({"n": n, "quality": r["quality"], "cost_usd": r["cost_usd"]})

    run_online(service, o.subset("train"), seed, every=every, on_step=on_step)
    service.store.close()
    return seed, points


def fmt(v):
    return "none" if v is None else f"{v:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/routerbench_subset.parquet"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--policies", nargs="+", default=["lints", "linucb"])
    ap.add_argument("--curve-cost-weight", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    o = load_outcomes(args.data)
    test = o.subset("test")
    ref = test.reference()
    grid = default_grid(o)
    jobs = [(args.data, p, s) for p in args.policies for s in args.seeds]
    with Pool(args.workers) as pool:
        tuned = pool.map(_tune, jobs)
        curves = pool.map(_curve, [(args.data, s, args.curve_cost_weight, 200) for s in args.seeds])

    rows = []
    online = {}
    for policy, seed, res in tuned:
        online.setdefault(policy, []).append(res)
        rows.append({"router": f"{policy} (online, partial feedback)", "seed": seed,
                     "cost_at_95": res["cost_at_95"], "quality_at_25": res["quality_at_25"]})
    fi_points, _ = full_information(o, grid)
    tf_points, _ = tfidf_ridge(o, grid)
    for name, pts in [("full-information banditroute model", fi_points), ("full-information TF-IDF ridge", tf_points)]:
        rows.append({"router": name, "seed": None, **frontier_summary(pts, ref["best_quality"], ref["best_cost_usd"])})
    result = {
        "data": Path(args.data).name, "grid": grid, "reference": ref, "rows": rows,
        "online": {p: [{"seed": r["seed"], "points": r["points"]} for r in rs] for p, rs in online.items()},
        "full_information": fi_points, "tfidf_ridge": tf_points,
        "oracle": oracle_point(test), "random": uniform_point(test), "models": single_models(test),
        "learning_curve": {"cost_weight": args.curve_cost_weight, "seeds": dict(curves)},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "routerbench_frontier.json").write_text(json.dumps(result, indent=1) + "\n")

    base_c, base_q = ref["best_cost_usd"], ref["best_quality"]
    lines = [
        "# RouterBench subset: quality-cost frontier (test split)",
        "",
        f"Command: `python experiments/routerbench_frontier.py --seeds {' '.join(map(str, args.seeds))}`",
        "",
        (f"Best single model: {ref['best_model']}, quality {base_q:.3f}, cost {base_c:.3f} USD; "
        f"oracle quality {ref['oracle_quality']:.3f}."),
        ("`cost_at_95`: cost (% of the best model's) of the cheapest frontier point reaching 95% of its quality. "
        "`quality_at_25`: best quality (% of the best model's) among points costing at most 25% of it."),
        "",
        "| router | seed | cost_at_95 (%) | quality_at_25 (%) |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['router']} | {r['seed'] if r['seed'] is not None else '-'} | {fmt(r['cost_at_95'])} | {fmt(r['quality_at_25'])} |")
    lines += ["", "Medians over seeds (a seed with no point reaching 95% counts as infinite):", ""]
    lines += ["| router | median cost_at_95 (%) | median quality_at_25 (%) |", "| --- | --- | --- |"]
    for p, rs in online.items():
        c95 = statistics.median(r["cost_at_95"] if r["cost_at_95"] is not None else float("inf") for r in rs)
        q25 = statistics.median(r["quality_at_25"] if r["quality_at_25"] is not None else 0.0 for r in rs)
        lines.append(f"| {p} (online) | {c95:.1f} | {q25:.1f} |")
    lines += ["", "Fixed points (quality, cost % of best):", "", "| router | quality | cost (%) |", "| --- | --- | --- |"]
    for name, pt in [("oracle", result["oracle"]), ("random", result["random"])] + sorted(result["models"].items()):
        lines.append(f"| {name} | {pt['quality']:.3f} | {100 * pt['cost_usd'] / base_c:.1f} |")
    (RESULTS / "routerbench_frontier.md").write_text("\n".join(lines) + "\n")
    plot(result)
    print("\n".join(lines))


def plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = result["reference"]
    base = ref["best_cost_usd"]
    pct = lambda pts: [100 * p["cost_usd"] / base for p in pts]
    fig, ax = plt.subplots(figsize=(8, 5))
    colours = {"lints": "tab:blue", "linucb": "tab:orange"}
    for policy, runs in result["online"].items():
        for i, r in enumerate(runs):
            pts = sorted(r["points"], key=lambda p: p["cost_usd"])
            ax.plot(pct(pts), [p["quality"] for p in pts], "-", color=colours.get(policy, "k"), alpha=0.45, lw=1,
                    label=f"{policy}, online (one line per seed)" if i == 0 else None)
    for name, key, style in [("full-information banditroute model", "full_information", "k--"),
                             ("full-information TF-IDF ridge", "tfidf_ridge", "m:")]:
        pts = sorted(result[key], key=lambda p: p["cost_usd"])
        ax.plot(pct(pts), [p["quality"] for p in pts], style, lw=1.5, label=name)
    for m, v in result["models"].items():
        ax.scatter(100 * v["cost_usd"] / base, v["quality"], marker="x", color="grey")
        ax.annotate(m.split("/")[-1], (100 * v["cost_usd"] / base, v["quality"]), fontsize=6, color="grey")
    ax.scatter(pct([result["random"]]), [result["random"]["quality"]], marker="s", color="brown", label="random")
    ax.scatter(pct([result["oracle"]]), [result["oracle"]["quality"]], marker="*", s=120, color="green", label="oracle")
    ax.axhline(0.95 * ref["best_quality"], color="red", ls="--", lw=0.8, label="95% of best model")
    ax.axvline(25, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(f"test cost, % of {ref['best_model']} (log scale)")
    ax.set_ylabel("mean test quality")
    ax.set_title("RouterBench subset: frontier after one online pass over the train split")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / "routerbench_frontier.png", dpi=130)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    lc = result["learning_curve"]
    for seed, pts in lc["seeds"].items():
        a1.plot([p["n"] for p in pts], [p["quality"] for p in pts], alpha=0.7, label=f"seed {seed}")
        a2.plot([p["n"] for p in pts], [100 * p["cost_usd"] / base for p in pts], alpha=0.7)
    a1.axhline(ref["best_quality"], color="red", ls="--", lw=0.8, label=ref["best_model"])
    a1.axhline(result["random"]["quality"], color="brown", ls=":", lw=0.8, label="random")
    a1.set_xlabel("train prompts seen (partial feedback)")
    a1.set_ylabel("greedy test quality")
    a2.set_xlabel("train prompts seen (partial feedback)")
    a2.set_ylabel(f"greedy test cost, % of {ref['best_model']}")
    a1.legend(fontsize=7)
    fig.suptitle(f"Learning curves, lints at cost weight {lc['cost_weight']}")
    fig.tight_layout()
    fig.savefig(RESULTS / "routerbench_learning_curve.png", dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    main()
