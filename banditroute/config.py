"""Model pool and policy configuration.

A pool file (TOML or JSON) lists the models the router may choose from::

    [[models]]
    name = "gpt-4-1106-preview"
    input_price_per_mtok = 10.0     # USD per 1M input tokens (optional)
    output_price_per_mtok = 30.0    # USD per 1M output tokens (optional)
    capabilities = ["code", "long-context", "tools", "vision", "json"]
    base_url = "https://api.openai.com/v1"   # an OpenAI-compatible API root: the gateway can call it
    api_key_env = "OPENAI_API_KEY"          # the environment variable that holds its key
    context_window = 128000                 # tokens
    max_output_tokens = 4096                # the most tokens it writes in one answer

    [policy]
    name = "lints"
    cost_weight = 100.0             # quality points per USD

Every field is validated by pydantic; an invalid file raises :class:`ConfigError` whose message
names the offending field (``models.2.input_price_per_mtok: Input should be greater than or equal
to 0``).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# The constrained numbers of the configuration and the API (NaN and infinities are never valid).
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Floor = Annotated[float, Field(ge=0, le=0.5, allow_inf_nan=False)]


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Deployment(_Strict):
    """One provider that serves a pool model: the same model at another API root, region or key
    (``[[models.deployments]]``). The gateway spreads a model's calls over its deployments and moves a
    failed call to the next one before it falls back to another model (:mod:`banditroute.gateway.providers`).
    ``api_key_env``, ``upstream_name``, ``timeout_s`` and ``stream_usage`` default to the model's."""

    name: str | None = Field(default=None, min_length=1, pattern=r"^[^@\s]+$",
                             description="how logs, errors and GET /models name it (default: its base_url's host, "
                                         "numbered when two share one)")
    base_url: str = Field(pattern=r"^https?://\S+$", description="an OpenAI-compatible API root")
    api_key_env: str | None = Field(default=None, min_length=1)
    upstream_name: str | None = Field(default=None, min_length=1)
    timeout_s: PositiveFloat | None = None
    stream_usage: bool | None = None
    rpm: Annotated[int, Field(gt=0)] | None = None
    tpm: Annotated[int, Field(gt=0)] | None = None
    weight: PositiveFloat = Field(default=1.0, description="its share of the model's calls relative to the "
                                  "other deployments' (calls go to the least busy in proportion to weight)")


class ModelSpec(_Strict):
    """One model of the pool, and where the gateway calls it (a model without ``base_url`` or
    ``deployments`` can be routed by ``/route`` but not called through ``/v1/chat/completions``)."""

    name: str = Field(min_length=1)
    input_price_per_mtok: NonNegFloat | None = None
    output_price_per_mtok: NonNegFloat | None = None
    cached_input_price_per_mtok: NonNegFloat | None = Field(default=None, description="USD per 1M input tokens the "
                                                            "provider served from its prompt cache (default: the "
                                                            "input price)")
    capabilities: list[str] = Field(default_factory=list, description="labels a request can require; the gateway "
                                    "requires `tools` for tools or functions, `vision` for images and `json` for a "
                                    "JSON response_format")
    base_url: str | None = Field(default=None, pattern=r"^https?://\S+$",
                                 description="an OpenAI-compatible API root, e.g. https://api.example.com/v1")
    api_key_env: str | None = Field(default=None, min_length=1, description="the environment variable that holds "
                                    "the key (sent as a bearer token; keys are never in the file, never logged)")
    upstream_name: str | None = Field(default=None, min_length=1, description="the model name sent upstream "
                                      "(default: name)")
    context_window: Annotated[int, Field(gt=0)] | None = Field(default=None, description="tokens of prompt and "
                                                                "answer together; none: not checked")
    max_output_tokens: Annotated[int, Field(gt=0)] | None = Field(default=None, description="the most tokens the "
                                                                   "model writes in one answer (a request's "
                                                                   "max_tokens above it is refused); none: not checked")
    timeout_s: PositiveFloat | None = Field(default=None, description="this model's upstream timeout "
                                            "(default: gateway.timeout_s)")
    stream_usage: bool = Field(default=True, description="the upstream accepts stream_options.include_usage "
                               "(the gateway asks a stream for its token usage); false: a stream's tokens are "
                               "estimated from its text")
    rpm: Annotated[int, Field(gt=0)] | None = Field(default=None, description="requests a minute the provider "
                                                     "allows for this model; the gateway keeps calls within it")
    tpm: Annotated[int, Field(gt=0)] | None = Field(default=None, description="tokens (prompt and answer) a minute "
                                                     "the provider allows for this model")
    deployments: list[Deployment] = Field(default_factory=list, description="instead of base_url: several "
                                          "providers of this model, each with its own API root, key and limits")

    @model_validator(mode="after")
    def _one_way_to_call(self) -> ModelSpec:
        if self.deployments:
            both = [f for f in ("base_url", "rpm", "tpm") if getattr(self, f) is not None]
            if both:
                raise ValueError(f"{self.name}: {', '.join(both)} go on each of its deployments, not beside them")
            _refuse_repeated([d.name for d in self.providers()], f"{self.name}: two deployments named {{}}")
        return self

    @property
    def callable(self) -> bool:
        """The gateway can call it."""
        return self.base_url is not None or bool(self.deployments)

    def providers(self) -> list[Deployment]:
        """Where the gateway calls this model: its deployments with every default filled in (the model's
        own ``base_url`` is its one deployment), each named."""
        listed = self.deployments or ([Deployment(base_url=self.base_url, rpm=self.rpm, tpm=self.tpm)]
                                      if self.base_url is not None else [])
        out, seen = [], Counter()
        for d in listed:
            name = d.name
            if name is None:
                host = urlsplit(d.base_url).netloc or d.base_url
                seen[host] += 1
                name = host if seen[host] == 1 else f"{host}#{seen[host]}"
            out.append(d.model_copy(update={
                "name": name, "api_key_env": d.api_key_env or self.api_key_env,
                "upstream_name": d.upstream_name or self.upstream_name or self.name,
                "timeout_s": d.timeout_s or self.timeout_s,
                "stream_usage": self.stream_usage if d.stream_usage is None else d.stream_usage}))
        return out

    def price_usd(self, input_tokens: float, output_tokens: float, cached_input_tokens: float = 0.0) -> float | None:
        """Cost of one call from list prices, or None when the pool gives no price. ``cached_input_tokens``,
        the part of ``input_tokens`` served from the provider's prompt cache, cost the cached input price."""
        if self.input_price_per_mtok is None and self.output_price_per_mtok is None:
            return None
        fresh_price = self.input_price_per_mtok or 0.0
        cached_price = fresh_price if self.cached_input_price_per_mtok is None else self.cached_input_price_per_mtok
        cached = min(cached_input_tokens, input_tokens)
        return ((input_tokens - cached) * fresh_price + cached * cached_price
                + output_tokens * (self.output_price_per_mtok or 0.0)) / 1e6


