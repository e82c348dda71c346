"""Storage faults injected into a running service: a full disk (a real tmpfs), an exception in the log
writer, the writer thread dying. Each checks that the service refuses (503 with ``Retry-After``) while
the log cannot take writes, recovers by itself, loses no acknowledged feedback, and learns nothing the
log does not hold."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
from conftest import cold_settings

from banditroute.http.app import create_app
from banditroute.http.handlers import SERVICE
from banditroute.log import store as store_module
from banditroute.log.store import Store
from banditroute.service.service import Service

THUMBS = [{"source": "user", "kind": "thumbs", "value": True}]
PROMPTS = ["Write a Python function that sorts a list", "What is 17 * 23?", "Who wrote Hamlet?",
           "Summarise this paragraph about rivers in two sentences."]


def config_for(db: str, **storage):
    cfg = cold_settings()
    return cfg.model_copy(update={"storage": cfg.storage.model_copy(update={
        "db": db, "flush_interval_ms": 5, "commit_timeout_s": 1.0, "retry_interval_s": 0.05, **storage})})


@pytest.fixture
def tiny_fs():
    """A 16 MB tmpfs (root only; skipped where mounting is not allowed)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tempfile.mkdtemp(prefix="banditroute-tmpfs-")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", where], check=False, capture_output=True).returncode:
        os.rmdir(where)
        pytest.skip("cannot mount a tmpfs here")
    yield Path(where)
    subprocess.run(["umount", "-l", where], check=False)
    os.rmdir(where)


def fill(where: Path, leave_bytes: int) -> Path:
    """A file that takes all but ``leave_bytes`` of the file system's free space."""
    st = os.statvfs(where)
    filler = where / "filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(st.f_bavail * st.f_frsize - leave_bytes, 0))
    return filler


async def exchange(client, key: str) -> tuple[int, int | None, str | None, dict]:
    """One route and its feedback: (route status, feedback status, decision id, the 503 headers)."""
    r = await client.post("/route", json={"prompt": PROMPTS[hash(key) % len(PROMPTS)]})
    body = await r.json()
    if r.status != 200:
        return r.status, None, None, dict(r.headers)
    f = await client.post("/feedback", json={"decision_id": body["decision_id"], "signals": THUMBS,
                                             "cost_usd": 0.001, "idempotency_key": key})
    await f.json()
    return 200, f.status, body["decision_id"], dict(f.headers)


