"""The ``banditroute`` command line: simulate, tune and pretrain."""

from __future__ import annotations

import argparse
import json
import sys

from banditroute.config import ConfigError, PolicyConfig, load_settings
from banditroute.core.policies import POLICY_NAMES
from banditroute.core.state import save_state
from banditroute.offline.outcomes import OutcomeTableError, load_outcomes


def _pool(args):
    return load_settings(args.config) if args.config else None


def _settings(args, pool):
    settings = pool.policy if pool is not None else PolicyConfig()
    return settings.model_copy(update={"name": args.policy or settings.name})


def cmd_simulate(args) -> int:
    from banditroute.offline.simulate import simulate

    outcomes = load_outcomes(args.outcomes)
    pool = _pool(args)
    settings = _settings(args, pool)
    result = simulate(outcomes, settings.name, args.cost_weight, args.seed, state=args.state, pool=pool,
                      settings=settings, progress=not args.json and sys.stderr.isatty(), log=args.log)
    if args.json:
        print(json.dumps(result))
        return 0
    ref, on, te = result["reference"], result["online"], result["test"]
    print(f"policy {result['policy']}  cost_weight {result['cost_weight']}  seed {result['seed']}")
    print(f"{'':18}{'n':>7}{'quality':>10}{'cost USD':>12}")
    print(f"{'online (train)':18}{on['n']:>7}{on['quality']:>10.4f}{on['cost_usd']:>12.4f}")
    print(f"{'greedy (test)':18}{te['n']:>7}{te['quality']:>10.4f}{te['cost_usd']:>12.4f}")
    print(f"{'best model (test)':18}{te['n']:>7}{ref['best_quality']:>10.4f}{ref['best_cost_usd']:>12.4f}  {ref['best_model']}")
    print(f"{'oracle (test)':18}{te['n']:>7}{ref['oracle_quality']:>10.4f}")
    print("test share: " + ", ".join(f"{m} {s:.1%}" for m, s in sorted(te["share"].items(), key=lambda kv: -kv[1]) if s > 0))
    if args.log:
        print(f"decision log: {args.log} ({result['log']['decisions']} decisions)")
    return 0


def cmd_replay(args) -> int:
    from banditroute.offline.evaluate import replay

    estimators = ("ips", "snips", "dm", "dr") if args.estimator == "all" else (args.estimator,)
    result = replay(args.log, args.policy or "lints", args.cost_weight, state=args.state, estimators=estimators,
                    clip=args.clip, greedy=args.greedy, seed=args.seed,
                    progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"candidate {result['policy']} at cost weight {result['cost_weight']:g} on {result['n']} logged decisions "
          f"(logged by {result['logging_policy']}); effective sample size {result['ess']:.0f}")
    print(f"{'estimator':10}{'quality':>26}{'cost USD / decision':>34}{'reward':>28}")
    for name, est in result["estimates"].items():
        cells = [f"{v['value']:.4f} [{v['low']:.4f}, {v['high']:.4f}]" for v in
                 (est["quality"], est["reward"])]
        c = est["cost_usd"]
        cost = f"{c['value']:.3g} [{c['low']:.3g}, {c['high']:.3g}]"
        print(f"{name:10}{cells[0]:>26}{cost:>34}{cells[1]:>28}")
    lg = result["logged"]
    print(f"{'logged':10}{lg['quality']:>26.4f}{lg['cost_usd']:>34.3g}{lg['reward']:>28.4f}   (the logging policy itself)")
    for w in result["warnings"]:
        print(f"warning: {w}")
    return 0


def cmd_tune(args) -> int:
    if args.target_quality is not None or args.budget_usd_per_request is not None or _is_log(args.outcomes):
        return cmd_tune_log(args)
    from banditroute.offline.tune import plot_frontier, tune

    outcomes = load_outcomes(args.outcomes)
    pool = _pool(args)
    settings = _settings(args, pool)
    weights = [float(w) for w in args.cost_weights.split(",")] if args.cost_weights else None
    result = tune(outcomes, settings.name, args.seed, weights, pool=pool, settings=settings,
                  progress=not args.json and sys.stderr.isatty())
    if args.plot:
        plot_frontier(result, args.plot, title=f"{args.outcomes}")
    if args.json:
        print(json.dumps(result))
        return 0
    base = result["reference"]["best_cost_usd"]
    print(f"{'cost_weight':>12}{'quality':>10}{'cost USD':>12}{'cost %':>9}")
    for p in result["points"]:
        print(f"{p['cost_weight']:>12.4g}{p['quality']:>10.4f}{p['cost_usd']:>12.4f}{100 * p['cost_usd'] / base:>8.1f}%")
    fmt = lambda v: "none" if v is None else f"{v:.1f}%"
    print(f"cost_at_95 {fmt(result['cost_at_95'])}  quality_at_25 {fmt(result['quality_at_25'])}"
          f"  (best model {result['reference']['best_model']})")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _is_log(path: str) -> bool:
    """A decision log (as opposed to an outcome table) has a propensity column."""
    from banditroute.offline.tables import column_names

    return "propensity" in column_names(path)


