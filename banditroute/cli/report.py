"""The tables the commands print (``--json`` prints the result objects instead)."""

from __future__ import annotations


def _percent(v: float | None) -> str:
    return "none" if v is None else f"{v:.1f}%"


def simulate_table(result: dict) -> str:
    """``simulate``: online and greedy test results beside the best single model and the oracle."""
    out = []
    ref, on, te = result["reference"], result["online"], result["test"]
    out.append(f"policy {result['policy']}  cost_weight {result['cost_weight']}  seed {result['seed']}")
    out.append(f"{'':18}{'n':>7}{'quality':>10}{'cost USD':>12}")
    out.append(f"{'online (train)':18}{on['n']:>7}{on['quality']:>10.4f}{on['cost_usd']:>12.4f}")
    out.append(f"{'greedy (test)':18}{te['n']:>7}{te['quality']:>10.4f}{te['cost_usd']:>12.4f}")
    out.append(f"{'best model (test)':18}{te['n']:>7}{ref['best_quality']:>10.4f}{ref['best_cost_usd']:>12.4f}  {ref['best_model']}")
    out.append(f"{'oracle (test)':18}{te['n']:>7}{ref['oracle_quality']:>10.4f}")
    out.append("test share: " + ", ".join(f"{m} {s:.1%}" for m, s in sorted(te["share"].items(), key=lambda kv: -kv[1]) if s > 0))
    if "budget" in result:
        b = result["budget"]
        out.append(f"budget: {b['spent_usd']:.4f} of {b['usd']:.4f} USD spent online ({b['spent_share']:.1%}; "
                   f"{b['spent_per_request']:.3g} per request for {b['usd_per_request']:.3g}); "
                   f"{b['exhausted_requests']} requests found it exhausted, {b['refused']} refused")
    if "log" in result:
        out.append(f"decision log: {result['log']['path']} ({result['log']['decisions']} decisions)")
    return "\n".join(out)


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _interval(e: dict, fmt: str) -> str:
    """``value [low, high]``, or ``not estimable``."""
    if e.get("not_estimable") or e["value"] is None:
        return "not estimable"
    return f"{_num(e['value'], fmt)} [{_num(e['low'], fmt)}, {_num(e['high'], fmt)}]"


def replay_table(result: dict) -> str:
    """``replay``: each estimator's quality, cost and reward with 95% intervals, and the logged values."""
    out = []
    out.append(f"candidate {result['policy']} at cost weight {result['cost_weight']:g} on {result['n']} logged decisions "
          f"(logged by {result['logging_policy']}); effective sample size {result['ess']:.0f}")
    out.append(f"{'estimator':10}{'quality':>26}{'cost USD / decision':>34}{'reward':>28}")
    for name, est in result["estimates"].items():
        cells = [_interval(est[k], fmt) for k, fmt in (("quality", ".4f"), ("cost_usd", ".3g"), ("reward", ".4f"))]
        out.append(f"{name:10}{cells[0]:>26}{cells[1]:>34}{cells[2]:>28}")
    lg = result["logged"]
    out.append(f"{'logged':10}{_num(lg['quality'], '.4f'):>26}{_num(lg['cost_usd'], '.3g'):>34}"
               f"{_num(lg['reward'], '.4f'):>28}   (the logging policy itself)")
    for w in result["warnings"]:
        out.append(f"warning: {w}")
    return "\n".join(out)


def tune_table(result: dict) -> str:
    """``tune TABLE``: the frontier, one line per cost weight, and its summary."""
    out = []
    base = result["reference"]["best_cost_usd"]
    out.append(f"{'cost_weight':>12}{'preference':>11}{'quality':>10}{'cost USD':>12}{'cost %':>9}")
    for p in result["points"]:
        pref = "-" if p.get("cost_preference") is None else f"{p['cost_preference']:.3f}"
        out.append(f"{p['cost_weight']:>12.4g}{pref:>11}{p['quality']:>10.4f}{p['cost_usd']:>12.4f}"
                   f"{100 * p['cost_usd'] / base:>8.1f}%")
    out.append(f"cost_at_95 {_percent(result['cost_at_95'])}  quality_at_25 {_percent(result['quality_at_25'])}"
               f"  qauc {_percent(result['qauc'])}  aiq {result['aiq']:.4f}  (best model {result['reference']['best_model']})")
    out.append("cost_at_95: the cost, as % of the best model's, of the cheapest point with 95% of its quality (over "
               "100%: the router needs more than that model costs); quality_at_25: the best quality within 25% of its "
               "cost; qauc: the mean best quality within budgets of 5, 10, ..., 100% of its cost")
    return "\n".join(out)


def tune_log_table(result: dict) -> str:
    """``tune LOG``: the off-policy frontier with intervals, and the recommended weight."""
    out = []
    out.append(f"{result['estimator']} estimates on {result['n']} logged decisions, candidate {result['policy']}")
    out.append(f"{'cost_weight':>12}{'preference':>11}{'quality [95% CI]':>28}{'cost USD / request [95% CI]':>36}")
    for p in result["points"]:
        q, c = p["quality"], p["cost_usd"]
        pref = "-" if p.get("cost_preference") is None else f"{p['cost_preference']:.3f}"
        out.append(f"{p['cost_weight']:>12.4g}{pref:>11}{q['value']:>10.4f} [{q['low']:.4f}, {q['high']:.4f}]"
              f"{c['value']:>14.3g} [{c['low']:.3g}, {c['high']:.3g}]")
    rec = result["recommendation"]
    if rec is None:
        out.append("no cost weight meets the target on the conservative end of its interval")
    else:
        pref = "" if rec.get("cost_preference") is None else f", about cost_preference {rec['cost_preference']:.3f}"
        out.append(f"recommended cost weight: {rec['cost_weight']:g}{pref} ({rec['reason']})")
    if result.get("median_cost_spread_usd") is not None:
        out.append(f"preference: the same trade-off at the log's median price spread of "
                   f"{result['median_cost_spread_usd']:.3g} USD per request")
    return "\n".join(out)
