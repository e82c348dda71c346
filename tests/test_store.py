"""The DuckDB log writer: what goes in comes back exactly, whichever insert path a commit takes."""

import os
import sys
import threading
import time

import duckdb
import pytest

from banditroute.config import load_settings
from banditroute.core.router import RouteOptions, Router
from banditroute.log import store as store_module
from banditroute.log.store import Store


def feedback_row(i: int, ts: int) -> dict:
    return {"decision_id": f"{i:032x}", "ts": ts + i, "qualities": [0.25 * (i % 5)] * (i % 3),
            "weights": [1.0] * (i % 3), "cost_usd": None if i % 2 else 0.001 * i,
            "reported": f'{{"latency_ms": {i}}}', "idempotency_key": f"k{i}" if i % 4 else None}


@pytest.mark.parametrize("timezone", ["UTC", "America/New_York"])
def test_feedback_rows_round_trip_exactly(tmp_path, timezone):
    store = Store(str(tmp_path / "log.duckdb"), flush_interval=60)
    ts = time.time_ns() // 1000
    try:
        store.con.execute(f"SET GLOBAL TimeZone = '{timezone}'")  # timestamps are bound as epoch microseconds
        _, fut = store.add_feedback(feedback_row(0, ts))  # a lone feedback: one autocommit statement
        fut.result(timeout=30)
        for i in range(1, 601):  # a larger batch, inside one transaction with an event
            store.add_feedback(feedback_row(i, ts))
        store.add_event({"policy": "lints"})
        store.flush().result(timeout=30)
        got = store.query(
            "SELECT seq, decision_id, epoch_us(ts) AS ts, qualities, weights, cost_usd, reported, idempotency_key "
            "FROM feedback ORDER BY seq").to_pylist()
        assert len(got) == 601 and store.query("SELECT count(*) FROM events").column(0)[0].as_py() == 1
        for i, row in enumerate(got):
            assert row == {"seq": i + 1, **feedback_row(i, ts)}
    finally:
        store.close()


