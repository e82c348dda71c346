"""One code path: the simulator and the server write the same log; a corrupted snapshot is rebuilt."""

from __future__ import annotations

import hashlib
import hmac
import logging
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import cold_settings, thumbs_traffic

from banditroute.config import PolicyConfig, StorageConfig
from banditroute.core.ids import id_time
from banditroute.http.app import create_app
from banditroute.log.schema import LOG_SCHEMA
from banditroute.log.store import Store
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.simulate import pool_for, simulate
from banditroute.service.service import Service


@pytest.mark.parametrize("policy", ["fixed:coder", "random"])
async def test_server_export_and_simulated_log_are_the_same_table(aiohttp_client, tmp_path, outcomes_path, policy):
    """The same prompts and outcomes, the same seed: simulate --log and a server's /export give the same
    columns and types, and for a policy without learned probabilities the same rows (all but the times)."""
    outcomes = load_outcomes(outcomes_path)
    seed, cw = 3, 25.0
    simulated = tmp_path / "simulated.parquet"
    simulate(outcomes, policy, cw, seed, log=str(simulated))

    pool = pool_for(outcomes, None, PolicyConfig(name=policy, cost_weight=cw))
    config = pool.model_copy(update={"storage": StorageConfig(db=str(tmp_path / "r.duckdb"), flush_interval_ms=5)})
    client = await aiohttp_client(create_app(config, seed=seed))
    train = outcomes.subset("train")
    for i in np.random.default_rng(seed).permutation(len(train)):  # the simulator's order
        resp = await client.post("/route", json={"prompt": train.prompts[i]})
        r = await resp.json()
        k = train.models.index(r["model"])
        resp = await client.post("/feedback", json={
            "decision_id": r["decision_id"], "cost_usd": float(train.cost[i, k]),
            "signals": [{"source": "judge", "kind": "quality", "value": float(train.quality[i, k])}]})
        assert resp.status == 200
    exported = tmp_path / "exported.parquet"
    exported.write_bytes(await (await client.get("/export?format=parquet")).read())

    a, b = pq.read_table(simulated), pq.read_table(exported)
    assert a.schema == b.schema == LOG_SCHEMA
    assert a.num_rows == b.num_rows == len(train)
    for name in a.column_names:
        if name not in ("ts", "prompt_hash", "decision_id"):
            assert a.column(name).to_pylist() == b.column(name).to_pylist(), name
    # ids carry their decision's time (which differs, as ts does) before the same random bits
    assert [i[12:] for i in a.column("decision_id").to_pylist()] == [i[12:] for i in b.column("decision_id").to_pylist()]
    for log in (a, b):
        times = [id_time(i) for i in log.column("decision_id").to_pylist()]
        assert times == pytest.approx([t.timestamp() for t in log.column("ts").to_pylist()], abs=1e-3)
    # the server keys its prompt hashes with the deployment's secret; the simulator's prompts are public
    key = bytes.fromhex((tmp_path / "r.duckdb.key").read_text())
    order = np.random.default_rng(seed).permutation(len(train))
    assert b.column("prompt_hash").to_pylist() == [
        hmac.new(key, train.prompts[i].encode(), hashlib.sha256).hexdigest() for i in order]
    assert a.column("prompt_hash").to_pylist() == [hashlib.sha256(train.prompts[i].encode()).hexdigest() for i in order]


def test_simulated_jsonl_log_has_the_rows_of_the_parquet_one(tmp_path, outcomes_path):
    outcomes = load_outcomes(outcomes_path)
    simulate(outcomes, "lints", 10.0, 1, log=str(tmp_path / "log.parquet"))
    simulate(outcomes, "lints", 10.0, 1, log=str(tmp_path / "log.jsonl"))
    import pyarrow.json as pj

    a, b = pq.read_table(tmp_path / "log.parquet"), pj.read_json(tmp_path / "log.jsonl")
    assert a.column_names == b.column_names
    for name in ("chosen", "propensity", "probabilities", "quality", "cost_usd", "n_signals"):
        assert a.column(name).to_pylist() == b.column(name).to_pylist(), name
    assert [i[12:] for i in a.column("decision_id").to_pylist()] == [i[12:] for i in b.column("decision_id").to_pylist()]


async def _service_with_traffic(db: str, n: int = 300) -> tuple[Service, dict]:
    config = cold_settings().model_copy(update={"storage": StorageConfig(db=db, flush_interval_ms=5)})
    service = Service(config, Store(db, 0.005), seed=1)
    service.recover()
    await thumbs_traffic(service, n)
    await service.snapshot()
    return service, {k: v.copy() for k, v in service.router.policy.arrays().items()}


@pytest.mark.parametrize("flip", ["header", "payload", "pickle"])
async def test_a_snapshot_with_a_flipped_byte_is_rejected_and_the_state_rebuilt_from_the_log(tmp_path, caplog, flip):
    """A corrupted snapshot, or one in the old pickle format, is never loaded: the state is rebuilt from
    the log, and equals the one that was snapshotted."""
    db = str(tmp_path / "r.duckdb")
    service, before = await _service_with_traffic(db)
    service.store.close()
    snapshot = tmp_path / "r.duckdb.snapshot"
    data = bytearray(snapshot.read_bytes())
    if flip == "pickle":
        data = bytearray(pickle.dumps(({"format": 1, "seq": 300}, before)))
    else:
        data[{"header": 40, "payload": len(data) // 2}[flip]] ^= 0x10
    snapshot.write_bytes(bytes(data))

    config = cold_settings().model_copy(update={"storage": StorageConfig(db=db)})
    again = Service(config, Store(db), seed=1)
    with caplog.at_level(logging.WARNING, logger="banditroute"):
        info = again.recover()
    again.store.close()
    assert any(("not a banditroute policy state" if flip == "pickle" else "checksum mismatch") in r.getMessage()
               for r in caplog.records)
    assert info["snapshot_seq"] == 0 and info["replayed"] == 300  # rebuilt from the whole log
    after = again.router.policy.arrays()
    assert set(after) == set(before)
    for name, value in before.items():
        np.testing.assert_allclose(after[name], value, rtol=1e-9, atol=1e-12, err_msg=name)


async def test_a_learned_noise_is_rebuilt_from_the_log_as_it_was_learned(tmp_path):
    """With ``noise_prior`` each model's noise is learned from its residuals, in log order: a restart
    without a snapshot rebuilds it from the log to what the live service had, and routes alike."""
    db = str(tmp_path / "r.duckdb")
    cfg = cold_settings()
    config = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"noise_prior": 20.0}),
                                    "storage": StorageConfig(db=db, flush_interval_ms=5)})
    service = Service(config, Store(db, 0.005), seed=1)
    service.recover()
    await thumbs_traffic(service, 200)
    before = {k: v.copy() for k, v in service.router.policy.arrays().items()}
    service.store.close()
    assert before["noise.n"].sum() > 0 and np.ptp(service.router.policy.noise()) > 0

    again = Service(config.model_copy(update={"storage": StorageConfig(db=db)}), Store(db), seed=1)
    info = again.recover()
    again.store.close()
    assert info["snapshot_seq"] == 0 and info["replayed"] == 200
    after = again.router.policy.arrays()
    assert set(after) == set(before)
    for name, value in before.items():
        np.testing.assert_allclose(after[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
