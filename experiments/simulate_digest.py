"""Record ``simulate --json`` for a policy on every shared table and seed, or compare two recordings.

Used to show that a change which should not alter routing (a restructuring) does not: record at the
old commit and at the new one, then compare.

Usage::

    python experiments/simulate_digest.py --out after.json [--seeds 1 2] [--policy lints]
    git worktree add /tmp/before <old commit>          # then, with the old code on the path:
    PYTHONPATH=/tmp/before python experiments/simulate_digest.py --out before.json
    python experiments/simulate_digest.py --compare before.json after.json

The comparison prints, per table and seed, the largest relative difference over every number of the
result, and the fields that differ otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def record(policy: str, seeds: list[int]) -> dict:
    from banditroute.offline.outcomes import load_outcomes
    from banditroute.offline.simulate import simulate

    out = {}
    for path in sorted(DATA.glob("*.parquet")):
        outcomes = load_outcomes(path)
        for seed in seeds:
            print(f"{path.stem} seed {seed}", file=sys.stderr)
            result = simulate(outcomes, policy, seed=seed)
            out[f"{path.stem}/{seed}"] = result[0] if isinstance(result, tuple) else result  # older API: a pair
    return out


def flat(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flat(v, f"{prefix}{k}.")
        else:
            yield prefix + k, v


def compare(a: dict, b: dict) -> float:
    worst = 0.0
    for key in sorted(set(a) | set(b)):
        fa, fb = dict(flat(a.get(key, {}))), dict(flat(b.get(key, {})))
        rel, other = 0.0, []
        for name in sorted(set(fa) | set(fb)):
            x, y = fa.get(name), fb.get(name)
            if isinstance(x, float) and isinstance(y, float):
                rel = max(rel, abs(x - y) / max(abs(x), abs(y), 1e-300))
            elif x != y:
                other.append(name)
        worst = max(worst, rel)
        print(f"{key:32} largest relative difference {rel:.2e}" + (f"; differ: {', '.join(other)}" if other else ""))
    print(f"overall largest relative difference {worst:.2e}")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="write the recording here")
    ap.add_argument("--policy", default="lints")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args()
    if args.compare:
        compare(*(json.loads(Path(p).read_text()) for p in args.compare))
        return
    Path(args.out).write_text(json.dumps(record(args.policy, args.seeds), indent=1) + "\n")


if __name__ == "__main__":
    main()
