"""Provider health: a circuit breaker per provider (a model's deployment, :mod:`.providers`), fed by
upstream failures, never by answer quality.

A provider's circuit opens after ``failures_to_open`` consecutive failures (or at once on a 429 with
``Retry-After``), and the provider is skipped until its cooldown ends; then one call is let through as a
trial (half-open). A success closes the circuit; a failed trial opens it again for twice the previous
cooldown, up to ``max_cooldown_s`` (the breaker of Nygard, *Release It!*, 2nd ed., ch. 5, with
exponential back-off). An outage says nothing about how well the model answers a prompt, so none of
this reaches the policy's quality model. What counts as a failure is the gateway's to say: a 4xx is the
request's fault, and so is a 5xx from every provider a request tried at two API roots or more
(:meth:`~banditroute.gateway.gateway.Gateway.fail_call`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from banditroute.config import GatewayConfig


@dataclass
class _Circuit:
    failures: int = 0  # consecutive
    open_until: float = 0.0
    cooldown: float = 0.0  # the last cooldown applied (0: never opened since the last success)
    trial: bool = False  # a half-open trial call is in flight
    opened: int = 0  # times opened, for the metrics


class Health:
    """Circuit breakers of a pool's providers (named by their keys); ``clock`` is injectable for tests."""

    def __init__(self, models, config: GatewayConfig, clock=time.monotonic):
        self.config = config
        self.clock = clock
        self._circuits = {m: _Circuit() for m in models}

    def available(self, model: str) -> bool:
        """Whether a call may go to ``model`` now (closed, or half-open with no trial in flight)."""
        c = self._circuits[model]
        if c.open_until == 0.0:
            return True
        return self.clock() >= c.open_until and not c.trial

    def begin(self, model: str) -> None:
        """A call to ``model`` starts (the trial call, when its circuit is half-open)."""
        c = self._circuits[model]
        if c.open_until and self.clock() >= c.open_until:
            c.trial = True

    def success(self, model: str) -> None:
        c = self._circuits[model]
        c.failures, c.open_until, c.cooldown, c.trial = 0, 0.0, 0.0, False

    def release(self, model: str) -> None:
        """A call ended without telling anything about the provider (the client went away)."""
        self._circuits[model].trial = False

    def failure(self, model: str, retry_after: float | None = None) -> None:
        """The provider failed a call; ``retry_after``: seconds the provider asked us to wait (a 429's header)."""
        c, cfg = self._circuits[model], self.config
        c.failures += 1
        was_trial, c.trial = c.trial, False
        if retry_after is not None:
            wait = min(retry_after, cfg.max_cooldown_s)
        elif was_trial:
            wait = min(max(2 * c.cooldown, 1.0), cfg.max_cooldown_s)
        elif c.failures >= cfg.failures_to_open:
            wait = cfg.cooldown_s
        else:
            return
        c.cooldown = wait
        c.open_until = self.clock() + wait
        c.opened += 1

    def view(self, model: str) -> dict:
        """``{state, consecutive_failures, retry_in_s}`` for ``GET /models``."""
        c, now = self._circuits[model], self.clock()
        state = "closed" if c.open_until == 0.0 else "open" if now < c.open_until else "half_open"
        return {"state": state, "consecutive_failures": c.failures,
                "retry_in_s": round(max(0.0, c.open_until - now), 3) if state == "open" else 0.0,
                "times_opened": c.opened}
