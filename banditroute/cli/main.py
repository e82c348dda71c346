"""The ``banditroute`` command line: serve, simulate, replay, tune, pretrain and export.

Each command parses its arguments, calls the library and prints :mod:`.report`'s table, or one JSON
object with ``--json``; progress bars go to stderr whenever it is a terminal.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from banditroute.cli import report
from banditroute.config import ConfigError, PolicyConfig, load_settings
from banditroute.core.policies import POLICY_NAMES
from banditroute.core.state import save_state
from banditroute.log.export import ExportError, failure_reason
from banditroute.offline.outcomes import OutcomeTableError, load_outcomes


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def _cost_weights(text: str) -> list[float]:
    weights = [_number(w) for w in text.split(",")]
    bad = [w for w in weights if not (math.isfinite(w) and w >= 0.0)]
    if bad:
        raise argparse.ArgumentTypeError(f"cost weights must be finite numbers >= 0, got {bad[0]}")
    return weights


def _output(text: str) -> str:
    """A file to write at the end of a command: its directory must exist now, not after the work is done."""
    folder = Path(text).expanduser().parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"no directory {folder} to write {text} in")
    return text


def _written(path: str, write, *args, **kwargs) -> None:
    """``write(*args, **kwargs)``, which writes ``path``; a failure to write it (a full disk) is a one-line error."""
    try:
        write(*args, **kwargs)
    except OSError as err:
        raise ValueError(f"cannot write {path}: {failure_reason(err)}") from None


def _pool(args):
    return load_settings(args.config) if args.config else None


def _settings(args, pool):
    settings = pool.policy if pool is not None else PolicyConfig()
    return settings.model_copy(update={"name": args.policy or settings.name})


def cmd_simulate(args) -> int:
    from banditroute.offline.simulate import simulate

    outcomes = load_outcomes(args.outcomes)
    if args.cascade_to is not None:
        from banditroute.offline.cascade import cascade_outcomes

        outcomes = cascade_outcomes(outcomes, args.cascade_to, args.false_pass, seed=args.seed)
    pool = _pool(args)
    settings = _settings(args, pool)
    budget = None
    if args.budget_usd_per_request is not None:
        from banditroute.offline.simulate import budget_per_request

        budget = budget_per_request(args.budget_usd_per_request, args.when_exhausted, not args.no_pacing)
    result = simulate(outcomes, settings.name, args.cost_weight, args.seed, state=args.state, pool=pool,
                      settings=settings, progress=sys.stderr.isatty(), log=args.log,
                      cost_preference=args.cost_preference, budget=budget)
    print(json.dumps(result, allow_nan=False) if args.json else report.simulate_table(result))
    return 0


def cmd_replay(args) -> int:
    from banditroute.offline.evaluate import replay

    estimators = ("ips", "snips", "dm", "dr") if args.estimator == "all" else (args.estimator,)
    result = replay(args.log, args.policy or "lints", args.cost_weight, state=args.state, estimators=estimators,
                    clip=args.clip, greedy=args.greedy, seed=args.seed,
                    progress=sys.stderr.isatty())
    print(json.dumps(result, allow_nan=False) if args.json else report.replay_table(result))
    return 0


def cmd_tune(args) -> int:
    if args.target_quality is not None or args.budget_usd_per_request is not None or _is_log(args.outcomes):
        return cmd_tune_log(args)
    from banditroute.offline.plots import plot_frontier
    from banditroute.offline.tune import tune

    outcomes = load_outcomes(args.outcomes)
    pool = _pool(args)
    settings = _settings(args, pool)
    result = tune(outcomes, settings.name, args.seed, args.cost_weights, pool=pool, settings=settings,
                  progress=sys.stderr.isatty())
    if args.plot:
        _written(args.plot, plot_frontier, result, args.plot, title=f"{args.outcomes}")
    print(json.dumps(result, allow_nan=False) if args.json else report.tune_table(result))
    if args.plot and not args.json:
        print(f"plot: {args.plot}")
    return 0


def _is_log(path: str) -> bool:
    """A decision log (as opposed to an outcome table) has a propensity column."""
    from banditroute.offline.tables import column_names

    return "propensity" in column_names(path)


def cmd_tune_log(args) -> int:
    from banditroute.offline.plots import plot_log_frontier
    from banditroute.offline.tune import tune_on_log

    result = tune_on_log(args.outcomes, args.policy or "lints", args.cost_weights, state=args.state, estimator=args.estimator,
                         target_quality=args.target_quality, budget=args.budget_usd_per_request, seed=args.seed,
                         progress=sys.stderr.isatty())
    if args.plot:
        _written(args.plot, plot_log_frontier, result, args.plot)
    print(json.dumps(result, allow_nan=False) if args.json else report.tune_log_table(result))
    return 0


def cmd_pretrain(args) -> int:
    from banditroute.offline.pretrain import pretrain

    outcomes = load_outcomes(args.outcomes)
    pool = _pool(args)
    settings = _settings(args, pool)
    policy = pretrain(outcomes, settings.name, pool, settings)
    _written(args.out, save_state, policy, args.out)
    n = int((outcomes.splits == "train").sum())
    print(f"pretrained {policy.describe()} on {n} prompts x {len(outcomes.models)} models -> {args.out}")
    return 0


def cmd_serve(args) -> int:
    from banditroute.http.app import serve

    config = load_settings(args.config, environ=os.environ, overrides={
        "server": {"host": args.host, "port": args.port}, "storage": {"db": args.db},
        "policy": {"warm_start": args.warm_start}})
    try:
        serve(config)
    except OSError as err:
        raise ValueError(f"cannot listen on {config.server.host}:{config.server.port}: {err.strerror or err}") from None
    return 0


def cmd_export(args) -> int:
    from banditroute.log.export import export_db

    try:
        n = export_db(args.db, args.out)
    except (FileNotFoundError, RuntimeError) as err:
        raise ValueError(str(err)) from None
    print(f"exported {n} decisions from {args.db} to {args.out}")
    return 0


def cmd_repair(args) -> int:
    from banditroute.log.repair import repair_log

    done = repair_log(args.db)
    if args.json:
        print(json.dumps(done))
    elif not done["repaired"]:
        print(f"{args.db} opens as it is; nothing to repair ({', '.join(f'{n} {t}' for t, n in done['rows'].items())})")
    else:
        print(f"repaired {args.db}: kept {done['kept_bytes']} of the write-ahead log's {done['wal_bytes']} bytes "
              f"(every transaction before the damage; {done['lost_bytes']} bytes lost), now "
              f"{', '.join(f'{n} {t}' for t, n in done['rows'].items())}; the damaged log is kept as "
              f"{done['damaged_wal']}" + (f", the snapshot set aside as {done['stale_snapshot']} (the state is "
                                          "rebuilt from the log at the next start)" if done["stale_snapshot"] else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="banditroute", description="An LLM router that learns from feedback.")
    sub = ap.add_subparsers(dest="command", required=True)
    pol_help = f"policy: {', '.join(POLICY_NAMES)} (default from the pool file, else lints)"

    s = sub.add_parser("simulate", help="learn online on an outcome table's train split, evaluate on test")
    s.add_argument("outcomes", help="full-information outcome table (Parquet or JSONL)")
    s.add_argument("--policy", help=pol_help)
    s.add_argument("--cost-weight", type=float, help="quality points per USD (default from the pool file, else 100)")
    s.add_argument("--cost-preference", type=_fraction, help="route by a cost preference in [0, 1] instead of the weight "
                   "(0: quality only, 1: the cheapest)")
    s.add_argument("--budget-usd-per-request", type=_positive, metavar="B", help="run the online stream under a budget "
                   "of B USD per request on average, paced over the stream")
    s.add_argument("--when-exhausted", choices=("cheapest", "refuse"), default="cheapest",
                   help="with a budget: what happens once it cannot pay for any model")
    s.add_argument("--no-pacing", action="store_true", help="with a budget: no pacing, only a cap (serve as usual "
                   "until it is spent)")
    s.add_argument("--cascade-to", metavar="MODEL", help="route the start of a cascade that escalates to MODEL when "
                   "a simulated check fails (the table's quality < 0.5)")
    s.add_argument("--false-pass", type=_fraction, default=0.0, help="with --cascade-to: probability that the check "
                   "lets a bad answer through")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--state", help="start from a saved policy state (see pretrain)")
    s.add_argument("--log", type=_output, help="write the decision log here (.parquet or .jsonl)")
    s.add_argument("--config", help="pool file (TOML/JSON) for prices and policy settings")
    s.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    s.set_defaults(func=cmd_simulate)

    r = sub.add_parser("replay", help="estimate a candidate policy's value on a decision log (off-policy)")
    r.add_argument("log", help="decision log (Parquet or JSONL) from simulate --log or export")
    r.add_argument("--policy", help=pol_help + "; learning policies are scored by progressive validation")
    r.add_argument("--cost-weight", type=float, help="candidate's cost weight (default: the log's median)")
    r.add_argument("--state", help="evaluate a saved policy state, frozen")
    r.add_argument("--greedy", action="store_true", help="evaluate the candidate without exploration")
    r.add_argument("--estimator", choices=["ips", "snips", "dm", "dr", "all"], default="all")
    r.add_argument("--clip", type=_positive, default=float("inf"), help="IPS weight clipping (default: none)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    r.set_defaults(func=cmd_replay)

    t = sub.add_parser("tune", help="sweep the cost weight: on an outcome table (frontier) or a decision log")
    t.add_argument("outcomes", help="full-information outcome table, or a decision log (Parquet or JSONL)")
    t.add_argument("--policy", help=pol_help)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--target-quality", type=_fraction, help="(log) cheapest weight whose quality CI low end meets this")
    t.add_argument("--budget-usd-per-request", type=_positive, help="(log) best weight whose cost CI high end fits")
    t.add_argument("--state", help="(log) evaluate a saved policy state, frozen")
    t.add_argument("--estimator", choices=["ips", "snips", "dm", "dr"], default="dr", help="(log) estimator")
    t.add_argument("--cost-weights", type=_cost_weights, help="comma-separated cost weights (default: a data-driven grid)")
    t.add_argument("--config", help="pool file (TOML/JSON) for prices and policy settings")
    t.add_argument("--plot", type=_output, help="write the frontier plot to this PNG")
    t.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    t.set_defaults(func=cmd_tune)

    p = sub.add_parser("pretrain", help="fit a policy state from an outcome table's train split")
    p.add_argument("outcomes")
    p.add_argument("--out", required=True, type=_output, help="where to write the policy state")
    p.add_argument("--policy", help=pol_help)
    p.add_argument("--config", help="pool file (TOML/JSON) for prices and policy settings")
    p.set_defaults(func=cmd_pretrain)

    v = sub.add_parser("serve", help="run the HTTP routing service")
    v.add_argument("--config", help="configuration file (TOML/JSON); default: the bundled example pool")
    v.add_argument("--host", help="bind address (default 127.0.0.1)")
    v.add_argument("--port", type=int, help="port (default 8080)")
    v.add_argument("--db", help="DuckDB file (default $XDG_DATA_HOME/banditroute/router.duckdb)")
    v.add_argument("--warm-start", help="start the policy from a state written by pretrain (models matched by name)")
    v.set_defaults(func=cmd_serve)

    e = sub.add_parser("export", help="write a stopped server's decision log joined with feedback")
    e.add_argument("--db", required=True, help="the server's DuckDB file")
    e.add_argument("--out", required=True, type=_output, help="output file (.parquet or .jsonl)")
    e.set_defaults(func=cmd_export)

    f = sub.add_parser("repair", help="open a stopped server's log whose write-ahead log is damaged, keeping every "
                       "transaction before the damage")
    f.add_argument("--db", required=True, help="the server's DuckDB file")
    f.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    f.set_defaults(func=cmd_repair)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, OutcomeTableError, ExportError, ValueError) as err:
        print(f"banditroute {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
