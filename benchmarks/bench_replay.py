"""Off-policy evaluation end to end, as a user runs it: ``banditroute replay LOG --json`` on logs of
100,000 to 10,000,000 decisions, timed from process start to the JSON on stdout, with peak memory.

Usage (about 15 minutes with the default sizes, most of it writing and reading the 10M log)::

    python benchmarks/bench_replay.py [--sizes 100000 1000000 10000000] [--runs 3] [--workdir DIR]

The shipped log (replay_logs/routerbench_lints_cw30_seed1.parquet, 2,212 decisions over 11 models) is
tiled to each size, with unique decision ids, into a Parquet file written batch by batch (the file
is kept in ``--workdir`` between runs). The candidate is a frozen lints state learned from the shipped
log (``--state``), evaluated greedily at cost weight 30 with every estimator (IPS, SNIPS, DM, DR) and
its 95% interval: the command a user runs to judge a candidate before switching to it. Each run is a
fresh process; its wall time and peak resident memory (``ru_maxrss`` from ``wait4``) are recorded,
and the medians over ``--runs`` runs reported, with decisions per second. The largest size runs
``--big-runs`` times (default 1: a run takes minutes).

``--tune-size`` (default 1,000,000) also times ``banditroute tune LOG --state ... --json`` once: the
default grid of cost weights, each replayed with DR and its interval.

The issue's target: 10,000,000 decisions, every estimator with intervals, in at most 5 minutes and
4 GB peak on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from banditroute.core.policies import make_policy
from banditroute.core.state import save_state
from banditroute.offline.logs import load_log

HERE = Path(__file__).resolve().parent
LOG = HERE.parent / "replay_logs" / "routerbench_lints_cw30_seed1.parquet"
CW = 30.0
BATCH = 65_536


def tiled_log(rows: int, path: Path) -> None:
    """The shipped log repeated to ``rows`` decisions, each with its own decision id."""
    base = pq.read_table(LOG)
    writer = pq.ParquetWriter(str(path), base.schema, compression="zstd")
    for start in range(0, rows, BATCH):
        idx = np.arange(start, min(start + BATCH, rows)) % base.num_rows
        batch = base.take(pa.array(idx))
        ids = pa.array([f"bench-{i}" for i in range(start, start + len(idx))])
        writer.write_table(batch.set_column(batch.schema.get_field_index("decision_id"), "decision_id", ids))
        print(f"\rwriting {path.name}: {start + len(idx):,} decisions", end="", file=sys.stderr, flush=True)
    writer.close()
    print(file=sys.stderr)


def candidate_state(path: Path) -> None:
    """A lints state learned from the shipped log, frozen for the candidate."""
    log = load_log(LOG)
    X = log.X
    policy = make_policy("lints", log.models, log.dim)
    for i in range(len(log)):
        policy.update(log.context(i, X[i]), int(log.chosen[i]), float(log.quality[i]), float(log.cost[i]))
    save_state(policy, str(path))


def one_run(log: Path, state: Path, work: Path, command: str = "replay") -> dict:
    """Wall seconds and peak resident MB of one ``banditroute replay`` (or ``tune``) process."""
    if command == "replay":
        cmd = [sys.executable, "-m", "banditroute.cli", "replay", str(log), "--state", str(state), "--greedy",
               "--cost-weight", str(CW), "--json"]
    else:  # the default grid of cost weights, DR, the frozen state's sampling probabilities at each weight
        cmd = [sys.executable, "-m", "banditroute.cli", "tune", str(log), "--state", str(state), "--json"]
    out_path, err_path = work / "replay.out", work / "replay.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak, not the largest of all children
        seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{' '.join(cmd)} failed: {err_path.read_text()[-2000:]}")
    result = json.loads(out_path.read_text())
    out = {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024.0, "n": result["n"]}
    if command == "replay":
        out["dr_quality"] = result["estimates"]["dr"]["quality"]
    else:
        out["points"] = len(result["points"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--big-runs", type=int, default=1, help="runs of the largest size")
    ap.add_argument("--tune-size", type=int, default=1_000_000,
                    help="also time `banditroute tune LOG` once on the log of this size (0: skip)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "banditroute-bench-replay"))
    ap.add_argument("--out", default=str(HERE / "results" / "replay.json"))
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    state = work / "candidate.state"
    candidate_state(state)
    sizes = {}
    for size in sorted(args.sizes):
        path = work / f"log_{size}.parquet"
        if not path.exists():
            tiled_log(size, path)
        runs = []
        for r in range(args.big_runs if size == max(args.sizes) else args.runs):
            runs.append(one_run(path, state, work))
            print(f"{size:,} decisions, run {r + 1}: {runs[-1]['seconds']:.1f} s, "
                  f"{runs[-1]['peak_mb']:.0f} MB peak", file=sys.stderr, flush=True)
        seconds = statistics.median(r["seconds"] for r in runs)
        sizes[str(size)] = {"runs": len(runs), "seconds": round(seconds, 1),
                            "decisions_per_s": round(size / seconds),
                            "peak_mb": round(statistics.median(r["peak_mb"] for r in runs)),
                            "file_mb": round(path.stat().st_size / 2**20),
                            "dr_quality": runs[0]["dr_quality"]}
    tune = None
    if args.tune_size:
        path = work / f"log_{args.tune_size}.parquet"
        if not path.exists():
            tiled_log(args.tune_size, path)
        run = one_run(path, state, work, "tune")
        tune = {"command": "banditroute tune LOG --state candidate.state --json", "decisions": args.tune_size,
                "cost_weights": run["points"], "seconds": round(run["seconds"], 1), "peak_mb": round(run["peak_mb"])}
        print(f"tune on {args.tune_size:,} decisions: {run['seconds']:.1f} s, {run['peak_mb']:.0f} MB peak",
              file=sys.stderr, flush=True)
    result = {"command": "banditroute replay LOG --state candidate.state --greedy --cost-weight 30 --json",
              "estimators": ["ips", "snips", "dm", "dr"], "models": 11, "sizes": sizes,
              "target": {"decisions": 10_000_000, "max_seconds": 300, "max_peak_mb": 4096}, "tune": tune}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
