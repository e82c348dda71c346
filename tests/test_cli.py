import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from banditroute.cli.main import main
from banditroute.log.schema import COLUMNS


def run_json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_simulate_json_contract(capsys, outcomes_path):
    out = run_json(capsys, "simulate", str(outcomes_path), "--seed", "3", "--cost-weight", "20", "--json")
    assert out["policy"] == "lints" and out["cost_weight"] == 20.0 and out["seed"] == 3
    assert out["online"]["n"] == 225 and 0 <= out["online"]["quality"] <= 1 and out["online"]["cost_usd"] > 0
    t = out["test"]
    assert t["n"] == 75 and 0 <= t["quality"] <= 1 and t["cost_usd"] > 0
    assert sum(t["share"].values()) == pytest.approx(1.0, abs=1e-4)
    assert set(out["reference"]) >= {"best_model", "best_quality", "best_cost_usd", "oracle_quality"}
    # the learned policy beats always-the-cheapest and gets close to the oracle on this easy problem
    assert t["quality"] > 0.75


def test_same_seed_same_json(outcomes_path):
    cmd = [sys.executable, "-m", "banditroute.cli.main", "simulate", str(outcomes_path), "--seed", "4", "--json"]
    a, b = (subprocess.run(cmd, capture_output=True, text=True, check=True).stdout for _ in range(2))
    assert a == b and json.loads(a)["seed"] == 4


@pytest.mark.parametrize("policy", ["linucb", "squarecb", "egreedy", "random", "fixed:tiny"])
def test_simulate_other_policies(capsys, outcomes_path, policy):
    out = run_json(capsys, "simulate", str(outcomes_path), "--policy", policy, "--json")
    assert out["policy"] == policy
    if policy == "fixed:tiny":
        assert out["test"]["share"]["tiny"] == 1.0


def test_simulate_log_has_the_schema(tmp_path, capsys, outcomes_path):
    log = tmp_path / "log.parquet"
    run_json(capsys, "simulate", str(outcomes_path), "--log", str(log), "--json")
    t = pq.read_table(log)
    assert tuple(t.column_names) == COLUMNS and t.num_rows == 225
    rows = t.to_pylist()
    assert all(r["quality"] is not None and r["propensity"] > 0 for r in rows)
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-9 for r in rows)
    assert all(r["propensity"] == r["probabilities"][r["eligible"].index(r["chosen"])] for r in rows)
    jsonl = tmp_path / "log.jsonl"
    run_json(capsys, "simulate", str(outcomes_path), "--log", str(jsonl), "--json")
    assert len(jsonl.read_text().splitlines()) == 225


def test_tune_json_contract_and_plot(tmp_path, capsys, outcomes_path):
    plot = tmp_path / "frontier.png"
    out = run_json(capsys, "tune", str(outcomes_path), "--cost-weights", "0,10,100,1000", "--plot", str(plot), "--json")
    assert [p["cost_weight"] for p in out["points"]] == [0.0, 10.0, 100.0, 1000.0]
    for p in out["points"]:
        assert set(p) >= {"cost_weight", "quality", "cost_usd"}
    assert out["cost_at_95"] is None or 0 < out["cost_at_95"] <= 200
    assert out["quality_at_25"] is None or 0 < out["quality_at_25"] <= 200
    # more weight on cost never costs more here: the cheapest point is the heaviest weight
    assert out["points"][-1]["cost_usd"] < out["points"][0]["cost_usd"]
    assert 0 < out["qauc"] <= 200 and 0 < out["aiq"] <= 1
    assert plot.stat().st_size > 10_000


def test_default_tune_grid_spans_to_the_cheap_end_refines_the_95_crossing_and_fills_cost_gaps(outcomes_path):
    from banditroute.offline.outcomes import load_outcomes
    from banditroute.offline.tune import FILL_GAP, default_grid, tune

    outcomes = load_outcomes(outcomes_path)
    out = tune(outcomes, "lints", seed=1)
    test = outcomes.subset("test")
    weights = [p["cost_weight"] for p in out["points"]]
    assert weights == sorted(weights) and len(weights) > len(default_grid(outcomes))
    cheapest = test.cost.sum(axis=0).min()
    assert out["points"][-1]["cost_usd"] <= 1.05 * cheapest or weights[-1] >= 3 ** 6 * default_grid(outcomes)[-1] * 0.99
    target = 0.95 * out["reference"]["best_quality"]
    above = [p["quality"] >= target for p in out["points"]]
    crossings = [i for i in range(len(above) - 1) if above[i] != above[i + 1]]
    for i in crossings:  # refined: the weights around a crossing are close together
        assert weights[i + 1] / max(weights[i], 1e-12) < 1.16 or weights[i] == 0  # 3 halvings of log-gaps
    costs = [p["cost_usd"] for p in out["points"]]
    gaps = [i for i in range(len(costs) - 1) if abs(costs[i + 1] - costs[i]) > FILL_GAP * out["reference"]["best_cost_usd"]]
    for i in gaps:  # filled: where neighbouring points' costs are far apart, their weights are close
        assert weights[i + 1] / max(weights[i], 1e-12) < 1.16 or weights[i] == 0


def test_tune_keeps_each_points_test_prompts_for_paired_comparisons(outcomes_path):
    from banditroute.offline.outcomes import load_outcomes
    from banditroute.offline.tune import tune

    outcomes = load_outcomes(outcomes_path)
    n = len(outcomes.subset("test"))
    for p in tune(outcomes, "lints", seed=1, cost_weights=[0.0, 100.0], per_prompt=True)["points"]:
        quality, cost = p["per_prompt"]
        assert quality.shape == cost.shape == (n,)
        assert quality.mean() == pytest.approx(p["quality"]) and cost.sum() == pytest.approx(p["cost_usd"])
    assert "per_prompt" not in tune(outcomes, "lints", seed=1, cost_weights=[0.0])["points"][0]