#: the policies by the names the configuration and the command line give them
POLICY_NAMES = ("lints", "linucb", "squarecb", "egreedy", "random", "fixed:MODEL")


class PolicyConfig(_Strict):
    """Which policy routes, and how it trades quality against cost and explores."""

    name: str = "lints"
    cost_weight: NonNegFloat = 100.0
    cost_preference: Fraction | None = Field(default=None, description="instead of cost_weight: 0 quality only, "
                                             "1 the cheapest; the same trade-off in any pool (see "
                                             "banditroute.core.preference)")
    preference_scale: PositiveFloat = Field(default=0.1, description="the quality (0-1) that a request's whole "
                                            "price spread is worth at cost_preference 0.5")
    floor: Floor = 0.01
    floor_decay: PositiveFloat | None = Field(default=500.0, description="n0 of the decaying floor "
                                              "max(floor_min, floor sqrt(n0 / (n0 + n))); none: a constant floor")
    floor_min: Floor = 0.001
    floor_share: Fraction | None = Field(default=0.05, description="the most of the traffic the floor may take "
                                         "over all K models: floor and floor_min are scaled by "
                                         "min(1, floor_share / (K floor)), so a large pool does not spend K times "
                                         "the floor on exploration; none: the floor applies per model as given")
    exploration: NonNegFloat = 0.5
    exploration_decay: PositiveFloat | None = Field(default=None, description="linear Thompson sampling and LinUCB: "
                                                    "n0 of the annealed exploration scale exploration sqrt(n0 / "
                                                    "(n0 + n)) after n quality observations; none: constant")
    exploration_pool_scaling: bool = Field(default=False, description="multiply exploration by sqrt(ln 2 / ln K) "
                                           "for a pool of K models: the largest of K posterior draws grows "
                                           "like sqrt(2 ln K), so without it Thompson sampling explores more "
                                           "the more models the pool has")
    prior_strength: PositiveFloat = 10.0
    importance_cap: PositiveFloat | None = Field(default=1.5, description="learning weights each quality "
                                                 "observation by its inverse propensity over the model's mean, "
                                                 "capped here (importance-weighted regression); none: unweighted")
    prior_quality: Fraction = 0.5
    pooled: bool = Field(default=True, description="linear policies: every model's quality weights shrink towards "
                         "a fit of all models together, so each feedback informs every model")
    deviation_strength: PositiveFloat = Field(default=1.0, description="linear policies with pooled: the prior "
                                              "precision of a model's deviation from the pooled fit, on every "
                                              "feature but the constant, in multiples of prior_strength (above 1: "
                                              "models differ from the pool mostly by their intercept)")
    noise_prior: PositiveFloat | None = Field(default=None, description="linear policies: the quality noise is "
                                              "learned per model from its residuals, the fixed 0.5 counting as "
                                              "this many observations; none: 0.5 for every model")
    drift_threshold: PositiveFloat | None = Field(default=None, description="linear policies: the alarm level of "
                                                  "the Page-Hinkley test on each model's quality residuals; none: "
                                                  "no change detection")
    drift_delta: NonNegFloat = Field(default=0.1, description="the shift in quality tolerated as noise by that test")
    drift_keep: Fraction = Field(default=0.0, description="the share of what was learned about a model kept when "
                                 "its quality is found to have changed")
    price_prior: bool = Field(default=False, description="linear policies with pooled: a model's prior "
                              "quality follows its list price, at the slope the pool's evidence shows across "
                              "models (a model with little evidence expects what models at its price do)")
    expected_output_tokens: NonNegFloat = 256.0
    cost_prior_strength: PositiveFloat = Field(default=10.0, description="how many calls' worth of evidence a "
                                               "model's list price counts for in its cost model: its predicted "
                                               "cost moves halfway from the list-price estimate to the observed "
                                               "costs after this many calls (a model without prices learns from its "
                                               "first call)")
    features: str | None = Field(default=None, description="the feature version to route with: none (those of "
                                 "the log's last decision, else of the warm start, else this installation's "
                                 "default, so that an upgrade whose default features changed goes on from its own "
                                 "log), `latest` (the default: feedback on decisions logged with other features "
                                 "is then not learned), or a version such as `v1-d64`")
    warm_start: str | None = Field(default=None, description="a state written by `banditroute pretrain`: the "
                                   "policy starts from it (model by model where names match) instead of its prior; "
                                   "`bundled`: the state shipped for the bundled pool; `none`: a cold start")

    @field_validator("name")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        if v not in POLICY_NAMES[:-1] and not (v.startswith("fixed:") and v[len("fixed:"):].strip()):
            raise ValueError(f"unknown policy {v!r}; choose one of {', '.join(POLICY_NAMES)}")
        return v

    @model_validator(mode="after")
    def _pooled_settings_need_pooled(self) -> PolicyConfig:
        # both change the pooled prior, which an unpooled policy does not have
        needs = [name for name, on in (("deviation_strength", self.deviation_strength != 1.0),
                                       ("price_prior", self.price_prior)) if on]
        if needs and not self.pooled:
            raise ValueError(f"{' and '.join(needs)} {'apply' if len(needs) > 1 else 'applies'} only with pooled = true")
        return self

    @field_validator("features")
    @classmethod
    def _features(cls, v: str | None) -> str | None:
        v = None if v is None else v.strip()
        return None if not v or v.lower() == "auto" else v

    @field_validator("warm_start")
    @classmethod
    def _warm_start_path(cls, v: str | None) -> str | None:
        if v is None or v.strip().lower() in ("", "none"):
            return None
        if v == "bundled":
            return str(resources.files("banditroute.data").joinpath("pool.example.state"))
        return v


