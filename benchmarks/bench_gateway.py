"""The gateway's added latency and sustainable rate against a fake upstream, beside LiteLLM's proxy.

Three targets on loopback, all in front of the same fake OpenAI-compatible upstream
(``banditroute.gateway.fake_upstream``, one process, answers at once with 16 output tokens):

- ``direct``: the upstream itself;
- ``banditroute``: ``banditroute serve`` (one process, logging on: every call in DuckDB) routing among
  three models of that upstream (``model: banditroute``);
- ``litellm``: LiteLLM's proxy (one worker) with one model on that upstream. It is installed into a
  separate virtual environment (``--litellm-venv``, created with ``pip install 'litellm[proxy]'`` when
  missing); ``--no-litellm`` leaves it out.

The load generator (this process) sends requests open-loop at a fixed rate, each at its scheduled time
whether or not earlier ones have answered, so a slow server cannot slow the load down (no coordinated
omission); a request's latency is measured from its scheduled time. Before each measurement it waits
until the servers are idle (an overloaded server goes on working off its queue after the load stops). For each target, non-streamed and
streamed (latency = time to the first event):

1. **added latency at 500 requests/s**: p50 and p99 through the target minus the direct call's, over
   ``--seconds`` of load, median of ``--runs`` runs; the CPU time the serving process (all its
   threads and workers) spent per answered request; and for banditroute's gateways the share of the
   event loop's lag samples (``banditroute_event_loop_lag_seconds``, one every 20 ms) over 5 and 10 ms
   during the load: how often a request arriving then waited that long for the loop;
2. **highest sustained rate with p99 under 50 ms** (and no error): rates tried in increasing steps until
   one fails, then three bisection steps between the last rate that passed and the first that failed;
   a step passes when most of its ``--trials`` runs (3) do.

Everything (upstream, targets and load generator) shares this 2-core machine, so the direct rate is
also bounded by the load generator; the comparison is within one run. Then the log is checked: every
answered call is in ``calls`` with tokens, cost and latency. Results go to
``benchmarks/results/gateway.json``; progress to stderr.

    python benchmarks/bench_gateway.py                # about 35 minutes with LiteLLM
    python benchmarks/bench_gateway.py --runs 1 --seconds 5 --no-litellm
    python benchmarks/bench_gateway.py --no-litellm --baseline PATH --runs 9 --no-max-rate   # A/B of a change
    python benchmarks/bench_gateway.py --no-litellm --baseline PATH --runs 31 --seconds 3 --no-max-rate  # finer

With ``--api responses`` the same measurements run on OpenAI's responses API (``POST /v1/responses``,
LiteLLM left out): ``direct`` is the fake upstream's own ``/v1/responses``, ``banditroute`` a gateway
whose models carry the ``responses`` capability (the request relayed as it is) and
``banditroute_bridged`` a second gateway whose models do not (the request translated into chat
completions and the answer back, :mod:`banditroute.gateway.bridge`); results go to
``gateway_responses.json``. With ``--api messages``, on Anthropic's Messages API (``POST /v1/messages``,
LiteLLM left out): ``banditroute`` serves it through the fake's chat completions, which ``direct`` calls
with the same body (:mod:`banditroute.gateway.messages`); results go to ``gateway_messages.json``.

With ``--relay``, ``benchmarks/relay_app.py`` is a further target: the same HTTP work without the
gateway's (it relays the body to the upstream through a pooled session and renames ``model``, with no
routing, no accounting and no log), so a gateway's CPU per request minus the relay's is what those cost.

With ``--baseline PATH`` (another checkout with its C cores built, e.g. a ``git worktree`` of the commit
before a change), that checkout's gateway is a fourth target, configured alike on the same upstream,
measured in the same runs (which of the two goes first alternates from run to run); the results gain
``this_vs_baseline``: per mode, the medians over runs of this gateway's server CPU per request over the
baseline's (and their quartiles) and of the difference of their p50 and p99; many short runs (``--runs 31
--seconds 3``) see nearly the same machine in each pair and resolve a few percent of CPU that nine runs of
ten seconds do not. ``--no-max-rate`` skips the rate search.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import duckdb
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "gateway.json"
RATES = (25, 50, 100, 250, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000)
P99_LIMIT_MS = 50.0
BODY = {"messages": [{"role": "user", "content": "Write a haiku about the sea."}], "max_tokens": 32}
RESPONSES_BODY = {"input": "Write a haiku about the sea.", "max_output_tokens": 32}


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_up(url: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    async with aiohttp.ClientSession() as s:
        while time.time() < deadline:
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
    raise TimeoutError(f"{url} did not come up")


def start(cmd: list[str], logfile: Path, env: dict | None = None, cwd: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=logfile.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                            start_new_session=True, cwd=cwd)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def group_cpu_seconds(pgid: int) -> float:
    """CPU time used so far by every process of group ``pgid`` (from /proc)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def settle(procs: list[subprocess.Popen], timeout: float = 180.0) -> None:
    """Wait until the servers are idle (a server still working off an earlier overload, as LiteLLM's
    does after its rate is exceeded, would take CPU from the next measurement)."""
    deadline = time.time() + timeout
    before = sum(group_cpu_seconds(p.pid) for p in procs)
    while time.time() < deadline:
        time.sleep(0.5)
        now = sum(group_cpu_seconds(p.pid) for p in procs)
        if now - before < 0.05:
            return
        before = now
    log("  (servers still busy after the settling timeout)")


