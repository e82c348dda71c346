"""Accuracy of off-policy estimates where the truth is known (RouterBench subset, full information).

Usage (about 3 minutes on 2 cores)::

    python experiments/replay_accuracy.py [--seeds 50] [--workers 2]

Writes ``experiments/results/replay_accuracy.{json,md,png}``.

For each seed the default policy (``lints``, cost weight 30) learns online over the train split and
logs its 2,212 decisions with their propensities (exactly ``simulate --log``). Six candidates are
then evaluated on that log by IPS, SNIPS, DM and DR, and compared with their true value, which the
full outcome table gives: truth = (1/n) sum_i sum_a pi(a | x_i) Q(i, a), with the same pi the
estimators see (logged prompts are matched to the table by their SHA-256).

Candidates: always gpt-4, always Mixtral, uniform random; a full-information ``lints`` state
(``pretrain``) acting greedily at cost weight 10 and at cost weight 100; the same state sampling
with its own Thompson probabilities at cost weight 50; a ``linucb`` state with its epsilon rule at
cost weight 30.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from banditroute.core.state import save_state
from banditroute.offline.candidates import candidate_probabilities
from banditroute.offline.evaluate import evaluate
from banditroute.offline.logs import load_log
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.pretrain import pretrain
from banditroute.offline.reward_models import reward_models
from banditroute.offline.simulate import simulate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routerbench_subset.parquet"
RESULTS = Path(__file__).resolve().parent / "results"
ESTIMATORS = ("ips", "snips", "dm", "dr")
OUTCOMES = ("quality", "cost_usd", "reward")


def candidates(states: dict[str, str]) -> list[dict]:
    return [
        {"name": "always gpt-4", "policy": "fixed:gpt-4-1106-preview", "cw": 30.0},
        {"name": "always Mixtral", "policy": "fixed:mistralai/mixtral-8x7b-chat", "cw": 30.0},
        {"name": "random", "policy": "random", "cw": 30.0},
        {"name": "lints state, greedy, cw 10", "state": states["lints"], "greedy": True, "cw": 10.0},
        {"name": "lints state, greedy, cw 100", "state": states["lints"], "greedy": True, "cw": 100.0},
        {"name": "lints state, sampling, cw 50", "state": states["lints"], "greedy": False, "cw": 50.0},
        {"name": "linucb state, epsilon rule, cw 30", "state": states["linucb"], "greedy": False, "cw": 30.0},
    ]


def one_seed(job) -> list[dict]:
    seed, states = job
    o = load_outcomes(DATA)
    train = o.subset("train")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "log.parquet"
        simulate(o, "lints", 30.0, seed, log=str(path))
        log = load_log(path)
        hashes = pq.read_table(path, columns=["prompt_hash"]).column(0).to_pylist()
    row_of = {hashlib.sha256(p.encode()).hexdigest(): i for i, p in enumerate(train.prompts)}
    idx = np.array([row_of[h] for h in hashes])
    cols = np.array([train.models.index(m) for m in log.models])
    Q, C = train.quality[idx][:, cols], train.cost[idx][:, cols]
    models = reward_models(log, seed)
    out = []
    for cand in candidates(states):
        pi = candidate_probabilities(log, cand.get("policy", ""), cand["cw"], state=cand.get("state"),
                                     greedy=cand.get("greedy", False), seed=seed)
        truth = {"quality": float((pi * Q).sum(1).mean()), "cost_usd": float((pi * C).sum(1).mean())}
        truth["reward"] = truth["quality"] - cand["cw"] * truth["cost_usd"]
        res = evaluate(log, pi, cand["cw"], ESTIMATORS, n_boot=400, seed=seed, models=models)
        out.append({"seed": seed, "candidate": cand["name"], "truth": truth, "ess": res["ess"],
                    "estimates": res["estimates"]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    o = load_outcomes(DATA)
    with tempfile.TemporaryDirectory() as d:
        states = {}
        for name in ("lints", "linucb"):
            states[name] = str(Path(d) / f"{name}.state")
            save_state(pretrain(o, name), states[name])
        with Pool(args.workers) as pool:
            rows = [r for chunk in pool.imap(one_seed, [(s, states) for s in range(1, args.seeds + 1)]) for r in chunk]
            print(f"{len(rows)} evaluations", file=sys.stderr)

    summary = {}
    for cand in dict.fromkeys(r["candidate"] for r in rows):
        rs = [r for r in rows if r["candidate"] == cand]
        summary[cand] = {"ess_median": statistics.median(r["ess"] for r in rs)}
        for est in ESTIMATORS:
            for outcome in OUTCOMES:
                err = [r["estimates"][est][outcome]["value"] - r["truth"][outcome] for r in rs]
                cover = [r["estimates"][est][outcome]["low"] <= r["truth"][outcome] <= r["estimates"][est][outcome]["high"]
                         for r in rs]
                summary[cand][f"{est}/{outcome}"] = {"rmse": float(np.sqrt(np.mean(np.square(err)))),
                                                     "bias": float(np.mean(err)), "coverage": float(np.mean(cover))}
    overall = {}
    for est in ESTIMATORS:
        for outcome in OUTCOMES:
            cover = [r["estimates"][est][outcome]["low"] <= r["truth"][outcome] <= r["estimates"][est][outcome]["high"]
                     for r in rows]
            overall[f"{est}/{outcome}"] = float(np.mean(cover))
    result = {"seeds": args.seeds, "rows": rows, "summary": summary, "coverage": overall}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "replay_accuracy.json").write_text(json.dumps(result) + "\n")

    lines = [
        "# Off-policy estimates against the truth (RouterBench subset, train split logs)",
        "",
        f"Command: `python experiments/replay_accuracy.py --seeds {args.seeds}`",
        "",
        (f"{args.seeds} logs of the default policy (lints, cost weight 30, 2,212 decisions each); seven candidates; "
        "95% Poisson-bootstrap intervals (400 replicates). Coverage = share of seeds whose interval contains "
        "the true value; RMSE over seeds."),
        "",
        "## Quality: coverage and RMSE per candidate",
        "",
        "| candidate | median ESS | " + " | ".join(f"{e} cover" for e in ESTIMATORS) + " | "
        + " | ".join(f"{e} RMSE" for e in ESTIMATORS) + " |",
        "| --- | --- |" + " --- |" * (2 * len(ESTIMATORS)),
    ]
    for cand, s in summary.items():
        lines.append(f"| {cand} | {s['ess_median']:.0f} | "
                     + " | ".join(f"{s[f'{e}/quality']['coverage']:.2f}" for e in ESTIMATORS) + " | "
                     + " | ".join(f"{s[f'{e}/quality']['rmse']:.4f}" for e in ESTIMATORS) + " |")
    lines += ["", "## Reward (quality - cost weight x cost): coverage and RMSE per candidate", "",
              "| candidate | " + " | ".join(f"{e} cover" for e in ESTIMATORS) + " | "
              + " | ".join(f"{e} RMSE" for e in ESTIMATORS) + " |",
              "| --- |" + " --- |" * (2 * len(ESTIMATORS))]
    for cand, s in summary.items():
        lines.append(f"| {cand} | " + " | ".join(f"{s[f'{e}/reward']['coverage']:.2f}" for e in ESTIMATORS) + " | "
                     + " | ".join(f"{s[f'{e}/reward']['rmse']:.4f}" for e in ESTIMATORS) + " |")
    lines += ["", "## Coverage over all candidates and seeds", "", "| estimator | quality | cost | reward |",
              "| --- | --- | --- | --- |"]
    for e in ESTIMATORS:
        lines.append(f"| {e} | " + " | ".join(f"{overall[f'{e}/{o}']:.3f}" for o in OUTCOMES) + " |")
    rmse = {e: float(np.sqrt(np.mean([np.square(r["estimates"][e]["quality"]["value"] - r["truth"]["quality"])
                                      for r in rows]))) for e in ESTIMATORS}
    lines += ["", "RMSE of quality over all candidates and seeds: "
              + ", ".join(f"{e} {v:.4f}" for e, v in rmse.items())]
    result["rmse_quality"] = rmse
    (RESULTS / "replay_accuracy.json").write_text(json.dumps(result) + "\n")
    (RESULTS / "replay_accuracy.md").write_text("\n".join(lines) + "\n")
    plot(rows)
    print("\n".join(lines))


def plot(rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cands = list(dict.fromkeys(r["candidate"] for r in rows))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.2
    for j, est in enumerate(ESTIMATORS):
        data = [[r["estimates"][est]["quality"]["value"] - r["truth"]["quality"] for r in rows if r["candidate"] == c]
                for c in cands]
        pos = np.arange(len(cands)) + (j - 1.5) * width
        bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=False)
        for patch in bp["boxes"]:
            patch.set_facecolor(f"C{j}")
        ax.plot([], [], color=f"C{j}", lw=6, label=est)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(cands)))
    ax.set_xticklabels(cands, rotation=15, fontsize=7)
    ax.set_ylabel("estimated - true mean quality")
    ax.set_title("Off-policy estimation error over seeds (RouterBench subset)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "replay_accuracy.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
