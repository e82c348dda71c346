"""Feature sets compared with full information: which representation lets a router tell prompts apart.

Usage::

    python experiments/feature_alternatives.py [--variants v1 v2 ...] [--name feature_alternatives]

For every shared outcome table, each feature variant is fitted as banditroute's quality and cost
models with every train outcome revealed (``pretrain``: a Bayesian ridge per model), then swept over a
fine grid of cost weights on the test split; the TF-IDF ridge router is computed in the same run. This
measures the features apart from the bandit's exploration (issue 11, item 2). Tables of the static
embedding at other widths are built by ``scripts/build_embedding.py --dims N --out DIR`` and named
with ``--embedding-dir N=DIR``. Writes ``experiments/results/<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import frontier_from_predictions, tfidf_ridge
from suite import full_information_setup, per_table, save_results

from banditroute.core.embedding import StaticEmbedding
from banditroute.core.features import Featurizer
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.pretrain import pretrain

# name -> Featurizer keyword arguments; "embedding": an int names a table from --embedding-dir
V2 = {"hash_scale": 1.0, "unspaced_bigrams": False}  # the v2 features; the variants below were measured on v2
VARIANTS = {
    "v1 (signals + 64 hashed)": {"embedding": False},
    "v1, 256 hashed": {"embedding": False, "hash_dim": 256},
    "v2 (v1 + embedding 64)": V2,
    "v2, embedding x2": {**V2, "embed_scale": 2.0},
    "v2, embedding x0.5": {**V2, "embed_scale": 0.5},
    "v2, 32 hashed": {**V2, "hash_dim": 32},
    "v2, 256 hashed": {**V2, "hash_dim": 256},
    "v2, hashed x0.5": {**V2, "hash_scale": 0.5},  # the v3 features
    "v2, hashed x2": {**V2, "hash_scale": 2.0},
    "v2, 128 hashed": {**V2, "hash_dim": 128},
    "v2, embedding 128": {**V2, "embedding": 128},
    "v2, embedding 256": {**V2, "embedding": 256},
}
EMBEDDINGS: dict[int, str] = {}


def _table_width(spec: dict) -> int | None:
    """The width of the extra embedding table a variant names, if any (True/False are not widths)."""
    e = spec.get("embedding")
    return e if isinstance(e, int) and not isinstance(e, bool) else None


def featurizer(spec: dict) -> Featurizer:
    spec = dict(spec)
    if _table_width(spec) is not None:
        spec["embedding"] = StaticEmbedding(EMBEDDINGS[spec["embedding"]])
    return Featurizer(**spec)


def one_table(job) -> dict:
    path, variants, embeddings = job
    EMBEDDINGS.update(embeddings)
    outcomes, test, ref, grid = full_information_setup(path)
    out = {"table": path.stem, "TF-IDF ridge": frontier_summary(tfidf_ridge(outcomes, grid)[0], ref["best_quality"],
                                                                ref["best_cost_usd"])}
    for name in variants:
        print(f"{path.stem}: {name}", file=sys.stderr, flush=True)
        f = featurizer(VARIANTS[name])
        pol = pretrain(outcomes, "lints", featurizer=f)
        q, c = pol.predict(f.transform_many(test.prompts), [f.input_tokens(p) for p in test.prompts])
        points = frontier_from_predictions(test, q, c, grid)
        out[name] = frontier_summary(points, ref["best_quality"], ref["best_cost_usd"]) | {"dim": f.dim}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--embedding-dir", nargs="*", default=[], metavar="DIMS=DIR")
    ap.add_argument("--name", default="feature_alternatives")
    args = ap.parse_args()
    embeddings = {int(k): v for k, v in (s.split("=", 1) for s in args.embedding_dir)}
    variants = [v for v in args.variants if _table_width(VARIANTS[v]) in (None, *embeddings)]
    tables = per_table(one_table, (variants, embeddings))
    command = "python experiments/feature_alternatives.py " + " ".join(sys.argv[1:])
    rows = ["TF-IDF ridge", *variants]
    lines = ["# Feature sets with full information", "", (f"Command: `{command.strip()}`. Each feature set fitted "
             "as banditroute's quality and cost models on every train outcome (`pretrain`), swept over cost weights "
             "on the test split; qauc (higher is better) / cost_at_95 (lower is better), in % of the best single "
             "model. The last columns rank the feature sets (not TF-IDF) by qauc on each table and take the median."),
             "", "| features | dim | " + " | ".join(t["table"] for t in tables) + " | median rank |",
             "| --- | --- | " + " | ".join("---" for _ in tables) + " | --- |"]
    ranks = {v: [] for v in variants}
    for t in tables:
        for v in variants:
            ranks[v].append(1 + sum(t[o]["qauc"] > t[v]["qauc"] for o in variants))
    for r in rows:
        cells = [f"{t[r]['qauc']:.1f} / {t[r]['cost_at_95'] if t[r]['cost_at_95'] is None else round(t[r]['cost_at_95'], 1)}"
                 for t in tables]
        dim = tables[0][r].get("dim", "")
        rank = statistics.median(ranks[r]) if r in ranks else ""
        lines.append(f"| {r} | {dim} | " + " | ".join(cells) + f" | {rank} |")
    save_results(args.name, {"command": command, "tables": tables}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