class SignalWeights(_Strict):
    """Weight of each feedback source when several signals describe one decision."""

    user: NonNegFloat = 1.0
    judge: NonNegFloat = 0.8
    system: NonNegFloat = 0.5


class FeedbackLimits(_Strict):
    """Bounds on what one client can teach the router through feedback (beyond them: a 422 naming
    the limit, and nothing applied)."""

    # signal weight one decision can add up to over all its feedback (four user thumbs by default),
    # so that no client outvotes the rest of the traffic through one decision
    max_weight_per_decision: PositiveFloat = 4.0
    # reported token counts per call, input and output each
    max_tokens: Annotated[int, Field(gt=0)] = 2_000_000
    # a reported cost_usd may be at most this many times the list price of max_tokens in and out
    cost_tolerance: PositiveFloat = 10.0
    # the bound on cost_usd for a model without list prices
    max_cost_usd_unpriced: PositiveFloat = 10.0

    def max_cost_usd(self, spec: ModelSpec | None) -> float:
        """The largest ``cost_usd`` accepted for one call of ``spec``'s model."""
        price = spec.price_usd(self.max_tokens, self.max_tokens) if spec is not None else None
        return self.cost_tolerance * price if price else self.max_cost_usd_unpriced


def default_db_path() -> str:
    """``$XDG_DATA_HOME/banditroute/router.duckdb`` (``~/.local/share/banditroute/router.duckdb``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "banditroute", "router.duckdb")


class ServerConfig(_Strict):
    """HTTP service settings."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    token: str | None = None
    max_body_bytes: Annotated[int, Field(gt=0)] = 1 << 20
    # a request body not received within this many seconds is answered 408 and its connection closed
    body_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0


