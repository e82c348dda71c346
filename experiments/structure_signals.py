"""Design probe: signals of a problem's arithmetic structure beside the v2 features (issue 11).

Usage::

    python experiments/structure_signals.py [--variants five two] [--seeds 1 2 3 4 5] [--tables ...] [--name structure_signals]
    python experiments/structure_signals.py --render experiments/results/structure_signals.json   # the .md again

Where the full-information TF-IDF router beats banditroute's features (GSM8K), its heaviest words are
those of quantities and fractions ("one third", "the difference", numbers). This probe appends, to the
v2 feature vector (the default when this probe ran; :data:`BASE`), signals that count that structure in
any prompt, computed here in Python:

* ``quantities``: log1p(distinct numbers) / 3, capped at 1 (numbers: ``\\d+([.,]\\d+)?``);
* ``sentences``: log1p(sentence ends) / 3, capped at 1 (``.``, ``!`` or ``?`` before a space or the end);
* ``number_share``: 5 x numbers / words, capped at 1;
* ``percent``: ``%`` or "percent" present;
* ``fraction``: ``d/d``, "half", "third" or "quarter" present.

``five`` appends all of them, ``two`` quantities and fraction (the two that moved GSM8K most with
full information). For every shared table: each variant fitted with every train outcome revealed
(``pretrain``) and swept over a fine grid of cost weights, beside the default features and the TF-IDF
ridge in the same run; and each variant learned online (``tune``: from scratch over the train split,
bandit feedback, greedy on test) for each seed. The default's online figures are those of the suite's
run of the same command (``suite_fill.json``: ``python experiments/suite.py --configs default --name
suite_fill``), which this code reproduces. Writes ``experiments/results/<name>.json`` and ``.md``;
progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import frontier_from_predictions, tfidf_ridge
from suite import RESULTS, fmt, full_information_setup, mean_ranks, table_paths

from banditroute.core.features import Featurizer
from banditroute.offline.frontier import frontier_summary
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.pretrain import pretrain
from banditroute.offline.tune import tune

NAMES = ("quantities", "sentences", "number_share", "percent", "fraction")
VARIANTS = {"five": NAMES, "two": ("quantities", "fraction")}
BASE = "v2-d64-minilm-l6-m2v-64"  # the default features when this probe first ran, as in suite_fill.json (--base)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_FRACTION = re.compile(r"\d/\d|half|third|quarter")


def structure(prompt: str) -> dict[str, float]:
    """The probe's signals of one prompt, each in [0, 1]."""
    numbers = _NUMBER.findall(prompt)
    low = prompt.lower()
    return {"quantities": min(np.log1p(len(set(numbers))) / 3.0, 1.0),
            "sentences": min(np.log1p(len(_SENTENCE_END.findall(prompt))) / 3.0, 1.0),
            "number_share": min(5.0 * len(numbers) / max(len(prompt.split()), 1), 1.0),
            "percent": float("%" in prompt or "percent" in low),
            "fraction": float(_FRACTION.search(low) is not None)}


class WithStructure:
    """The default featurizer with the named structure signals appended (a stand-in with its interface)."""

    def __init__(self, names: tuple[str, ...], base: str = BASE):
        self.base, self.names = Featurizer.from_version(base), names
        self.dim = self.base.dim + len(names)
        self.version = f"{self.base.version}+structure-{len(names)}"

    def transform_many(self, prompts) -> np.ndarray:
        prompts = list(prompts)
        extra = np.array([[s[n] for n in self.names] for s in map(structure, prompts)]).reshape(len(prompts), -1)
        return np.hstack([self.base.transform_many(prompts), extra])

    def transform(self, prompt: str) -> np.ndarray:
        return self.transform_many([prompt])[0]

    def context(self, prompt: str):
        from banditroute.core.types import Context

        return Context(self.transform(prompt), self.input_tokens(prompt))

    def input_tokens(self, prompt: str) -> float:
        return self.base.input_tokens(prompt)


def full_information_job(job) -> dict:
    path, variants, base = job
    outcomes, test, ref, grid = full_information_setup(path)
    print(f"{path.stem}: full information", file=sys.stderr, flush=True)
    out = {"TF-IDF ridge": frontier_summary(tfidf_ridge(outcomes, grid)[0], ref["best_quality"], ref["best_cost_usd"])}
    for name in ("default", *variants):
        f = Featurizer.from_version(base) if name == "default" else WithStructure(VARIANTS[name], base)
        pol = pretrain(outcomes, "lints", featurizer=f)
        q, c = pol.predict(f.transform_many(test.prompts), [f.input_tokens(p) for p in test.prompts])
        out[name] = frontier_summary(frontier_from_predictions(test, q, c, grid), ref["best_quality"],
                                     ref["best_cost_usd"])
    return {"table": path.stem, "full_information": out}


