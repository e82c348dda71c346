"""Provider rate limits: the requests and tokens per minute a provider allows (``rpm`` and ``tpm`` of a
model or of each of its deployments, as providers state them per model and key), kept by the gateway
so that a call goes to a provider with room rather than into its 429.

Each provider (named by its key, :attr:`~banditroute.gateway.providers.Provider.key`) keeps the calls
it started in the last :data:`WINDOW` seconds (a sliding window, as providers count) with their
tokens: at the start of a call, its estimated prompt tokens (in the model's own count,
:class:`~banditroute.gateway.model_limits.TokenRatios`) plus the output it may produce
(``max_tokens``, else the policy's expected output tokens); once the call has answered, its reported
usage instead. A call is counted whether it succeeds or not (a provider counts the requests it
receives). A model whose every provider this request would take past a limit is left out of the
request, like a model whose circuits are open; when every eligible model is at its limits, the
request is refused with 429 and a ``Retry-After`` of the time until the first of them has room again.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from banditroute.config import Deployment

WINDOW = 60.0  # seconds: limits are per minute


@dataclass
class _Usage:
    rpm: int | None
    tpm: int | None
    calls: deque = field(default_factory=deque)  # [start time, tokens] of the calls in the window, oldest first
    tokens: float = 0.0  # their sum
    refused: int = 0  # requests that left this model out for its limit


class RateLimits:
    """The limited models of a pool and their calls of the last minute; ``clock`` is injectable for tests."""

    def __init__(self, specs: dict[str, Deployment], clock=time.monotonic):
        self.clock = clock
        self._usage = {m: _Usage(s.rpm, s.tpm) for m, s in specs.items() if s.rpm is not None or s.tpm is not None}

    def track(self, key: str, rpm: int | None, tpm: int | None) -> None:
        """Keep limits for ``key`` from now on (nothing when it has them already)."""
        if key not in self._usage:
            self._usage[key] = _Usage(rpm, tpm)

    def __contains__(self, key: str) -> bool:
        return key in self._usage

    def __len__(self) -> int:
        return len(self._usage)

    def forget_idle(self) -> int:
        """Stop tracking the keys with no call in the window (what :meth:`track` added comes back when
        needed); how many were dropped."""
        now = self.clock()
        for u in self._usage.values():
            self._trim(u, now)
        idle = [k for k, u in self._usage.items() if not u.calls]
        for k in idle:
            del self._usage[k]
        return len(idle)

    def _trim(self, u: _Usage, now: float) -> None:
        while u.calls and u.calls[0][0] <= now - WINDOW:
            u.tokens -= u.calls.popleft()[1]
        if not u.calls:
            u.tokens = 0.0  # no drift from float sums

    def full(self, model: str, tokens: float) -> str | None:
        """Why a call of ``tokens`` to ``model`` now would pass its limit (None: it has room)."""
        u = self._usage.get(model)
        if u is None:
            return None
        self._trim(u, self.clock())
        if u.rpm is not None and len(u.calls) + 1 > u.rpm:
            return f"at its rpm limit ({u.rpm} requests a minute)"
        # a single call larger than the whole budget is let through when the window is empty
        if u.tpm is not None and u.calls and u.tokens + tokens > u.tpm:
            return f"at its tpm limit ({u.tpm} tokens a minute)"
        return None

    def refused(self, model: str) -> None:
        self._usage[model].refused += 1

    def take(self, model: str, tokens: float) -> list | None:
        """Count a call to ``model`` starting now with ``tokens`` (an estimate); the entry :meth:`settle` corrects."""
        u = self._usage.get(model)
        if u is None:
            return None
        entry = [self.clock(), float(tokens)]
        u.calls.append(entry)
        u.tokens += entry[1]
        return entry

    def settle(self, model: str, entry: list | None, tokens: float) -> None:
        """The call of ``entry`` used ``tokens`` (its reported usage)."""
        u = self._usage.get(model)
        if u is None or entry is None:
            return
        if u.calls and entry[0] > self.clock() - WINDOW:  # still in the window
            u.tokens += tokens - entry[1]
        entry[1] = float(tokens)

    def retry_after(self, models: list[str]) -> int:
        """Whole seconds until the first of ``models`` has room for one more call (at least 1)."""
        now, waits = self.clock(), []
        for m in models:
            u = self._usage.get(m)
            if u is not None and u.calls:
                waits.append(u.calls[0][0] + WINDOW - now)
        return max(1, math.ceil(min(waits))) if waits else 1

    def view(self, model: str) -> dict | None:
        """What ``GET /models`` shows of a limited model (None for one without limits)."""
        u = self._usage.get(model)
        if u is None:
            return None
        self._trim(u, self.clock())
        return {"rpm": u.rpm, "tpm": u.tpm, "requests_last_minute": len(u.calls),
                "tokens_last_minute": round(u.tokens), "requests_refused": u.refused}
