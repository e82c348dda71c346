"""The service without HTTP: recovery, persisted policy changes, micro-batches."""

from __future__ import annotations

import asyncio
import logging

from banditroute.config import StorageConfig, load_settings
from banditroute.core.reward import Feedback, Signal
from banditroute.core.router import RouteRequest
from banditroute.log.store import Store
from banditroute.service.service import Service


def make(db: str) -> Service:
    config = load_settings().model_copy(update={"storage": StorageConfig(db=db, flush_interval_ms=5)})
    service = Service(config, Store(db, 0.005), seed=1)
    service.recover()
    return service


async def test_a_persisted_policy_change_overrides_the_configuration_and_says_so(tmp_path, caplog):
    db = str(tmp_path / "r.duckdb")
    service = make(db)
    d = await service.route(RouteRequest(prompt="hello"))
    await service.feedback(d.decision_id, Feedback(signals=[Signal(source="user", kind="thumbs", value=True)]))
    await service.update_policy({"policy": "linucb", "cost_weight": 7.0, "exploration": None, "floor": None})
    service.store.close()

    with caplog.at_level(logging.WARNING, logger="banditroute"):
        again = make(db)
    again.store.close()
    assert again.policy_view()["policy"] == "linucb" and again.router.cost_weight == 7.0
    warned = [r.getMessage() for r in caplog.records if "override the configuration" in r.getMessage()]
    assert warned and "policy lints -> linucb" in warned[0] and "cost_weight 100.0 -> 7.0" in warned[0]


async def test_requests_arriving_together_are_routed_in_one_batch(tmp_path):
    service = make(str(tmp_path / "r.duckdb"))
    try:
        decisions = await asyncio.gather(*(service.route(RouteRequest(prompt=f"question {i}")) for i in range(20)))
        assert len({d.decision_id for d in decisions}) == 20 and service.batcher.batches == 1
        assert all(service.pending.get(d.decision_id) is not None for d in decisions)
    finally:
        service.store.close()
