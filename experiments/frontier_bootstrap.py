"""Paired bootstrap of the suite's comparisons with the TF-IDF ridge router: which gaps can a test split tell?

Usage (one process per table; about half an hour on 2 cores with every table and seeds 1-5)::

    python experiments/frontier_bootstrap.py [--tables routellm_gsm8k ...] [--seeds 1 2 3 4 5]
                                             [--resamples 2000] [--workers 2] [--name frontier_bootstrap]

Issue 11's targets compare banditroute with a full-information TF-IDF ridge router
(``experiments/baselines.py``) by ``qauc`` and ``cost_at_95`` on each table's test split, and some of
those splits are small (MT Bench: 49 prompts; GSM8K: 414). This experiment asks whether a measured gap
is larger than what another draw of test prompts would give. It resamples the test prompts with
replacement, the same resample for every router (a paired bootstrap; Efron and Tibshirani, 1993, "An
Introduction to the Bootstrap", ch. 13, percentile intervals), recomputes every router's frontier on
each resample (each point's mean quality and total cost over the resampled prompts, against the best
single model of the resample, as :mod:`banditroute.offline.frontier` does on the whole split), and
reports for each difference with the TF-IDF router its value on the split, its 90% percentile interval
and the share of resamples in which banditroute is at least level:

* banditroute online: the default configuration, ``tune`` from scratch for each seed, the median over
  seeds of its metric on each resample (the suite's statistic), minus TF-IDF's;
* banditroute's features and quality model fitted with every train outcome revealed (the suite's
  full-information diagnostic), minus TF-IDF's.

The routers' test choices are fixed (learned on the train split once); only the test prompts are
resampled, so the interval is the test split's share of the uncertainty, not the train split's. A
``cost_at_95`` that a resample never reaches counts as infinitely expensive. Writes
``experiments/results/<name>.json`` and ``.md``; progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prediction_mix import tfidf_predictions
from suite import full_information_setup, per_table, save_results

from banditroute.core.features import Featurizer
from banditroute.core.types import net_score
from banditroute.offline.frontier import BUDGETS, frontier_summary
from banditroute.offline.pretrain import pretrain
from banditroute.offline.tune import tune

LEVEL = 0.90


def choice_arrays(test, q_pred: np.ndarray, c_pred: np.ndarray, grid) -> tuple[np.ndarray, np.ndarray]:
    """(points, prompts) arrays of the true quality and cost of the model each test prompt goes to, for
    every cost weight of ``grid``, routing by ``argmax_k q_k - w c_k`` (``baselines.frontier_from_predictions``)."""
    rows = np.arange(len(test))
    ks = [np.argmax(net_score(q_pred, c_pred, w), axis=1) for w in grid]
    return np.stack([test.quality[rows, k] for k in ks]), np.stack([test.cost[rows, k] for k in ks])


def resampled_metrics(Q: np.ndarray, C: np.ndarray, W: np.ndarray, ref_q: np.ndarray, ref_c: np.ndarray):
    """qauc and cost_at_95 (inf: never reached) of a router with per-prompt quality ``Q`` and cost ``C``
    (points x prompts) on each resample, ``W`` its prompts' counts (resamples x prompts)."""
    n = Q.shape[1]
    q, c = W @ Q.T / n, W @ C.T  # (resamples, points)
    fits = c[:, None, :] <= BUDGETS[None, :, None] * ref_c[:, None, None]
    best = np.where(fits, q[:, None, :], -np.inf).max(axis=2)
    qauc = 100.0 * np.where(np.isfinite(best), best, 0.0).mean(axis=1) / ref_q
    reach = np.where(q >= 0.95 * ref_q[:, None], c, np.inf).min(axis=1)
    return qauc, 100.0 * reach / ref_c


def difference(ours: np.ndarray, theirs: np.ndarray, lower_is_better: bool) -> dict:
    """The difference on the split (resample 0), its percentile interval over the others, and the share
    of resamples where ours is at least level. Two routers that never reach 95% are level."""
    with np.errstate(invalid="ignore"):
        d = np.where(np.isinf(ours) & np.isinf(theirs), 0.0, ours - theirs)
    tail = (1.0 - LEVEL) / 2.0
    rest = d[1:]
    return {"on_split": _finite(d[0]),
            "interval": [_finite(np.quantile(rest, tail, method="lower")),
                         _finite(np.quantile(rest, 1.0 - tail, method="higher"))],
            "ours_level_or_better": float(np.mean(rest <= 0 if lower_is_better else rest >= 0))}


def _finite(v) -> float | None:
    return float(v) if np.isfinite(v) else None


