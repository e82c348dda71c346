"""Featurizing on a fresh word cache: microseconds a prompt, against another checkout in the same run.

Usage (about a minute; the baseline is any checkout with its C core built, e.g. a ``git worktree``)::

    python benchmarks/bench_features.py [--runs 3] [--baseline PATH] [--out benchmarks/results/features.json]

Every distinct prompt of ../shared/data (the prompts ``bench_server.py`` sends, shuffled the same way)
goes through ``Featurizer.transform_many`` in batches of 23 (the server's mean micro-batch), in a
fresh process: ``cold``, every word new to the embedding's cache as after a restart, then ``warm``,
the same prompts again with every word cached (a server's steady state), then ``evicted``, warm but
with the CPU caches flushed before each batch by a pass over 32 MB (untimed), as a server's other work
flushes them between batches. Each run
measures this checkout and, with ``--baseline``, the one at PATH (alternating, so that drift in the
machine's speed hits both); the figure is the median over runs. With a baseline the features of both
are also compared, prompt by prompt: ``identical_rows`` is the share of prompts whose vectors are the
same bit for bit. Progress on stderr; results to ``--out`` and stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_server import checkout_env

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BATCH = 23

# runs in a fresh interpreter: times the pass, saves the features for the comparison
CHILD = """
import json, sys, time
import numpy as np
sys.path.insert(1, {here!r})
from bench_server import bodies_file
from pathlib import Path
from banditroute.core.features import Featurizer
path, _ = bodies_file(Path(sys.argv[1]))
prompts = [json.loads(line)["prompt"] for line in path.read_text().splitlines()]
f = Featurizer()
t = time.perf_counter()
X = np.vstack([f.transform_many(prompts[i:i + {batch}]) for i in range(0, len(prompts), {batch})])
cold = time.perf_counter() - t
t = time.perf_counter()
for i in range(0, len(prompts), {batch}):
    f.transform_many(prompts[i:i + {batch}])
warm = time.perf_counter() - t
junk, evicted = np.ones(4 << 20), 0.0
for i in range(0, len(prompts), {batch}):
    junk += 1.0
    t = time.perf_counter()
    f.transform_many(prompts[i:i + {batch}])
    evicted += time.perf_counter() - t
np.save(sys.argv[2], X)
print(json.dumps({{"cold": cold / len(prompts) * 1e6, "warm": warm / len(prompts) * 1e6,
                  "evicted": evicted / len(prompts) * 1e6, "prompts": len(prompts)}}))
"""


def one(checkout: str, tmp: Path, out: Path) -> dict:
    env, cwd = checkout_env(checkout)
    code = CHILD.format(here=str(HERE), batch=BATCH)
    done = subprocess.run([sys.executable, "-c", code, str(tmp), str(out)], env=env, cwd=cwd, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline", help="another checkout (its C core built) to measure in the same runs")
    ap.add_argument("--out", default=str(HERE / "results" / "features.json"))
    args = ap.parse_args()
    import numpy as np

    targets = {"this": str(ROOT)} | ({"baseline": str(Path(args.baseline).resolve())} if args.baseline else {})
    times: dict[str, dict[str, list[float]]] = {name: {"cold": [], "warm": [], "evicted": []} for name in targets}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for run in range(args.runs):
            for name, path in targets.items():
                r = one(path, tmp, tmp / f"{name}.npy")
                for phase in ("cold", "warm", "evicted"):
                    times[name][phase].append(r[phase])
                print(f"run {run + 1} {name}: {r['cold']:.2f} us a prompt cold, {r['warm']:.2f} warm, {r['evicted']:.2f} evicted "
                      f"({r['prompts']} prompts)", file=sys.stderr, flush=True)
        result = {"batch": BATCH, "runs": args.runs, "prompts": r["prompts"],
                  "us_per_prompt": {name: {phase: round(statistics.median(t), 2) for phase, t in by.items()}
                                    for name, by in times.items()},
                  "per_run": {name: {phase: [round(x, 2) for x in t] for phase, t in by.items()}
                              for name, by in times.items()}}
        if args.baseline:
            a, b = np.load(tmp / "this.npy"), np.load(tmp / "baseline.npy")
            result["identical_rows"] = float((a == b).all(axis=1).mean()) if a.shape == b.shape else 0.0
            result["max_abs_difference"] = float(np.abs(a - b).max()) if a.shape == b.shape else None
            result["baseline"] = args.baseline
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
