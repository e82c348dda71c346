"""Which features a deployment routes with: its log's, so that an upgrade that changes the default
features does not break a running deployment (``policy.features``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import cold_settings, thumbs_traffic

from banditroute.config import PolicyConfig, StorageConfig
from banditroute.core.features import Featurizer
from banditroute.core.router import Router, RouteRequest
from banditroute.core.state import StateError, save_state
from banditroute.log.store import Store
from banditroute.offline.outcomes import load_outcomes
from banditroute.offline.pretrain import pretrain
from banditroute.offline.simulate import pool_for
from banditroute.service.service import Service

OLD = "v1-d64"  # a version other than the default, standing in for the features before an upgrade


def settings(db: str, **policy):
    cfg = cold_settings()
    return cfg.model_copy(update={"storage": StorageConfig(db=db, flush_interval_ms=5),
                                  "policy": cfg.policy.model_copy(update=policy)})


async def old_deployment(db: str, n: int = 60) -> dict:
    """A log (and snapshot) written by a service routing with the OLD features; its policy's arrays."""
    config = settings(db)
    service = Service(config, Store(db, 0.005), seed=1,
                      router=Router(config, seed=1, featurizer=Featurizer.from_version(OLD)))
    service.recover()
    await thumbs_traffic(service, n)
    await service.snapshot()
    arrays = {k: v.copy() for k, v in service.router.policy.arrays().items()}
    service.store.close()
    return arrays


@pytest.mark.parametrize("snapshot", [True, False])
async def test_an_upgraded_service_goes_on_with_the_features_of_its_log(tmp_path, caplog, snapshot):
    """The default features changed since the log was written: the service routes with the log's, says
    so, and arrives at the same state (from the snapshot, or rebuilt from the log's vectors)."""
    db = str(tmp_path / "r.duckdb")
    before = await old_deployment(db)
    if not snapshot:
        (tmp_path / "r.duckdb.snapshot").unlink()
    with caplog.at_level(logging.WARNING, logger="banditroute"):
        again = Service(settings(db), Store(db), seed=1)
        info = again.recover()
    assert again.router.featurizer.version == OLD != Featurizer().version
    assert any(f"routing with features {OLD} (the log)" in r.getMessage() for r in caplog.records)
    assert info["replayed"] == (0 if snapshot else 60)
    for name, value in before.items():
        np.testing.assert_allclose(again.router.policy.arrays()[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
    d = await again.route(RouteRequest(prompt="Sort a list in Python"))
    assert d.feature_version == OLD and len(d.context.x) == Featurizer.from_version(OLD).dim
    again.store.close()


async def test_latest_switches_and_leaves_the_old_feedback_unlearned(tmp_path, caplog):
    db = str(tmp_path / "r.duckdb")
    await old_deployment(db)
    with caplog.at_level(logging.WARNING, logger="banditroute"):
        again = Service(settings(db, features="latest"), Store(db), seed=1)
        info = again.recover()
    assert again.router.featurizer.version == Featurizer().version
    assert info["replayed"] == 0
    assert any("60 feedbacks on decisions logged with features other than" in r.getMessage() for r in caplog.records)
    fresh = Service(settings(str(tmp_path / "fresh.duckdb")), Store(str(tmp_path / "fresh.duckdb")), seed=1)
    fresh.recover()
    for name, value in fresh.router.policy.arrays().items():  # the priors: nothing of the old log learned
        np.testing.assert_array_equal(again.router.policy.arrays()[name], value, err_msg=name)
    d = await again.route(RouteRequest(prompt="Sort a list in Python"))
    assert d.feature_version == Featurizer().version
    again.store.close()
    fresh.store.close()


async def test_a_new_log_takes_the_warm_starts_features(tmp_path, outcomes_path):

    outcomes = load_outcomes(outcomes_path)
    path = tmp_path / "old.state"
    state = pretrain(outcomes, "lints", featurizer=Featurizer.from_version(OLD))
    save_state(state, path)
    db = str(tmp_path / "r.duckdb")
    pool = pool_for(outcomes, None, cold_settings().policy.model_copy(update={"warm_start": str(path)}))
    service = Service(pool.model_copy(update={"storage": StorageConfig(db=db)}), Store(db), seed=1)
    service.recover()
    assert service.router.featurizer.version == service.router.policy.feature_version == OLD
    for name, value in state.arrays().items():  # the first request routes from the warm start
        np.testing.assert_array_equal(service.router.policy.arrays()[name], value, err_msg=name)
    service.store.close()


def test_an_explicit_version_is_used_and_an_unknown_one_refused(tmp_path):
    db = str(tmp_path / "r.duckdb")
    service = Service(settings(db, features=OLD), Store(db), seed=1)
    assert service.router.featurizer.version == OLD
    service.store.close()
    with pytest.raises(StateError, match="policy.features: unknown feature version 'v9-d64'"):
        Service(settings(str(tmp_path / "b.duckdb"), features="v9-d64"), Store(str(tmp_path / "b.duckdb")), seed=1)
    assert cold_settings().policy.features is None
    assert PolicyConfig(features=" auto ").features is None and PolicyConfig(features="latest").features == "latest"


async def test_a_log_of_older_features_outranks_a_warm_start_of_newer_ones(tmp_path, caplog):
    """After an upgrade that rebuilt the bundled warm start with the new default features, a deployment
    whose log (and no usable snapshot) holds the old ones rebuilds its state from the log instead of
    failing on the warm start."""
    db = str(tmp_path / "r.duckdb")
    before = await old_deployment(db)
    (tmp_path / "r.duckdb.snapshot").unlink()
    with caplog.at_level(logging.WARNING, logger="banditroute"):
        again = Service(settings(db, warm_start=PolicyConfig(warm_start="bundled").warm_start), Store(db), seed=1)
        info = again.recover()
    assert again.router.featurizer.version == OLD and info["replayed"] == 60
    assert any("the policy starts from its priors and the log" in r.getMessage() for r in caplog.records)
    for name, value in before.items():
        np.testing.assert_allclose(again.router.policy.arrays()[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
    again.store.close()


def test_a_corrupted_warm_start_fails_the_start_up_with_its_reason(tmp_path):
    """Injected fault: a flipped byte in the warm start. Choosing the features does not trip over it; the
    start-up then refuses the state, naming the file and the checksum."""
    path = tmp_path / "warm.state"
    data = bytearray(Path(PolicyConfig(warm_start="bundled").warm_start).read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    db = str(tmp_path / "r.duckdb")
    service = Service(settings(db, warm_start=str(path)), Store(db), seed=1)
    assert service.router.featurizer.version == Featurizer().version
    with pytest.raises(StateError, match=f"warm start {path}: .*checksum mismatch"):
        service.recover()
    service.store.close()
    for hostile in ("v2-d63-minilm-l6-m2v-64", "v3-d64-minilm-l6-m2v-64+hash_scale=2,embed_scale=1", "x" * 10_000):
        store = Store(str(tmp_path / "h.duckdb"))
        with pytest.raises(StateError, match="policy.features"):
            Service(settings(str(tmp_path / "h.duckdb"), features=hostile), store, seed=1)
        store.close()
