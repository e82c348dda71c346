import json

import pytest

from banditroute.config import ConfigError, load_settings


def test_bundled_pool_loads():
    pool = load_settings()
    assert len(pool.models) == 11
    assert pool.policy.name == "lints"
    gpt4 = pool.spec("gpt-4o-2024-08-06")
    assert gpt4.price_usd(1000, 100) == pytest.approx((1000 * 2.5 + 100 * 10) / 1e6)


@pytest.mark.parametrize(
    "doc, field",
    [
        ({"models": [{"name": "a", "input_price_per_mtok": -1}]}, "models.0.input_price_per_mtok"),
        ({"models": [{"name": "a"}, {"name": "a"}]}, "duplicate model names: a"),
        ({"models": []}, "models"),
        ({"models": [{"name": "a", "colour": "red"}]}, "models.0.colour"),
        ({"models": [{"name": "a"}], "policy": {"floor": 0.9}}, "policy.floor"),
        ({"models": [{"name": "a"}], "policy": {"cost_weight": "nan"}}, "policy.cost_weight"),
        # mistakes that would otherwise surface only when the service builds its policy, after starting
        ({"models": [{"name": "a"}], "policy": {"name": "thompson"}}, "policy.name: Value error, unknown policy 'thompson'"),
        ({"models": [{"name": "a"}], "policy": {"name": "fixed:"}}, "unknown policy 'fixed:'"),
        ({"models": [{"name": "a"}], "policy": {"name": "fixed:b"}}, "policy.name: fixed policy of an unknown model 'b'"),
        ({"models": [{"name": "a"}], "policy": {"pooled": False, "deviation_strength": 2}},
         "policy: Value error, deviation_strength applies only with pooled = true"),
        ({"models": [{"name": "a"}], "policy": {"pooled": False, "price_prior": True}}, "price_prior applies only"),
    ],
)
def test_invalid_pool_names_the_field(tmp_path, doc, field):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_settings(path)


def test_unreadable_and_unparsable(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[models]\nname=")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_settings(bad)


def test_precedence_defaults_file_environment_command_line(tmp_path):
    path = tmp_path / "pool.toml"
    path.write_text('[[models]]\nname = "a"\n[server]\nport = 9000\nhost = "127.0.0.2"\n[storage]\ndb = "file.duckdb"\n')
    assert load_settings(path).server.port == 9000 and load_settings(path).policy.cost_weight == 100.0  # file, default
    env = {"BANDITROUTE_PORT": "9100", "BANDITROUTE_COST_WEIGHT": "7", "BANDITROUTE_DB": "env.duckdb"}
    s = load_settings(path, environ=env)
    assert (s.server.port, s.policy.cost_weight, s.storage.db, s.server.host) == (9100, 7.0, "env.duckdb", "127.0.0.2")
    s = load_settings(path, environ=env, overrides={"server": {"port": 9200, "host": None}, "storage": {"db": "cli.duckdb"}})
    assert (s.server.port, s.storage.db, s.server.host) == (9200, "cli.duckdb", "127.0.0.2")  # None: not given
    with pytest.raises(ConfigError, match="with BANDITROUTE_\\* variables: server.port"):  # names where it came from
        load_settings(path, environ={"BANDITROUTE_PORT": "70000"})
    with pytest.raises(ConfigError, match="with command-line options: server.port"):
        load_settings(path, overrides={"server": {"port": 70000}})
