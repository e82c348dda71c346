"""Load test of `banditroute serve` on loopback with wrk, against a trivial aiohttp JSON handler.

Usage (needs wrk: ``apt-get install wrk``; about 5 minutes)::

    python benchmarks/bench_server.py [--runs 3] [--seconds 10] [--connections 32]
    python benchmarks/bench_server.py --memory 1000000     # RSS after a million decisions (~10 min)
    python benchmarks/bench_server.py --baseline PATH      # and another checkout's /route in the same runs
    python benchmarks/bench_server.py --baseline PATH --pairs 16 --seconds 4   # only /route, A/B in short phases

Per run, each on a fresh database:

1. the trivial handler of ``benchmarks/trivial_app.py``;
2. ``POST /route`` with logging on;
3. the trivial handler again: the run's baseline is the mean of 1 and 3, so that drift in the
   machine's speed during the run cancels out of the ratio;
4. ``POST /feedback`` (a thumbs signal and a cost, each with a fresh idempotency key, acknowledged
   only after its group commit) round robin over the last ``RECENT`` decisions of 2, all still in
   the server's pending window;
5. the same round robin over every decision of 2, so that those that have left the window take the
   late path (read back from DuckDB); the server's ``banditroute_feedback_total{late="true"}``
   counts them;
6. ``/route`` and ``/feedback`` at once, half the connections each (the service's usual traffic):
   new prompts, and feedback round robin over the last ``MIXED_RECENT`` decisions of 2.

With ``--baseline PATH`` (any checkout with its C core built, e.g. a ``git worktree``), that checkout's
server also runs phase 2 alone on a fresh database of its own, right after this one's or right before it
(alternating from run to run), within the same trivial-handler bracket; ``baseline.this_vs_baseline``
is the median over runs of the ratio of requests/s.

With ``--pairs N`` as well, only ``/route`` is measured: both servers stay up, and N pairs of short
phases (``--seconds`` each, in alternating order) give the median and quartiles of this checkout's
requests/s and loop CPU per request over the baseline's, pair by pair (``results/server_pairs.json``):
on a shared machine whose speed moves by a fifth between runs, this resolves differences of a few
percent that the full runs cannot.

wrk runs one thread (two in phase 6), so the server has the other core. Prompts are every distinct prompt of
../shared/data (RouterBench, MMLU, GSM8K, MT Bench), shuffled. After each banditroute run the server
is stopped and the database rows are compared with the 2xx answers the server counted (its
/metrics) and the client received: no fewer rows than answers, and no more than answers plus the
requests whose client went away (status 499) once they were logged.
Each recording overwrites ``results/server.json`` (every run's raw figures; ``server_memory.json``
for ``--memory``) and appends its summary, with the commit it ran at, to the matching
``*_history.jsonl`` beside it, so earlier recordings stay visible.
Figures are medians over runs (``per_run`` lists the main ones run by run); ``route_vs_trivial`` is
the ratio of requests/s within each run.
``loop_cpu_us`` and ``process_cpu_us`` are the server's CPU microseconds per answered request in a
phase: its main thread (the event loop), and the whole process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bodies_file(tmp: Path) -> tuple[Path, dict]:
    import numpy as np

    prompts = []
    if DATA.exists():
        import pyarrow.parquet as pq

        for f in sorted(DATA.glob("*.parquet")):
            prompts += sorted(set(pq.read_table(f, columns=["prompt"]).column(0).to_pylist()))
    else:
        prompts = [f"Question {i}: how many apples are left if I eat {i}?" for i in range(2000)]
    rng = np.random.default_rng(0)
    rng.shuffle(prompts)
    path = tmp / "bodies.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    lengths = np.array([len(p) for p in prompts])
    return path, {"prompts": len(prompts), "chars_p50": int(np.median(lengths)), "chars_p90": int(np.percentile(lengths, 90))}


def wait_up(port: int, path: str = "/healthz", method: str = "GET") -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         data=b'{"prompt": "warm up"}' if method == "POST" else None)
            urllib.request.urlopen(req, timeout=5).read()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {port}")


def start_wrk(port: int, script: str, seconds: int, connections: int, bodies: Path, **env) -> subprocess.Popen:
    """wrk with one thread running ``wrk/<script>``; its JSON report is the last line of stdout."""
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(HERE / "wrk" / script),
         f"http://127.0.0.1:{port}"],
        env={**os.environ, "BODIES": str(bodies), **{k: str(v) for k, v in env.items()}},
        stdout=subprocess.PIPE, text=True)


def report(proc: subprocess.Popen) -> dict:
    out = proc.communicate()[0]
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, out)
    return json.loads(out.strip().splitlines()[-1])


def wrk(port: int, script: str, seconds: int, connections: int, bodies: Path, **env) -> dict:
    return report(start_wrk(port, script, seconds, connections, bodies, **env))


RECENT = 40_000  # last decisions of the /route phase that phase 4 uses: all within the 50,000 pending
MIXED_RECENT = 10_000  # those phase 6 uses: still within the window after its own /route traffic


def mixed_phase(port: int, seconds: int, connections: int, bodies: Path, tmp: Path) -> tuple[dict, dict]:
    """``/route`` and ``/feedback`` at once, ``connections`` each: two wrk processes side by side."""
    procs = [start_wrk(port, "route.lua", seconds, connections, bodies, IDS_OUT=tmp / "mixed_ids.txt"),
             start_wrk(port, "feedback.lua", seconds, connections, bodies, IDS=tmp / "mixed.txt", KEY_PREFIX="mixed-")]
    return tuple(map(report, procs))


def server_counts(port: int) -> dict[str, int]:
    """2xx answers per path, requests whose client went away before the answer (499, ``gone``), accepted
    late and duplicate feedback, and /route micro-batches, from the server's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    counts = {"/route": 0, "/feedback": 0, "/route gone": 0, "/feedback gone": 0, "late_feedback": 0,
              "duplicate_feedback": 0, "route_batches": 0}
    for line in text.splitlines():
        value = int(float(line.rsplit(" ", 1)[-1])) if line and not line.startswith("#") else 0
        if line.startswith("banditroute_requests_total{") and ('status="200"' in line or 'status="499"' in line):
            for path in ("/route", "/feedback"):
                if f'path="{path}"' in line:
                    counts[path if 'status="200"' in line else f"{path} gone"] += value
        elif line.startswith("banditroute_route_batches_total "):
            counts["route_batches"] = value
        elif line.startswith("banditroute_feedback_total{"):
            counts["late_feedback"] += value if 'late="true"' in line else 0
            counts["duplicate_feedback"] += value if 'duplicate="true"' in line else 0
    return counts


