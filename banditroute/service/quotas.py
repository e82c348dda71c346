"""Rate limits per tenant (``[[rate_limits]]``): the requests and tokens a minute each tenant may send,
beyond which its requests are refused with 429 and ``Retry-After``, before anything is routed or logged.

A tenant is told apart as budgets do (:func:`~banditroute.core.budget.tenant_of`: the request's
``user``, its API key, or a metadata field); a request is checked against every limit whose tenant it
has (a per-user and a per-key limit can both apply), and counted against all of them only when it passes
all. Each tenant's calls of the last minute are a sliding window (:class:`~banditroute.gateway.limits.RateLimits`,
the windows the gateway keeps for providers). A request counts once, whatever it becomes (a gateway
request that falls back, a cascade's steps and an ensemble's members are one request), with its
estimated tokens: the prompt plus ``max_tokens`` (or the policy's expected output); once the gateway
has the upstream's usage, the usage instead. Tenants with no request in the last minute are forgotten,
so memory follows the tenants active in a minute, up to ``max_tenants`` per limit (a new tenant beyond
that is refused, as budgets refuse one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from banditroute.config import TenantRateLimit
from banditroute.core.budget import tenant_of
from banditroute.errors import RateLimited
from banditroute.gateway.limits import RateLimits


@dataclass
class Admission:
    """What an admitted request was counted as, in each limit that applies to it: :meth:`Quotas.settle`
    corrects its tokens once they are known."""

    entries: list[tuple[RateLimits, str, list | None]]


class Quotas:
    """The configured per-tenant rate limits; ``clock`` is injectable for tests."""

    def __init__(self, configs: list[TenantRateLimit], clock=time.monotonic):
        self.configs = list(configs)
        self._windows = {c.name: RateLimits({}, clock) for c in self.configs}
        self.refused: dict[str, int] = {c.name: 0 for c in self.configs}

    def __bool__(self) -> bool:
        return bool(self.configs)

    def admit(self, options, tokens: float) -> Admission:
        """Count a request of ``options`` (a RouteOptions, its API key set) and ``tokens`` estimated
        tokens against every limit whose tenant it has; raises :class:`RateLimited` (nothing counted)
        when one of them has no room."""
        checks = []
        for config in self.configs:
            tenant = tenant_of(config.tenant, options)
            rate = None if tenant is None else config.rate(tenant)
            if rate is None:
                continue
            windows = self._windows[config.name]
            if tenant not in windows and len(windows) >= config.max_tenants and not windows.forget_idle():
                self.refused[config.name] += 1
                raise RateLimited(f"rate limit {config.name!r}: {config.max_tenants} tenants sent requests in the "
                                  "last minute; a new one must wait", retry_after=1)
            windows.track(tenant, rate.rpm, rate.tpm)
            why = windows.full(tenant, tokens)
            if why is not None:
                self.refused[config.name] += 1
                raise RateLimited(f"rate limit {config.name!r}: {config.tenant} {tenant!r} is {why}",
                                  retry_after=windows.retry_after([tenant]))
            checks.append((windows, tenant))
        return Admission([(windows, tenant, windows.take(tenant, tokens)) for windows, tenant in checks])

    @staticmethod
    def settle(admission: Admission | None, tokens: float) -> None:
        """The request of ``admission`` used ``tokens`` (the upstream's usage)."""
        if admission is not None:
            for windows, tenant, entry in admission.entries:
                windows.settle(tenant, entry, tokens)

    def tenants(self, name: str) -> int:
        """Tenants of limit ``name`` with a request in the last minute (and perhaps a few idle ones)."""
        return len(self._windows[name])