def online_job(job) -> dict:
    path, variant, seed, base = job
    t0 = time.time()
    res = tune(load_outcomes(path), "lints", seed, featurizer=WithStructure(VARIANTS[variant], base))
    print(f"{path.stem}: {variant} seed {seed}: qauc {res['qauc']:.1f} ({time.time() - t0:.0f} s)",
          file=sys.stderr, flush=True)
    return {"table": path.stem, "variant": variant, "seed": seed, "qauc": res["qauc"], "cost_at_95": res["cost_at_95"]}


def _median(values):
    return statistics.median([float("inf") if v is None else v for v in values])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    ap.add_argument("--tables", nargs="+", help="table names (default: every shared table)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="structure_signals")
    ap.add_argument("--render", metavar="JSON", help="only write the .md of an earlier run's JSON")
    ap.add_argument("--base", default=BASE, help="the feature version the signals are appended to")
    ap.add_argument("--baseline", default="suite_fill.json:default", metavar="RESULTS:CONFIG",
                    help="the suite run (in experiments/results) and configuration whose online figures are the "
                         "base features' (the same protocol)")
    args = ap.parse_args()
    if args.render:
        write_markdown(Path(args.render))
        return
    paths = table_paths(args.tables)
    results, config = args.baseline.split(":")
    baseline = {t["table"]: t["configs"][config]["per_seed"]
                for t in json.loads((RESULTS / results).read_text())["tables"]}
    jobs = [(p, v, s, args.base) for p in paths for v in args.variants for s in args.seeds]
    with Pool(args.workers) as pool:
        full = {r["table"]: r["full_information"] for r in pool.map(full_information_job,
                                                                      [(p, args.variants, args.base) for p in paths])}
        runs = pool.map(online_job, jobs, chunksize=1)
    tables = sorted(full)
    online = {t: {"default": {s: {m: baseline[t][str(s)][m] for m in ("qauc", "cost_at_95")} for s in args.seeds}}
              for t in tables}
    for r in runs:
        online[r["table"]].setdefault(r["variant"], {})[r["seed"]] = {m: r[m] for m in ("qauc", "cost_at_95")}
    command = "python experiments/structure_signals.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(
        {"command": command, "base": args.base, "baseline": args.baseline, "full_information": full,
         "online": {t: {v: {str(s): r for s, r in per.items()} for v, per in o.items()} for t, o in online.items()}},
        indent=1) + "\n")
    write_markdown(RESULTS / f"{args.name}.json")


def write_markdown(path: Path) -> None:
    """Render a results JSON of this script as the ``.md`` beside it (``--render`` does only this)."""
    data = json.loads(path.read_text())
    full, online, command = data["full_information"], data["online"], data["command"]
    tables = sorted(full)
    rows = list(online[tables[0]])
    seeds = list(online[tables[0]]["default"])
    lines = ["# Structure signals beside the default features (design probe)", "",
             (f"Command: `{command.strip()}`. qauc (higher is better) / cost_at_95 (lower is better), in % of the "
              "best single model. Full information: fitted on every train outcome, swept over a fine grid of cost "
              "weights on the test split. Online: `tune`, learned from scratch with bandit feedback over the train "
              "split, greedy on test; medians over seeds "
              f"{', '.join(seeds)}, per-seed qauc in brackets; the default (features "
              f"`{data.get('base', BASE)}`) has the online figures of "
              f"`{data.get('baseline', 'suite_fill.json:default')}` (the same protocol). What each signal counts: "
              "the module's docstring."),
             "", "| table | features | full information | online, median | online qauc per seed |",
             "| --- | --- | --- | --- | --- |"]
    ranks = {v: [] for v in rows}
    for t in tables:
        f = full[t]
        lines.append(f"| {t} | TF-IDF ridge | {fmt(f['TF-IDF ridge']['qauc'])} / "
                     f"{fmt(f['TF-IDF ridge']['cost_at_95'])} | | |")
        medians = {}
        for v in rows:
            per = online[t][v]
            medians[v] = _median([per[s]["qauc"] for s in seeds])
            cost = _median([per[s]["cost_at_95"] for s in seeds])
            lines.append(f"| {t} | {v} | {fmt(f[v]['qauc'])} / {fmt(f[v]['cost_at_95'])} | {fmt(medians[v])} / "
                         f"{fmt(cost)} | {', '.join(fmt(per[s]['qauc']) for s in seeds)} |")
        for v, r in mean_ranks(medians).items():
            ranks[v].append(r)
    lines += ["", ("Rank over tables by online qauc (1 is best; tables in the order above); a tie in the median is "
              "broken by the mean, as in the suite:"), "",
              "| features | ranks | median | mean |", "| --- | --- | --- | --- |"]
    lines += [f"| {v} | {', '.join(map(str, ranks[v]))} | {statistics.median(ranks[v])} | "
              f"{statistics.mean(ranks[v]):.1f} |"
              for v in sorted(rows, key=lambda v: (statistics.median(ranks[v]), statistics.mean(ranks[v])))]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
