"""Where the gateway calls each pool model: its providers, their health and rate limits, and which one
takes the next call.

A model has one provider per ``[[models.deployments]]`` entry (or one: its own ``base_url``), such as
the same model at two API roots, regions or keys. Each provider has its own circuit breaker
(:mod:`.health`) and rate limits (:mod:`.limits`): an outage or a full limit at one API root or key
says nothing about the model's other providers, and the model stays available while any of them is.

A call goes to the available provider (its circuit closed, or half-open with no trial in flight, and
room under its limits) with the fewest calls in flight per unit of ``weight``; a tie goes to the one
that has started the fewest calls per unit of weight, so that calls made one at a time alternate in
proportion to the weights (least-busy routing, with weighted round robin as its tie-break; LiteLLM's
router calls the first strategy "least-busy"). Which provider took a call says nothing about the
answer's quality: the policy decides among models, never among providers, and a call that failed at
one provider moves to the model's next one within the same decision.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from banditroute.config import GatewayConfig, ModelSpec
from banditroute.gateway.health import Health
from banditroute.gateway.limits import RateLimits


@dataclass(eq=False)
class Provider:
    """One deployment of a pool model, as :class:`~banditroute.gateway.upstream.Upstreams` calls it."""

    model: str
    deployment: str
    base_url: str
    api_key_env: str | None
    upstream_name: str
    timeout_s: float | None
    stream_usage: bool
    weight: float
    name: str  # how messages name it: the model, and the deployment when the model has several
    in_flight: int = 0
    started: int = 0

    @property
    def key(self) -> str:
        """Its name in the health and rate-limit books (``model@deployment``)."""
        return f"{self.model}@{self.deployment}"

    def load(self) -> tuple[float, float]:
        return self.in_flight / self.weight, self.started / self.weight


class Providers:
    """The providers of a pool's callable models, with their circuit breakers and rate limits;
    ``clock`` is injectable for tests."""

    def __init__(self, specs: dict[str, ModelSpec], config: GatewayConfig, clock=time.monotonic):
        self._of: dict[str, list[Provider]] = {}
        self._by_key: dict[str, Provider] = {}
        deployments = {}  # provider key -> its deployment's configuration (its rate limits)
        for model, spec in specs.items():
            self._of[model] = []
            for d in (ds := spec.providers()):
                p = Provider(model, d.name, d.base_url, d.api_key_env, d.upstream_name, d.timeout_s, d.stream_usage,
                             d.weight, model if len(ds) == 1 else f"{model} at {d.name}")
                self._of[model].append(p)
                self._by_key[p.key], deployments[p.key] = p, d
        self.health = Health(list(self._by_key), config, clock)
        self.limits = RateLimits(deployments, clock)

    def of(self, model: str, base_url: str | None = None) -> list[Provider]:
        """The providers of ``model`` (at the API root ``base_url`` only, when given)."""
        return [p for p in self._of.get(model, ()) if base_url is None or p.base_url == base_url]

    def find(self, model: str, deployment: str | None) -> Provider | None:
        """The provider ``deployment`` of ``model``; its first when ``deployment`` is None or no longer configured."""
        p = self._by_key.get(f"{model}@{deployment}")
        return p if p is not None else next(iter(self._of.get(model, ())), None)

    def why_not(self, p: Provider, size: float) -> str | None:
        """Why a call of ``size`` tokens cannot go to ``p`` now (its circuit is open, or it is at a rate
        limit); None when it can."""
        if not self.health.available(p.key):
            return "its provider's circuit is open"
        return self.limits.full(p.key, size)

    def pick(self, model: str, size: float, tried: Iterable[Provider] = (), base_url: str | None = None,
             health: bool = True) -> Provider | None:
        """The provider of ``model`` that takes the next call of ``size`` tokens (the module's rule), among
        those not in ``tried`` (at ``base_url`` only, when given) with room under their rate limits; None
        when none can. ``health=False`` (a call the client asked for by name) passes over open circuits."""
        tried = set(map(id, tried))
        left = [p for p in self.of(model, base_url) if id(p) not in tried]
        left = [p for p in left if (self.why_not(p, size) if health else self.limits.full(p.key, size)) is None]
        return min(left, key=Provider.load, default=None)

    def unavailable(self, model: str, size: float, base_url: str | None = None) -> str | None:
        """Why no call of ``size`` tokens can go to ``model`` now (None: one of its providers can take it)."""
        reasons = [(p, self.why_not(p, size)) for p in self.of(model, base_url)]
        if not reasons or any(why is None for _, why in reasons):
            return None if reasons else "no provider at the API root that stored the response"
        if len(reasons) == 1:
            return reasons[0][1]
        return "every deployment is unavailable: " + "; ".join(f"{p.deployment} {why}" for p, why in reasons)

    def full(self, model: str, size: float, base_url: str | None = None) -> str | None:
        """Why every provider of ``model`` is at a rate limit for a call of ``size`` tokens (None: one has room)."""
        reasons = [(p, self.limits.full(p.key, size)) for p in self.of(model, base_url)]
        if not reasons or any(why is None for _, why in reasons):
            return None
        if len(reasons) == 1:
            return reasons[0][1]
        return "every deployment is at its rate limit: " + "; ".join(f"{p.deployment} {why}" for p, why in reasons)

    def healthy(self, model: str, base_url: str | None = None) -> bool:
        """Whether a provider of ``model`` has its circuit closed (or a half-open trial free)."""
        return any(self.health.available(p.key) for p in self.of(model, base_url))

    def refused(self, model: str) -> None:
        """A request left ``model`` out because every provider was at its limit."""
        for p in self.of(model):
            self.limits.refused(p.key)

    def retry_after(self, models: list[str]) -> int:
        """Whole seconds until the first provider of ``models`` has room for one more call."""
        return self.limits.retry_after([p.key for m in models for p in self.of(m)])

    def begin(self, p: Provider, tokens: float) -> list | None:
        """A call to ``p`` starts now with ``tokens`` (estimated): counted in flight, against its circuit
        (a half-open trial) and its limits; the limits' entry for :meth:`end`."""
        p.in_flight += 1
        p.started += 1
        self.health.begin(p.key)
        return self.limits.take(p.key, tokens)

    def end(self, p: Provider, entry: list | None, tokens: float | None) -> None:
        """The call of ``entry`` to ``p`` ended, having used ``tokens`` (None: not reported)."""
        p.in_flight = max(p.in_flight - 1, 0)
        if tokens is not None:
            self.limits.settle(p.key, entry, tokens)

    def view(self, model: str) -> dict:
        """What ``GET /models`` shows of a model's providers: ``health`` and ``rate_limits`` of its one
        provider, or with several, the model's health as a whole (its best provider's state, the fewest
        consecutive failures, the soonest retry, the times any circuit opened; no rate limits) and each
        one's under ``deployments``."""
        ps = self.of(model)
        each = [{"name": p.deployment, "base_url": p.base_url, "weight": p.weight, "in_flight": p.in_flight,
                 "calls_started": p.started, "health": self.health.view(p.key),
                 "rate_limits": self.limits.view(p.key)} for p in ps]
        if len(each) == 1:
            return {"health": each[0]["health"], "rate_limits": each[0]["rate_limits"], "deployments": each}
        views = [e["health"] for e in each]
        states = {v["state"] for v in views}
        return {"health": {"state": next((s for s in ("closed", "half_open", "open") if s in states), "closed"),
                           "consecutive_failures": min((v["consecutive_failures"] for v in views), default=0),
                           "retry_in_s": min((v["retry_in_s"] for v in views), default=0.0),
                           "times_opened": sum(v["times_opened"] for v in views)},
                "rate_limits": None, "deployments": each}