def ensure_litellm(venv: Path) -> Path:
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        log(f"installing litellm[proxy] into {venv} (once)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return exe


async def one(session: aiohttp.ClientSession, url: str, body: bytes, stream: bool, t_sched: float,
              out: list, errors: list) -> None:
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
            if r.status != 200:
                errors.append(r.status)
                await r.read()
                return
            if stream:
                async for line in r.content:
                    if line.startswith(b"data:"):
                        out.append(time.perf_counter() - t_sched)
                        break
                await r.read()
            else:
                await r.read()
                out.append(time.perf_counter() - t_sched)
    except (TimeoutError, aiohttp.ClientError) as err:
        errors.append(type(err).__name__)


async def load(url: str, model: str, rate: float, seconds: float, stream: bool) -> dict:
    """Open-loop load at ``rate`` requests/s for ``seconds``: latency percentiles in ms, errors, achieved rate."""
    template = RESPONSES_BODY if url.endswith("/responses") else BODY
    body = json.dumps({**template, "model": model, "stream": stream}).encode()
    connector = aiohttp.TCPConnector(limit=2000)
    timeout = aiohttp.ClientTimeout(total=30)
    out: list[float] = []
    errors: list = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for _ in range(20):  # warm the connection pool and the server
            await one(session, url, body, stream, time.perf_counter(), [], [])
        n = int(rate * seconds)
        t0 = time.perf_counter()
        tasks = []
        for i in range(n):
            t_sched = t0 + i / rate
            delay = t_sched - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(session, url, body, stream, t_sched, out, errors)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    ms = np.array(out) * 1000.0
    return {"rate": rate, "sent": n, "answered": len(out), "errors": len(errors),
            "achieved_rate": round(len(out) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 3) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 3) if len(ms) else None}


def max_rate(url: str, model: str, stream: bool, seconds: float, procs: list[subprocess.Popen],
             refine: int = 3, trials: int = 3) -> dict:
    """The highest rate with p99 under the limit and no error: up the :data:`RATES` ladder until a step
    fails, then ``refine`` bisection steps between the last rate that passed and the first that failed
    (so that a ratio between two targets does not hinge on the ladder's coarse steps). A step passes
    when most of its ``trials`` runs do (stopping as soon as the majority is decided): the p99 of one
    run of a few seconds moves several-fold with a slow second of a shared machine, and a single run
    per step let one such second end the search early or carry it too far."""
    tried = []

    def passes(rate: float) -> bool:
        verdicts = []
        while len(verdicts) < trials and verdicts.count(True) <= trials // 2 and verdicts.count(False) <= trials // 2:
            settle(procs)
            r = asyncio.run(load(url, model, rate, seconds, stream))
            ok = r["errors"] == 0 and r["p99_ms"] is not None and r["p99_ms"] < P99_LIMIT_MS
            tried.append(r | {"trial": len(verdicts) + 1, "passed": ok})
            verdicts.append(ok)
            log(f"    {rate:>5g}/s: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, errors {r['errors']}"
                f"{'' if ok else '  <- over'}")
        return verdicts.count(True) > trials // 2

    best, failed = None, None
    for rate in RATES:
        if not passes(rate):
            failed = rate
            break
        best = rate
    if failed is not None:
        low = best or 0
        for _ in range(refine):
            mid = round((low + failed) / 2)
            if mid in (low, failed):
                break
            if passes(mid):
                low = best = mid
            else:
                failed = mid
    return {"max_rate": best, "first_failed": failed, "steps": tried}


