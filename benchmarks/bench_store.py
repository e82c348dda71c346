"""The log's two hot operations: a group commit of feedback rows, and the lookup of late feedback.

Usage (about two minutes)::

    python benchmarks/bench_store.py [--repeats 40] [--runs 5] [--decisions 1000000]

**Commits.** Each way inserts a batch of ``n`` feedback rows into a fresh on-disk database as one autocommit
statement, as the log writer does for a feedback-only group commit:

- ``store``: the Store's way (:func:`banditroute.log.store.insert_rows`), ``INSERT ... SELECT
  unnest(?), ...`` with one list parameter per column;
- ``relation``: an Arrow table through the relational API, ``from_arrow(t).insert_into("feedback")``
  (the Store's way until the contended figures below);
- ``values``: a ``VALUES`` list with one parameter per cell;
- ``arrow``: registering the Arrow table as a view and ``INSERT ... SELECT`` from it.

Each is timed on the writer's side from the row dicts, conversions included, and also by the
process CPU it costs (DuckDB may use more than one thread). Each is then timed again while another
thread runs Python bytecode without pause (``contended``), as the event loop does under load: every
DuckDB call gives up the GIL, and winning it back from a busy thread takes up to Python's switch
interval (the server's 0.5 ms), so a way's contended time grows with the number of calls it makes.

A group commit holds at most one feedback per open connection, so 32 rows is the benchmark's
case. The figure is the median over runs of the median commit time within a run.

**Late lookups.** A log of ``--decisions`` synthetic decisions (85 features, 11 models, one
feedback row per ten decisions, spread evenly over ``--log-days`` days with time-carrying ids) is
written through the Store; then :meth:`Store.decisions` looks up 20 random ids (a round of late
feedback) ``--repeats`` times: by the time their ids carry (the Store's way; alone, then with the
busy thread), by a scan of the whole log (how a log written before ids carried a time finds its older
decisions), and, for comparison, through ART indexes on ``decision_id`` created for the purpose (the
way of versions before, whose memory grows with the log), with the memory limit raised for them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

from banditroute.core.ids import new_decision_id
from banditroute.log.schema import DECISION_SCHEMA, TABLES
from banditroute.log.store import Store, write_batch

HERE = Path(__file__).resolve().parent
FIELDS = TABLES["feedback"]
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def rows(n: int, seq: int) -> list[dict]:
    ts = time.time_ns() // 1000
    return [{"seq": seq + i, "decision_id": uuid.uuid4().hex, "ts": ts + i, "qualities": [1.0], "weights": [1.0],
             "cost_usd": 0.001, "reported": '{"cost_usd":0.001}', "idempotency_key": uuid.uuid4().hex}
            for i in range(n)]


def _bound(f: pa.Field, value):
    return EPOCH + datetime.timedelta(microseconds=value) if pa.types.is_timestamp(f.type) else value


def values(cur, batch: list[dict]) -> None:
    cells = "(" + ", ".join("?" * len(FIELDS)) + ")"
    params = [_bound(f, r[f.name]) for r in batch for f in FIELDS]
    cur.execute("INSERT INTO feedback VALUES " + ", ".join([cells] * len(batch)), params)


def arrow(cur, batch: list[dict]) -> None:
    cur.register("_new", pa.Table.from_pylist(batch, schema=FIELDS))
    try:
        cur.execute("INSERT INTO feedback SELECT * FROM _new")
    finally:
        cur.unregister("_new")


def relation(cur, batch: list[dict]) -> None:
    cur.from_arrow(pa.Table.from_pylist(batch, schema=FIELDS)).insert_into("feedback")


def store(cur, batch: list[dict]) -> None:
    write_batch(cur, {"decisions": [], "feedback": batch, "events": []})


WAYS = (store, relation, values, arrow)
SWITCH_INTERVAL = 0.0005  # the server's (banditroute.http.app.serve)


class BusyThread(threading.Thread):
    """Runs Python bytecode until stopped: the stand-in for an event loop under load."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stopped = threading.Event()

    def run(self) -> None:
        x = 0
        while not self.stopped.is_set():
            for i in range(1000):
                x += i


