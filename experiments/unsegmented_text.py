"""Words without spaces: how much lexical evidence each feature version recovers from unsegmented text.

Usage::

    python experiments/unsegmented_text.py [--name unsegmented_text]

No shared table holds Chinese or Japanese prompts (three of 21,418 quote a few CJK characters), so the
v4 features' character bigrams cannot be measured on real CJK traffic here. This experiment builds
the closest stand-in: every table with each of its prompts written as an unsegmented language would
write it. Each distinct word (lower-cased, split at whitespace and punctuation) is replaced by a
pseudo-word of Han characters, the same pseudo-word wherever the word occurs, and the pseudo-words are
written without spaces or punctuation between them. The pseudo-word's length follows Chinese
usage (one character for 30% of words, two for 60%, three for 10%; Chinese words are mostly one or
two characters) and its characters are drawn from the CJK Unified Ideographs block by a SHA-256 of
the word, so the cipher is deterministic and different words rarely share a pseudo-word (though
one-character words collide as Chinese characters do: 20,992 characters for every such word).

The lexical information of the original text is all there, only the word boundaries are gone: a
tokeniser that relies on spaces sees one "word" per prompt, one that takes character n-grams finds the
words again. Every router is fitted with full information (every train outcome revealed) and swept
over a fine grid of cost weights on the test split (the suite's full-information diagnostic):

* banditroute's features, v3 (a whole unspaced run is one word) and v4 (CJK runs as character bigrams),
  on the original and on the ciphered text;
* a TF-IDF ridge router on word 1-2 grams (scikit-learn's default token pattern: a run of word
  characters is one token; where no token occurs in two train prompts it has no evidence and
  predicts each model's mean train quality and cost; ``baselines.tfidf_ridge``) and on character 1-2 grams (what a TF-IDF
  router over Chinese would use).

qauc (higher is better) and cost_at_95 (lower is better), in % of the best single model. Writes
``experiments/results/<name>.json`` and ``.md``; progress on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import string
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import full_information, tfidf_ridge
from suite import full_information_setup, per_table, save_results

from banditroute.core.features import Featurizer
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.outcomes import Outcomes

HAN_FIRST, HAN_COUNT = 0x4E00, 0x9FFF - 0x4E00 + 1
_PUNCT = str.maketrans({c: " " for c in string.punctuation})
FEATURES = {"v3": {"unspaced_bigrams": False}, "v4": {"unspaced_bigrams": True}}


def pseudo_word(word: str) -> str:
    """The Han pseudo-word of ``word``: 1, 2 or 3 characters (30%, 60%, 10%) from its SHA-256."""
    h = hashlib.sha256(word.encode("utf-8")).digest()
    length = 1 + (h[0] % 10 >= 3) + (h[0] % 10 >= 9)
    return "".join(chr(HAN_FIRST + int.from_bytes(h[1 + 3 * i : 4 + 3 * i], "big") % HAN_COUNT) for i in range(length))


def unsegmented(prompt: str) -> str:
    """``prompt`` as an unsegmented language writes it: its words' pseudo-words, back to back."""
    return "".join(pseudo_word(w) for w in prompt.lower().translate(_PUNCT).split())


def ciphered(outcomes: Outcomes) -> Outcomes:
    """The same outcomes, each prompt :func:`unsegmented`."""
    return dataclasses.replace(outcomes, prompts=[unsegmented(p) for p in outcomes.prompts])


def one_table(job) -> dict:
    (path,) = job
    t0 = time.time()
    outcomes, _, ref, grid = full_information_setup(path)
    texts = {"original": outcomes, "unsegmented": ciphered(outcomes)}
    out = {"table": path.stem, "prompts": len(outcomes), "models": len(outcomes.models),
           "example": texts["unsegmented"].prompts[0][:60], "routers": {}}
    for text, data in texts.items():
        runs = {f"banditroute {v}": lambda o, spec=spec: full_information(o, grid, featurizer=Featurizer(**spec))
                for v, spec in FEATURES.items()}
        runs |= {f"TF-IDF {kind}": lambda o, analyzer=analyzer: tfidf_ridge(o, grid, analyzer=analyzer)
                 for kind, analyzer in (("words", "word"), ("characters", "char"))}
        for name, fit in runs.items():
            print(f"{path.stem}: {text}, {name} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
            s = frontier_summary(fit(data)[0], ref["best_quality"], ref["best_cost_usd"])
            out["routers"][f"{name}, {text}"] = {"qauc": s["qauc"], "cost_at_95": s["cost_at_95"]}
    print(f"{path.stem}: done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return out


def fmt(v) -> str:
    return "never" if v is None else f"{v:.1f}"


def markdown(tables: list[dict], command: str) -> str:
    names = list(tables[0]["routers"])
    lines = ["# Unsegmented text: lexical evidence without word boundaries", "",
             (f"Command: `{command}`. Each prompt's words replaced by Han pseudo-words written without spaces "
             "(the module docstring of experiments/unsegmented_text.py); every router fitted with full "
             "information on the train split and swept over a fine grid of cost weights on the test split. "
             "qauc / cost_at_95 in % of the best single model (`never`: 95% not reached)."), "",
             "| router, text | " + " | ".join(t["table"] for t in tables) + " |",
             "| --- | " + " | ".join("---" for _ in tables) + " |"]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{fmt(t['routers'][n]['qauc'])} / {fmt(t['routers'][n]['cost_at_95'])}"
                                               for t in tables) + " |")
    lines += ["", "The first 60 characters of each table's first prompt, unsegmented:", ""]
    lines += [f"- {t['table']}: {t['example']}" for t in tables]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="unsegmented_text")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tables = per_table(one_table, (), workers=args.workers)
    command = "python experiments/unsegmented_text.py " + " ".join(sys.argv[1:])
    save_results(args.name, {"command": command.strip(), "tables": tables}, markdown(tables, command.strip()))


if __name__ == "__main__":
    main()
