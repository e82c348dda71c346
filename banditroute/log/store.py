"""The DuckDB log's one writer: a writer thread, batched appends, group commit.

The tables and their rows are defined in :mod:`banditroute.log.schema`; the server and the simulator
both queue their rows here, so a simulated log and a server's log are the same tables.

Rows are queued by the event loop (decisions converted to Arrow a few hundred at a time) and
appended by one writer thread every ``flush_interval`` seconds in a single transaction (DuckDB
allows one writer, and a batched append costs little more than a single row's).
:meth:`Store.add_feedback` returns a future that resolves when the batch holding that row has
committed: the server acknowledges feedback only then (group commit), so an acknowledged feedback
survives a crash. Decisions are queued without waiting, and they reach the disk in the same or an
earlier batch than any feedback about them: feedback about a decision still queued commits together
with the queued decisions, other feedback commits alone, without waiting for them.

Storage faults fail closed. A commit that fails (a full disk, a read-only file system, an exception
anywhere in the writer's step) drops its batch, fails its future with :class:`StorageError` and puts
the store in the failed state (:attr:`Store.failure`): every later batch is dropped and failed too,
so no row written after a lost one can refer to it, until :meth:`Store.probe` succeeds in writing an
``events`` row. The writer thread survives any exception in a step, and :meth:`Store.probe` starts a
new one if it has died. The service stops answering while the store is failed and rebuilds its state
from the log once a probe succeeds (:mod:`banditroute.service.service`).

Some failures make DuckDB invalidate the database (a checkpoint that runs out of disk, an
out-of-memory error during a commit): the connection then refuses everything, whatever the cause
became. The probe then closes it and opens the file again, as a restart would; DuckDB replays its
write-ahead log, so every committed row is back. Only when that reopening itself meets a fatal error
does the process need a restart (:attr:`Store.fatal`).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import secrets
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from banditroute.core.ids import id_time
from banditroute.log.export import export_log
from banditroute.log.repair import wal_damage
from banditroute.log.schema import DUCK_TYPES, TABLES, ddl, decision_table

log = logging.getLogger("banditroute")

IDLE_CHECKPOINT_BYTES = 8 << 20  # log size at which the writer checkpoints when no feedback waits
LOOKUP_SLACK_S = 0.002  # seconds either side of the millisecond an id carries (its decision's ts, truncated)
# how much earlier than its decision a feedback row may be stamped, should the clock be stepped back between them
CLOCK_STEP_S = 3600.0
CONVERT_EVERY = 512  # decisions per Arrow conversion on the event loop: a short pause, pyarrow's fixed cost shared


class StorageError(Exception):
    """The log could not accept a batch: its rows were not written."""


class ExpirePutOff(StorageError):
    """:meth:`Store.expire` stopped short of room on the disk; ``erased``: the prompts and turns it had
    erased by then (those stay erased)."""

    def __init__(self, message: str, erased: tuple[int, int]):
        super().__init__(message)
        self.erased = erased


class LogOpenError(ValueError):
    """The log cannot be opened (a path that cannot be created, a read-only file system, a file that
    another process holds); the message is one line that names the path and, where DuckDB says, the
    process holding the lock."""


def prompt_hash_key(path: str, configured: str | None = None) -> bytes:
    """The deployment's secret for prompt hashes: ``configured`` if given, else the 32 random bytes
    kept in ``<path>.key`` (created with mode 0600 on first use); a fresh one for ``":memory:"``."""
    if configured:
        return configured.encode("utf-8")
    if path == ":memory:":
        return secrets.token_bytes(32)
    key_file = Path(path + ".key")
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = bytes.fromhex(key_file.read_text().strip())
        if len(key) < 16:
            raise LogOpenError(f"{key_file} holds no valid prompt hash key (64 hex digits expected)") from None
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return key


def one_line(err: Exception) -> str:
    """An error's message without DuckDB's kind prefix, on one line."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}" + (f" ({err.filename})" if err.filename else "")
    text = " ".join(str(err).split())
    for prefix in ("IO Error: ", "Permission Error: "):
        text = text.split(prefix, 1)[-1]
    return text


def _rows_in(queued: tuple[str, list]) -> int:
    """Rows in a queued ``(table, batch)``: decisions are queued as Arrow tables, the rest as rows."""
    name, batch = queued
    return sum(map(len, batch)) if name == "decisions" else len(batch)