class StorageConfig(_Strict):
    """Where and how decisions and feedback are logged."""

    db: str = Field(default_factory=default_db_path)
    store_prompts: bool = False
    retention_days: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="days the log and the gateway keep what clients wrote (prompt text of "
        "decisions, kept conversations); older prompts are erased, their decisions kept (service.retention); "
        "none: kept until deleted by hand")
    # the secret of the logged prompt hashes (HMAC-SHA256); none: generated once and kept in <db>.key
    prompt_hash_key: str | None = Field(default=None, repr=False)
    flush_interval_ms: Annotated[float, Field(gt=0, le=10_000)] = 200.0
    snapshot_every: Annotated[int, Field(gt=0)] = 10_000
    # DuckDB's buffer memory (its default is 80% of RAM); the log keeps no in-memory index, so what it
    # needs does not grow with the log
    memory_limit: str = "128MB"
    # a feedback whose commit takes longer is answered 503 and the log is treated as failing
    commit_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    # seconds between attempts to write to a failing log (also the 503's Retry-After)
    retry_interval_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    # the log counts as failing while its file system has less free space than this (0: only on errors)
    min_free_bytes: Annotated[int, Field(ge=0)] = 16 << 20
    # the log writer thread's nice value (Linux; 0 leaves it at the process's priority): its commits come
    # in bursts of CPU, and on a busy machine they should wait rather than the event loop
    writer_niceness: Annotated[int, Field(ge=0, le=19)] = 10


def _refuse_repeated(values, message: str) -> None:
    """Raise ``ValueError(message)`` with the values that occur more than once, sorted and comma-separated,
    in place of ``{}``; nothing when each occurs once."""
    repeated = sorted(v for v, n in Counter(values).items() if n > 1)
    if repeated:
        raise ValueError(message.format(", ".join(repeated)))


def _regex(v: str | None) -> str | None:
    """``v`` unchanged if it is a regular expression Python compiles (or None)."""
    if v is not None:
        try:
            re.compile(v)
        except re.error as err:
            raise ValueError(f"not a regular expression: {err}") from None
    return v


class RuleCondition(_Strict):
    """When a rule applies: every condition given must hold (none given: always)."""

    users: list[str] | None = Field(default=None, min_length=1, description="the request's user is one of these")
    metadata: dict[str, str | int | float | bool] | None = Field(default=None, description="each of these "
                                                                 "metadata fields has exactly this value")
    api_key_env: str | None = Field(default=None, min_length=1, description="the request's bearer key equals the "
                                    "value of this environment variable (keys never in the file)")
    prompt_regex: str | None = Field(default=None, min_length=1, description="a regular expression found in the "
                                     "prompt (Python syntax, re.search)")
    semantic_route: str | None = Field(default=None, description="the prompt matches this semantic route (by name)")

    @field_validator("prompt_regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        return _regex(v)


class Rule(_Strict):
    """A routing rule, evaluated before the policy; the first rule whose conditions hold applies."""

    name: str = Field(min_length=1, max_length=100)
    when: RuleCondition = Field(default_factory=RuleCondition)
    models: list[str] | None = Field(default=None, min_length=1, description="only these models are eligible")
    model: str | None = Field(default=None, description="this model, always (probability 1)")
    require: list[str] = Field(default_factory=list, description="only models with these capabilities")
    cost_weight: NonNegFloat | None = Field(default=None, description="this cost weight, whatever the request asks")
    cost_preference: Fraction | None = Field(default=None, description="this cost preference, whatever the "
                                             "request asks")
    budget: str | None = Field(default=None, description="charge the request to this budget (by name) instead of "
                               "the first budget whose tenant it has")
    cascade: str | None = Field(default=None, description="gateway calls: serve through this cascade (by name)")
    ensemble: str | None = Field(default=None, description="gateway calls: serve through this ensemble (by name)")


class CheckConfig(_Strict):
    """What a cascade's answer must satisfy to stop the cascade (every check given must pass)."""

    is_json: bool = Field(default=False, alias="json", description="the answer is a JSON object or array (a fenced "
                          "```json block counts)")
    json_keys: list[str] | None = Field(default=None, description="the answer is a JSON object with these keys")
    regex: str | None = Field(default=None, description="a regular expression found in the answer (re.search)")
    min_length: Annotated[int, Field(gt=0)] | None = Field(default=None, description="characters of answer")
    min_logprob: float | None = Field(default=None, le=0, description="the mean token log-probability of the answer "
                                      "(the upstream is asked for logprobs; one that gives none passes)")
    judge_min: Fraction | None = Field(default=None, description="the judge's rating (1-10, as (r - 1) / 9) is at "
                                       "least this; needs gateway.judge.model")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        return _regex(v)


class CascadeConfig(_Strict):
    """Confidence-based escalation: the router picks the model to start at; an answer that fails the check
    goes on to the next model of ``escalate_to``; the last answer is final."""

    name: str = Field(min_length=1, max_length=100)
    escalate_to: list[str] = Field(min_length=1, description="the tiers after the start, in order")
    check: CheckConfig


class EnsembleConfig(_Strict):
    """Several models answer in parallel; the judge picks one, or the most common answer wins."""

    name: str = Field(min_length=1, max_length=100)
    models: list[str] = Field(min_length=2, max_length=8)
    pick: Literal["judge", "majority"] = "majority"


TENANT_KEY = re.compile(r"user|api_key|metadata\.[A-Za-z0-9_\-]{1,64}")


class SemanticRoute(_Strict):
    """A named intent, defined by example prompts (:mod:`banditroute.core.semantic`)."""

    name: str = Field(min_length=1, max_length=100)
    examples: list[str] = Field(min_length=1, max_length=1000)
    threshold: Annotated[float, Field(ge=-1, le=1)] | None = Field(default=None, description="the least similarity "
                                                                   "to an example that matches (default 0.25)")


def _check_tenant_key(v: str) -> str:
    if not TENANT_KEY.fullmatch(v):
        raise ValueError("tenant must be user, api_key or metadata.FIELD (FIELD: letters, digits, _ or -)")
    return v


class BudgetConfig(_Strict):
    """A spending budget per tenant and period, kept by pacing the tenant's cost weight
    (:mod:`banditroute.core.budget`)."""

    name: str = Field(min_length=1, max_length=100)
    tenant: str = Field(default="user", description="what tells tenants apart: user (the request's user), api_key "
                        "(the bearer key, kept as a hash), or metadata.FIELD")
    period: Literal["hour", "day", "month"] = "day"
    usd: PositiveFloat = Field(description="what each tenant may spend per period, in USD")
    tenants: dict[str, PositiveFloat] = Field(default_factory=dict, description="amounts for named tenants, "
                                              "instead of usd")
    when_exhausted: Literal["cheapest", "refuse"] = Field(
        default="cheapest", description="when nothing fits what is left: serve the cheapest eligible model, or "
                                        "refuse with 429")
    pacing: bool = Field(default=True, description="pace spend over the period; false: the budget is only a cap "
                         "(requests are served as usual until it is spent)")
    pacing_step: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.2, description="step of the pacing controller (the multiplicative update of the cost weight)")
    max_tenants: Annotated[int, Field(gt=0)] = Field(default=100_000, description="tenants tracked at once; a new "
                                                     "one beyond this is refused")
    metrics_tenants: Annotated[int, Field(ge=0)] = Field(
        default=100, description="tenants with their own Prometheus series (those that spent the most this "
                                 "period); the rest are summed under the tenant label _other")

    _tenant_key = field_validator("tenant")(_check_tenant_key)