def cmd_tune_log(args) -> int:
    from banditroute.offline.tune_log import plot_log_frontier, tune_on_log

    weights = [float(w) for w in args.cost_weights.split(",")] if args.cost_weights else None
    result = tune_on_log(args.outcomes, args.policy or "lints", weights, state=args.state, estimator=args.estimator,
                         target_quality=args.target_quality, budget=args.budget_usd_per_request, seed=args.seed,
                         progress=not args.json and sys.stderr.isatty())
    if args.plot:
        plot_log_frontier(result, args.plot)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['estimator']} estimates on {result['n']} logged decisions, candidate {result['policy']}")
    print(f"{'cost_weight':>12}{'quality [95% CI]':>28}{'cost USD / request [95% CI]':>36}")
    for p in result["points"]:
        q, c = p["quality"], p["cost_usd"]
        print(f"{p['cost_weight']:>12.4g}{q['value']:>10.4f} [{q['low']:.4f}, {q['high']:.4f}]"
              f"{c['value']:>14.3g} [{c['low']:.3g}, {c['high']:.3g}]")
    rec = result["recommendation"]
    if rec is None:
        print("no cost weight meets the target on the conservative end of its interval")
    else:
        print(f"recommended cost weight: {rec['cost_weight']:g} ({rec['reason']})")
    return 0


def cmd_pretrain(args) -> int:
    from banditroute.offline.pretrain import pretrain

    outcomes = load_outcomes(args.outcomes)
    pool = _pool(args)
    settings = _settings(args, pool)
    policy = pretrain(outcomes, settings.name, pool, settings)
    save_state(policy, args.out)
    n = int((outcomes.splits == "train").sum())
    print(f"pretrained {policy.describe()} on {n} prompts x {len(outcomes.models)} models -> {args.out}")
    return 0


def cmd_serve(args) -> int:
    import os

    from banditroute.http.app import serve

    config = load_settings(args.config, environ=os.environ, overrides={
        "server": {"host": args.host, "port": args.port}, "storage": {"db": args.db}})
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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="banditroute", description="An LLM router that learns from feedback.")
    sub = ap.add_subparsers(dest="command", required=True)
    pol_help = f"policy: {', '.join(POLICY_NAMES)} (default from the pool file, else lints)"

    s = sub.add_parser("simulate", help="learn online on an outcome table's train split, evaluate on test")
    s.add_argument("outcomes", help="full-information outcome table (Parquet or JSONL)")
    s.add_argument("--policy", help=pol_help)
    s.add_argument("--cost-weight", type=float, help="quality points per USD (default from the pool file, else 100)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--state", help="start from a saved policy state (see pretrain)")
    s.add_argument("--log", help="write the decision log here (.parquet or .jsonl)")
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
    r.add_argument("--clip", type=float, default=float("inf"), help="IPS weight clipping (default: none)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    r.set_defaults(func=cmd_replay)

    t = sub.add_parser("tune", help="sweep the cost weight: on an outcome table (frontier) or a decision log")
    t.add_argument("outcomes", help="full-information outcome table, or a decision log (Parquet or JSONL)")
    t.add_argument("--policy", help=pol_help)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--target-quality", type=float, help="(log) cheapest weight whose quality CI low end meets this")
    t.add_argument("--budget-usd-per-request", type=float, help="(log) best weight whose cost CI high end fits")
    t.add_argument("--state", help="(log) evaluate a saved policy state, frozen")
    t.add_argument("--estimator", choices=["ips", "snips", "dm", "dr"], default="dr", help="(log) estimator")
    t.add_argument("--cost-weights", help="comma-separated cost weights (default: a data-driven grid)")
    t.add_argument("--config", help="pool file (TOML/JSON) for prices and policy settings")
    t.add_argument("--plot", help="write the frontier plot to this PNG")
    t.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    t.set_defaults(func=cmd_tune)

    p = sub.add_parser("pretrain", help="fit a policy state from an outcome table's train split")
    p.add_argument("outcomes")
    p.add_argument("--out", required=True, help="where to write the policy state")
    p.add_argument("--policy", help=pol_help)
    p.add_argument("--config", help="pool file (TOML/JSON) for prices and policy settings")
    p.set_defaults(func=cmd_pretrain)

    v = sub.add_parser("serve", help="run the HTTP routing service")
    v.add_argument("--config", help="configuration file (TOML/JSON); default: the bundled example pool")
    v.add_argument("--host", help="bind address (default 127.0.0.1)")
    v.add_argument("--port", type=int, help="port (default 8080)")
    v.add_argument("--db", help="DuckDB file (default $XDG_DATA_HOME/banditroute/router.duckdb)")
    v.set_defaults(func=cmd_serve)

    e = sub.add_parser("export", help="write a stopped server's decision log joined with feedback")
    e.add_argument("--db", required=True, help="the server's DuckDB file")
    e.add_argument("--out", required=True, help="output file (.parquet or .jsonl)")
    e.set_defaults(func=cmd_export)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, OutcomeTableError, ValueError) as err:
        print(f"banditroute {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