async def loop_lag_counts(base: str) -> dict[str, float] | None:
    """The gateway's ``banditroute_event_loop_lag_seconds`` buckets (``le`` -> cumulative count) now."""
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as r:
        if r.status != 200:
            return None
        text = await r.text()
    return {s.labels["le"]: s.value for f in text_string_to_metric_families(text)
            if f.name == "banditroute_event_loop_lag_seconds" for s in f.samples if s.name.endswith("_bucket")}


def loop_lag_summary(before: dict | None, after: dict | None) -> dict | None:
    """The loop-lag samples taken between two :func:`loop_lag_counts`: how many, and the share of them
    over 5 and 10 ms (how often a request arriving then would have waited that long for the loop)."""
    if not before or not after:
        return None
    n = after["+Inf"] - before["+Inf"]
    if n <= 0:
        return None
    over = {ms: (n - (after[le] - before[le])) / n for ms, le in ((5, "0.005"), (10, "0.01"))}
    return {"samples": int(n), "share_over_5ms": round(over[5], 4), "share_over_10ms": round(over[10], 4)}


def check_log(db: Path) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute("""SELECT count(*) AS ok, count(*) FILTER (WHERE input_tokens IS NULL OR output_tokens IS NULL
                         OR cost_usd IS NULL OR latency_ms IS NULL) AS incomplete
                         FROM calls WHERE outcome = 'ok'""").fetchone()
        decisions = con.execute("SELECT count(*) FROM decisions").fetchone()[0]
    finally:
        con.close()
    return {"calls_ok": row[0], "calls_incomplete": row[1], "decisions": decisions}