class TenantRate(_Strict):
    """Requests and tokens a minute (at least one of them)."""

    rpm: Annotated[int, Field(gt=0)] | None = Field(default=None, description="requests a minute")
    tpm: Annotated[int, Field(gt=0)] | None = Field(default=None, description="tokens a minute: each request's "
                                                     "estimated prompt tokens plus its max_tokens (or the expected "
                                                     "output), corrected to its usage once the gateway has it")

    @model_validator(mode="after")
    def _something(self) -> TenantRate:
        if self.rpm is None and self.tpm is None:
            raise ValueError("set rpm, tpm or both")
        return self


class TenantRateLimit(_Strict):
    """A rate limit per tenant (``[[rate_limits]]``, :mod:`banditroute.service.quotas`): what each tenant
    may send a minute, beyond which its requests get 429 with Retry-After. Tenants not named in
    ``tenants`` get ``rpm`` and ``tpm`` (none set: they are not limited)."""

    name: str = Field(min_length=1, max_length=100)
    tenant: str = Field(default="user", description="what tells tenants apart, as for budgets: user, api_key or "
                        "metadata.FIELD")
    rpm: Annotated[int, Field(gt=0)] | None = Field(default=None, description="requests a minute")
    tpm: Annotated[int, Field(gt=0)] | None = Field(default=None, description="tokens a minute: each request's "
                                                     "estimated prompt tokens plus its max_tokens (or the expected "
                                                     "output), corrected to its usage once the gateway has it")
    tenants: dict[str, TenantRate] = Field(default_factory=dict, description="limits of named tenants, instead "
                                           "of rpm and tpm")
    max_tenants: Annotated[int, Field(gt=0)] = Field(default=100_000, description="tenants with calls in the last "
                                                     "minute tracked at once; a new one beyond this is refused")

    _tenant_key = field_validator("tenant")(_check_tenant_key)

    @model_validator(mode="after")
    def _something(self) -> TenantRateLimit:
        if self.rpm is None and self.tpm is None and not self.tenants:
            raise ValueError(f"{self.name}: set rpm, tpm or tenants")
        return self

    def rate(self, tenant: str) -> TenantRate | None:
        """The limits of ``tenant`` (None: not limited)."""
        named = self.tenants.get(tenant)
        if named is not None:
            return named
        return None if self.rpm is None and self.tpm is None else TenantRate(rpm=self.rpm, tpm=self.tpm)