def _is_fatal(err: BaseException) -> bool:
    """A DuckDB error after which the database refuses everything until it is opened again."""
    while err is not None:
        if isinstance(err, duckdb.FatalException) or "database has been invalidated" in str(err):
            return True
        err = err.__cause__
    return False


def _merged_spans(times: list[float], slack: float) -> list[tuple[float, float]]:
    """``[t - slack, t + slack]`` around each of the sorted ``times``, overlapping spans merged."""
    spans: list[list[float]] = []
    for t in times:
        if spans and t - slack <= spans[-1][1]:
            spans[-1][1] = t + slack
        else:
            spans.append([t - slack, t + slack])
    return [(a, b) for a, b in spans]


EXPIRE_ROWS = 10_000  # rows changed per transaction by Store.expire


def _utc_us(t: float) -> int:
    """Seconds since the epoch as the integer microseconds a ``make_timestamptz`` parameter takes."""
    return round(t * 1_000_000)


def _unnest(f: pa.Field) -> str:
    if f.type == pa.timestamp("us", tz="UTC"):  # bound as epoch microseconds: exact, whatever the TimeZone
        return "make_timestamptz(unnest(?::BIGINT[]))"
    return f"unnest(?::{DUCK_TYPES[f.type]}[])"


_INSERTS = {name: f"INSERT INTO {name} ({', '.join(schema.names)}) SELECT {', '.join(map(_unnest, schema))}"
            for name, schema in TABLES.items() if name != "decisions"}


def lower_thread_priority(niceness: int) -> None:
    """Raise the calling thread's nice value by ``niceness`` (Linux only, where nice values are per
    thread, ``setpriority(2)`` on the thread id; elsewhere a no-op, as is 0).

    A commit is a burst of CPU (converting rows, maintaining the ``decision_id`` indexes, DuckDB's
    worker threads), and on a machine whose cores are all busy the kernel would share them with the
    event loop, which then answers late. At a lower priority the writer takes the CPU the loop leaves;
    nothing waits on a decision's commit, and a feedback's commit waits in any case.
    """
    if niceness <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
    except OSError as err:  # a sandbox that forbids it: the writer runs at the loop's priority
        log.warning("could not lower the log writer's priority: %s", err)


def insert_rows(cur, name: str, rows: list[dict]) -> None:
    """Append row dicts to table ``name`` (feedback or events) in one statement, each column bound
    as one list parameter."""
    cur.execute(_INSERTS[name], [[r[col] for r in rows] for col in TABLES[name].names])


def write_batch(cur, rows: dict[str, list]) -> None:
    """Append one batch (table name -> Arrow tables for decisions, row dicts otherwise): one table's
    rows (feedback alone is the usual group commit) in one autocommit statement, more in one
    transaction.

    Feedback and events go in through :func:`insert_rows`, decisions as one Arrow table through the
    relational API (``from_arrow(t).insert_into("decisions")``). The choice is made for a busy event
    loop: every DuckDB call gives up the GIL and must win it back from the loop, waiting up to
    Python's switch interval each time, and one ``execute`` with list parameters makes fewer such
    calls than the relational API (``benchmarks/bench_store.py`` times both ways, with and without a
    busy thread).
    """
    filled = {name: batch for name, batch in rows.items() if batch}
    if len(filled) == 1 and "decisions" not in filled:
        insert_rows(cur, *filled.popitem())
        return
    if not filled:
        return
    cur.execute("BEGIN TRANSACTION")
    try:
        for name, batch in filled.items():
            if name == "decisions":
                cur.from_arrow(pa.concat_tables(batch)).insert_into(name)
            else:
                insert_rows(cur, name, batch)
        cur.execute("COMMIT")
    except Exception:
        try:
            cur.execute("ROLLBACK")
        except duckdb.Error:  # DuckDB already rolled back (an out-of-memory error does): report the cause
            pass
        raise


