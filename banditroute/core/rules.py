"""Routing rules: the operator's conditions and actions, applied before the policy chooses.

Rules (``[[rules]]`` in the configuration) are tried in order and the first whose conditions all hold
applies (no condition: it always applies). Conditions: the request's ``user`` is one of ``users``; each
``metadata`` field has the given value; the request's bearer key equals the value of the environment
variable ``api_key_env``; ``prompt_regex`` is found in the prompt; the prompt matches the semantic
route ``semantic_route`` (:mod:`banditroute.core.semantic`). Actions narrow what the policy may
choose, and win over the request's own options: ``models`` (intersected with the request's),
``model`` (that model, with probability 1), ``require`` (added to the request's), ``cost_weight`` or
``cost_preference`` (replaces the request's). The decision logs the rule's name (``rule``), and its eligible models are the
ones the rule allowed, so replay evaluates a candidate only over those.

Example::

    [[rules]]
    name = "confidential stays in house"
    when = { metadata = { confidential = true } }
    models = ["llama-3.1-70b-instruct"]

    [[rules]]
    name = "premium users get the best"
    when = { users = ["alice", "bob"] }
    model = "gpt-4o-2024-08-06"
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Mapping

from banditroute.config import Rule, SemanticRoute
from banditroute.core.semantic import SemanticRoutes


class Rules:
    """The configured rules, compiled; :meth:`match` finds the one that applies to a request."""

    def __init__(self, rules: list[Rule], environ: Mapping[str, str] | None = None,
                 semantic_routes: list[SemanticRoute] | None = None):
        self.rules = rules
        used = any(r.when.semantic_route for r in rules)
        self.semantic = SemanticRoutes(semantic_routes) if used and semantic_routes else None
        self._regex = [re.compile(r.when.prompt_regex) if r.when.prompt_regex else None for r in rules]
        env = os.environ if environ is None else environ
        self._keys = [env.get(r.when.api_key_env) if r.when.api_key_env else None for r in rules]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def match(self, prompt: str, user: str | None, metadata: dict | None, api_key: str | None) -> Rule | None:
        """The first rule whose conditions all hold for this request, or None."""
        intent = _UNSET
        for rule, regex, key in zip(self.rules, self._regex, self._keys):
            when = rule.when
            if when.users is not None and user not in when.users:
                continue
            if when.metadata is not None and not _has_fields(metadata, when.metadata):
                continue
            if when.api_key_env is not None and (key is None or api_key is None
                                                 or not hmac.compare_digest(api_key.encode(), key.encode())):
                continue
            if regex is not None and regex.search(prompt) is None:
                continue
            if when.semantic_route is not None:
                if intent is _UNSET:  # matched once per request, and only when a rule gets this far
                    intent = self.semantic.match(prompt)
                if intent != when.semantic_route:
                    continue
            return rule
        return None


def narrow(rule: Rule, options):
    """``options`` (a :class:`~banditroute.core.router.RouteOptions`) with ``rule``'s actions applied;
    raises ValueError when the rule and the request leave no model."""
    update: dict = {}
    models = [rule.model] if rule.model is not None else rule.models
    if models is not None:
        if options.models is not None:
            models = [m for m in models if m in options.models]
            if not models:
                raise ValueError(f"rule {rule.name!r} allows none of the requested models {options.models}")
        update["models"] = models
    if rule.require:
        update["require"] = sorted(set(options.require) | set(rule.require))
    if rule.cost_weight is not None:
        update["cost_weight"], update["cost_preference"] = rule.cost_weight, None
    elif rule.cost_preference is not None:
        update["cost_weight"], update["cost_preference"] = None, rule.cost_preference
    return options.model_copy(update=update) if update else options


def _has_fields(metadata: dict | None, wanted: dict) -> bool:
    if metadata is None:
        return False
    for k, v in wanted.items():
        have = metadata.get(k, _MISSING)
        # a JSON true is not the number 1 here, though Python's == says it is
        if have is _MISSING or type(have) is not type(v) and {type(have), type(v)} != {int, float} or have != v:
            return False
    return True


_MISSING = object()
_UNSET = object()