def test_writer_checkpoints_when_no_feedback_waits(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "IDLE_CHECKPOINT_BYTES", 1)
    store = Store(str(tmp_path / "log.duckdb"), flush_interval=60)
    try:
        _, fut = store.add_feedback(feedback_row(0, time.time_ns() // 1000))
        fut.result(timeout=30)
        store.flush().result(timeout=30)  # the writer checkpoints right after the commit, before this one
        assert store.checkpoints >= 1
        wal = tmp_path / "log.duckdb.wal"
        assert not wal.exists() or os.path.getsize(wal) < 4096
        assert store.query("SELECT count(*) FROM feedback").column(0)[0].as_py() == 1
    finally:
        store.close()


def test_feedback_commits_alone_unless_its_decision_is_still_queued(tmp_path):
    """A decision is never logged after feedback about it; other feedback does not wait for decisions."""
    router = Router(load_settings(), seed=0)
    store = Store(str(tmp_path / "log.duckdb"), flush_interval=60)

    def logged(table: str) -> int:
        return store.query(f"SELECT count(*) FROM {table}").column(0)[0].as_py()

    def route(n: int):
        out = router.route_many([f"question {i}?" for i in range(n)], [RouteOptions()] * n)
        store.add_decisions([(d, None, None) for d in out])
        return out

    try:
        old = route(3)
        store.flush().result(timeout=30)
        assert logged("decisions") == 3
        new = route(4)  # queued; the next timed flush is a minute away
        _, fut = store.add_feedback({**feedback_row(0, time.time_ns() // 1000), "decision_id": old[0].decision_id})
        fut.result(timeout=30)
        assert logged("feedback") == 1 and logged("decisions") == 3  # committed alone
        _, fut = store.add_feedback({**feedback_row(1, time.time_ns() // 1000), "decision_id": new[2].decision_id})
        fut.result(timeout=30)
        assert logged("feedback") == 2 and logged("decisions") == 7  # took its decision (and the others) along
        route(2)
        store.flush().result(timeout=30)
        assert logged("decisions") == 9
    finally:
        store.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_writer_thread_runs_at_lower_priority_than_the_loop(tmp_path):
    """The writer's CPU bursts must yield to the event loop: its own thread's nice value is raised, the
    calling thread's is not."""
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    store = Store(str(tmp_path / "log.duckdb"), writer_niceness=5)
    try:
        store.flush().result(10)  # the writer has started and done a step
        assert os.getpriority(os.PRIO_PROCESS, store._thread.native_id) == min(base + 5, 19)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    finally:
        store.close()
    plain = Store(str(tmp_path / "plain.duckdb"))
    try:
        plain.flush().result(10)
        assert os.getpriority(os.PRIO_PROCESS, plain._thread.native_id) == base
    finally:
        plain.close()


def test_a_writer_that_may_not_lower_its_priority_still_commits(tmp_path, monkeypatch, caplog):
    """A sandbox that forbids setpriority(2) (injected: it raises EPERM) costs a warning, not the log."""
    def forbidden(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(store_module.os, "setpriority", forbidden)
    store = Store(str(tmp_path / "log.duckdb"), writer_niceness=5)
    try:
        _, committed = store.add_feedback(feedback_row(1, time.time_ns() // 1000))
        assert committed.result(10) >= 1 and store.writer_alive and store.failure is None
    finally:
        store.close()
    assert sys.platform != "linux" or "could not lower the log writer's priority" in caplog.text


def test_decision_ids_are_uuid7_carrying_the_decision_time():
    import random
    import uuid

    from banditroute.core.ids import id_time, new_decision_id

    router = Router(load_settings(), seed=0)
    decisions = router.route_many(["a question?", "another"], [RouteOptions()] * 2)
    for d in decisions:
        u = uuid.UUID(d.decision_id)
        assert (u.version, u.variant) == (7, uuid.RFC_4122) and d.decision_id == u.hex
        assert id_time(d.decision_id) == pytest.approx(d.ts, abs=1e-3)
    rng = random.Random(1)
    ids = [new_decision_id(t, rng) for t in (1.7e9, 1.7e9 + 0.001, 1.7e9 + 86400.0)]
    assert ids == sorted(ids) and len({i[12:] for i in ids}) == 3
    assert [id_time(i) for i in ("f" * 32, "7" * 31, "0123456789ab7def0123456789abcdef", "")] == [None] * 4


def test_late_lookups_find_timed_ids_by_their_time_and_untimed_ones_only_in_an_older_log(tmp_path):
    """Lookups read only the second of the log that an id's time names; an id without a time is
    looked for in the whole log only where ids once had none."""
    router = Router(load_settings(), seed=0)
    path = str(tmp_path / "log.duckdb")
    store = Store(path, flush_interval=60)
    try:
        assert store.legacy_before == 0.0
        out = router.route_many([f"question {i}?" for i in range(5)], [RouteOptions()] * 5)
        store.add_decisions([(d, None, None) for d in out])
        store.flush().result(timeout=30)
        stepped_back = int((out[1].ts - 600.0) * 1e6)  # stamped before its decision: the clock was stepped back
        _, fut = store.add_feedback({**feedback_row(1, stepped_back), "decision_id": out[1].decision_id})
        fut.result(timeout=30)
        untimed = "f" * 32
        store.con.execute("INSERT INTO decisions (decision_id, ts, chosen) VALUES (?, now(), 'x')", [untimed])
        shifted = out[0].decision_id[:11] + ("0" if out[0].decision_id[10] != "0" else "1") + out[0].decision_id[12:]
        found = store.decisions([d.decision_id for d in out] + [untimed, shifted])
        assert set(found) == {d.decision_id for d in out}  # a new log holds no untimed ids: not searched
        assert found[out[1].decision_id]["applied_qualities"] == feedback_row(1, 0)["qualities"]
        assert found[out[2].decision_id]["applied_cost"] is None
    finally:
        store.close()
    with duckdb.connect(path) as con:  # as if the log were older than time-carrying ids
        con.execute("UPDATE meta SET value = ? WHERE key = 'timed_ids_since'", [repr(time.time() + 60)])
    store = Store(path, flush_interval=60)
    try:
        assert untimed in store.decisions([untimed])
        assert set(store.decisions([d.decision_id for d in out])) == {d.decision_id for d in out}
    finally:
        store.close()


def test_a_response_chain_is_read_newest_first_once_per_turn_and_cut_where_it_cycles(tmp_path):
    store = Store(str(tmp_path / "log.duckdb"), flush_interval=60)

    def turn(rid: str, parent: str | None) -> dict:
        return {"response_id": rid, "ts": time.time_ns() // 1000, "model": "mid", "parent": parent,
                "owner": "key:0", "items": f'[{{"role": "user", "content": "{rid}"}}]', "deployment": None,
                "response": None}

    try:
        for rid, parent in (("a", None), ("b", "a"), ("c", "b"), ("b", "a"),  # b logged twice counts once
                            ("x", "y"), ("y", "x")):  # a cycle, as damaged or hostile rows could make
            store.add_response(turn(rid, parent))
        store.add_response(turn("d", "c"), commit_now=True).result(timeout=30)
        assert [r["response_id"] for r in store.response_chain("d")] == ["d", "c", "b", "a"]
        assert store.response_chain("unknown") == []
        cycle = store.response_chain("x", max_turns=9)
        assert len(cycle) <= 10 and {r["response_id"] for r in cycle} == {"x", "y"}
    finally:
        store.close()


def test_expire_erases_older_prompts_and_turns_while_the_writer_appends(tmp_path):
    """Retention: prompts older than the cutoff are set to null (their decisions stay), older
    conversation turns are deleted, the rest is untouched, and appends committed meanwhile all land."""
    router = Router(load_settings(), seed=0, store_prompts=True)
    store = Store(str(tmp_path / "log.duckdb"), flush_interval=0.005)

    def route(n: int, tag: str):
        out = router.route_many([f"{tag} question {i}?" for i in range(n)], [RouteOptions()] * n)
        store.add_decisions([(d, None, None) for d in out])
        return out

    now_us = time.time_ns() // 1000
    day_us = 86_400 * 1_000_000
    try:
        old = route(5, "old")
        store.add_response({"response_id": "old", "ts": now_us - 10 * day_us, "model": "mid", "parent": None,
                            "owner": None, "items": "[]", "deployment": None, "response": None})
        store.flush().result(timeout=30)
        store.con.execute("UPDATE decisions SET ts = ts - INTERVAL 10 DAY")
        new = route(5, "new")
        store.add_response({"response_id": "new", "ts": now_us, "model": "mid", "parent": None, "owner": None,
                            "items": "[]", "deployment": None, "response": None}, commit_now=True).result(timeout=30)
        stop, appended = threading.Event(), []

        def append():
            while not stop.is_set():
                appended.extend(route(20, "busy"))
                time.sleep(0.001)

        writer = threading.Thread(target=append)
        writer.start()
        try:
            first = store.expire(time.time() - 5 * 86_400)
            again = [store.expire(time.time() - 5 * 86_400) for _ in range(5)]
        finally:
            stop.set()
            writer.join()
        store.flush().result(timeout=30)
        assert first == (5, 1) and again == [(0, 0)] * 5
        rows = {r["decision_id"]: r["prompt"] for r in store.query("SELECT decision_id, prompt FROM decisions").to_pylist()}
        assert all(rows[d.decision_id] is None for d in old)  # erased, the decisions kept
        assert all(rows[d.decision_id] == d.prompt for d in new + appended)
        assert len(rows) == 10 + len(appended)
        assert [r["response_id"] for r in store.query("SELECT response_id FROM responses").to_pylist()] == ["new"]
    finally:
        store.close()
