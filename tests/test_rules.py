"""Routing rules: configuration, matching in order, what they do to a decision, the log and replay."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from banditroute.config import ConfigError, parse_settings
from banditroute.core.router import Router, RouteRequest
from banditroute.core.rules import Rules
from banditroute.errors import RoutingError
from banditroute.log.schema import ADDED_COLUMNS, DECISION_SCHEMA, DUCK_TYPES
from banditroute.log.store import Store
from banditroute.offline.candidates import candidate_probabilities
from banditroute.offline.logs import load_log
from banditroute.service.service import Service

MODELS = [{"name": m, "input_price_per_mtok": p, "output_price_per_mtok": 4 * p, "capabilities": caps}
          for m, p, caps in (("big", 5.0, ["tools"]), ("mid", 1.0, ["tools"]), ("small", 0.1, []),
                             ("onprem", 0.2, []))]
RULES = [
    {"name": "confidential", "when": {"metadata": {"confidential": True}}, "models": ["onprem"]},
    {"name": "premium", "when": {"users": ["alice"]}, "model": "big"},
    {"name": "partner", "when": {"api_key_env": "PARTNER_KEY"}, "cost_weight": 0.0, "models": ["big", "mid"]},
    {"name": "code", "when": {"prompt_regex": r"(?i)\bpython\b"}, "require": ["tools"]},
]


def pool(rules=RULES, **extra):
    return parse_settings({"policy": {"warm_start": "none"}, "models": MODELS, "rules": rules, **extra})


@pytest.mark.parametrize("rules, message", [
    ([{"name": "x", "models": ["gpt-9"]}], "unknown models gpt-9"),
    ([{"name": "x", "when": {"prompt_regex": "("}}], "not a regular expression"),
    ([{"name": "x"}, {"name": "x"}], "a second rule named 'x'"),
    ([{"name": "x", "model": "big", "models": ["mid"]}], "is not among its models"),
    ([{"name": "x", "when": {"weekday": "monday"}}], "rules.0.when.weekday"),
])
def test_a_bad_rule_fails_the_configuration_with_its_place_named(rules, message):
    with pytest.raises(ConfigError, match=message):
        pool(rules)


def test_rules_match_in_order_on_every_condition():
    r = Rules(pool().rules, environ={"PARTNER_KEY": "sk-partner"})
    name = lambda *a: (m.name if (m := r.match(*a)) else None)
    assert name("hello", None, None, None) is None
    assert name("hello", "alice", {"confidential": True}, None) == "confidential"  # the first that matches
    assert name("hello", "alice", {"confidential": 1}, None) == "premium"  # a JSON 1 is not true
    assert name("hello", "bob", {"confidential": "yes"}, None) is None
    assert name("hello", None, None, "sk-partner") == "partner"
    assert name("hello", None, None, "sk-other") is None
    assert name("write Python code", None, None, None) == "code"
    assert name("pythonic", None, None, None) is None  # a word boundary in the pattern
    assert Rules(pool().rules, environ={}).match("x", None, None, "") is None  # unset key variable: never


def route(router, prompt="Tell me a joke.", **options):
    return router.route_many([prompt], [RouteRequest(prompt=prompt, **options)])[0]


def test_a_rule_narrows_the_choice_and_names_itself_on_the_decision():
    router = Router(pool(), seed=0)
    d = route(router, metadata={"confidential": True})
    assert (d.model, d.propensity, d.eligible, d.rule) == ("onprem", 1.0, ["onprem"], "confidential")
    d = route(router, user="alice", cost_weight=1e6)  # the rule wins over the request's options
    assert (d.model, d.propensity, d.rule) == ("big", 1.0, "premium")
    d = route(router, "Fix this python script")
    assert sorted(d.eligible) == ["big", "mid"] and d.rule == "code"
    d = route(router)
    assert len(d.eligible) == 4 and d.rule is None
    req = RouteRequest(prompt="Tell me a joke.")
    req.set_api_key("sk-partner")
    router = Router(pool(), seed=0)
    router.rules = Rules(pool().rules, environ={"PARTNER_KEY": "sk-partner"})
    d = router.route_many([req.prompt], [req])[0]
    assert d.rule == "partner" and d.cost_weight == 0.0 and sorted(d.eligible) == ["big", "mid"]
    out = route(router, metadata={"confidential": True}, models=["big"])  # the rule and the request disagree
    assert isinstance(out, RoutingError) and "allows none of the requested models" in str(out)


def test_an_api_key_cannot_be_smuggled_in_through_the_body():
    with pytest.raises(ValueError, match="_api_key"):
        RouteRequest.model_validate({"prompt": "x", "_api_key": "sk-partner"})


def test_the_rule_is_logged_and_replay_keeps_a_candidate_to_the_models_it_allowed(tmp_path):
    service = Service(pool(), Store(":memory:", flush_interval=3600.0, group_commit=False), seed=1)
    for i in range(200):
        meta = {"confidential": True} if i % 4 == 0 else None
        service.route_many([RouteRequest(prompt=f"question {i} about history", metadata=meta)])
    service.store.flush().result()
    out = tmp_path / "log.parquet"
    service.store.export(out)
    table = pq.read_table(out)
    rules = table.column("rule").to_pylist()
    assert rules.count("confidential") == 50 and rules.count(None) == 150
    log = load_log(out)
    pi = candidate_probabilities(log, "random", 0.0)
    ruled = np.array([r == "confidential" for r in rules])
    onprem = log.models.index("onprem")
    assert np.all(pi[ruled][:, onprem] == 1.0)  # the candidate had only what the rule allowed
    assert np.all(pi[~ruled].max(axis=1) < 1.0)


def test_a_log_written_before_rules_and_calls_existed_opens_and_gains_the_columns(tmp_path):
    path = str(tmp_path / "old.duckdb")
    con = duckdb.connect(path)
    old = [f for f in DECISION_SCHEMA if f.name not in ADDED_COLUMNS]
    con.execute(f"CREATE TABLE decisions ({', '.join(f'{chr(34)}{f.name}{chr(34)} {DUCK_TYPES[f.type]}' for f in old)})")
    con.close()
    service = Service(pool(), Store(path, flush_interval=3600.0, group_commit=False), seed=1)
    service.route_many([RouteRequest(prompt="hello", user="alice")])
    service.store.flush().result()
    assert service.store.query("SELECT rule FROM decisions").column(0).to_pylist() == ["premium"]
    assert service.store.query("SELECT count(*) FROM calls").column(0).to_pylist() == [0]
    service.store.close()


SEMANTIC = [{"name": "translate", "examples": ["Translate this into French: good morning",
                                               "How do you say 'thank you' in Spanish?",
                                               "Translate the following paragraph to German."]},
            {"name": "code", "examples": ["Write a Python function that sorts a list of numbers.",
                                          "Fix the bug in this JavaScript loop.",
                                          "Write a SQL query that counts the orders per customer."]}]


def test_a_semantic_route_matches_paraphrases_of_its_examples_and_leaves_other_prompts_alone():
    from banditroute.config import SemanticRoute
    from banditroute.core.semantic import SemanticRoutes

    routes = SemanticRoutes([SemanticRoute(**r) for r in SEMANTIC])
    assert routes.match("Translate this into Italian: where is the station?") == "translate"
    assert routes.match("Write a Python function that merges two dictionaries") == "code"
    assert routes.match("Who won the football world cup in 1998?") is None
    strict = SemanticRoutes([SemanticRoute(**SEMANTIC[0], threshold=0.99)])
    assert strict.match("Translate this into Italian: where is the station?") is None
    scores = routes.scores("Translate this into French: good morning")
    assert scores[0] == pytest.approx(1.0) and scores[1] < 0.5  # an example is its own nearest


def test_rules_route_by_semantic_route_and_a_rule_naming_an_unknown_one_fails():
    rules = [{"name": "code to big", "when": {"semantic_route": "code"}, "model": "big"},
             {"name": "translations stay small", "when": {"semantic_route": "translate"}, "model": "small"}]
    router = Router(pool(rules, semantic_routes=SEMANTIC), seed=1)
    d = router.route("Write a Python function that merges two dictionaries", RouteRequest(prompt="x"))
    assert (d.model, d.rule) == ("big", "code to big")
    d = router.route("Translate 'see you tomorrow' into German", RouteRequest(prompt="x"))
    assert (d.model, d.rule) == ("small", "translations stay small")
    assert router.route("What is the boiling point of water?", RouteRequest(prompt="x")).rule is None
    with pytest.raises(ConfigError, match="no semantic route named 'poetry'"):
        pool([{"name": "x", "when": {"semantic_route": "poetry"}}], semantic_routes=SEMANTIC)
