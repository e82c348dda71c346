"""Commit time of one group commit of feedback rows, by the way the rows reach DuckDB.

Usage (about a minute)::

    python benchmarks/bench_store.py [--repeats 40] [--runs 5]

Each way inserts a batch of ``n`` feedback rows into a fresh on-disk database as one autocommit
statement, as the log writer does for a feedback-only group commit:

- ``columns``: the Store's :func:`banditroute.store.columns_insert` (one list parameter per column);
- ``values``: a ``VALUES`` list with one parameter per cell (the Store's previous way);
- ``arrow``: registering a pyarrow table and ``INSERT ... SELECT`` from it (how decisions go in).

A group commit holds at most one feedback per open connection, so 32 rows is the benchmark's
case. The figure is the median over runs of the median commit time within a run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa

from banditroute.store import _EPOCH, TABLES, Store, columns_insert

HERE = Path(__file__).resolve().parent
FIELDS = TABLES["feedback"]


def rows(n: int, seq: int) -> list[dict]:
    ts = time.time_ns() // 1000
    return [{"seq": seq + i, "decision_id": uuid.uuid4().hex, "ts": ts + i, "qualities": [1.0], "weights": [1.0],
             "cost_usd": 0.001, "reported": '{"cost_usd":0.001}', "idempotency_key": uuid.uuid4().hex}
            for i in range(n)]


def values(cur, batch: list[dict]) -> None:
    cells = "(" + ", ".join("?" * len(FIELDS)) + ")"
    params = [_EPOCH + datetime.timedelta(microseconds=r[f.name]) if pa.types.is_timestamp(f.type) else r[f.name]
              for r in batch for f in FIELDS]
    cur.execute("INSERT INTO feedback VALUES " + ", ".join([cells] * len(batch)), params)


def arrow(cur, batch: list[dict]) -> None:
    cur.register("_new", pa.Table.from_pylist(batch, schema=FIELDS))
    try:
        cur.execute("INSERT INTO feedback SELECT * FROM _new")
    finally:
        cur.unregister("_new")


def columns(cur, batch: list[dict]) -> None:
    cur.execute(*columns_insert("feedback", batch))


def one_run(sizes: list[int], repeats: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as d:
        store = Store(str(Path(d) / "bench.duckdb"), flush_interval=60)
        cur = store.con.cursor()
        seq = 0
        try:
            for n in sizes:
                for way in (columns, values, arrow):  # interleaved, so that drift hits every way alike
                    times = []
                    for _ in range(repeats):
                        batch = rows(n, seq)
                        seq += n
                        t0 = time.perf_counter()
                        way(cur, batch)
                        times.append(time.perf_counter() - t0)
                    out[f"{way.__name__}_{n}"] = statistics.median(times) * 1e3
            assert cur.execute("SELECT count(*) FROM feedback").fetchone()[0] == seq
        finally:
            cur.close()
            store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--sizes", default="1,8,32,64")
    ap.add_argument("--out", default=str(HERE / "results" / "store.json"))
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = []
    for i in range(args.runs):
        runs.append(one_run(sizes, args.repeats))
        print(f"run {i + 1}/{args.runs}", flush=True)
    medians = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    table = [{"rows": n, **{way: medians[f"{way}_{n}"] for way in ("columns", "values", "arrow")},
              "values_over_columns": round(medians[f"values_{n}"] / medians[f"columns_{n}"], 2)} for n in sizes]
    result = {"unit": "ms per commit (median of runs of medians)", "runs": args.runs, "repeats": args.repeats,
              "table": table, "raw": runs}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'rows':>5} {'columns':>9} {'values':>9} {'arrow':>9} {'values/columns':>15}")
    for r in table:
        print(f"{r['rows']:>5} {r['columns']:>9.3f} {r['values']:>9.3f} {r['arrow']:>9.3f} {r['values_over_columns']:>15.2f}")


if __name__ == "__main__":
    main()