def gateway_config(path: Path, upstream: str, db: Path, capabilities: tuple[str, ...] = ()) -> None:
    models = "".join(f"""
[[models]]
name = "{name}"
input_price_per_mtok = {pin}
output_price_per_mtok = {pout}
base_url = "{upstream}"
upstream_name = "{name}-upstream"
capabilities = {json.dumps(list(capabilities))}
""" for name, pin, pout in (("small", 0.15, 0.6), ("medium", 1.0, 4.0), ("large", 5.0, 15.0)))
    path.write_text(f'[policy]\nwarm_start = "none"\n[storage]\ndb = "{db}"\n{models}')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of the 500 requests/s measurement (median)")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of load per measurement")
    ap.add_argument("--max-seconds", type=float, default=5.0, help="seconds of load per step of the rate search")
    ap.add_argument("--litellm-venv", default=os.path.join(tempfile.gettempdir(), "banditroute-bench-litellm"))
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--out", help=f"default: {RESULTS.relative_to(ROOT)}; with --baseline, gateway_ab.json beside it")
    ap.add_argument("--baseline", help="another checkout (C cores built) whose gateway runs in the same runs")
    ap.add_argument("--no-max-rate", action="store_true", help="measure at 500 requests/s only")
    ap.add_argument("--relay", action="store_true",
                    help="also measure benchmarks/relay_app.py (the HTTP relay alone: no routing, no log; chat completions only)")
    ap.add_argument("--trials", type=int, default=3, help="runs per step of the rate search (the majority decides)")
    ap.add_argument("--api", choices=("chat", "responses", "messages"), default="chat",
                    help="responses: OpenAI's responses API, relayed and bridged; messages: Anthropic's Messages API "
                         "(LiteLLM left out of both)")
    args = ap.parse_args()
    responses = args.api == "responses"
    args.no_litellm = args.no_litellm or args.api != "chat"
    args.out = args.out or str(RESULTS.with_name("gateway_ab.json") if args.baseline else
                               RESULTS.with_name(f"gateway_{args.api}.json") if args.api != "chat" else RESULTS)
    path = "/responses" if responses else "/chat/completions"
    gw_path = "/messages" if args.api == "messages" else path  # the same body: BODY is a valid Messages body too

    work = Path(tempfile.mkdtemp(prefix="banditroute-bench-gateway-"))
    up_port, gw_port, lt_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    db = work / "router.duckdb"
    gateway_config(work / "pool.toml", upstream, db, ("responses",) if responses else ())
    procs = [start([sys.executable, "-m", "banditroute.gateway.fake_upstream", "--port", str(up_port), "--no-record"],
                   work / "upstream.log"),
             start([sys.executable, "-m", "banditroute.cli.main", "serve", "--config", str(work / "pool.toml"),
                    "--port", str(gw_port)], work / "gateway.log")]
    targets = {"direct": (f"{upstream}{path}", "small-upstream"),
               "banditroute": (f"http://127.0.0.1:{gw_port}/v1{gw_path}", "banditroute")}
    server_of = {"direct": procs[0], "banditroute": procs[1]}  # whose CPU time a target's requests cost
    if responses:
        bridged_port = free_port()
        gateway_config(work / "bridged.toml", upstream, work / "bridged.duckdb")
        procs.append(start([sys.executable, "-m", "banditroute.cli.main", "serve", "--config", str(work / "bridged.toml"),
                            "--port", str(bridged_port)], work / "bridged.log"))
        targets["banditroute_bridged"] = (f"http://127.0.0.1:{bridged_port}/v1/responses", "banditroute")
        server_of["banditroute_bridged"] = procs[-1]
    if args.relay and args.api == "chat":
        relay_port = free_port()
        procs.append(start([sys.executable, str(ROOT / "benchmarks" / "relay_app.py"), str(relay_port), upstream,
                            "small-upstream"], work / "relay.log"))
        targets["relay"] = (f"http://127.0.0.1:{relay_port}/v1/chat/completions", "banditroute")
        server_of["relay"] = procs[-1]
    if args.baseline:
        base_port, checkout = free_port(), str(Path(args.baseline).resolve())
        gateway_config(work / "baseline.toml", upstream, work / "baseline.duckdb")
        procs.append(start([sys.executable, "-m", "banditroute.cli.main", "serve", "--config",
                            str(work / "baseline.toml"), "--port", str(base_port)], work / "baseline.log",
                           {"PYTHONPATH": checkout}, cwd=checkout))
        targets["baseline"] = (f"http://127.0.0.1:{base_port}/v1/chat/completions", "banditroute")
        server_of["baseline"] = procs[-1]
    litellm_version = None
    if not args.no_litellm:
        exe = ensure_litellm(Path(args.litellm_venv))
        (work / "litellm.yaml").write_text(
            "model_list:\n  - model_name: fake\n    litellm_params:\n      model: openai/fake\n"
            f"      api_base: {upstream}\n      api_key: sk-fake\nlitellm_settings:\n  telemetry: false\n")
        procs.append(start([str(exe), "--config", str(work / "litellm.yaml"), "--host", "127.0.0.1", "--port",
                            str(lt_port), "--num_workers", "1"], work / "litellm.log",
                           {"LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"}))
        targets["litellm"] = (f"http://127.0.0.1:{lt_port}/v1/chat/completions", "fake")
        server_of["litellm"] = procs[-1]
        litellm_version = subprocess.run([str(Path(args.litellm_venv) / "bin" / "python"), "-c",
                                          "import importlib.metadata as m; print(m.version('litellm'))"],
                                         check=True, capture_output=True, text=True).stdout.strip()
    try:
        asyncio.run(wait_up(f"http://127.0.0.1:{up_port}/v1/models"))
        asyncio.run(wait_up(f"http://127.0.0.1:{gw_port}/healthz"))
        if "litellm" in targets:
            asyncio.run(wait_up(f"http://127.0.0.1:{lt_port}/health/liveliness"))
        for name in ("baseline", "banditroute_bridged", "relay"):
            if name in targets:
                asyncio.run(wait_up(targets[name][0].replace(f"/v1{path}", "/healthz")))
        results: dict = {"added_latency_at_500": {}, "max_rate_p99_under_50ms": {}}
        for stream in (False, True):
            mode = "streaming_ttft" if stream else "non_streaming"
            log(f"{mode}: 500 requests/s, {args.runs} runs of {args.seconds:g} s")
            per_target: dict[str, list[dict]] = {t: [] for t in targets}
            for run in range(args.runs):
                order = list(targets)
                if "baseline" in targets and run % 2:  # the baseline before this gateway every other run
                    i, j = order.index("banditroute"), order.index("baseline")
                    order[i], order[j] = order[j], order[i]
                for name in order:
                    url, model = targets[name]
                    settle(procs)
                    ours = name in ("banditroute", "baseline", "banditroute_bridged")
                    base = url.split("/v1/")[0]
                    lag0 = asyncio.run(loop_lag_counts(base)) if ours else None
                    cpu0 = group_cpu_seconds(server_of[name].pid)
                    r = asyncio.run(load(url, model, 500, args.seconds, stream))
                    if ours:  # read before settling: the samples of the load, not of the idle wait after it
                        r["event_loop_lag"] = loop_lag_summary(lag0, asyncio.run(loop_lag_counts(base)))
                    settle(procs)
                    r["server_cpu_ms_per_request"] = round(
                        (group_cpu_seconds(server_of[name].pid) - cpu0) * 1000.0 / max(r["answered"], 1), 3)
                    per_target[name].append(r)
                    log(f"  run {run + 1} {name}: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, errors {r['errors']}, "
                        f"server CPU {r['server_cpu_ms_per_request']} ms a request"
                        + (f", loop lag {r['event_loop_lag']}" if r.get("event_loop_lag") else ""))
            summary = {}
            for name, runs in per_target.items():
                lags = [r["event_loop_lag"] for r in runs if r.get("event_loop_lag")]
                summary[name] = {"p50_ms": statistics.median(r["p50_ms"] for r in runs),
                                 "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                                 "server_cpu_ms_per_request": statistics.median(
                                     r["server_cpu_ms_per_request"] for r in runs),
                                 "errors": sum(r["errors"] for r in runs), "runs": runs}
                if lags:
                    summary[name]["event_loop_lag_share_over_5ms"] = statistics.median(x["share_over_5ms"] for x in lags)
                    summary[name]["event_loop_lag_share_over_10ms"] = statistics.median(x["share_over_10ms"] for x in lags)
            for name in targets:
                if name != "direct":
                    summary[name]["added_p50_ms"] = round(summary[name]["p50_ms"] - summary["direct"]["p50_ms"], 3)
                    summary[name]["added_p99_ms"] = round(summary[name]["p99_ms"] - summary["direct"]["p99_ms"], 3)
            results["added_latency_at_500"][mode] = summary
            if "baseline" in targets:
                pairs = list(zip(per_target["banditroute"], per_target["baseline"]))
                results.setdefault("this_vs_baseline", {})[mode] = {
                    "baseline": args.baseline,
                    "cpu_per_request_ratio": round(statistics.median(
                        a["server_cpu_ms_per_request"] / b["server_cpu_ms_per_request"] for a, b in pairs), 3),
                    "cpu_per_request_ratios": [round(a["server_cpu_ms_per_request"] / b["server_cpu_ms_per_request"], 3)
                                               for a, b in pairs],
                    "cpu_per_request_quartiles": [round(q, 3) for q in statistics.quantiles(
                        [a["server_cpu_ms_per_request"] / b["server_cpu_ms_per_request"] for a, b in pairs], n=4)]
                    if len(pairs) > 1 else None,
                    "p50_difference_ms": round(statistics.median(a["p50_ms"] - b["p50_ms"] for a, b in pairs), 3),
                    "p99_difference_ms": round(statistics.median(a["p99_ms"] - b["p99_ms"] for a, b in pairs), 3)}
                log(f"  this vs baseline: {results['this_vs_baseline'][mode]}")
            if args.no_max_rate:
                continue
            log(f"{mode}: highest rate with p99 < {P99_LIMIT_MS:g} ms")
            rates = {}
            for name, (url, model) in targets.items():
                log(f"  {name}")
                rates[name] = max_rate(url, model, stream, args.max_seconds, procs, trials=args.trials)
            for name in targets:
                if name != "direct" and rates["direct"]["max_rate"]:
                    rates[name]["ratio_to_direct"] = round((rates[name]["max_rate"] or 0) / rates["direct"]["max_rate"], 3)
            if "litellm" in rates and rates["litellm"]["max_rate"]:
                rates["banditroute"]["ratio_to_litellm"] = round(
                    (rates["banditroute"]["max_rate"] or 0) / rates["litellm"]["max_rate"], 3)
            results["max_rate_p99_under_50ms"][mode] = rates
    finally:
        for p in reversed(procs):
            stop(p)
    results["log"] = check_log(db)
    if responses:
        results["log_bridged"] = check_log(work / "bridged.duckdb")
    results["setup"] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                        "litellm": litellm_version, "runs": args.runs, "seconds": args.seconds,
                        "max_seconds": args.max_seconds, "trials": args.trials, "rates_tried": RATES, "api": args.api,
                        "date": time.strftime("%Y-%m-%d", time.gmtime())}
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    short = {mode: {n: {k: v for k, v in s.items() if k != "runs"} for n, s in m.items()}
             for mode, m in results["added_latency_at_500"].items()}
    print(json.dumps({"added_latency_at_500": short, "this_vs_baseline": results.get("this_vs_baseline"),
                      "max_rate": {mode: {n: {k: v for k, v in r.items() if k != "steps"} for n, r in m.items()}
                                   for mode, m in results["max_rate_p99_under_50ms"].items()},
                      "log": results["log"]}, indent=1))


if __name__ == "__main__":
    main()