def test_pretrain_then_simulate_from_state(tmp_path, capsys, outcomes_path):
    state = tmp_path / "state.pkl"
    assert main(["pretrain", str(outcomes_path), "--out", str(state)]) == 0
    capsys.readouterr()
    warm = run_json(capsys, "simulate", str(outcomes_path), "--state", str(state), "--json")
    # full-information warm start: the online phase is already near the per-task best
    assert warm["online"]["quality"] > 0.8


@pytest.mark.parametrize(
    "argv, message",
    [
        (["simulate", "missing.parquet"], "does not exist"),
        (["simulate", "{data}", "--policy", "nope"], "unknown policy"),
        (["simulate", "{data}", "--policy", "fixed:gpt-9"], "unknown model"),
        (["simulate", "{data}", "--config", "missing.toml"], "cannot read configuration"),
        (["simulate", "{data}", "--state", "missing.pkl"], "cannot read policy state"),
        (["simulate", "{data}", "--cost-weight", "-1"], "cost weight must be"),
        (["simulate", "{data}", "--cost-weight", "nan"], "cost weight must be"),
        (["simulate", "{data}", "--cost-preference", "2"], "--cost-preference: must be a number in [0, 1], got 2"),
        (["simulate", "{data}", "--cost-preference", "nan"], "must be a number in [0, 1], got nan"),
        (["simulate", "{data}", "--cost-preference", "half"], "--cost-preference: not a number: 'half'"),
        (["tune", "{data}", "--cost-weights", "0,1e400"], "cost weights must be finite numbers >= 0, got inf"),
        (["replay", "{data}", "--clip", "0"], "--clip: must be a number > 0, got 0"),
        # a file written at the end: its directory is checked before the work, not found missing after it
        (["simulate", "{data}", "--log", "/nonexistent/dir/log.jsonl"], "--log: no directory /nonexistent/dir"),
        (["pretrain", "{data}", "--out", "/nonexistent/dir/x.state"], "--out: no directory /nonexistent/dir"),
    ],
)
def test_cli_errors_are_clear(capsys, outcomes_path, argv, message):
    argv = [a.replace("{data}", str(outcomes_path)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors (an argument's type) exit with 2 as well
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_online_regret_against_the_best_fixed_model_and_the_oracle(outcomes_path):
    from banditroute.offline.outcomes import load_outcomes
    from banditroute.offline.simulate import simulate

    outcomes = load_outcomes(outcomes_path)
    train = outcomes.subset("train")
    best = train.models[int(train.quality.sum(axis=0).argmax())]
    fixed = simulate(outcomes, f"fixed:{best}", 0.0, seed=3)["online"]["regret"]
    assert fixed["best_fixed"] == best and fixed["vs_best_fixed"] == 0.0 and fixed["passes_best_fixed_at"] == 1
    learned = simulate(outcomes, "lints", 0.0, seed=3)["online"]["regret"]
    assert learned["curve"][-1]["n"] == len(train) and learned["curve"][-1]["vs_oracle"] == learned["vs_oracle"]
    assert all(a["n"] < b["n"] for a, b in zip(learned["curve"], learned["curve"][1:]))
    assert all(p["vs_oracle"] >= p["vs_best_fixed"] - 1e-9 for p in learned["curve"])  # the oracle beats any model
    uniform = simulate(outcomes, "random", 0.0, seed=3)["online"]["regret"]
    assert learned["vs_best_fixed"] < uniform["vs_best_fixed"]  # learning beats not learning


def _serve(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "banditroute.cli.main", "serve", *args], check=False,
                          capture_output=True, text=True, timeout=timeout)


def _one_line_error(res, *needles, command="serve"):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith(f"banditroute {command}: error: "), res.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_serve_refuses_an_unopenable_log_or_an_invalid_port_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _one_line_error(_serve("--db", str(blocker / "sub" / "r.duckdb")), "cannot open the log", str(blocker))
    _one_line_error(_serve("--port", "70000"), "server.port", "65535")
    _one_line_error(_serve("--port", "-1"), "server.port")


def test_serve_names_the_process_holding_the_log(tmp_path):
    import os
    import socket

    db = str(tmp_path / "r.duckdb")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    first = subprocess.Popen([sys.executable, "-m", "banditroute.cli.main", "serve", "--db", db, "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stderr:  # wait until it holds the file
            if "recovered" in line:
                break
        _one_line_error(_serve("--db", db, "--port", "0"), "cannot open the log", f"PID {first.pid}")
    finally:
        first.terminate()
        first.wait(30)
    assert os.path.exists(db)


def test_serve_on_a_read_only_file_system_is_a_one_line_error(tmp_path):
    import os
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    where = tempfile.mkdtemp(prefix="banditroute-ro-")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", where], check=False, capture_output=True).returncode:
        os.rmdir(where)
        pytest.skip("cannot mount a tmpfs here")
    try:
        _one_line_error(_serve("--db", os.path.join(where, "r.duckdb")), "cannot open the log", "Read-only file system")
    finally:
        subprocess.run(["umount", "-l", where], check=False)
        os.rmdir(where)


def test_repair_refuses_what_it_cannot_repair_in_one_line(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "banditroute.cli.main", "repair", "--db", str(tmp_path / "no.duckdb")],
                             check=False, capture_output=True, text=True, timeout=60)
    _one_line_error(missing, "no log at", command="repair")
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(b"not a database" * 1000)
    res = subprocess.run([sys.executable, "-m", "banditroute.cli.main", "repair", "--db", str(garbage)],
                         check=False, capture_output=True, text=True, timeout=60)
    _one_line_error(res, "not because of its write-ahead log", command="repair")