def one_run(sizes: list[int], repeats: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as d:
        store = Store(str(Path(d) / "bench.duckdb"), flush_interval=60)
        cur = store.con.cursor()
        seq = 0

        def timed(way, n: int) -> tuple[float, float]:
            nonlocal seq
            batches = [rows(n, seq + i * n) for i in range(repeats)]
            seq += n * repeats
            times, c0 = [], time.process_time()
            for batch in batches:
                t0 = time.perf_counter()
                way(cur, batch)
                times.append(time.perf_counter() - t0)
            return statistics.median(times) * 1e3, (time.process_time() - c0) / repeats * 1e3

        switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            for n in sizes:
                for way in WAYS:  # interleaved, so that drift hits every way alike
                    out[f"{way.__name__}_{n}"], out[f"{way.__name__}_{n}_cpu"] = timed(way, n)
                    busy = BusyThread()
                    busy.start()
                    try:
                        out[f"{way.__name__}_{n}_contended"], _ = timed(way, n)
                    finally:
                        busy.stopped.set()
                        busy.join()
            assert cur.execute("SELECT count(*) FROM feedback").fetchone()[0] == seq
        finally:
            sys.setswitchinterval(switch)
            cur.close()
            store.close()
    return out


def synthetic_decisions(n: int, rng: np.random.Generator, times: np.ndarray) -> pa.Table:
    """``n`` rows of :data:`DECISION_SCHEMA` taken at ``times`` (seconds), with their ids, random features
    and probabilities."""
    k, d = 11, 85
    ids = random.Random(int(rng.integers(1 << 62)))

    def lists(width: int) -> pa.ListArray:
        offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(rng.random(n * width)))

    models = [f"model-{i}" for i in range(k)]
    columns = {
        "decision_id": pa.array([new_decision_id(t, ids) for t in times.tolist()]),
        "ts": pa.array(np.round(times * 1e6).astype(np.int64)).cast(pa.timestamp("us", tz="UTC")),
        "policy": pa.array(["lints"] * n), "feature_version": pa.array(["v1"] * n),
        "x": lists(d), "input_tokens": pa.array(rng.random(n) * 1000), "prompt_hash": pa.array(["0" * 64] * n),
        "prompt": pa.nulls(n, pa.string()),
        "eligible": pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32)),
                                             pa.array(models * n)),
        "probabilities": lists(k), "chosen": pa.array([models[i % k] for i in range(n)]),
        "propensity": pa.array(rng.random(n)), "cost_weight": pa.array(np.zeros(n)),
        "pred_quality": lists(k), "pred_cost": lists(k), "user": pa.nulls(n, pa.string()),
        "metadata": pa.nulls(n, pa.string()),
    }
    for f in DECISION_SCHEMA:  # the columns routing options fill (rule, budget, ...): null, as without them
        columns.setdefault(f.name, pa.nulls(n, f.type))
    return pa.Table.from_pydict(columns, schema=DECISION_SCHEMA)


def lookup_run(n: int, repeats: int, days: float) -> dict:
    rng = np.random.default_rng(0)
    out = {"decisions": n, "log_days": days}
    start_ts = time.time() - days * 86400.0
    with tempfile.TemporaryDirectory() as d:
        store = Store(str(Path(d) / "bench.duckdb"), flush_interval=60)
        try:
            ids = []
            t0 = time.perf_counter()
            for start in range(0, n, 100_000):
                m = min(100_000, n - start)
                times = start_ts + (start + np.arange(m)) * (days * 86400.0 / n)
                table = synthetic_decisions(m, rng, times)
                ids += table.column("decision_id").to_pylist()
                cur = store.con.cursor()
                write_batch(cur, {"decisions": [table], "feedback": [], "events": []})
                cur.close()
                for row in rows(len(table) // 10, store.seq + 1):
                    row["decision_id"] = ids[-1 - row["seq"] % len(table)]
                    store.add_feedback(row)
                store.flush().result()
            out["write_seconds"] = round(time.perf_counter() - t0, 1)

            def lookups() -> float:
                times = []
                for _ in range(repeats):
                    wanted = [ids[i] for i in rng.integers(0, len(ids), size=20)]
                    t0 = time.perf_counter()
                    found = store.decisions(wanted)
                    times.append(time.perf_counter() - t0)
                    assert set(found) == set(wanted)
                return round(statistics.median(times) * 1e3, 2)

            out["lookup20_ms_by_time"] = lookups()
            switch = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL)
            busy = BusyThread()
            busy.start()
            try:
                out["lookup20_ms_by_time_contended"] = lookups()
            finally:
                busy.stopped.set()
                busy.join()
                sys.setswitchinterval(switch)
            store.legacy_before = float("inf")  # every id as if it carried no time: the whole log is read
            out["lookup20_ms_scan"] = lookups()
            store.con.execute("SET memory_limit = '2GB'")
            for name in ("decisions", "feedback"):
                store.con.execute(f"CREATE INDEX {name}_decision_id ON {name} (decision_id)")
            out["index_mb"] = round(store.con.execute(
                "SELECT memory_usage_bytes FROM duckdb_memory() WHERE tag = 'ART_INDEX'").fetchone()[0] / 1e6, 1)
            out["lookup20_ms_indexed"] = lookups()
        finally:
            store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--sizes", default="1,8,32,64")
    ap.add_argument("--decisions", type=int, default=1_000_000, help="log size for the late-lookup test")
    ap.add_argument("--log-days", type=float, default=7.0, help="the time the late-lookup log's decisions span")
    ap.add_argument("--out", default=str(HERE / "results" / "store.json"))
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = []
    for i in range(args.runs):
        runs.append(one_run(sizes, args.repeats))
        print(f"run {i + 1}/{args.runs}", flush=True)
    medians = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    names = [w.__name__ for w in WAYS]
    table = [{"rows": n, **{f"{w}_ms": medians[f"{w}_{n}"] for w in names},
              **{f"{w}_cpu_ms": medians[f"{w}_{n}_cpu"] for w in names},
              **{f"{w}_contended_ms": medians[f"{w}_{n}_contended"] for w in names}} for n in sizes]
    lookup = lookup_run(args.decisions, args.repeats, args.log_days)
    result = {"unit": "ms per commit: wall (median of runs of medians), process CPU (median of runs of means), "
                      "and wall with a thread keeping the GIL busy (contended)",
              "switch_interval_s": SWITCH_INTERVAL,
              "runs": args.runs, "repeats": args.repeats, "table": table, "late_lookup": lookup, "raw": runs}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("rows  " + "  ".join(f"{w + ' wall/cpu/contended':>30}" for w in names))
    for r in table:
        print(f"{r['rows']:>4}  " + "  ".join(f"{r[w + '_ms']:>9.3f} /{r[w + '_cpu_ms']:>9.3f} /{r[w + '_contended_ms']:>8.3f}"
                                            for w in names))
    print("late lookup of 20 ids:", lookup)


if __name__ == "__main__":
    main()
