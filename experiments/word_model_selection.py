"""Can a deployment tell from its own log whether a word model helps its traffic? (a design probe)

``lexical_residual.py`` found that a sparse word model beside the default policy gains on GSM8K and
loses on the large pools, and that mixing it in by its predictive evidence (squared error) gives the
gain back: the squared error is not what routing needs (``prior_selection.py`` found the same for the
prior strength). This probe selects by the decision instead. Two learners see every logged outcome:

- ``a``, the default policy alone (``lints``, importance-weighted as in the suite);
- ``b``, a second default policy fitted on the residual of a word model, and the word model
  (:class:`lexical_residual.Sparse` or :class:`lexical_residual.SharedSparse`), as in
  ``lexical_residual.py``'s mixed variant.

Before learning each logged decision ``(x, a_t, p_t, r_t)``, with ``r = quality - w cost`` at the
learner's cost weight ``w``, each learner's greedy choice ``g_a(x), g_b(x)`` is scored by inverse
propensity (progressive validation; Blum, Kalai & Langford, 1999; IPS, Horvitz & Thompson, 1952):

    d_t = (1[g_b(x_t) = a_t] - 1[g_a(x_t) = a_t]) r_t / p_t,    D = sum_t d_t,    V = sum_t d_t^2,

so ``D`` estimates how much more reward ``b``'s decisions would have earned than ``a``'s so far, and
``sqrt(V)`` its standard error. The policy samples around ``b``'s mean quality while ``D > z sqrt(V)``
and around ``a``'s otherwise; the test split is routed greedily by the learner selected at the end of
the train pass. ``z`` (``--z``) is how sure the log must be before the word model is used.

    python experiments/word_model_selection.py                    # every shared table, seeds 1-5
    python experiments/word_model_selection.py --tables routellm_gsm8k --seeds 1 2

Results: ``experiments/results/word_model_selection.md`` and ``.json``; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from banditroute.config import PolicyConfig
from banditroute.core.policies import LinTS, make_policy
from banditroute.core.types import Context
from banditroute.offline.outcomes import Outcomes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lexical_residual import METRICS, frontier_points, run_table, summary, table_sections, word_model
from suite import table_paths

RESULTS = Path(__file__).resolve().parent / "results"


def run_weight(outcomes: Outcomes, feats: dict, order: np.ndarray, weight: float, seed: int, variant: dict) -> dict:
    """One pair of learners at one cost weight: online over the train split, then greedy on test by the
    learner selected at the end (``variant['z']`` None: always ``a``; ``-inf``: always ``b``)."""
    train, test = outcomes.subset("train"), outcomes.subset("test")
    k = len(outcomes.models)
    alone: LinTS = make_policy("lints", outcomes.models, feats["dim"], None, PolicyConfig())
    resid: LinTS = make_policy("lints", outcomes.models, feats["dim"], None, PolicyConfig())
    z = variant.get("z")
    keep = 1.0 - 1.0 / variant["window"] if variant.get("window") else 1.0
    words = word_model(k, variant) if z is not None else None
    rng = np.random.default_rng(seed)
    base = alone._predict_quality
    gain = var = 0.0
    use_b = False
    for i in order:
        x, tokens, (idx, val) = feats["train"][0][i], feats["train"][1][i], feats["train"][2][i]
        sw = words.predict(idx, val) if z is not None else np.zeros(k)
        qa = base(x[None])[0]
        qb = resid._predict_quality(x[None])[0] + sw if z is not None else qa
        alone._predict_quality = lambda X, m=(qb if use_b else qa): m[None]
        scores = alone.probabilities(x[None], [tokens], None, weight, rng)
        alone._predict_quality = base
        p, c_pred = scores.probabilities[0], scores.cost[0]
        a = int(rng.choice(k, p=p / p.sum()))
        q, c = float(train.quality[i, a]), float(train.cost[i, a])
        ctx = Context(x, tokens)
        alone.update(ctx, a, quality=q, cost_usd=c, propensity=float(p[a]))
        if z is None:
            continue
        d = (float(np.argmax(qb - weight * c_pred) == a) - float(np.argmax(qa - weight * c_pred) == a)) \
            * (q - weight * c) / p[a]
        gain, var = keep * gain + d, keep * var + d * d
        use_b = z == -np.inf or gain > z * np.sqrt(var)
        resid.update(ctx, a, quality=q - sw[a], propensity=float(p[a]))
        words.update(a, idx, val, q - float(resid._predict_quality(x[None])[0, a]) - sw[a])
    Xt, tt = feats["test"][0], feats["test"][1]
    q_pred = base(Xt)
    if use_b:
        q_pred = resid._predict_quality(Xt) + np.stack([words.predict(idx, val) for idx, val in feats["test"][2]])
    picks = np.argmax(q_pred - weight * alone.cost_model.predict(Xt, tt), axis=1)
    rows = np.arange(len(test))
    return {"cost_weight": weight, "quality": float(test.quality[rows, picks].mean()),
            "cost_usd": float(test.cost[rows, picks].sum()), "word_model": bool(use_b),
            "gain_z": float(gain / np.sqrt(var)) if var > 0 else 0.0}


def frontier(outcomes: Outcomes, feats: dict, seed: int, variant: dict) -> dict:
    points = frontier_points(outcomes, feats, seed, variant, run_weight)
    out = summary(outcomes, points)
    out["word_model_share"] = float(np.mean([pt["word_model"] for pt in points.values()]))
    out["points"] = [{m: points[w][m] for m in ("cost_weight", "word_model", "gain_z")} for w in sorted(points)]
    return out


def variant_name(v: dict) -> str:
    if v.get("z") is None:
        return "default alone"
    words = f"{'shared ' if v.get('ratio') else ''}word model, prior {v['prior']:g}"
    if v["z"] == -np.inf:
        return f"{words}, always"
    return f"{words}, selected at z {v['z']:g}"


def one_table(job) -> dict:
    path, seeds, variants = job
    return run_table(path, seeds, variants, frontier, variant_name, (*METRICS, "word_model_share"))


def markdown(tables: list[dict], command: str) -> str:
    lines = ["# Choosing the word model by the decisions it would have made (design probe)", "",
             (f"Command: `{command}`. Online from scratch over the train split, bandit feedback, greedy on test, one "
             "learner per cost weight of the default grid extended upward as `tune` extends it (no midpoint "
             "refinement); medians over seeds, per-seed values in brackets. `selected`: the word model is used "
             "while its greedy choices' inverse-propensity reward on the decisions so far exceeds the default's by "
             "z standard errors; the share column is the fraction of cost weights at which it was in use at the "
             "end of the pass; z at the end: the median over cost weights and seeds of the word model's estimated "
             "gain over the default in standard errors, after the whole train pass."), ""]

    def selection(name: str, r: dict) -> tuple[str, str]:
        if name == "default alone":
            return "", ""
        z_end = statistics.median(p["gain_z"] for s in r["per_seed"].values() for p in s["points"])
        return f"{r['median']['word_model_share']:.2f}", f"{z_end:.2f}"

    sections = table_sections(tables, ("qauc", "cost_at_95", "quality_at_25"), ("word model share", "z at the end"),
                              selection)
    return "\n".join(lines + sections)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--prior", type=float, default=1.0, help="the word model's prior precision")
    ap.add_argument("--shared-ratio", type=float, default=None,
                    help="a shared ADF word block plus per-model deviations this many times stiffer")
    ap.add_argument("--adf", action="store_true", help="the ADF form of the per-model word model")
    ap.add_argument("--z", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    ap.add_argument("--window", type=float, default=None,
                    help="score the decisions with exponential forgetting over about this many decisions")
    ap.add_argument("--name", default="word_model_selection")
    args = ap.parse_args()
    words = {"prior": args.prior, "ratio": args.shared_ratio, "adf": args.adf, "window": args.window}
    variants = [{"z": None}, {**words, "z": -np.inf}] + [{**words, "z": z} for z in args.z]
    paths = table_paths(args.tables)
    with Pool(2) as pool:
        tables = sorted(pool.map(one_table, [(p, args.seeds, variants) for p in paths], chunksize=1),
                        key=lambda t: t["table"])
    command = "python experiments/word_model_selection.py" + "".join(f" {a}" for a in sys.argv[1:])
    md = markdown(tables, command)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"command": command, "tables": tables}, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