async def wait_ready(client, seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if (await client.get("/readyz")).status == 200:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the service did not become ready again")


def rebuilt_from_log(db: str) -> dict[str, np.ndarray]:
    """The policy arrays of a service recovered from the log alone (the snapshot moved away)."""
    snapshot = Path(db + ".snapshot")
    if snapshot.exists():
        snapshot.rename(db + ".snapshot.old")
    service = Service(config_for(db), Store(db), seed=5)
    service.recover()
    arrays = {k: v.copy() for k, v in service.router.policy.arrays().items()}
    service.store.close()
    return arrays


def assert_same_state(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for name, value in a.items():
        np.testing.assert_allclose(value, b[name], rtol=1e-9, atol=1e-12, err_msg=name)


def logged(db: str) -> tuple[set[str], set[str], set[str]]:
    """(decision ids, idempotency keys, decision ids of feedback) in the log."""
    con = duckdb.connect(db, read_only=True)
    try:
        decisions = {r[0] for r in con.execute("SELECT decision_id FROM decisions").fetchall()}
        rows = con.execute("SELECT idempotency_key, decision_id FROM feedback").fetchall()
    finally:
        con.close()
    return decisions, {r[0] for r in rows}, {r[1] for r in rows}


@pytest.mark.parametrize("min_free_bytes", [0, 256 * 1024], ids=["write errors", "headroom"])
async def test_a_full_disk_fails_closed_and_recovers_without_losing_or_inventing_anything(aiohttp_client, tiny_fs,
                                                                                          min_free_bytes):
    """With no headroom the writes themselves fail (ENOSPC) and the service may come back for the odd
    small write that still fits; with headroom it stops before the disk is full and stays down until
    there is room. Either way nothing acknowledged is lost and nothing unlogged is learned."""
    db = str(tiny_fs / "r.duckdb")
    client = await aiohttp_client(create_app(config_for(db, min_free_bytes=min_free_bytes), seed=0))
    keys = (f"k{i}" for i in itertools.count())
    acked: dict[str, str] = {}  # idempotency key -> decision id, for every 200 feedback

    async def traffic(rounds: int) -> list[tuple]:
        out = []
        for _ in range(rounds):
            batch = [next(keys) for _ in range(16)]
            results = await asyncio.gather(*(exchange(client, k) for k in batch))
            for k, res in zip(batch, results):
                if res[1] == 200:
                    acked[k] = res[2]
            out += results
        return out

    await traffic(5)
    filler = fill(tiny_fs, 96 * 1024 + min_free_bytes)
    full = await traffic(60)
    refused = [r for r in full if r[0] == 503 or r[1] == 503]
    assert refused, "nothing was refused on a full disk"
    assert all(r[3].get("Retry-After") for r in refused)
    if min_free_bytes:
        assert full[-1][0] == 503
        ready = await client.get("/readyz")
        assert ready.status == 503 and "min_free_bytes" in (await ready.json())["message"]
    assert (await client.get("/healthz")).status == 200  # liveness is not readiness
    assert (await client.get("/route")).status in (405, 503)

    filler.unlink()
    await wait_ready(client)
    after = await traffic(3)
    assert all(r[0] == 200 and r[1] == 200 for r in after)
    service = client.server.app[SERVICE]
    live = {k: v.copy() for k, v in service.router.policy.arrays().items()}
    await client.close()

    decisions, keys_logged, referenced = logged(db)
    assert set(acked) <= keys_logged  # every acknowledged feedback is in the log
    assert referenced <= decisions  # no feedback row points at a decision the log lost
    assert_same_state(live, rebuilt_from_log(db))  # nothing unlogged was learned


async def test_an_exception_in_the_writer_is_a_503_and_the_service_recovers(aiohttp_client, tmp_path, monkeypatch):
    db = str(tmp_path / "r.duckdb")
    client = await aiohttp_client(create_app(config_for(db), seed=0))
    assert (await exchange(client, "a"))[1] == 200
    real = store_module.write_batch
    failures = iter([RuntimeError("injected")])

    def flaky(cur, rows):
        for err in failures:
            raise err
        return real(cur, rows)

    monkeypatch.setattr(store_module, "write_batch", flaky)
    status = await exchange(client, "b")
    assert status[1] == 503 and status[3]["Retry-After"] == "1"
    await wait_ready(client)
    assert (await exchange(client, "c"))[1] == 200
    live = {k: v.copy() for k, v in client.server.app[SERVICE].router.policy.arrays().items()}
    metrics = await (await client.get("/metrics")).text()
    assert "banditroute_log_write_failures_total 1.0" in metrics and "banditroute_outages_total 1.0" in metrics
    await client.close()
    _, keys_logged, _ = logged(db)
    assert keys_logged == {"a", "c"}
    assert_same_state(live, rebuilt_from_log(db))


async def test_a_failed_decision_commit_stops_routing_until_the_log_works(aiohttp_client, tmp_path, monkeypatch):
    """No feedback waits on a batch of decisions, yet its failure stops /route too."""
    client = await aiohttp_client(create_app(config_for(str(tmp_path / "r.duckdb")), seed=0))
    broken = {"on": True}

    def failing(real):
        def write(*args):
            if broken["on"]:
                raise OSError(28, "No space left on device")
            return real(*args)
        return write

    monkeypatch.setattr(store_module, "write_batch", failing(store_module.write_batch))
    monkeypatch.setattr(store_module, "insert_rows", failing(store_module.insert_rows))  # the probe's write
    statuses = []
    for _ in range(200):
        r = await client.post("/route", json={"prompt": "hello"})
        statuses.append(r.status)
        if r.status == 503:
            break
        await asyncio.sleep(0.01)
    assert statuses[-1] == 503
    assert "No space left" in (await (await client.get("/readyz")).json())["message"]
    broken["on"] = False
    await wait_ready(client)
    assert (await client.post("/route", json={"prompt": "hello"})).status == 200


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_a_dead_writer_thread_times_out_the_wait_and_is_restarted(aiohttp_client, tmp_path, monkeypatch):
    """An exception the writer's supervision does not catch (SystemExit) ends its thread: the waiting
    feedback gets a 503 after ``commit_timeout_s`` instead of hanging, and a new writer takes over."""
    db = str(tmp_path / "r.duckdb")
    client = await aiohttp_client(create_app(config_for(db), seed=0))
    real = store_module.write_batch
    kills = iter([SystemExit("injected")])

    def killer(cur, rows):
        for err in kills:
            raise err
        return real(cur, rows)

    monkeypatch.setattr(store_module, "write_batch", killer)
    status = await asyncio.wait_for(exchange(client, "x"), 5.0)
    assert status[1] == 503
    await wait_ready(client)
    assert client.server.app[SERVICE].store.writer_alive
    assert (await exchange(client, "y"))[1] == 200
    live = {k: v.copy() for k, v in client.server.app[SERVICE].router.policy.arrays().items()}
    await client.close()
    assert "y" in logged(db)[1]
    assert_same_state(live, rebuilt_from_log(db))


def test_storage_error_fails_later_batches_until_a_probe_succeeds(tmp_path, monkeypatch):
    """The store alone: after a failed commit, later rows are dropped (none can refer to a lost one)
    until a probe writes again; the feedback position goes back to the log's."""
    from banditroute.log.store import StorageError

    store = Store(str(tmp_path / "s.duckdb"), flush_interval=0.01)
    real = store_module.write_batch
    broken = {"on": True}
    monkeypatch.setattr(store_module, "write_batch",
                        lambda cur, rows: (_ for _ in ()).throw(OSError("disk full")) if broken["on"] else real(cur, rows))
    row = {"decision_id": "d", "ts": 0, "qualities": [1.0], "weights": [1.0], "cost_usd": None,
           "reported": "{}", "idempotency_key": None}
    _, fut = store.add_feedback(dict(row))
    with pytest.raises(StorageError, match="disk full"):
        fut.result(5)
    broken["on"] = False
    _, fut = store.add_feedback(dict(row))
    with pytest.raises(StorageError, match="not accepting writes|dropped"):
        fut.result(5)
    assert store.failure is not None
    assert store.probe().result(5) is True and store.failure is None
    assert store.seq == 0
    seq, fut = store.add_feedback(dict(row))
    assert fut.result(5) == seq == 1
    store.close()


def legacy_log(path: str, decisions: int) -> list[str]:
    """A log as versions before time-carrying ids wrote it: random ids and the in-memory ART indexes on
    ``decision_id``, ``decisions`` decisions in it; returns a few of its ids."""
    from banditroute.log.schema import TABLES, ddl

    con = duckdb.connect(path, config={"memory_limit": "2GB"})
    for name, schema in TABLES.items():
        for statement in ddl(name, schema):
            con.execute(statement)
    con.execute("CREATE INDEX decisions_decision_id ON decisions (decision_id)")
    con.execute("CREATE INDEX feedback_decision_id ON feedback (decision_id)")
    con.execute("CREATE UNIQUE INDEX feedback_idempotency ON feedback (decision_id, idempotency_key)")
    con.execute(
        "INSERT INTO decisions (decision_id, ts, policy, feature_version, x, input_tokens, eligible, probabilities, "
        "chosen, propensity, cost_weight, pred_quality, pred_cost) SELECT md5(i::VARCHAR), "
        "now() - to_milliseconds(? - i), 'lints', 'v1-d64', [1.0, 0.5], 10.0, ['a', 'b'], [0.5, 0.5], 'a', 0.5, 100.0, "
        "[0.5, 0.5], [0.001, 0.002] FROM range(?) t(i)", [decisions, decisions])
    ids = [r[0] for r in con.execute("SELECT md5(i::VARCHAR) FROM range(0, ?, ?) t(i)",
                                     [decisions, decisions // 3]).fetchall()]
    con.close()
    return ids


def test_a_log_past_duckdbs_memory_limit_keeps_taking_writes(tmp_path):
    """An ART index on ``decision_id`` lives in memory and grows with every decision: a long-running
    server's commits all failed (out of memory) once it outgrew the log's memory limit. The indexes
    of an older log are dropped at open, writes go on under the limit, and decisions old and new are
    still found for their late feedback."""
    from banditroute.config import load_settings
    from banditroute.core.router import RouteOptions, Router

    db = str(tmp_path / "old.duckdb")
    old_ids = legacy_log(db, 600_000)  # about 40 MB of index, over the 32 MB limit below
    store = Store(db, flush_interval=60, memory_limit="32MB")
    try:
        router = Router(load_settings(), seed=0)
        new = []
        for _ in range(20):
            out = router.route_many([f"question {i}?" for i in range(200)], [RouteOptions()] * 200)
            store.add_decisions([(d, None, None) for d in out])
            store.flush().result(timeout=60)
            new += [d.decision_id for d in out]
        assert store.failure is None
        found = store.decisions([new[0], new[-1], *old_ids, "7" * 32])
        assert set(found) == {new[0], new[-1], *old_ids}
        assert store.query("SELECT count(*) FROM decisions").column(0)[0].as_py() == 600_000 + 4_000
        assert store.query("SELECT index_name FROM duckdb_indexes()").num_rows == 0
    finally:
        store.close()


class _RolledBackOnCommit:
    """A cursor whose COMMIT fails after DuckDB has already rolled the transaction back, as an
    out-of-memory error does: a ROLLBACK after it fails with "no transaction is active"."""

    def __init__(self, cur):
        self.cur = cur

    def execute(self, sql, *args):
        if sql == "COMMIT":
            self.cur.execute("ROLLBACK")
            raise duckdb.OutOfMemoryException("Out of Memory Error: injected")
        return self.cur.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.cur, name)


def test_a_transaction_duckdb_rolled_back_itself_reports_its_own_error(tmp_path):
    store = Store(str(tmp_path / "r.duckdb"), flush_interval=60)
    try:
        rows = {"feedback": [{"seq": 1, "decision_id": "d", "ts": 0, "qualities": [], "weights": [], "cost_usd": None,
                              "reported": "{}", "idempotency_key": None}],
                "events": [{"ts": 0, "seq": 1, "event": "{}"}]}
        with pytest.raises(duckdb.OutOfMemoryException, match="injected"):
            store_module.write_batch(_RolledBackOnCommit(store.con.cursor()), rows)
        assert store.query("SELECT count(*) FROM feedback").column(0)[0].as_py() == 0
    finally:
        store.close()


async def test_a_rebuild_that_fails_once_the_log_is_back_is_tried_again(aiohttp_client, tmp_path, monkeypatch):
    """The log takes writes again but reading it back fails (as an out-of-memory error did): the
    service stays refusing and tries again at the next probe, instead of refusing for good."""
    client = await aiohttp_client(create_app(config_for(str(tmp_path / "r.duckdb")), seed=0))
    assert (await exchange(client, "a"))[1] == 200
    service = client.server.app[SERVICE]
    real_write, real_recover = store_module.write_batch, service.recover
    writes = iter([RuntimeError("injected commit failure")])
    rebuilds = iter([duckdb.OutOfMemoryException("Out of Memory Error: injected on rebuild")])

    def flaky_write(cur, rows):
        for err in writes:
            raise err
        return real_write(cur, rows)

    def flaky_recover():
        for err in rebuilds:
            raise err
        return real_recover()

    monkeypatch.setattr(store_module, "write_batch", flaky_write)
    monkeypatch.setattr(service, "recover", flaky_recover)
    assert (await exchange(client, "b"))[1] == 503
    await wait_ready(client)
    assert next(rebuilds, None) is None  # the failing rebuild was tried, and then another
    assert (await exchange(client, "c"))[1] == 200
    await client.close()


async def test_a_database_duckdb_invalidates_is_opened_again_without_a_restart(aiohttp_client, tiny_fs):
    """A real fault, nothing injected: a checkpoint that runs out of disk makes DuckDB invalidate the
    database, and every later statement fails. The service refuses, its probes open the database
    again (once there is room to write, the write-ahead log replayed), and it answers again with
    every acknowledged feedback in the log and the state rebuilt from it. Liveness stays ok
    throughout: a restart would do nothing more. The guard of one page of free space makes "full"
    mean full: with none, a probe's small row may still fit in the slack of the write-ahead log's
    last page, and whether it does depends on the log's exact size."""
    db = str(tiny_fs / "r.duckdb")
    client = await aiohttp_client(create_app(config_for(db, min_free_bytes=4096), seed=0))
    service = client.server.app[SERVICE]
    acked = {}
    for i in range(40):
        status, fb, decision_id, _ = await exchange(client, f"a{i}")
        assert (status, fb) == (200, 200)
        acked[f"a{i}"] = decision_id
    filler = fill(tiny_fs, 0)
    cur = service.store.con.cursor()
    with pytest.raises(duckdb.FatalException):
        cur.execute("CHECKPOINT")  # its rows need new blocks of the database file
    assert 503 in (await exchange(client, "b"))[:2]  # the feedback's commit fails
    for _ in range(20):  # the probes reopen the database but cannot write on the full disk
        await asyncio.sleep(0.05)
        assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 503
    filler.unlink()
    await wait_ready(client)
    assert service.store.reopens >= 1 and service.store.fatal is None
    status, fb, decision_id, _ = await exchange(client, "c")
    assert (status, fb) == (200, 200)
    acked["c"] = decision_id
    assert "banditroute_log_reopens" in await (await client.get("/metrics")).text()
    live = {k: v.copy() for k, v in service.router.policy.arrays().items()}
    await client.close()
    decisions, keys, _ = logged(db)
    assert set(acked) <= keys and set(acked.values()) <= decisions
    assert_same_state(live, rebuilt_from_log(db))


async def test_liveness_fails_only_when_the_invalidated_database_cannot_be_opened_again(aiohttp_client, tmp_path,
                                                                                      monkeypatch):
    """Should opening the database again fail with a fatal error as well (DuckDB handing back the
    invalidated database), only a restart can help: /healthz answers 503 naming the cause, so that a
    supervisor restarts the process. Once the database opens again, liveness and readiness come back."""
    client = await aiohttp_client(create_app(config_for(str(tmp_path / "r.duckdb")), seed=0))
    assert (await exchange(client, "a"))[1] == 200
    store = client.server.app[SERVICE].store
    broken = {"on": True}
    invalidated = duckdb.FatalException("FATAL Error: Failed: database has been invalidated because of a previous "
                                        "fatal error (injected)")
    real_write, real_open = store_module.write_batch, store._open

    def write(*args):
        if broken["on"]:
            raise invalidated
        return real_write(*args)

    def reopen():
        if broken["on"]:
            raise invalidated
        return real_open()

    monkeypatch.setattr(store_module, "write_batch", write)
    monkeypatch.setattr(store, "_open", reopen)
    assert (await exchange(client, "b"))[1] == 503
    for _ in range(100):  # the probes keep failing
        await asyncio.sleep(0.02)
    health = await client.get("/healthz")
    body = await health.json()
    assert health.status == 503 and body["error"] == "unavailable" and "opened again" in body["message"]
    assert (await client.get("/readyz")).status == 503
    broken["on"] = False
    await wait_ready(client)
    assert (await client.get("/healthz")).status == 200
    assert (await exchange(client, "c"))[1] == 200
    await client.close()

def test_an_idle_checkpoint_waits_for_room_on_the_disk(tiny_fs, monkeypatch):
    """A checkpoint copies the write-ahead log into the database file, and one that runs out of disk
    makes DuckDB invalidate the database. The writer puts it off while the free space is under the WAL's
    size: the log keeps taking (small) writes on a nearly full disk, and checkpoints once there is room.
    (A commit's checkpoint runs after its future resolves: the next commit's result says it is done.)"""
    monkeypatch.setattr(store_module, "IDLE_CHECKPOINT_BYTES", 256 * 1024)
    store = Store(str(tiny_fs / "r.duckdb"), flush_interval=0.01)
    try:
        rng = np.random.default_rng(0)
        for _ in range(2):  # incompressible rows, about 120 KB of WAL each: under the threshold
            store.add_event({"pad": rng.bytes(60_000).hex()}).result(timeout=10)
        filler = fill(tiny_fs, 64 * 1024)
        store.add_event({"pad": rng.bytes(10_000).hex()}).result(timeout=10)  # past it
        for i in range(3):
            store.add_event({"small": i}).result(timeout=10)
        assert os.path.getsize(store._wal) >= 256 * 1024
        assert store.checkpoints == 0 and store.failure is None and not store.invalidated
        filler.unlink()
        for i in range(2):
            store.add_event({"small": i}).result(timeout=10)
        assert store.checkpoints == 1 and store.failure is None
        assert store.query("SELECT count(*) FROM events").column(0)[0].as_py() == 8
    finally:
        store.close()


async def test_a_read_of_the_log_that_fails_is_a_503_to_retry_and_loses_nothing(aiohttp_client, tmp_path, monkeypatch):
    """A read of the log that fails (injected: the connection closed under it, as while the database is
    opened again after a fault) answers late feedback and an export with a 503 and ``Retry-After``, not
    a 500 or a 404: the decision is in the log, and the same request succeeds once the read does."""
    db = str(tmp_path / "r.duckdb")
    client = await aiohttp_client(create_app(config_for(db).model_copy(update={"max_pending": 1}), seed=0))
    first = await (await client.post("/route", json={"prompt": PROMPTS[0]})).json()
    await client.post("/route", json={"prompt": PROMPTS[1]})  # the first leaves the pending window
    store = client.server.app[SERVICE].store
    closed = duckdb.ConnectionException("Connection already closed!")

    def failing(*args, **kwargs):
        raise closed

    feedback = {"decision_id": first["decision_id"], "signals": THUMBS, "idempotency_key": "late"}
    with monkeypatch.context() as m:
        m.setattr(store, "decisions", failing)
        m.setattr(store, "export", failing)
        r = await client.post("/feedback", json=feedback)
        body = await r.json()
        assert r.status == 503 and r.headers["Retry-After"] == "1" and body["error"] == "unavailable"
        assert "cannot be read right now" in body["message"] and "Connection already closed" in body["message"]
        r = await client.get("/export?format=jsonl")
        assert r.status == 503 and (await r.json())["error"] == "unavailable"
    r = await client.post("/feedback", json=feedback)
    assert r.status == 200 and (await r.json())["late"] is True
    assert (await client.get("/export?format=jsonl")).status == 200
    await client.close()
    _, keys_logged, _ = logged(db)
    assert keys_logged == {"late"}


async def test_prompts_older_than_the_retention_period_are_erased_and_their_decisions_kept(aiohttp_client, tmp_path,
                                                                                          monkeypatch):
    from banditroute.service import retention

    monkeypatch.setattr(retention, "EVERY_S", 0.1)
    db = str(tmp_path / "r.duckdb")
    client = await aiohttp_client(create_app(config_for(db, store_prompts=True, retention_days=1.5 / 86_400), seed=0))
    store = client.server.app[SERVICE].store
    ids = [(await (await client.post("/route", json={"prompt": p})).json())["decision_id"] for p in PROMPTS[:2]]
    await asyncio.sleep(0.3)
    assert {r["prompt"] for r in store.query("SELECT prompt FROM decisions").to_pylist()} == set(PROMPTS[:2])
    for _ in range(100):  # the prompts turn 1.5 s old, then the next pass erases them
        await asyncio.sleep(0.05)
        metrics = await (await client.get("/metrics")).text()
        if "banditroute_expired_prompts_total 2.0" in metrics:
            break
    else:
        raise AssertionError("the prompts were not erased")
    rows = store.query("SELECT decision_id, prompt, x FROM decisions").to_pylist()
    assert sorted(r["decision_id"] for r in rows) == sorted(ids) and all(r["prompt"] is None and r["x"] for r in rows)
    f = await client.post("/feedback", json={"decision_id": ids[0], "signals": THUMBS, "idempotency_key": "k"})
    assert f.status == 200  # its decision still learns
    await client.close()


def test_erasing_old_prompts_waits_for_room_on_the_disk_and_goes_on_in_small_transactions(tiny_fs, monkeypatch):
    from banditroute.config import load_settings
    from banditroute.core.router import RouteOptions, Router
    from banditroute.log.store import StorageError

    monkeypatch.setattr(store_module, "EXPIRE_ROWS", 10)
    router = Router(load_settings(), seed=0, store_prompts=True)
    store = Store(str(tiny_fs / "r.duckdb"), flush_interval=0.01, min_free_bytes=2 << 20)
    try:
        out = router.route_many([f"{i} " + "words " * 200 for i in range(45)], [RouteOptions()] * 45)
        store.add_decisions([(d, None, None) for d in out])
        store.flush().result(timeout=30)
        store.con.execute("UPDATE decisions SET ts = ts - INTERVAL 10 DAY")
        filler = fill(tiny_fs, 3 << 20)  # above min_free_bytes, under twice it
        with pytest.raises(StorageError, match="put off"):
            store.expire(time.time() - 86_400)
        assert store.query("SELECT count(*) AS n FROM decisions WHERE prompt IS NULL").column(0)[0].as_py() == 0
        more = router.route_many(["still logging?"], [RouteOptions()])
        store.add_decisions([(more[0], None, None)])
        store.flush().result(timeout=30)  # the log still takes writes: nothing was invalidated
        assert store.failure is None and not store.invalidated
        filler.unlink()
        assert store.expire(time.time() - 86_400) == (45, 0)  # five transactions of ten, then one of five
        assert store.query("SELECT count(*) AS n FROM decisions WHERE prompt IS NOT NULL").column(0)[0].as_py() == 1
    finally:
        store.close()


def test_a_retention_pass_put_off_midway_counts_what_it_had_erased(tmp_path, monkeypatch):
    """The disk runs short after two transactions of the pass (injected: the free space the pass sees;
    the writer's own checks see the real disk): the pass stops, counts the 20 prompts it erased and one
    failed pass, and the next pass erases the rest."""
    import shutil
    import threading

    from banditroute.config import load_settings
    from banditroute.core.router import RouteOptions, Router
    from banditroute.service.retention import Retention

    monkeypatch.setattr(store_module, "EXPIRE_ROWS", 10)
    router = Router(load_settings(), seed=0, store_prompts=True)
    store = Store(str(tmp_path / "r.duckdb"), flush_interval=0.01, min_free_bytes=1)
    real, checks = shutil.disk_usage, itertools.count()

    def disk_usage(path):
        usage = real(path)
        if threading.current_thread() is threading.main_thread() and next(checks) >= 2:
            return usage._replace(free=1)
        return usage

    try:
        out = router.route_many([f"question {i}?" for i in range(45)], [RouteOptions()] * 45)
        store.add_decisions([(d, None, None) for d in out])
        store.flush().result(timeout=30)
        store.con.execute("UPDATE decisions SET ts = ts - INTERVAL 10 DAY")
        retention = Retention(store, days=1.0)
        monkeypatch.setattr(store_module.shutil, "disk_usage", disk_usage)
        retention.expire()
        assert (retention.prompts, retention.turns, retention.failures) == (20, 0, 1)
        monkeypatch.setattr(store_module.shutil, "disk_usage", real)
        retention.expire()
        assert (retention.prompts, retention.failures) == (45, 1)
    finally:
        store.close()


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_log_written_to_a_full_disk_is_a_one_line_error_and_leaves_no_file(tiny_fs, outcomes_path, capsys, suffix):
    """``simulate --log`` (as ``export``, through the same writer) onto a disk that fills up: the command says
    so in one line, and neither the log nor a part of it is left where a replay would read it."""
    from banditroute.cli.main import main

    out = tiny_fs / f"log{suffix}"
    filler = fill(tiny_fs, 4096)
    assert main(["simulate", str(outcomes_path), "--log", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"cannot write {out}: no space left on device") and "Traceback" not in err
    assert sorted(p.name for p in tiny_fs.iterdir()) == [filler.name]


async def test_an_export_whose_temporary_file_finds_the_disk_full_is_a_503(aiohttp_client, tiny_fs, tmp_path,
                                                                           monkeypatch):
    """``GET /export`` writes to a temporary file first: when its disk is full, a 503 saying so (the log is
    not at fault and stays as it is), and nothing left behind."""
    client = await aiohttp_client(create_app(config_for(str(tmp_path / "r.duckdb")), seed=0))
    assert (await exchange(client, "a"))[1] == 200
    monkeypatch.setattr(tempfile, "tempdir", str(tiny_fs))
    filler = fill(tiny_fs, 0)
    for fmt in ("parquet", "jsonl"):
        r = await client.get(f"/export?format={fmt}")
        body = await r.json()
        assert r.status == 503 and "no space left on device" in body["message"], body
    assert sorted(p.name for p in tiny_fs.iterdir()) == [filler.name]
    assert (await client.get("/readyz")).status == 200
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert (await client.get("/export?format=jsonl")).status == 200
    await client.close()


def test_a_plot_or_a_state_written_to_a_full_disk_is_a_one_line_error(tiny_fs, outcomes_path, capsys):
    """``tune --plot`` and ``pretrain --out`` onto a full disk: one line naming the file, nothing left."""
    from banditroute.cli.main import main

    filler = fill(tiny_fs, 0)
    for argv, out in ((["tune", str(outcomes_path), "--cost-weights", "0,10", "--plot"], tiny_fs / "p.png"),
                      (["pretrain", str(outcomes_path), "--out"], tiny_fs / "s.state")):
        assert main([*argv, str(out)]) == 2
        assert capsys.readouterr().err.strip().endswith(f"cannot write {out}: no space left on device")
    assert sorted(p.name for p in tiny_fs.iterdir()) == [filler.name]
