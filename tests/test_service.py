"""The service without HTTP: recovery, persisted policy changes, micro-batches."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from conftest import SHARED_DATA, cold_settings

from banditroute.config import StorageConfig, load_settings
from banditroute.core.reward import Feedback, Signal
from banditroute.core.router import RouteRequest
from banditroute.log.store import Store
from banditroute.service.service import Service

ROOT = Path(__file__).resolve().parents[1]


def make(db: str) -> Service:
    config = cold_settings().model_copy(update={"storage": StorageConfig(db=db, flush_interval_ms=5)})
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


def _pool(tmp_path, models, policy: str = "lints", warm_start=None):
    from banditroute.config import parse_settings

    return parse_settings({"models": [{"name": m} for m in models],
                           "policy": {"name": policy, "warm_start": None if warm_start is None else str(warm_start)},
                           "storage": {"db": str(tmp_path / "r.duckdb"), "flush_interval_ms": 5}})


def _pretrained(tmp_path, outcomes_path, policy: str = "lints"):
    from banditroute.core.state import save_state
    from banditroute.offline.outcomes import load_outcomes
    from banditroute.offline.pretrain import pretrain

    path = tmp_path / f"{policy}.state"
    state = pretrain(load_outcomes(outcomes_path), policy)
    save_state(state, path)
    return path, state


async def test_a_warm_started_service_routes_its_first_request_from_the_loaded_state(tmp_path, outcomes_path):
    import numpy as np

    path, state = _pretrained(tmp_path, outcomes_path)
    config = _pool(tmp_path, ["big", "coder", "newcomer", "tiny"], warm_start=path)  # mathy left out, one added
    service = Service(config, Store(config.storage.db, 0.005), seed=1)
    try:
        service.recover()
        prompt = "Write a Python function that sorts the list of 7 items and returns it."
        d = await service.route(RouteRequest(prompt=prompt, cost_weight=0.0))
        f = service.router.featurizer
        expected, _ = state.predict(f.transform_many([prompt]), [f.input_tokens(prompt)])
        for model in ("big", "coder", "tiny"):
            assert d.pred_quality[d.eligible.index(model)] == expected[0, state.models.index(model)]
        # pooled (the default): the newcomer starts from what the pool learned, not from the 0.5 prior
        # (test_policies.py::test_a_model_added_to_a_pooled_pool_starts_from_what_the_pool_learned)
        assert d.pred_quality[d.eligible.index("newcomer")] != 0.5
        assert np.all(service.router.policy.quality_observations[[0, 1, 3]] > 0)
    finally:
        service.store.close()


def test_a_warm_start_that_cannot_fit_the_pool_fails_the_start_with_its_reason(tmp_path, outcomes_path):
    import pytest

    from banditroute.core.state import StateError

    path, _ = _pretrained(tmp_path, outcomes_path, policy="egreedy")
    for models, policy, message in [(["big", "coder"], "lints", "cannot start a lints policy"),
                                    (["x", "y"], "egreedy", "knows none of the pool's models")]:
        config = _pool(tmp_path, models, policy=policy, warm_start=path)
        service = Service(config, Store(config.storage.db, 0.005), seed=1)
        try:
            with pytest.raises(StateError, match=message):
                service.recover()
        finally:
            service.store.close()


async def test_adding_a_model_and_restarting_keeps_the_other_models_state(tmp_path):
    import numpy as np

    config = _pool(tmp_path, ["a", "b"])
    service = Service(config, Store(config.storage.db, 0.005), seed=1)
    service.recover()
    for i in range(60):
        d = await service.route(RouteRequest(prompt=f"question number {i} about code"))
        await service.feedback(d.decision_id, Feedback(signals=[Signal(source="user", kind="thumbs", value=i % 3 > 0)],
                                                       cost_usd=0.001 * (1 + d.arm)))
    before = {k: v.copy() for k, v in service.router.policy.arrays().items()}
    await service.snapshot()
    service.store.close()

    grown = _pool(tmp_path, ["a", "b", "c"])
    again = Service(grown, Store(grown.storage.db, 0.005), seed=1)
    try:
        again.recover()
        after = again.router.policy.arrays()
        assert again.router.policy.models == ["a", "b", "c"]
        for name, value in before.items():  # a and b as they were; c at its prior, never chosen yet
            kept = after[name] if ".pool_" in name else after[name][:2]  # the pooled fit is the pool's, whole
            np.testing.assert_allclose(kept, value, rtol=1e-9, atol=1e-12, err_msg=name)
        assert after["quality_observations"][2] == 0
        d = await again.route(RouteRequest(prompt="a new question"))
        assert set(d.eligible) == {"a", "b", "c"}
    finally:
        again.store.close()


def test_the_bundled_pool_routes_its_first_request_from_the_shipped_warm_start(tmp_path):
    """The README's first command: no file, no feedback yet, and the policy already knows the pool."""
    import numpy as np

    config = load_settings()
    assert config.policy.warm_start and config.policy.warm_start.endswith("pool.example.state")
    service = Service(config.model_copy(update={"storage": StorageConfig(db=str(tmp_path / "r.duckdb"))}),
                      Store(str(tmp_path / "r.duckdb"), 0.005), seed=1)
    service.recover()
    try:
        (d,) = service.route_many([RouteRequest(
            prompt="Find all real x such that x^4 - 5x^2 + 4 = 0, and prove there are no others.", cost_weight=0.0)])
        quality = {m: s["quality"] for m, s in d.scores().items()}
        assert quality["o1-mini-2024-09-12"] == max(quality.values()) > 0.6  # the prior says 0.5 for all
        assert quality["llama-3.1-70b-instruct"] < quality["o1-mini-2024-09-12"] - 0.1
        assert service.router.policy.quality_observations.min() > 2000 and d.model in config.names
        assert np.isclose(sum(d.probabilities), 1.0)
    finally:
        service.store.close()


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data not present")
def test_the_shipped_warm_start_is_what_its_build_script_writes_today(tmp_path):
    """A change to the features or the default policy must rebuild the bundled state (the service refuses
    one of other features, but a state of the same features fitted under older defaults would load)."""
    import importlib.util

    import numpy as np

    from banditroute.core.state import loads_state

    spec = importlib.util.spec_from_file_location("build_warm_start", ROOT / "scripts" / "build_warm_start.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.main(["--table", str(SHARED_DATA / "zeroeval_gsm_math_crux.parquet"),
                       "--out", str(tmp_path / "state")]) == 0
    built, shipped = (loads_state(p.read_bytes(), str(p)) for p in (tmp_path / "state",
                                                                   ROOT / "banditroute" / "data" / "pool.example.state"))
    assert built[0] == shipped[0], "rebuild it: python scripts/build_warm_start.py"  # models, features, parameters
    ours, theirs = built[1].arrays(), shipped[1].arrays()
    assert set(ours) == set(theirs)
    for name, value in ours.items():  # equal up to the last bits another CPU's BLAS kernels may round differently
        np.testing.assert_allclose(value, theirs[name], rtol=1e-9, atol=1e-12,
                                   err_msg=f"{name}: rebuild it: python scripts/build_warm_start.py")


