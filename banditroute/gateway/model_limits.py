"""Each model's size limits (as configured, and as its providers' refusals state them) and how many
tokens it counts in a prompt.

A provider that refuses a request as too large for the model (:data:`~.upstream.MODEL_LIMITS`) often
says what the limit is: "maximum context length is 8192 tokens", "supports at most 4096 completion
tokens". Without a configured ``context_window`` or ``max_output_tokens``, or with one set too high,
every later request of that size would go to the model and be refused again, a wasted round trip
before its fallback. So a stated limit below the configured one (or where none is) is kept and the
gateway's eligibility reads the lower of the two (:meth:`ModelLimits.get`).

A learned limit is softer than a configured one, since it comes from one answer of one provider:
it lapses after :data:`LEARNED_TTL_S` (a restart learns again those of the last hour from the calls
log) (a provider may raise a model's limits, or a deployment with
a larger one may be added), and a model left out by a learned limit alone is still called when no
other model can take the request (its refusal then goes back to the client as a direct call's
would).

Whether a prompt fits a window is counted in the model's own tokens, which the gateway can only
estimate (:mod:`banditroute.core.tokens`), and tokenizers differ, most outside Latin scripts. Every
answer reports the prompt tokens its provider counted, so
:class:`TokenRatios` keeps, per model, the ratio of reported to estimated prompt tokens over its
recent calls, and the window check and the rate limits scale the estimate by it. The calls log
keeps each such pair (``calls.estimated_input_tokens`` beside ``input_tokens``), from which a restart
learns the ratios again.
"""

from __future__ import annotations

import logging
import time

from banditroute.gateway.upstream import MODEL_LIMITS, UpstreamFailure, beyond_model_limit, stated_limit

log = logging.getLogger("banditroute")

LEARNED_TTL_S = 3600.0
"""Seconds a limit stated by a refusal is kept."""

FIELDS = tuple(MODEL_LIMITS.values())  # context_window, max_output_tokens
REFUSALS_SQL = f"""
SELECT model, outcome, status, error, epoch(now()) - epoch(ts) AS age_s FROM calls
WHERE outcome IN ({', '.join(repr(o) for o in MODEL_LIMITS)}) AND ts > now() - INTERVAL {int(LEARNED_TTL_S)} SECOND
ORDER BY ts
"""
"""The refusals of a request too large for the model in the last :data:`LEARNED_TTL_S`, oldest first."""
RATIO_MIN_CALLS = 20
"""Calls of a model with reported usage before its ratio is used (1 until then)."""
RATIO_MEMORY = 1000
"""The sums decay by ``1 - 1 / RATIO_MEMORY`` a call, so the ratio follows the last thousand calls or so."""
RATIO_RANGE = (0.5, 4.0)
"""The ratio in force is clipped to this range."""
RATIO_RELOAD = 5 * RATIO_MEMORY
RATIOS_SQL = f"""
SELECT model, estimated_input_tokens AS estimated, input_tokens AS reported FROM (
    SELECT *, row_number() OVER (PARTITION BY model ORDER BY ts DESC) AS newest FROM calls
    WHERE estimated_input_tokens IS NOT NULL)
WHERE newest <= {RATIO_RELOAD}
ORDER BY ts
"""
"""Each model's last :data:`RATIO_RELOAD` calls a ratio learned from, oldest first: at start, older ones
would weigh less than ``exp(-5)``."""