class JudgeConfig(_Strict):
    """An LLM judge that scores a sampled fraction of the gateway's answers after they are returned."""

    model: str | None = Field(default=None, description="a callable pool model; none: no judge")
    sample_rate: Fraction = Field(default=0.0, description="probability that an answer is judged (logged)")
    max_concurrent: Annotated[int, Field(gt=0)] = 4
    # judgements waiting beyond this are dropped (and counted), never queued without bound
    max_queued: Annotated[int, Field(gt=0)] = 1000


# The OpenAI-compatible paths the gateway serves itself (a passthrough may not take them)
GATEWAY_PATHS = ("/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/models")


class Passthrough(_Strict):
    """Requests to ``path`` (or, when it ends with ``/``, below it) forwarded as they are to one provider:
    what an application sends through the same OpenAI client besides what the gateway routes
    (embeddings, moderations, audio, ...). Not routed, not logged as decisions."""

    path: str = Field(pattern=r"^/v1/\S+$", description="e.g. /v1/embeddings, or /v1/audio/ for every path below it")
    base_url: str = Field(pattern=r"^https?://\S+$", description="the provider's OpenAI-compatible API root")
    api_key_env: str | None = Field(default=None, description="the environment variable holding its key")
    timeout_s: PositiveFloat | None = None

    @field_validator("path")
    @classmethod
    def _not_the_gateways(cls, v: str) -> str:
        def overlaps(own: str) -> bool:  # the same path, a prefix above it, or a path below it
            return v.rstrip("/") == own or (v.endswith("/") and own.startswith(v)) or v.startswith(own + "/")

        if any(overlaps(own) for own in GATEWAY_PATHS):
            raise ValueError(f"{v} is a path the gateway serves itself ({', '.join(GATEWAY_PATHS)})")
        return v

    def matches(self, path: str) -> bool:
        return path == self.path or (self.path.endswith("/") and path.startswith(self.path))


class RoutedModel(_Strict):
    """A model name that routes among the pool with preset options, as ``banditroute`` does with a
    ``banditroute`` object in the body: for clients that can set nothing but ``model`` (a chat UI's or an
    IDE's model list). The request's own options still apply on top: its ``models`` narrow the preset's
    and its ``require`` adds to it, the stricter ``max_cost_usd`` and ``max_latency_ms`` win, and what
    it sets of the rest (the cost knob, a cascade or an ensemble) replaces the preset's."""

    name: str = Field(min_length=1, pattern=r"^\S+$")
    models: list[str] | None = Field(default=None, min_length=1)
    require: list[str] = Field(default_factory=list)
    cost_weight: NonNegFloat | None = None
    cost_preference: Fraction | None = None
    max_cost_usd: PositiveFloat | None = None
    max_latency_ms: PositiveFloat | None = None
    cascade: str | None = None
    ensemble: str | None = None

    @model_validator(mode="after")
    def _one_of_each(self) -> RoutedModel:
        if self.cost_weight is not None and self.cost_preference is not None:
            raise ValueError(f"{self.name}: cost_weight or cost_preference, not both")
        if self.cascade is not None and self.ensemble is not None:
            raise ValueError(f"{self.name}: a cascade or an ensemble, not both")
        return self


class GatewayConfig(_Strict):
    """The OpenAI-compatible endpoint: attempts, timeouts, limits and provider health."""

    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    timeout_s: PositiveFloat = 60.0  # a model's upstream timeout unless it sets its own
    connect_timeout_s: PositiveFloat = 5.0
    max_response_bytes: Annotated[int, Field(gt=0)] = 16 << 20
    connections_per_upstream: Annotated[int, Field(gt=0)] = 256
    # consecutive failures of a model's provider that open its circuit (it is skipped while open)
    failures_to_open: Annotated[int, Field(ge=1)] = 3
    cooldown_s: PositiveFloat = 30.0  # first cooldown; doubled at each failed trial, up to max_cooldown_s
    max_cooldown_s: PositiveFloat = 600.0
    # memory for the conversations of responses made of chat completions, kept for previous_response_id
    conversations_mb: NonNegFloat = 64.0
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    passthrough: list[Passthrough] = Field(default_factory=list, description="other /v1 paths forwarded to a "
                                           "provider as they are, the first entry that matches")
    routed_models: list[RoutedModel] = Field(default_factory=list, description="model names that route among the "
                                             "pool with preset options")

    @field_validator("passthrough")
    @classmethod
    def _one_entry_per_path(cls, entries: list[Passthrough]) -> list[Passthrough]:
        _refuse_repeated((e.path for e in entries), "more than one entry for {}")
        return entries