def test_warm_start_values_bundled_none_and_paths_relative_to_the_file(tmp_path):
    from banditroute.config import PolicyConfig

    assert PolicyConfig(warm_start="none").warm_start is None
    assert PolicyConfig(warm_start="bundled").warm_start.endswith("pool.example.state")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pool.toml").write_text('[policy]\nwarm_start = "states/w.state"\n[[models]]\nname = "a"\n')
    assert load_settings(tmp_path / "sub" / "pool.toml").policy.warm_start == str(tmp_path / "sub" / "states" / "w.state")
    # the command line and the environment stay relative to where the command runs
    cli = load_settings(tmp_path / "sub" / "pool.toml", overrides={"policy": {"warm_start": "x.state"}})
    assert cli.policy.warm_start == "x.state"


def test_prompt_hashes_are_keyed_per_deployment(tmp_path):
    """The logged prompt hash is HMAC-SHA256 under a secret generated once beside the database (mode
    0600) and kept across restarts: a guessed prompt's plain SHA-256 does not match it."""
    import hashlib
    import hmac
    import os
    import stat

    from banditroute.core.router import RouteRequest
    from banditroute.log.store import Store
    from banditroute.service.service import Service

    db = str(tmp_path / "k.duckdb")
    hashes = []
    for _ in range(2):
        service = Service(cold_settings(), Store(db), seed=0)
        (d,) = service.route_many([RouteRequest(prompt="my password is hunter2")])
        hashes.append(d.prompt_hash)
        service.store.close()
    key_file = tmp_path / "k.duckdb.key"
    key = bytes.fromhex(key_file.read_text())
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600 and len(key) == 32
    assert hashes[0] == hashes[1] == hmac.new(key, b"my password is hunter2", hashlib.sha256).hexdigest()
    assert hashes[0] != hashlib.sha256(b"my password is hunter2").hexdigest()
    configured = cold_settings()
    configured = configured.model_copy(update={"storage": configured.storage.model_copy(
        update={"prompt_hash_key": "team-secret"})})
    other = Service(configured, Store(str(tmp_path / "c.duckdb")), seed=0)
    (d,) = other.route_many([RouteRequest(prompt="my password is hunter2")])
    assert d.prompt_hash == hmac.new(b"team-secret", b"my password is hunter2", hashlib.sha256).hexdigest()
    other.store.close()


async def test_a_snapshot_taken_under_other_policy_settings_is_rebuilt_under_the_configured_ones(tmp_path, caplog):
    """An upgrade that changes a default (or an edited [policy]) must not keep the snapshot's old settings."""
    from banditroute.config import parse_settings

    def config(policy: dict):
        return parse_settings({"models": [{"name": m} for m in ("a", "b")], "policy": {"name": "lints", **policy},
                               "storage": {"db": str(tmp_path / "r.duckdb"), "flush_interval_ms": 5}})

    old = config({"floor_decay": None, "pooled": False, "exploration": 1.0})
    service = Service(old, Store(old.storage.db, 0.005), seed=1)
    service.recover()
    for i in range(40):
        d = await service.route(RouteRequest(prompt=f"question number {i}"))
        await service.feedback(d.decision_id, Feedback(signals=[Signal(source="user", kind="thumbs", value=i % 2 > 0)]))
    await service.snapshot()
    service.store.close()

    new = config({})  # the current defaults
    again = Service(new, Store(new.storage.db, 0.005), seed=1)
    try:
        info = again.recover()
        params = again.router.policy.params()
        assert (params["floor_decay"], params["pooled"], params["exploration"]) == (500.0, True, 0.5)
        assert info["snapshot_seq"] == 0 and info["replayed"] == 40  # rebuilt from the whole log
        assert "taken with other policy settings" in caplog.text and "pooled False -> True" in caplog.text
    finally:
        again.store.close()