class Store:
    """The embedded log. Use from one event loop; the writer thread does all the writing.

    Parameters
    ----------
    path
        DuckDB file (created with its folder if missing); ``":memory:"`` for tests.
    flush_interval
        Seconds between commits of decisions; queued feedback is committed at once (with the queued
        decisions when it is about one of them). Each commit costs a few milliseconds whatever its size,
        so under load longer intervals cost less per decision; a crash can lose at most this much
        of decisions that have had no feedback yet (their later feedback then gets a 404).
    memory_limit
        DuckDB's memory limit (its default is 80% of the machine's RAM).
    group_commit
        Commit queued feedback at once (the server acknowledges feedback only when it is durable).
        The simulator turns it off: its rows wait for :meth:`flush`, and the writer appends them in
        one go.
    min_free_bytes
        A commit fails (and the store with it) while the log's file system has less free space than
        this: the service stops before the disk is full rather than when a write fails half-way,
        and a probe succeeds only once there is room again, so it does not flap on the last bytes.
    writer_niceness
        How much to lower the writer thread's scheduling priority (:func:`lower_thread_priority`);
        the server uses ``storage.writer_niceness``.
    """

    def __init__(self, path: str, flush_interval: float = 0.2, memory_limit: str = "128MB",
                 group_commit: bool = True, min_free_bytes: int = 0, writer_niceness: int = 0):
        self.path = path
        self.group_commit = group_commit
        self.min_free_bytes = int(min_free_bytes) if path != ":memory:" else 0
        self.writer_niceness = int(writer_niceness)
        # DuckDB checkpoints inside the commit that takes its log (WAL) past the threshold, and a
        # checkpoint holds that commit for tens of milliseconds or more: feedback acknowledgements
        # would wait. The writer checkpoints at idle moments instead (:meth:`_checkpoint_if_idle`);
        # DuckDB's own threshold stays as a backstop, four times higher than its default.
        self._duckdb_config = {"memory_limit": memory_limit, "checkpoint_threshold": "64MiB"}
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.con = self._open()
        except (OSError, duckdb.Error) as err:
            hint = ""
            if wal_damage(err) is not None:
                hint = (f"; `banditroute repair --db {path}` keeps the damaged write-ahead log aside and recovers "
                        "every transaction before the damage")
            raise LogOpenError(f"cannot open the log {path}: {one_line(err)}{hint}") from None
        self._wal = path + ".wal" if path != ":memory:" else None
        self.legacy_before = self._timed_ids_since()
        self._drop_indexes(path)
        self.flush_interval = float(flush_interval)
        # pyarrow imports pandas on its first conversion from numpy, which takes a while: do that
        # here, not on the event loop in the middle of the first requests.
        decision_table([])
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._rows: dict[str, list] = {name: [] for name in TABLES}  # Arrow tables for decisions, dicts otherwise
        self._decisions: list[tuple] = []  # decisions not yet converted to Arrow
        # Ids of the queued decisions: feedback about one of them makes the next commit take them along
        # (a decision is never logged after feedback about it); other feedback commits alone.
        self._queued_ids: set[str] = set()
        self._take_decisions = False  # the next commit writes the queued decisions too
        self._decisions_due = time.monotonic() + float(flush_interval)
        self._future = concurrent.futures.Future()
        self._stop = False
        self.seq = self._logged_seq(self.con)
        self.committed_seq = self.seq
        self.last_commit_seconds = 0.0
        self.checkpoints = 0
        self.failure: str | None = None  # why the last commit failed, until a probe succeeds
        self.failures = 0  # commits that failed since the store opened
        self.invalidated = False  # DuckDB invalidated the database: the next probe opens it again
        self.reopens = 0  # times the database was opened again after DuckDB invalidated it
        # why the database could not be opened again in this process: only a restart can recover
        self.fatal: str | None = None
        self.on_failure = None  # called (from the writer thread) with the error of each failed commit
        self._probes: list[concurrent.futures.Future] = []
        self._cur = self.con.cursor()  # the writer thread's
        self._thread = self._start_writer()

    def _open(self) -> duckdb.DuckDBPyConnection:
        """A connection to the log's file with every table in place (created where missing)."""
        con = duckdb.connect(self.path, config=self._duckdb_config)
        try:
            for name, schema in TABLES.items():
                for statement in ddl(name, schema):
                    con.execute(statement)
        except BaseException:
            con.close()
            raise
        return con

    def _reopen(self) -> None:
        """Close the invalidated database and open it again (writer thread).

        Closing the connection closes every cursor made from it, readers' included (a read under way
        fails), and with the last of them DuckDB lets go of the invalidated database: the next
        ``connect`` reads the file afresh and replays its write-ahead log. Should DuckDB hand back
        the invalidated database still, the error says so and :attr:`fatal` keeps it.
        """
        self.con.close()
        self.con = self._open()
        self._cur = self.con.cursor()
        self.invalidated = False
        self.reopens += 1
        log.warning("the log's database was opened again after DuckDB invalidated it")

    def _timed_ids_since(self) -> float:
        """The time before which the log may hold decisions whose ids carry no time: 0 for a log that
        never had any, else when this version first opened it (kept in the ``meta`` table)."""
        self.con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR, value VARCHAR)")
        row = self.con.execute("SELECT value FROM meta WHERE key = 'timed_ids_since'").fetchone()
        if row is not None:
            return float(row[0])
        logged = self.con.execute("SELECT count(*) FROM (SELECT 1 FROM decisions LIMIT 1)").fetchone()[0]
        since = time.time() if logged else 0.0
        self.con.execute("INSERT INTO meta VALUES ('timed_ids_since', ?)", [repr(since)])
        return since

    def _drop_indexes(self, path: str) -> None:
        """Drop the ART indexes earlier versions kept on ``decision_id``.

        An ART index lives in memory and grows with every row: past about a million decisions it
        outgrew the log's memory limit and every commit failed. Decisions are now found by the time
        their id carries (:meth:`decisions`).
        """
        dropped = [name for (name,) in self.con.execute(
            "SELECT index_name FROM duckdb_indexes() WHERE index_name IN "
            "('decisions_decision_id', 'feedback_decision_id', 'feedback_idempotency')").fetchall()]
        for name in dropped:
            self.con.execute(f"DROP INDEX {name}")
        if dropped:
            log.info("dropped the in-memory indexes %s of %s: decisions are found by the time their id "
                     "carries, and memory stays bounded however long the log grows", ", ".join(dropped), path)

    @staticmethod
    def _logged_seq(cur) -> int:
        return int(cur.execute("SELECT coalesce(max(seq), 0) FROM feedback").fetchone()[0])

    def _start_writer(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="banditroute-writer", daemon=True)
        thread.start()
        return thread

    # -- queueing (event loop) ---------------------------------------------------------------------
    def _queue(self, table: str, row: dict) -> concurrent.futures.Future:
        with self._lock:
            self._rows[table].append(row)
            return self._future

    def add_decisions(self, items: list[tuple]) -> None:
        """Queue ``(decision, user, metadata)`` items.

        They are converted to Arrow :data:`CONVERT_EVERY` at a time on the caller's thread, which
        spreads pyarrow's fixed cost per call over many rows and never has the writer hold the GIL
        for long; the writer converts the remainder when it commits them. Conversion happens under
        the queue lock, so a commit that takes the queued decisions takes every one queued before it.
        """
        with self._lock:
            self._decisions += items
            self._queued_ids.update(d.decision_id for d, _, _ in items)
            if len(self._decisions) >= CONVERT_EVERY:
                self._rows["decisions"].append(decision_table(self._decisions))
                self._decisions = []

    def add_feedback(self, row: dict, commit_now: bool = True) -> tuple[int, concurrent.futures.Future]:
        """Queue a feedback row; returns its ``seq`` and the future of its commit (due at once, or with the
        next flush interval when not ``commit_now``)."""
        with self._lock:
            self.seq += 1
            row["seq"] = self.seq
            self._rows["feedback"].append(row)
            if row["decision_id"] in self._queued_ids:
                self._take_decisions = True
            fut = self._future
        if self.group_commit and commit_now:
            self._wake.set()
        return self.seq, fut

    def add_event(self, event: dict) -> concurrent.futures.Future:
        fut = self._queue("events", {"ts": time.time_ns() // 1000, "seq": self.seq, "event": json.dumps(event)})
        self._wake.set()
        return fut

    def add_call(self, row: dict) -> concurrent.futures.Future:
        """Queue a gateway call row (:data:`~banditroute.log.schema.CALL_SCHEMA`), committed with the next group."""
        return self._queue("calls", row)

    def add_response(self, row: dict, commit_now: bool = False) -> concurrent.futures.Future:
        """Queue a ``responses`` row (:data:`~banditroute.log.schema.RESPONSE_SCHEMA`); the future of its
        commit, due at once when ``commit_now`` (a client is told it is stored), else with the next group."""
        fut = self._queue("responses", row)
        if commit_now:
            self._wake.set()
        return fut

    def flush(self) -> concurrent.futures.Future:
        """A future that resolves once everything queued so far has committed."""
        with self._lock:
            self._take_decisions = True
            fut = self._future
        self._wake.set()
        return fut

    @property
    def pending_rows(self) -> int:
        with self._lock:
            return sum(map(_rows_in, self._rows.items())) + len(self._decisions)

    # -- writer thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        lower_thread_priority(self.writer_niceness)
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                stop = self._step()
            except Exception as err:  # supervision: a step's bug must not end the writer
                log.exception("log writer step failed")
                self._failed(err)
                stop = self._stop
            if stop:
                return

    def _take(self) -> tuple[dict, concurrent.futures.Future, int, bool, Exception | None]:
        """The queued batch, its future, the feedback position it reaches, whether to stop, and the
        error of converting its decisions (if any), swapped for an empty queue under the lock."""
        error = None
        with self._lock:
            stop = self._stop
            rows, fut = self._rows, self._future
            self._rows, self._future = {name: [] for name in TABLES}, concurrent.futures.Future()
            seq = self.seq
            if stop or self._take_decisions or time.monotonic() >= self._decisions_due:
                decisions, self._decisions = self._decisions, []
                self._queued_ids = set()
                self._take_decisions = False
                self._decisions_due = time.monotonic() + self.flush_interval
                if decisions:
                    try:
                        rows["decisions"].append(decision_table(decisions))
                    except Exception as err:  # noqa: BLE001 - fails this batch, as a failed write would
                        error = err
            else:  # feedback about decisions already logged: it commits without the queued ones
                self._rows["decisions"], rows["decisions"] = rows["decisions"], []
        return rows, fut, seq, stop, error

    def _step(self) -> bool:
        """Commit one batch (or fail it), then answer the waiting probes; returns whether to stop."""
        rows, fut, seq, stop, error = self._take()
        self._commit(rows, fut, seq, error)
        probes = self._take_probes()
        if probes and self.failure is not None:  # drop what was queued while failed, then probe
            self._commit(*self._take()[:3], StorageError("dropped: queued while the log was failing"))
        for probe in probes:
            self._probe(probe)
        return stop

    def _commit(self, rows: dict, fut: concurrent.futures.Future, seq: int, error: Exception | None) -> None:
        """Write ``rows`` and resolve ``fut`` with ``seq``, or fail it (and the store) on any error."""
        cur = self._cur
        try:
            if error is not None:
                raise error
            if any(rows.values()):
                if self.failure is not None:
                    raise StorageError(f"the log is not accepting writes: {self.failure}")
                self._check_room()
                t0 = time.perf_counter()
                write_batch(cur, rows)
                self.last_commit_seconds = time.perf_counter() - t0
                self.committed_seq = seq
            fut.set_result(seq)
        except Exception as err:  # noqa: BLE001 - the waiting requests must hear of it
            # the store is failed before anyone hears of it: whoever a waiter answers sees it failed
            if not isinstance(err, StorageError) or self.failure is None:
                self._failed(err)
            if not fut.done():
                fut.set_exception(err if isinstance(err, StorageError) else StorageError(f"log write failed: {err}"))
        else:
            self._checkpoint_if_idle()

    def _check_room(self) -> None:
        if self.min_free_bytes:
            free = shutil.disk_usage(Path(self.path).parent).free
            if free < self.min_free_bytes:
                raise StorageError(f"{free} bytes free beside {self.path}, below storage.min_free_bytes "
                                   f"({self.min_free_bytes})")

    def _take_probes(self) -> list[concurrent.futures.Future]:
        with self._lock:
            probes, self._probes = self._probes, []
        return probes

    def _note_failure(self, err: Exception) -> bool:
        """Keep why the log fails, and whether DuckDB invalidated the database (:attr:`invalidated`);
        True if it did."""
        self.failure = str(err) or type(err).__name__
        if not _is_fatal(err):
            return False
        self.invalidated = True
        return True

    def _failed(self, err: Exception) -> None:
        self.failures += 1
        if self.failure is None:
            log.error("the log stopped accepting writes: %s", err)
        if self._note_failure(err):
            log.error("DuckDB invalidated the log's database; the next probe opens it again")
        if self.on_failure is not None:
            self.on_failure(err)

    def _probe(self, fut: concurrent.futures.Future) -> None:
        """Write one ``events`` row saying the log works again (first opening the database again if DuckDB
        invalidated it); on success leave the failed state and take the feedback position back to the log's."""
        try:
            if self.invalidated:
                try:
                    self._reopen()
                except Exception as err:
                    if _is_fatal(err):  # DuckDB kept the invalidated database: nothing but a restart helps
                        self.fatal = str(err) or type(err).__name__
                    raise
            cur = self._cur
            self._check_room()
            event = {"storage": "writable", "after": self.failure}
            insert_rows(cur, "events", [{"ts": time.time_ns() // 1000, "seq": self._logged_seq(cur),
                                         "event": json.dumps(event)}])
        except Exception as err:  # noqa: BLE001 - still failing: say so to the prober
            self._note_failure(err)
            fut.set_result(False)
            return
        with self._lock:
            self.seq = self.committed_seq = self._logged_seq(cur)
            self.failure = self.fatal = None
        fut.set_result(True)

    def probe(self) -> concurrent.futures.Future:
        """A future that resolves to whether the log accepts writes again (after a failure: everything
        queued before is dropped, and the feedback position is the log's). Restarts a dead writer."""
        fut = concurrent.futures.Future()
        with self._lock:
            self._probes.append(fut)
            self._take_decisions = True
        if not self._thread.is_alive() and not self._stop:
            log.error("the log writer thread had died; starting a new one")
            self._thread = self._start_writer()
        self._wake.set()
        return fut

    @property
    def writer_alive(self) -> bool:
        return self._thread.is_alive()

    def _checkpoint_if_idle(self) -> None:
        """Checkpoint when the log has grown past :data:`IDLE_CHECKPOINT_BYTES` and no feedback is
        queued, so that the checkpoint's pause falls on decisions (which nobody waits for) rather than
        on a feedback acknowledgement. Feedback that arrives meanwhile waits for it, as it would for
        DuckDB's own checkpoint; under continuous feedback DuckDB's threshold still applies.

        A checkpoint writes the WAL's rows into the database file, and one that runs out of disk makes
        DuckDB invalidate the database: it is put off while the free space is under the WAL's size plus
        ``min_free_bytes`` (commits stop at ``min_free_bytes`` in any case), and should it fail with a
        fatal error all the same, the store fails at once (:meth:`_failed`), not at the next commit.
        """
        if self._wal is None or not os.path.exists(self._wal):
            return
        wal = os.path.getsize(self._wal)
        if wal < IDLE_CHECKPOINT_BYTES:
            return
        with self._lock:
            if self._rows["feedback"]:
                return
        if shutil.disk_usage(Path(self.path).parent).free < wal + self.min_free_bytes:
            log.debug("idle checkpoint put off: less free space than the WAL's %d bytes", wal)
            return
        try:
            self._cur.execute("CHECKPOINT")
            self.checkpoints += 1
        except duckdb.Error as err:
            if _is_fatal(err):
                self._failed(err)
            else:  # a read was running (a checkpoint needs none); the next idle moment will do
                log.debug("idle checkpoint skipped: %s", err)

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the database."""
        with self._lock:
            self._stop = True
        self._wake.set()
        self._thread.join()
        self.con.close()  # and the writer's cursor with it
        self.con = None  # let the binding object go now rather than at interpreter exit

    # -- reads (event loop, through their own cursor) ------------------------------------------------
    @contextmanager
    def _cursor(self):
        """A cursor of its own for a read or an erasure beside the writer's, closed after use."""
        cur = self.con.cursor()
        try:
            yield cur
        finally:
            cur.close()

    def query(self, sql: str, params=None) -> pa.Table:
        with self._cursor() as cur:
            return cur.sql(sql, params=params or None).to_arrow_table()

    def response_chain(self, response_id: str, max_turns: int = 10_000) -> list[dict]:
        """The logged ``responses`` rows of ``response_id`` and of the responses it continued (``ts``: when
        each was first logged, in seconds since the epoch), newest first
        (one recursive query; empty when it is not logged; rows logged twice count once). A chain is cut at ``max_turns`` rows, so a
        cycle in hostile or damaged rows cannot run forever."""
        return self.query(
            "WITH RECURSIVE chain(response_id, model, deployment, parent, owner, items, depth) AS ("
            " SELECT response_id, model, deployment, parent, owner, items, 0 FROM responses WHERE response_id = ?"
            " UNION SELECT r.response_id, r.model, r.deployment, r.parent, r.owner, r.items, c.depth + 1"
            " FROM responses r JOIN chain c ON r.response_id = c.parent WHERE c.depth < ?)"
            " SELECT response_id, model, deployment, parent, owner, items,"
            " (SELECT min(epoch_us(r.ts)) FROM responses r WHERE r.response_id = c.response_id) / 1e6 AS ts"
            " FROM chain c ORDER BY depth",
            [response_id, max_turns]).to_pylist()

    def response_row(self, response_id: str) -> dict | None:
        """The first logged ``responses`` row of ``response_id``: ``model``, ``deployment``, ``parent``,
        ``owner``, ``items`` (a gateway-made turn; null when its provider keeps it), ``response`` (its
        object's JSON; null when its provider keeps it, or in a row logged before objects were) and ``ts``
        (seconds since the epoch); None when it is not logged."""
        rows = self.query("SELECT model, deployment, parent, owner, items, response, epoch_us(ts) / 1e6 AS ts"
                          " FROM responses WHERE response_id = ? ORDER BY ts LIMIT 1", [response_id]).to_pylist()
        return rows[0] if rows else None

    def expire(self, before: float) -> tuple[int, int]:
        """Erase what clients wrote before ``before`` (seconds since the epoch): the prompt text of older
        decisions (set to null; the rest of their row stays) and older ``responses`` rows (kept
        conversations). Returns how many prompts and turns were erased. Runs on its own cursor, beside
        the writer's appends (they touch other rows, so DuckDB lets both commit).

        Rows are changed :data:`EXPIRE_ROWS` at a time, each batch its own transaction, and only while
        the disk has twice ``min_free_bytes`` free: an update writes its rows to the write-ahead log, and
        one that ran out of disk could make DuckDB invalidate the database. Short of room the pass stops
        with :class:`ExpirePutOff` (what it erased so far stays erased, and the error says how much) and
        the next pass goes on."""
        us = _utc_us(before)
        done = {"decisions": 0, "responses": 0}
        statements = {
            "decisions": "UPDATE decisions SET prompt = NULL WHERE rowid IN (SELECT rowid FROM decisions"
                         " WHERE prompt IS NOT NULL AND epoch_us(ts) < $before LIMIT $n)",
            "responses": "DELETE FROM responses WHERE rowid IN (SELECT rowid FROM responses"
                         " WHERE epoch_us(ts) < $before LIMIT $n)",
        }
        with self._cursor() as cur:
            for table, sql in statements.items():
                while True:
                    if self.min_free_bytes:
                        free = shutil.disk_usage(Path(self.path).parent).free
                        if free < 2 * self.min_free_bytes:
                            raise ExpirePutOff(f"erasing old {table} rows put off: {free} bytes free beside "
                                               f"{self.path}, under twice storage.min_free_bytes",
                                               (done["decisions"], done["responses"]))
                    n = cur.execute(sql, {"before": us, "n": EXPIRE_ROWS}).fetchone()[0]
                    done[table] += n
                    if n < EXPIRE_ROWS:
                        break
        return done["decisions"], done["responses"]

    def delete_response(self, response_id: str) -> int:
        """Delete the logged ``responses`` rows of ``response_id`` (a client deleted it); how many there were."""
        with self._cursor() as cur:
            return int(cur.execute("DELETE FROM responses WHERE response_id = ?", [response_id]).fetchone()[0])

    def decisions(self, decision_ids: list[str]) -> dict[str, dict]:
        """Logged decisions by id, for feedback that arrives after the in-memory pending window.

        One round of queries serves any number of ids, so the service looks up together all the late
        feedback that waits at the same time. There is no index on ``decision_id``: each id's own time
        (:func:`~banditroute.core.ids.id_time`) restricts the decision to a few milliseconds of the
        ``ts`` column and its feedback to what came after it (less :data:`CLOCK_STEP_S`), and DuckDB's
        min-max zone maps skip the row groups outside. Ids without a time are looked for in the whole
        log, only in a log written before ids had one (:attr:`legacy_before`); in any other log they
        are unknown.

        Each row holds what learning needs (:meth:`Router.restore`): ``decision_id``,
        ``feature_version``, ``x``, ``input_tokens``, ``chosen``, and what earlier feedback applied:
        ``applied_cost`` (null when none), ``applied_qualities`` and ``applied_weights`` (its signals),
        ``applied_keys`` (its idempotency keys with their payloads), and for a budget's correction ``ts``,
        ``budget``, ``tenant`` and ``charged`` (the chosen model's predicted cost). The other list columns
        (eligible models, probabilities, predictions) are left out: fetching list values is most of a
        lookup's work.
        """
        timed, untimed = {}, []
        for i in dict.fromkeys(decision_ids):
            t = id_time(i)
            if t is not None and t >= self.legacy_before:
                timed[i] = t
            elif self.legacy_before > 0:
                untimed.append(i)
        found = {}
        if timed:
            spans = _merged_spans(sorted(timed.values()), LOOKUP_SLACK_S)
            where = " OR ".join("d.ts BETWEEN make_timestamptz(?::BIGINT) AND make_timestamptz(?::BIGINT)" for _ in spans)
            found |= self._lookup(list(timed), f"({where})", [_utc_us(t) for span in spans for t in span],
                                  "f.ts >= make_timestamptz(?::BIGINT)", [_utc_us(spans[0][0] - CLOCK_STEP_S)])
        if untimed:
            found |= self._lookup(untimed, "TRUE", [], "TRUE", [])
        return found

    def _lookup(self, ids: list[str], decisions_where: str, decisions_params: list, feedback_where: str,
                feedback_params: list) -> dict[str, dict]:
        """Two queries, each a filter with the ids as an ``IN`` list (cheaper here than a join): the
        decisions, then what feedback already applied to them."""
        cur = self.con.cursor()
        try:  # execute and fetchall: fewer GIL round trips than the relational API, which a busy loop slows
            cur.execute(
                "SELECT d.decision_id, d.feature_version, d.x, d.input_tokens, d.chosen, d.ts, d.budget, d.tenant, "
                "d.pred_cost[list_position(d.eligible, d.chosen)] AS charged FROM decisions d "
                f"WHERE {decisions_where} AND d.decision_id IN (SELECT unnest(?::VARCHAR[]))",
                [*decisions_params, ids],
            )
            names = [c[0] for c in cur.description]
            found = {row[0]: dict(zip(names, row)) for row in cur.fetchall()}
            if not found:
                return found
            cur.execute(
                "SELECT decision_id, max(cost_usd) AS applied_cost, "
                "flatten(list(qualities ORDER BY seq)) AS applied_qualities, "
                "flatten(list(weights ORDER BY seq)) AS applied_weights, "
                "list({'key': idempotency_key, 'qualities': qualities, 'weights': weights, 'reported': reported}) "
                "FILTER (WHERE idempotency_key IS NOT NULL) AS applied_keys FROM feedback f "
                f"WHERE {feedback_where} AND f.decision_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY decision_id",
                [*feedback_params, list(found)],
            )
            names = [c[0] for c in cur.description]
            applied = {row[0]: dict(zip(names[1:], row[1:])) for row in cur.fetchall()}
            none = dict.fromkeys(names[1:])
            return {i: {**row, **applied.get(i, none)} for i, row in found.items()}
        finally:
            cur.close()

    def feedback_since(self, seq: int, batch_rows: int = 50_000):
        """Feedback with ``seq`` greater than ``seq``, joined with its decision's features, in order."""
        cur = self.con.cursor()
        try:
            reader = cur.sql(
                "SELECT f.seq, f.decision_id, f.qualities, f.weights, f.cost_usd, d.feature_version, d.x, d.input_tokens, "
                "d.chosen, d.propensity "
                "FROM feedback f JOIN decisions d USING (decision_id) WHERE f.seq > ? ORDER BY f.seq",
                params=[seq],
            ).to_arrow_reader(batch_rows)
            for batch in reader:
                yield from batch.to_pylist()
        finally:
            cur.close()

    def export(self, out, fmt: str | None = None) -> int:
        """Write the decision log joined with its feedback (:func:`~banditroute.log.export.export_log`)
        to a path, as Parquet or JSON Lines."""
        cur = self.con.cursor()
        try:
            return export_log(cur, out, fmt)
        finally:
            cur.close()