def one_table(job) -> dict:
    path, seeds, resamples = job
    t0 = time.time()
    outcomes, test, ref, grid = full_information_setup(path)
    n = len(test)
    rng = np.random.default_rng(0)
    W = np.vstack([np.ones((1, n)), rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)])
    model_q, model_c = W @ test.quality / n, W @ test.cost
    best = np.argmin(np.where(model_q == model_q.max(axis=1, keepdims=True), model_c, np.inf), axis=1)  # ties: cheaper
    ref_q, ref_c = model_q[np.arange(len(W)), best], model_c[np.arange(len(W)), best]

    f = Featurizer()
    fitted = {"TF-IDF ridge": tfidf_predictions(outcomes),
              "banditroute, full information": pretrain(outcomes, "lints").predict(
                  f.transform_many(test.prompts), [f.input_tokens(p) for p in test.prompts])}
    metrics = {}
    for name, (q_pred, c_pred) in fitted.items():
        Q, C = choice_arrays(test, q_pred, c_pred, grid)
        metrics[name] = resampled_metrics(Q, C, W, ref_q, ref_c)
        summary = frontier_summary([{"quality": float(q), "cost_usd": float(c)} for q, c in
                                    zip(Q.mean(axis=1), C.sum(axis=1))], ref["best_quality"], ref["best_cost_usd"])
        assert np.isclose(metrics[name][0][0], summary["qauc"]), "resample 0 must be the split itself"
    online = []
    for seed in seeds:
        print(f"{path.stem}: online seed {seed} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
        points = tune(outcomes, "lints", seed, per_prompt=True)["points"]
        Q = np.stack([p["per_prompt"][0] for p in points])
        C = np.stack([p["per_prompt"][1] for p in points])
        online.append(resampled_metrics(Q, C, W, ref_q, ref_c))
    metrics["banditroute online"] = (np.median([m[0] for m in online], axis=0), np.median([m[1] for m in online], axis=0))

    tfidf = metrics["TF-IDF ridge"]
    out = {"table": path.stem, "test_prompts": n, "resamples": resamples, "seeds": seeds,
           "on_split": {name: {"qauc": _finite(m[0][0]), "cost_at_95": _finite(m[1][0])} for name, m in metrics.items()},
           "differences": {}}
    for name in ("banditroute online", "banditroute, full information"):
        out["differences"][name] = {"qauc": difference(metrics[name][0], tfidf[0], False),
                                    "cost_at_95": difference(metrics[name][1], tfidf[1], True)}
    out["seconds"] = round(time.time() - t0)
    print(f"{path.stem}: done in {out['seconds']} s", file=sys.stderr, flush=True)
    return out


def _num(v: float | None, sign: bool = False) -> str:
    return "never" if v is None else (f"{v:+.1f}" if sign else f"{v:.1f}")


def markdown(tables: list[dict], command: str) -> str:
    lines = ["# Paired bootstrap of the gaps to the TF-IDF ridge router", "",
             (f"Command: `{command}`. Test prompts resampled with replacement ({tables[0]['resamples']} "
             "resamples, the same for every router); each router's frontier recomputed on each resample "
             "against that resample's best single model. Differences are banditroute minus TF-IDF, "
             f"{int(LEVEL * 100)}% percentile intervals in brackets; `level or better`: the share of "
             "resamples in which banditroute is at least level (qauc: higher is better; cost_at_95: lower). "
             "Online: the median over seeds "
             f"{', '.join(map(str, tables[0]['seeds']))} of the default configuration. An interval that "
             "holds 0 means the test split cannot tell the two routers apart on that metric."), ""]
    for metric in ("qauc", "cost_at_95"):
        lines += [f"## {metric}", "",
                  ("| table | test prompts | TF-IDF | online | online - TF-IDF | level or better | full information "
                  "| full information - TF-IDF | level or better |"),
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for t in tables:
            split, diffs = t["on_split"], t["differences"]
            cells = [t["table"], str(t["test_prompts"]), _num(split["TF-IDF ridge"][metric])]
            for name in ("banditroute online", "banditroute, full information"):
                d = diffs[name][metric]
                lo, hi = d["interval"]
                cells += [_num(split[name][metric]),
                          f"{_num(d['on_split'], True)} [{_num(lo, True)}, {_num(hi, True)}]",
                          f"{100 * d['ours_level_or_better']:.0f}%"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", nargs="+", help="table names (file stems); default: every shared table")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="frontier_bootstrap")
    args = ap.parse_args()
    tables = per_table(one_table, (args.seeds, args.resamples), args.tables, args.workers)
    command = "python experiments/frontier_bootstrap.py " + " ".join(sys.argv[1:])
    save_results(args.name, {"command": command.strip(), "tables": tables}, markdown(tables, command.strip()))


if __name__ == "__main__":
    main()