class ModelLimits:
    """Configured limits of each model (its spec's ``context_window`` and ``max_output_tokens``) and
    those learned from refusals, each with the monotonic time it lapses."""

    def __init__(self, specs: dict, clock=time.monotonic):
        self.specs = specs
        self.clock = clock
        self._learned: dict[tuple[str, str], tuple[int, float]] = {}

    def configured(self, model: str, field: str) -> int | None:
        return getattr(self.specs[model], field)

    def learned(self, model: str, field: str) -> int | None:
        """The limit a refusal stated for ``model`` (None when none, or it lapsed)."""
        entry = self._learned.get((model, field))
        if entry is None:
            return None
        if self.clock() >= entry[1]:
            del self._learned[(model, field)]
            return None
        return entry[0]

    def beyond_learned(self, model: str, prompt_tokens: float, out_tokens: int) -> bool:
        """Whether a request of ``prompt_tokens`` (in the model's count) and ``max_tokens`` ``out_tokens`` is
        beyond a limit of ``model`` that a refusal stated (the configured ones are checked apart, as hard)."""
        if not self._learned:
            return False
        window, most = self.learned(model, "context_window"), self.learned(model, "max_output_tokens")
        return (window is not None and prompt_tokens + out_tokens > window) or (most is not None and out_tokens > most)

    def get(self, model: str, field: str) -> int | None:
        """The limit in force: the lower of the configured and the learned one (None: not known)."""
        known = [n for n in (self.configured(model, field), self.learned(model, field)) if n is not None]
        return min(known) if known else None

    def learn(self, model: str, failure: UpstreamFailure, age_s: float = 0.0) -> None:
        """Keep the limit ``failure`` states, when it refuses the request as too large for ``model`` and
        the limit is below the configured one (or none is) and not above one learned before; a later
        refusal stating the same limit renews it. ``age_s``: how long ago the refusal came (read back
        from the log)."""
        field = MODEL_LIMITS.get(failure.outcome)
        if field is None or failure.limit is None or failure.limit <= 0 or age_s >= LEARNED_TTL_S:
            return
        configured, learned = self.configured(model, field), self.learned(model, field)
        if (configured is not None and failure.limit >= configured) or (learned is not None and failure.limit > learned):
            return
        if learned != failure.limit:
            log.info("%s: %s %d, as its provider's refusal states (configured: %s)", model, field, failure.limit,
                     configured)
        self._learned[(model, field)] = (failure.limit, self.clock() + LEARNED_TTL_S - age_s)

    def load(self, rows: list[dict]) -> None:
        """Learn again the limits stated by the refusals of :data:`REFUSALS_SQL` (at start): a refusal's
        ``calls.error`` ends with the limit it stated (:func:`~.upstream.error_message`; in a log written
        before it did, the limit is looked for in the start of the provider's answer it keeps)."""
        for r in rows:
            if r["model"] not in self.specs:
                continue
            error = r["error"] or ""
            limit = stated_limit(error) or beyond_model_limit(r["status"], error.encode())[1]
            self.learn(r["model"], UpstreamFailure(r["outcome"], error, r["status"], limit=limit), r["age_s"])

    def view(self, model: str) -> dict:
        """The limits learned for ``model`` that are in force, with their seconds left (``GET /models``)."""
        now, out = self.clock(), {}
        for field in FIELDS:
            n = self.learned(model, field)
            if n is not None:
                out[field] = {"tokens": n, "expires_in_s": round(self._learned[(model, field)][1] - now, 1)}
        return out


class TokenRatios:
    """Per model, the prompt tokens its providers report per token the gateway estimated: the ratio of
    the two sums over its calls, each decayed by ``1 - 1 / RATIO_MEMORY`` a call. A ratio of sums weighs
    long prompts most, which are those a context window concerns."""

    def __init__(self, models):
        self._sums = {m: [0.0, 0.0, 0] for m in models}  # estimated, reported (decayed), calls

    def observe(self, model: str, estimated: float, reported: int | None) -> bool:
        """A call of ``model`` whose prompt the gateway estimated at ``estimated`` tokens and its provider
        counted ``reported`` (None: no usage reported); whether it was learned from."""
        if reported is None or reported <= 0 or estimated < 1:
            return False
        sums = self._sums[model]
        keep = 1.0 - 1.0 / RATIO_MEMORY
        sums[0] = sums[0] * keep + estimated
        sums[1] = sums[1] * keep + reported
        sums[2] += 1
        return True

    def load(self, rows: list[dict]) -> None:
        """Learn again from the calls of :data:`RATIOS_SQL` (at start), as when they were answered."""
        for r in rows:
            if r["model"] in self._sums:
                self.observe(r["model"], r["estimated"], r["reported"])

    def ratio(self, model: str) -> float:
        """Reported over estimated prompt tokens, within :data:`RATIO_RANGE`; 1 before
        :data:`RATIO_MIN_CALLS` calls."""
        estimated, reported, calls = self._sums[model]
        if calls < RATIO_MIN_CALLS:
            return 1.0
        return min(max(reported / estimated, RATIO_RANGE[0]), RATIO_RANGE[1])

    def view(self, model: str) -> dict:
        return {"ratio": round(self.ratio(model), 3), "calls": self._sums[model][2]}