def checkout_env(checkout: str | None) -> tuple[dict, str]:
    """Environment and working directory that make a child interpreter import ``banditroute`` from
    ``checkout`` (this one when None). ``python -m`` and ``-c`` put the working directory first on the
    path, ahead of PYTHONPATH, so the child runs in the checkout itself; checked by importing."""
    root = checkout or str(HERE.parent)
    env = os.environ | {"PYTHONPATH": root}
    found = subprocess.run([sys.executable, "-c", "import banditroute; print(banditroute.__file__)"], cwd=root,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(Path(root).resolve()):
        raise RuntimeError(f"a child in {root} imports banditroute from {found}")
    return env, root


def start_banditroute(tmp: Path, port: int, checkout: str | None = None) -> subprocess.Popen:
    """``banditroute serve`` on a fresh database in ``tmp``, from ``checkout`` (this one when None)."""
    env, cwd = checkout_env(checkout)
    proc = subprocess.Popen([sys.executable, "-m", "banditroute.cli.main", "serve", "--db", str(tmp / "router.duckdb"),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            cwd=cwd)
    wait_up(port)
    return proc


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system) of the server's main thread, which runs the event loop, and of the
    whole process (the loop, the log writer, DuckDB's threads), from /proc."""
    def ticks(path: str) -> int:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime

    hz = os.sysconf("SC_CLK_TCK")
    return ticks(f"/proc/{pid}/task/{pid}/stat") / hz, ticks(f"/proc/{pid}/stat") / hz


def phase(pid: int, run) -> dict:
    """Run one wrk phase and add the server's CPU microseconds per answered request to its result."""
    loop0, proc0 = cpu_seconds(pid)
    out = run()
    loop1, proc1 = cpu_seconds(pid)
    n = max(out["ok"], 1)
    return {**out, "loop_cpu_us_per_request": round((loop1 - loop0) / n * 1e6, 1),
            "process_cpu_us_per_request": round((proc1 - proc0) / n * 1e6, 1)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def baseline_route(checkout: str, seconds: int, connections: int, bodies: Path) -> dict:
    """The ``/route`` phase alone, served by another checkout on its own fresh database."""
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        proc = start_banditroute(Path(d), port, checkout)
        try:
            return phase(proc.pid, lambda: wrk(port, "route.lua", seconds, connections, bodies))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def one_run(seconds: int, connections: int, bodies: Path, baseline: str | None = None, baseline_first: bool = False) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port = free_port()
        proc = start_banditroute(tmp, port)
        try:
            # the trivial handler runs just before and just after /route (and the baseline checkout's
            # /route, in alternating order from run to run), both servers up and the idle one waiting:
            # its mean is the run's trivial figure, which follows the machine's drift
            trivial_port = free_port()
            trivial = subprocess.Popen([sys.executable, str(HERE / "trivial_app.py"), str(trivial_port)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_up(trivial_port, "/route", "POST")
                out["trivial"] = phase(trivial.pid, lambda: wrk(trivial_port, "route.lua", seconds, connections, bodies))
                if baseline and baseline_first:
                    out["baseline_route"] = baseline_route(baseline, seconds, connections, bodies)
                out["route"] = phase(proc.pid, lambda: wrk(port, "route.lua", seconds, connections, bodies,
                                                           IDS_OUT=tmp / "ids.txt"))
                if baseline and not baseline_first:
                    out["baseline_route"] = baseline_route(baseline, seconds, connections, bodies)
                out["trivial_after"] = phase(trivial.pid, lambda: wrk(trivial_port, "route.lua", seconds, connections,
                                                                      bodies))
            finally:
                trivial.terminate()
                trivial.wait()
            ids = (tmp / "ids.txt").read_text().splitlines()
            (tmp / "recent.txt").write_text("\n".join(ids[-RECENT:]) + "\n")
            out["feedback_recent"] = phase(proc.pid, lambda: wrk(port, "feedback.lua", seconds, connections, bodies,
                                                                 IDS=tmp / "recent.txt", KEY_PREFIX="recent-"))
            time.sleep(1.0)  # let requests still in flight when wrk stopped finish and be counted
            before = server_counts(port)
            out["feedback"] = phase(proc.pid, lambda: wrk(port, "feedback.lua", seconds, connections, bodies,
                                                          IDS=tmp / "ids.txt", KEY_PREFIX="all-"))
            time.sleep(1.0)
            mixed = server_counts(port)
            (tmp / "mixed.txt").write_text("\n".join(ids[-MIXED_RECENT:]) + "\n")
            out["mixed_route"], out["mixed_feedback"] = mixed_phase(port, seconds, connections // 2, bodies, tmp)
            time.sleep(1.0)
            out["server_2xx"] = server_counts(port)
            out["mixed_late_share"] = round((out["server_2xx"]["late_feedback"] - mixed["late_feedback"])
                                            / max(out["server_2xx"]["/feedback"] - mixed["/feedback"], 1), 3)
            out["late_share"] = round((mixed["late_feedback"] - before["late_feedback"])
                                      / max(mixed["/feedback"] - before["/feedback"], 1), 3)
            out["rss_mb"] = round(rss_mb(proc.pid), 1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        con = duckdb.connect(str(tmp / "router.duckdb"), read_only=True)
        out["rows"] = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("decisions", "feedback")}
        con.close()
    return out


def summarise(runs: list[dict], info: dict, args) -> dict:
    def med(f):
        return round(statistics.median(f(r) for r in runs), 3)

    route_rps = lambda r: r["route"]["ok"] / r["route"]["seconds"]
    trivial_rps = lambda r: statistics.mean(r[k]["ok"] / r[k]["seconds"] for k in ("trivial", "trivial_after"))
    return {
        "connections": args.connections, "seconds_per_run": args.seconds, "runs": len(runs), "prompts": info,
        "trivial_rps": med(trivial_rps),
        "route_rps": med(route_rps),
        "route_p50_ms": med(lambda r: r["route"]["p50_ms"]),
        "route_p99_ms": med(lambda r: r["route"]["p99_ms"]),
        "route_vs_trivial": med(lambda r: route_rps(r) / trivial_rps(r)),
        "route_loop_cpu_us": med(lambda r: r["route"]["loop_cpu_us_per_request"]),
        "trivial_loop_cpu_us": med(lambda r: statistics.mean(r[k]["loop_cpu_us_per_request"]
                                                             for k in ("trivial", "trivial_after"))),
        "route_mean_batch": med(lambda r: r["server_2xx"]["/route"] / max(r["server_2xx"]["route_batches"], 1)),
        "route_process_cpu_us": med(lambda r: r["route"]["process_cpu_us_per_request"]),
        "feedback_recent_rps": med(lambda r: r["feedback_recent"]["ok"] / r["feedback_recent"]["seconds"]),
        "feedback_recent_p50_ms": med(lambda r: r["feedback_recent"]["p50_ms"]),
        "feedback_recent_p99_ms": med(lambda r: r["feedback_recent"]["p99_ms"]),
        "feedback_recent_loop_cpu_us": med(lambda r: r["feedback_recent"]["loop_cpu_us_per_request"]),
        "feedback_recent_process_cpu_us": med(lambda r: r["feedback_recent"]["process_cpu_us_per_request"]),
        "feedback_rps": med(lambda r: r["feedback"]["ok"] / r["feedback"]["seconds"]),
        "feedback_p50_ms": med(lambda r: r["feedback"]["p50_ms"]),
        "feedback_p99_ms": med(lambda r: r["feedback"]["p99_ms"]),
        "feedback_late_share": med(lambda r: r["late_share"]),
        "mixed_route_rps": med(lambda r: r["mixed_route"]["ok"] / r["mixed_route"]["seconds"]),
        "mixed_route_p99_ms": med(lambda r: r["mixed_route"]["p99_ms"]),
        "mixed_feedback_rps": med(lambda r: r["mixed_feedback"]["ok"] / r["mixed_feedback"]["seconds"]),
        "mixed_feedback_p50_ms": med(lambda r: r["mixed_feedback"]["p50_ms"]),
        "mixed_feedback_p99_ms": med(lambda r: r["mixed_feedback"]["p99_ms"]),
        "mixed_feedback_late_share": med(lambda r: r["mixed_late_share"]),
        "rss_mb": med(lambda r: r["rss_mb"]),
        "per_run": {  # the spread behind the medians, kept in the history too
            "route_rps": [round(route_rps(r)) for r in runs],
            "route_vs_trivial": [round(route_rps(r) / trivial_rps(r), 3) for r in runs],
            "route_p99_ms": [r["route"]["p99_ms"] for r in runs],
            "route_loop_cpu_us": [r["route"]["loop_cpu_us_per_request"] for r in runs],
            "feedback_recent_rps": [round(r["feedback_recent"]["ok"] / r["feedback_recent"]["seconds"]) for r in runs],
            "feedback_rps": [round(r["feedback"]["ok"] / r["feedback"]["seconds"]) for r in runs],
        },
        "no_loss": all(
            # every answer has its row; a row without an answer belongs to a client that went away (wrk
            # closes its connections at the end of each phase) after its request was logged
            r["server_2xx"]["/route"] + r["server_2xx"]["/route gone"] >= r["rows"]["decisions"] >= r["server_2xx"]["/route"]
            >= r["route"]["ok"]
            and r["server_2xx"]["/feedback"] + r["server_2xx"]["/feedback gone"] >= r["rows"]["feedback"]
            >= r["server_2xx"]["/feedback"]
            >= r["feedback"]["ok"] + r["feedback_recent"]["ok"] + r["mixed_feedback"]["ok"]
            and r["server_2xx"]["/route"] >= r["route"]["ok"] + r["mixed_route"]["ok"]
            and r["server_2xx"]["duplicate_feedback"] == 0  # every key is fresh, so every 2xx is a stored row
            for r in runs
        ),
        "raw": runs,
    } | (baseline_summary(runs, args.baseline, route_rps, trivial_rps) if args.baseline else {})


def baseline_summary(runs: list[dict], checkout: str, route_rps, trivial_rps) -> dict:
    """The baseline checkout's ``/route`` beside this one's, from the same runs."""
    base_rps = lambda r: r["baseline_route"]["ok"] / r["baseline_route"]["seconds"]
    return {"baseline": {
        "checkout": checkout, "commit": git_commit(Path(checkout)),
        "route_rps": round(statistics.median(base_rps(r) for r in runs), 1),
        "route_vs_trivial": round(statistics.median(base_rps(r) / trivial_rps(r) for r in runs), 3),
        "route_loop_cpu_us": statistics.median(r["baseline_route"]["loop_cpu_us_per_request"] for r in runs),
        "route_p99_ms": statistics.median(r["baseline_route"]["p99_ms"] for r in runs),
        "this_vs_baseline": round(statistics.median(route_rps(r) / base_rps(r) for r in runs), 3),
        "per_run": {"route_vs_trivial": [round(base_rps(r) / trivial_rps(r), 3) for r in runs],
                    "this_vs_baseline": [round(route_rps(r) / base_rps(r), 3) for r in runs],
                    "route_loop_cpu_us": [r["baseline_route"]["loop_cpu_us_per_request"] for r in runs]},
    }}


def paired_run(checkout: str, pairs: int, seconds: int, connections: int, bodies: Path) -> dict:
    """This checkout's ``/route`` against ``checkout``'s in many short phases: both servers up at
    once, each pair of phases in alternating order, and the per-pair ratios' median and quartiles.
    Adjacent short phases see nearly the same machine, so small differences show through drift that
    would swamp them across runs of several minutes."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "this").mkdir()
        (tmp / "baseline").mkdir()
        ports = {"this": free_port(), "baseline": free_port()}
        servers = {"this": (start_banditroute(tmp / "this", ports["this"]), ports["this"]),
                   "baseline": (start_banditroute(tmp / "baseline", ports["baseline"], checkout), ports["baseline"])}
        phases = []
        try:
            for port in ports.values():  # every word of the prompts into both caches
                wrk(port, "route.lua", 3, connections, bodies)
            for i in range(pairs):
                order = ["this", "baseline"] if i % 2 == 0 else ["baseline", "this"]
                pair = {name: phase(servers[name][0].pid, lambda p=servers[name][1]: wrk(p, "route.lua", seconds,
                                                                                      connections, bodies))
                        for name in order}
                phases.append(pair)
                print(f"pair {i + 1}/{pairs}: {pair['this']['ok'] / pair['this']['seconds']:.0f} against "
                      f"{pair['baseline']['ok'] / pair['baseline']['seconds']:.0f} requests/s", file=sys.stderr, flush=True)
        finally:
            for proc, _ in servers.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    rps = lambda r: r["ok"] / r["seconds"]
    ratios = [rps(p["this"]) / rps(p["baseline"]) for p in phases]
    cpu = [p["this"]["loop_cpu_us_per_request"] / p["baseline"]["loop_cpu_us_per_request"] for p in phases]
    quartiles = lambda xs: [round(q, 3) for q in statistics.quantiles(xs, n=4)]
    return {"baseline": {"checkout": checkout, "commit": git_commit(Path(checkout))}, "pairs": pairs,
            "seconds_per_phase": seconds, "connections": connections,
            "this_vs_baseline_rps": {"median": round(statistics.median(ratios), 3), "quartiles": quartiles(ratios)},
            "this_vs_baseline_loop_cpu": {"median": round(statistics.median(cpu), 3), "quartiles": quartiles(cpu)},
            "this_rps": round(statistics.median(rps(p["this"]) for p in phases)),
            "baseline_rps": round(statistics.median(rps(p["baseline"]) for p in phases)),
            "raw": phases}


def memory_run(n: int, bodies: Path) -> dict:
    """Route ``n`` decisions through a live server (with feedback on every tenth) and read its RSS."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port = free_port()
        proc = start_banditroute(tmp, port)
        samples = []
        try:
            done = 0
            t0 = time.time()
            while done < n:
                res = wrk(port, "route.lua", 20, 32, bodies)
                done += res["ok"]
                samples.append({"decisions": done, "rss_mb": round(rss_mb(proc.pid), 1),
                                "elapsed_s": round(time.time() - t0, 1), "not_ok": res["not_ok"]})
                print(samples[-1], flush=True)
                if res["not_ok"]:  # the server refused (its log failing): stop, and say so in the result
                    break
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        return {"decisions": done, "rss_mb_final": samples[-1]["rss_mb"], "refused": sum(x["not_ok"] for x in samples),
                "samples": samples}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--memory", type=int, default=0, help="instead: RSS after this many decisions")
    ap.add_argument("--out", default=str(HERE / "results" / "server.json"))
    ap.add_argument("--baseline", help="another checkout (its C core built) whose /route runs in the same runs")
    ap.add_argument("--pairs", type=int, default=0, help="with --baseline, instead: this many short /route phases "
                    "of each, alternating (--seconds each)")
    args = ap.parse_args()
    if args.baseline:
        args.baseline = str(Path(args.baseline).resolve())
    commit = git_commit()  # before the results files change
    with tempfile.TemporaryDirectory() as d:
        bodies, info = bodies_file(Path(d))
        if args.memory:
            result = memory_run(args.memory, bodies)
            out = Path(args.out).with_name("server_memory.json")
        elif args.pairs:
            if not args.baseline:
                ap.error("--pairs needs --baseline")
            result = paired_run(args.baseline, args.pairs, args.seconds, args.connections, bodies)
            out = Path(args.out).with_name("server_pairs.json")
        else:
            runs = []
            for i in range(args.runs):
                print(f"run {i + 1}/{args.runs}", file=sys.stderr, flush=True)
                runs.append(one_run(args.seconds, args.connections, bodies, args.baseline, baseline_first=i % 2 == 1))
            result = summarise(runs, info, args)
            out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k not in ("raw", "samples")}
    with out.with_name(out.stem + "_history.jsonl").open("a") as history:  # every recording, not only the last
        history.write(json.dumps({"recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                  "commit": commit, **summary}) + "\n")
    print(json.dumps(summary, indent=2))


def git_commit(where: Path = HERE) -> str | None:
    """The commit of the clone at ``where`` (this one by default; with ``+dirty`` when the tree had
    changes other than recorded results), if a git clone."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                ":(exclude,top)benchmarks/results"], cwd=where,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


if __name__ == "__main__":
    main()
