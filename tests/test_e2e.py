"""End to end: a real `banditroute serve` process, restarts, and kill -9 while requests are in flight."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb
import numpy as np
import pytest

from banditroute.config import load_settings
from banditroute.core.features import Featurizer
from banditroute.core.state import load_state
from banditroute.log.store import Store
from banditroute.service.service import Service

PROMPTS = ["Write a Python function that reverses a list", "How many apples are left after 3 + 4?",
           "Which planet is largest?\nA) Mars\nB) Jupiter\nAnswer:", "Tell me a story about a dragon"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp: Path, snapshot_every: int, body_timeout_s: float = 10.0, token: str | None = None,
                 extra: str = "") -> Path:
    text = (Path(__import__("banditroute").__file__).parent / "data" / "pool.example.toml").read_text() + extra
    text += f"\n[storage]\nflush_interval_ms = 20\nsnapshot_every = {snapshot_every}\n"
    text += f"\n[server]\nbody_timeout_s = {body_timeout_s}\n" + (f'token = "{token}"\n' if token else "")
    path = tmp / "config.toml"
    path.write_text(text)
    return path


STARTED: list[Server] = []


@pytest.fixture(autouse=True)
def _no_server_outlives_its_test():
    """A failing test must not leave its server running (and loading the machine for the next ones)."""
    yield
    while STARTED:
        proc = STARTED.pop().proc
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)


class Server:
    def __init__(self, tmp: Path, snapshot_every: int = 1000, body_timeout_s: float = 10.0, token: str | None = None,
                 extra: str = ""):
        self.db = tmp / "router.duckdb"
        self.config = write_config(tmp, snapshot_every, body_timeout_s, token, extra)
        self.port = free_port()
        self.proc = None
        self.log = tmp / "server.log"  # a file, not a pipe: a pipe nobody reads fills and blocks the server

    def start(self) -> Server:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "banditroute.cli.main", "serve", "--config", str(self.config), "--db", str(self.db),
             "--port", str(self.port)], env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))
        STARTED.append(self)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                self.get("/healthz")
                return self
            except (urllib.error.URLError, ConnectionError):
                assert self.proc.poll() is None, self.log.read_text()
                time.sleep(0.1)
        raise TimeoutError("server did not start")

    def stop(self, sig=signal.SIGTERM) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)

    def call(self, method: str, path: str, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def get(self, path):
        return self.call("GET", path)

    def post(self, path, body):
        return self.call("POST", path, body)


def test_restart_keeps_learned_state_and_logs(tmp_path):
    srv = Server(tmp_path).start()
    ids = []
    for i in range(40):
        r = srv.post("/route", {"prompt": PROMPTS[i % 4] + f" #{i}"})
        ids.append(r["decision_id"])
        srv.post("/feedback", {"decision_id": r["decision_id"], "idempotency_key": f"k{i}", "cost_usd": 0.001,
                               "signals": [{"source": "judge", "kind": "score", "value": 1 + i % 10, "scale": "1-10"}]})
    probe = srv.post("/route", {"prompt": PROMPTS[0]})
    models_before = srv.get("/models")
    srv.stop()

    srv.start()
    assert srv.get("/policy")["feedback_seq"] == 40
    assert srv.get("/models") == models_before
    again = srv.post("/route", {"prompt": PROMPTS[0]})
    for m, s in probe["scores"].items():  # posterior means are deterministic given the state
        assert abs(again["scores"][m]["quality"] - s["quality"]) < 1e-12
        assert abs(again["scores"][m]["cost_usd"] - s["cost_usd"]) < 1e-15
    late = srv.post("/feedback", {"decision_id": ids[0], "signals": [{"source": "user", "kind": "thumbs", "value": 1}]})
    assert late["late"] and late["applied_signals"] == 1
    dup = srv.post("/feedback", {"decision_id": ids[1], "idempotency_key": "k1", "cost_usd": 0.001,
                                 "signals": [{"source": "judge", "kind": "score", "value": 2, "scale": "1-10"}]})
    assert dup["duplicate"]  # the same payload again, after a restart: recognised from the log
    srv.stop()
    out = tmp_path / "log.parquet"
    subprocess.run([sys.executable, "-m", "banditroute.cli.main", "export", "--db", str(srv.db), "--out", str(out)],
                   check=True, capture_output=True)
    import pyarrow.parquet as pq

    t = pq.read_table(out)
    assert t.num_rows == 42 and sum(v is not None for v in t.column("quality").to_pylist()) == 40


def _hammer(srv: Server, worker: int, acked: list, stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        key = f"w{worker}-{i}"
        try:
            r = srv.post("/route", {"prompt": PROMPTS[i % 4] + f" {worker}/{i}"})
            srv.post("/feedback", {"decision_id": r["decision_id"], "idempotency_key": key, "cost_usd": 0.002,
                                   "signals": [{"source": "user", "kind": "quality", "value": (i % 5) / 4}]})
            acked.append(key)
        except (urllib.error.URLError, ConnectionError, OSError):
            return


def test_kill_9_loses_no_acknowledged_feedback_and_recovers_the_logged_state(tmp_path):
    srv = Server(tmp_path, snapshot_every=50).start()
    acked: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_hammer, args=(srv, w, acked, stop)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120.0  # past two snapshots (every 50 feedbacks), however slow the machine
    while len(acked) <= 120 and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.stop(signal.SIGKILL)  # in the middle of requests
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) > 100

    con = duckdb.connect(str(srv.db))  # opening replays DuckDB's WAL, as a restart does
    stored = {r[0] for r in con.execute("SELECT idempotency_key FROM feedback").fetchall()}
    orphans = con.execute("SELECT count(*) FROM feedback ANTI JOIN decisions USING (decision_id)").fetchone()[0]
    con.close()
    assert set(acked) <= stored
    assert orphans == 0  # no decision reaches the log after feedback about it

    srv.start()  # recovers from the last snapshot plus the log after it
    assert srv.get("/policy")["feedback_seq"] == len(stored)
    srv.stop()  # a graceful stop writes the recovered state as the snapshot
    recovered = load_state(tmp_path / "router.duckdb.snapshot")

    fresh_db = tmp_path / "copy.duckdb"
    shutil.copy(srv.db, fresh_db)  # no snapshot beside the copy: rebuilt from the log alone
    store = Store(str(fresh_db))
    service = Service(load_settings(), store)
    service.recover()
    rebuilt = service.router.policy
    store.close()
    np.testing.assert_allclose(recovered.quality.A_inv, rebuilt.quality.A_inv, rtol=1e-12, atol=1e-15)
    # theta includes the pooled fit, whose floating-point sums differ in their last bits between the two paths
    np.testing.assert_allclose(recovered.quality.theta, rebuilt.quality.theta, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(recovered.quality_observations, rebuilt.quality_observations)
    f = Featurizer()
    X, tokens = f.transform_many(PROMPTS), [f.input_tokens(p) for p in PROMPTS]
    np.testing.assert_allclose(recovered.cost_model.predict(X, tokens), rebuilt.cost_model.predict(X, tokens),
                               rtol=1e-12)


def test_readme_python_client_runs_against_a_real_server(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("### Python client", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    srv = Server(tmp_path).start()
    try:
        out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=60, check=False,
                             env={**os.environ, "BANDITROUTE_URL": f"http://127.0.0.1:{srv.port}"})
        assert out.returncode == 0, out.stderr
        model, propensity = out.stdout.split()
        assert model in load_settings().names and 0 < float(propensity) <= 1
        assert srv.get("/policy")["feedback_seq"] == 1
    finally:
        srv.stop()


def test_readme_curl_examples_run_against_a_real_server(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Use it", 1)[1].split("### Python client", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```bash\n")[1:]]
    assert len(blocks) == 2
    srv = Server(tmp_path).start()
    try:
        script = "\n".join(blocks).replace("localhost:8080", f"127.0.0.1:{srv.port}")
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        route = json.loads((tmp_path / "route.json").read_text())
        first, end = json.JSONDecoder().raw_decode(out.stdout)
        feedback = json.loads(out.stdout[end:])
        assert first == route
        assert feedback["decision_id"] == route["decision_id"] and feedback["applied_signals"] == 2
    finally:
        srv.stop()


def test_slow_bodies_are_timed_out_while_other_clients_are_served(tmp_path):
    """A thousand connections that send headers and half a body, then nothing: each gets a 408 with a
    JSON body and is closed after server.body_timeout_s, and a normal client is served meanwhile."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the server inherits it
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    srv = Server(tmp_path, body_timeout_s=1.0).start()
    try:
        slow = []
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(b"POST /route HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"prompt\": ")
            slow.append(s)
        t0 = time.monotonic()
        assert srv.post("/route", {"prompt": "I am not slow"})["model"]
        assert time.monotonic() - t0 < 1.0
        answers = []
        for s in slow:
            s.settimeout(10)
            data = b""
            while chunk := s.recv(4096):  # until the server closes the connection
                data += chunk
            answers.append(data)
            s.close()
        assert time.monotonic() - t0 < 30
        assert all(a.startswith(b"HTTP/1.1 408") and b'"error":"request_timeout"' in a for a in answers)
    finally:
        srv.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_request_aiohttp_cannot_parse_is_a_json_400_and_one_info_line(tmp_path):
    """A malformed request line and a bad Content-Length: 400 with the service's JSON error body, the
    connection closed, and the log says so in one INFO line per request, with no traceback; the server
    goes on serving."""
    srv = Server(tmp_path).start()
    try:
        for raw in (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", srv.port)) as s:
                s.settimeout(10)
                s.sendall(raw)
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.split(b" ")[1] == b"400", data
            assert b"content-type: application/json" in head.lower(), data
            error = json.loads(body)
            assert error["error"] == "bad_request" and error["message"].startswith("malformed HTTP request: "), error
        assert srv.get("/healthz")["status"] == "ok"
        text = srv.log.read_text()
        assert text.count("INFO aiohttp.server: Error handling request") == 2, text
        assert "Traceback" not in text and "ERROR" not in text
        assert all(re.match(r"\d{4}-\d\d-\d\d ", line) for line in text.splitlines()), text  # one line each
    finally:
        srv.stop()


def test_a_budget_keeps_its_spend_and_pace_across_kill_9(tmp_path):
    budget = '\n[[budgets]]\nname = "daily"\ntenant = "user"\nperiod = "day"\nusd = 0.5\n'
    srv = Server(tmp_path, extra=budget).start()
    for i in range(30):
        r = srv.post("/route", {"prompt": PROMPTS[i % 4] + f" #{i}", "user": "acme"})
        assert (r["budget"], r["tenant"]) == ("daily", "acme")
        srv.post("/feedback", {"decision_id": r["decision_id"], "cost_usd": 0.0005 * (1 + i % 3)})
    before = srv.get("/budgets")["budgets"]
    srv.stop(signal.SIGKILL)
    srv.start()
    after = srv.get("/budgets")["budgets"]
    assert len(after) == 1 and after[0]["tenant"] == "acme" and after[0]["requests"] == 30
    assert abs(after[0]["spent_usd"] - before[0]["spent_usd"]) < 1e-12
    assert abs(after[0]["spent_usd"] - sum(0.0005 * (1 + i % 3) for i in range(30))) < 1e-12
    assert abs(after[0]["cost_preference"] - before[0]["cost_preference"]) < 1e-12
    srv.stop()


def test_a_write_ahead_log_damaged_in_the_middle_is_repaired_keeping_every_transaction_before_the_damage(tmp_path):
    """kill -9, then one byte of the WAL flipped half-way: DuckDB refuses the whole log, and ``serve``
    says so in one line naming ``banditroute repair``. The repair keeps the damaged WAL aside, recovers
    the transactions before the damage (a prefix of the feedback, none invented), sets the snapshot
    aside, and the server starts again with its state rebuilt from what the log holds."""
    srv = Server(tmp_path, snapshot_every=50).start()
    for i in range(120):
        r = srv.post("/route", {"prompt": PROMPTS[i % 4] + f" #{i}"})
        srv.post("/feedback", {"decision_id": r["decision_id"], "idempotency_key": f"k{i}", "cost_usd": 0.001,
                               "signals": [{"source": "user", "kind": "thumbs", "value": i % 3 != 0}]})
    srv.stop(signal.SIGKILL)
    wal = Path(str(srv.db) + ".wal")
    assert wal.stat().st_size > 100_000 and Path(str(srv.db) + ".snapshot").exists()
    copy = tmp_path / "copy.duckdb"
    shutil.copy(srv.db, copy)
    shutil.copy(wal, str(copy) + ".wal")
    con = duckdb.connect(str(copy))
    before = {k: v for k, v in con.execute("SELECT idempotency_key, seq FROM feedback").fetchall()}
    con.close()
    assert len(before) == 120
    with wal.open("r+b") as f:  # one bit flipped half-way through
        f.seek(wal.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x10]))

    res = subprocess.run([sys.executable, "-m", "banditroute.cli.main", "serve", "--config", str(srv.config),
                          "--db", str(srv.db), "--port", str(srv.port)], check=False, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "Corrupt WAL" in res.stderr and f"banditroute repair --db {srv.db}" in res.stderr

    res = subprocess.run([sys.executable, "-m", "banditroute.cli.main", "repair", "--db", str(srv.db), "--json"],
                         check=False, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    done = json.loads(res.stdout)
    assert done["repaired"] and 0 < done["kept_bytes"] < done["wal_bytes"] and done["stale_snapshot"]
    assert Path(done["damaged_wal"]).stat().st_size == done["wal_bytes"]
    con = duckdb.connect(str(srv.db), read_only=True)
    after = {k: v for k, v in con.execute("SELECT idempotency_key, seq FROM feedback").fetchall()}
    con.close()
    assert 0 < len(after) < len(before) and all(before[k] == seq for k, seq in after.items())
    kept = sorted(after.values())
    assert kept == [s for s in sorted(before.values()) if s <= kept[-1]]  # a prefix: everything before the damage

    srv.start()  # the snapshot, which learned from feedback the log lost, is not used
    assert srv.get("/policy")["feedback_seq"] == len(after)
    assert "decision_id" in srv.post("/route", {"prompt": PROMPTS[0]})
    srv.stop()
    again = subprocess.run([sys.executable, "-m", "banditroute.cli.main", "repair", "--db", str(srv.db)],
                           check=False, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "nothing to repair" in again.stdout


def test_a_kept_conversation_survives_kill_9_right_after_its_answer(tmp_path):
    """With prompts stored and a group commit far slower than the test (5 s), each responses turn the
    gateway makes of a chat completion is in the log when its answer arrives: kill -9 right after the
    last answer, and the restarted server continues the whole conversation."""
    upstream_port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "banditroute.gateway.fake_upstream", "--port", str(upstream_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        srv = Server(tmp_path)
        srv.config.write_text(
            "[storage]\nstore_prompts = true\nflush_interval_ms = 5000\n\n"
            f'[[models]]\nname = "small"\ninput_price_per_mtok = 0.1\noutput_price_per_mtok = 0.4\n'
            f'base_url = "http://127.0.0.1:{upstream_port}/v1"\n\n'
            f'[[models]]\nname = "large"\ninput_price_per_mtok = 5.0\noutput_price_per_mtok = 15.0\n'
            f'base_url = "http://127.0.0.1:{upstream_port}/v1"\n')
        srv.start()
        rid, said = None, []
        for i in range(4):
            body = {"model": "banditroute", "input": f"Turn {i}: remember the number {i}."}
            if rid is not None:
                body["previous_response_id"] = rid
            answer = srv.post("/v1/responses", body)
            rid = answer["id"]
            said += [body["input"], answer["output"][0]["content"][0]["text"]]
        srv.stop(signal.SIGKILL)
        srv.start()
        srv.post("/v1/responses", {"model": "banditroute", "input": "Which numbers?", "previous_response_id": rid})
        with urllib.request.urlopen(f"http://127.0.0.1:{upstream_port}/control", timeout=30) as resp:
            sent = json.loads(resp.read())["received"][-1]["messages"]
        assert [m["content"] for m in sent] == [*said, "Which numbers?"]
        srv.stop()
    finally:
        fake.kill()
        fake.wait(timeout=60)
