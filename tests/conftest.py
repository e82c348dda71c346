"""Shared fixtures: a small synthetic full-information outcome table with a known best model per task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

TASKS = {
    "code": "Write a Python function that {w} the list of {n} items and returns it.",
    "math": "How many {w} are left if you start with {n} and calculate 3 + {n}?",
    "trivia": "Which of these is a {w}?\nA) one\nB) two\nC) three\nD) four\nAnswer:",
}
WORDS = ["sorts", "reverses", "apples", "pears", "river", "planet", "filters", "counts", "stars", "maps"]
# mean quality per (task, model); "big" is best everywhere but expensive, each small model wins one task
QUALITY = {
    "code": {"big": 0.9, "coder": 0.88, "mathy": 0.3, "tiny": 0.2},
    "math": {"big": 0.9, "coder": 0.3, "mathy": 0.87, "tiny": 0.25},
    "trivia": {"big": 0.9, "coder": 0.4, "mathy": 0.4, "tiny": 0.86},
}
COST = {"big": 0.01, "coder": 0.001, "mathy": 0.001, "tiny": 0.0002}


def make_outcomes(n_prompts: int = 300, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = {c: [] for c in ("prompt_id", "prompt", "model", "quality", "cost_usd", "task", "split")}
    tasks = list(TASKS)
    for i in range(n_prompts):
        task = tasks[i % len(tasks)]
        prompt = TASKS[task].format(w=WORDS[rng.integers(len(WORDS))], n=int(rng.integers(2, 99)))
        split = "test" if i % 4 == 0 else "train"
        for model, q in QUALITY[task].items():
            rows["prompt_id"].append(f"p{i}")
            rows["prompt"].append(prompt)
            rows["model"].append(model)
            rows["quality"].append(float(rng.random() < q))
            rows["cost_usd"].append(COST[model] * (1 + 0.1 * rng.random()))
            rows["task"].append(task)
            rows["split"].append(split)
    return pa.table(rows)


@pytest.fixture(scope="session")
def outcomes_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "synthetic.parquet"
    pq.write_table(make_outcomes(), path)
    return path


def cold_settings():
    """The bundled pool without its warm start: tests of the service's mechanics count from zero."""
    from banditroute.config import load_settings

    cfg = load_settings()
    return cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"warm_start": None})})


async def thumbs_traffic(service, n: int) -> None:
    """Route ``n`` coding prompts through ``service`` and give each a thumb (60% up) and a cost."""
    from banditroute.core.reward import Feedback, Signal
    from banditroute.core.router import RouteRequest

    rng = np.random.default_rng(2)
    for i in range(n):
        d = await service.route(RouteRequest(prompt=f"Write a Python function number {i} " + "word " * (i % 7)))
        await service.feedback(d.decision_id, Feedback(
            signals=[Signal(source="user", kind="thumbs", value=bool(rng.random() < 0.6))],
            cost_usd=float(rng.uniform(0.0, 0.01))))