class Settings(_Strict):
    """The whole configuration: the model pool, the policy, feedback weights, server and storage."""

    models: list[ModelSpec] = Field(min_length=1)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    signal_weights: SignalWeights = Field(default_factory=SignalWeights)
    feedback: FeedbackLimits = Field(default_factory=FeedbackLimits)
    max_pending: Annotated[int, Field(gt=0)] = 50_000
    server: ServerConfig = Field(default_factory=ServerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    rules: list[Rule] = Field(default_factory=list, description="evaluated in order before the policy; the first "
                              "that matches applies")
    budgets: list[BudgetConfig] = Field(default_factory=list, description="spending budgets per tenant; a request "
                                        "is charged to the first whose tenant it has (or to its rule's budget)")
    rate_limits: list[TenantRateLimit] = Field(default_factory=list, description="requests and tokens a minute per "
                                               "tenant; a request is checked against every limit whose tenant it has")
    cascades: list[CascadeConfig] = Field(default_factory=list)
    semantic_routes: list[SemanticRoute] = Field(default_factory=list, description="intents by example prompts, "
                                                 "for rules' semantic_route condition")
    ensembles: list[EnsembleConfig] = Field(default_factory=list)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        _refuse_repeated((m.name for m in models), "duplicate model names: {}")
        return models

    @model_validator(mode="after")
    def _fixed_policy_names_a_model(self) -> Settings:
        name = self.policy.name
        if name.startswith("fixed:") and name[len("fixed:"):] not in self.names:
            raise ValueError(f"policy.name: fixed policy of an unknown model {name[len('fixed:'):]!r}; the pool has "
                             f"{', '.join(self.names)}")
        return self

    @model_validator(mode="after")
    def _rules_name_pool_models(self) -> Settings:
        names = set(self.names)
        seen = set()
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                raise ValueError(f"rules.{i}: a second rule named {rule.name!r}")
            seen.add(rule.name)
            unknown = [m for m in [*(rule.models or []), *([rule.model] if rule.model else [])] if m not in names]
            if unknown:
                raise ValueError(f"rules.{i} ({rule.name}): unknown models {', '.join(unknown)}")
            if rule.model is not None and rule.models is not None and rule.model not in rule.models:
                raise ValueError(f"rules.{i} ({rule.name}): model {rule.model!r} is not among its models")
            for kind, configured in (("budget", self.budgets), ("cascade", self.cascades),
                                     ("ensemble", self.ensembles)):
                wanted = getattr(rule, kind)
                if wanted is not None and wanted not in {x.name for x in configured}:
                    raise ValueError(f"rules.{i} ({rule.name}): no {kind} named {wanted!r}")
            wanted = rule.when.semantic_route
            if wanted is not None and wanted not in {r.name for r in self.semantic_routes}:
                raise ValueError(f"rules.{i} ({rule.name}): no semantic route named {wanted!r}")
            if rule.cascade is not None and rule.ensemble is not None:
                raise ValueError(f"rules.{i} ({rule.name}): a cascade or an ensemble, not both")
        return self

    @model_validator(mode="after")
    def _strategies_name_callable_models(self) -> Settings:
        callable_models = {m.name for m in self.models if m.callable}
        for kind, items, field in (("cascades", self.cascades, "escalate_to"), ("ensembles", self.ensembles, "models")):
            names = [x.name for x in items]
            if len(set(names)) != len(names):
                raise ValueError(f"{kind}: duplicate names")
            for i, x in enumerate(items):
                bad = [m for m in getattr(x, field) if m not in callable_models]
                if bad:
                    raise ValueError(f"{kind}.{i} ({x.name}): {', '.join(bad)} not pool models with a base_url")
        needs_judge = [c.name for c in self.cascades if c.check.judge_min is not None] + [
            e.name for e in self.ensembles if e.pick == "judge"]
        if needs_judge and self.gateway.judge.model is None:
            raise ValueError(f"{', '.join(needs_judge)} need a judge: set gateway.judge.model")
        return self

    @model_validator(mode="after")
    def _routed_models_name_what_exists(self) -> Settings:
        taken = {"banditroute", *self.names}
        _refuse_repeated((r.name for r in self.gateway.routed_models), "gateway.routed_models: two named {}")
        for i, r in enumerate(self.gateway.routed_models):
            where = f"gateway.routed_models.{i} ({r.name})"
            if r.name in taken:
                raise ValueError(f"{where}: the name is taken by {'the gateway' if r.name == 'banditroute' else 'a pool model'}")
            unknown = [m for m in r.models or [] if m not in taken - {"banditroute"}]
            if unknown:
                raise ValueError(f"{where}: unknown models {', '.join(unknown)}")
            for kind, configured in (("cascade", self.cascades), ("ensemble", self.ensembles)):
                wanted = getattr(r, kind)
                if wanted is not None and wanted not in {x.name for x in configured}:
                    raise ValueError(f"{where}: no {kind} named {wanted!r}")
        return self

    @model_validator(mode="after")
    def _unique_budgets(self) -> Settings:
        _refuse_repeated((b.name for b in self.budgets), "duplicate budget names: {}")
        _refuse_repeated((r.name for r in self.rate_limits), "duplicate rate limit names: {}")
        return self

    @model_validator(mode="after")
    def _judge_callable(self) -> Settings:
        judge = self.gateway.judge.model
        if judge is not None and not any(m.name == judge and m.callable for m in self.models):
            raise ValueError(f"gateway.judge.model {judge!r} is not a pool model with a base_url")
        return self

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def spec(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


def _format_error(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        parts.append(f"{loc}: {e['msg']}")
    return f"invalid configuration in {source}: " + "; ".join(parts)


def parse_settings(data: dict, source: str = "<dict>") -> Settings:
    """Validate a decoded configuration document."""
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


ENV_OVERRIDES = {
    "BANDITROUTE_HOST": ("server", "host"),
    "BANDITROUTE_PORT": ("server", "port"),
    "BANDITROUTE_TOKEN": ("server", "token"),
    "BANDITROUTE_DB": ("storage", "db"),
    "BANDITROUTE_STORE_PROMPTS": ("storage", "store_prompts"),
    "BANDITROUTE_PROMPT_HASH_KEY": ("storage", "prompt_hash_key"),
    "BANDITROUTE_POLICY": ("policy", "name"),
    "BANDITROUTE_COST_WEIGHT": ("policy", "cost_weight"),
    "BANDITROUTE_WARM_START": ("policy", "warm_start"),
}


def overlay(data: dict, overrides: dict[str, dict]) -> dict:
    """``data`` with ``{section: {key: value}}`` overrides applied (a copy; None values are skipped)."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for section, values in overrides.items():
        for key, value in values.items():
            if value is not None:
                data.setdefault(section, {})[key] = value
    return data


def env_overrides(environ) -> dict[str, dict]:
    """The ``BANDITROUTE_*`` variables of ``environ`` (see :data:`ENV_OVERRIDES`) as overrides."""
    out: dict[str, dict] = {}
    for var, (section, key) in ENV_OVERRIDES.items():
        if var in environ:
            out.setdefault(section, {})[key] = environ[var]
    return out


def _read(path: str | Path | None) -> tuple[dict, str]:
    """The file's settings and a name for it; a relative ``policy.warm_start`` in the file is taken
    relative to the file's folder (the bundled pool's: the package's data)."""
    if path is None:
        bundled = resources.files("banditroute.data").joinpath("pool.example.toml")
        data, source, folder = tomllib.loads(bundled.read_text()), "bundled pool.example.toml", Path(str(bundled)).parent
    else:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as err:
            raise ConfigError(f"cannot read configuration {p}: {err.strerror}") from None
        try:
            data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"cannot parse {p}: {err}") from None
        source, folder = str(p), p.parent
    warm = data.get("policy", {}).get("warm_start") if isinstance(data.get("policy"), dict) else None
    if isinstance(warm, str) and warm.strip().lower() not in ("bundled", "none", "") and not Path(warm).is_absolute():
        data["policy"]["warm_start"] = str(folder / warm)
    return data, source


def load_settings(path: str | Path | None = None, environ=None, overrides: dict[str, dict] | None = None) -> Settings:
    """The configuration, by one precedence chain: defaults < the file < ``environ`` < ``overrides``.

    ``path`` is a TOML or JSON file (``None``: the bundled example pool); ``environ`` (default: none)
    supplies ``BANDITROUTE_*`` variables, as ``banditroute serve`` does; ``overrides`` are
    ``{section: {key: value}}`` from the command line. The result is validated once, whole.
    """
    data, source = _read(path)
    layers = []  # named in an error, so that a bad --port is not blamed on the file
    for name, layer in (("BANDITROUTE_* variables", env_overrides(environ) if environ is not None else {}),
                        ("command-line options", overrides or {})):
        applied = overlay(data, layer)
        if applied != data:
            data = applied
            layers.append(name)
    return parse_settings(data, source + (f" with {' and '.join(layers)}" if layers else ""))


def pool_from_names(names: list[str], prices: dict[str, tuple[float, float]] | None = None) -> Settings:
    """A pool built from model names, e.g. the models of an outcome table."""
    prices = prices or {}
    models = [
        ModelSpec(
            name=n,
            input_price_per_mtok=prices.get(n, (None, None))[0],
            output_price_per_mtok=prices.get(n, (None, None))[1],
        )
        for n in names
    ]
    return Settings(models=models)
