"""Feedback signals and their normalisation to a quality in [0, 1].

Every signal becomes one observation of the chosen model's quality, weighted by its source
(``Settings.signal_weights``; by default user 1.0, judge 0.8, system 0.5). Several signals for one
decision therefore act as a weighted least-squares fit of the same quality.

=========  ===============================  ==========================
kind       accepted values                  quality
=========  ===============================  ==========================
thumbs     true/false, 1/0, 1/-1             up -> 1, down -> 0
rating     1..5                             (v - 1) / 4
score      0..1 or 1..10 (``scale``)        v, or (v - 1) / 9
quality    0..1                             v
=========  ===============================  ==========================

A judge ``score`` without ``scale`` is read as 0-1 when ``v <= 1`` and 1-10 otherwise; give
``scale`` to remove the ambiguity at 1. A feedback with ``error`` set adds a ``system`` quality of 0.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from banditroute.config import FiniteFloat, ModelSpec, NonNegFloat, SignalWeights


class Signal(BaseModel):
    """One piece of feedback about a decision's answer."""

    model_config = ConfigDict(extra="forbid", strict=True)

    source: Literal["user", "judge", "system"]
    kind: Literal["thumbs", "rating", "score", "quality"]
    value: bool | FiniteFloat
    scale: Literal["0-1", "1-10"] | None = None

    @model_validator(mode="after")
    def _in_range(self) -> Signal:
        self.quality()  # raises ValueError with a message naming the problem
        return self

    def quality(self) -> float:
        """This signal as a quality in [0, 1]."""
        v = float(self.value)
        if self.kind == "thumbs":
            if v not in (1.0, 0.0, -1.0):
                raise ValueError(f"thumbs value must be true/false, 1/0 or 1/-1, got {self.value!r}")
            return 1.0 if v == 1.0 else 0.0
        if isinstance(self.value, bool):
            # a ValueError, not a TypeError: pydantic reports ValueErrors raised by validators as 422s
            raise ValueError(f"{self.kind} value must be a number, got {self.value!r}")  # noqa: TRY004
        if self.kind == "rating":
            if not 1.0 <= v <= 5.0:
                raise ValueError(f"rating must be in [1, 5], got {v}")
            return (v - 1.0) / 4.0
        if self.kind == "score":
            scale = self.scale or ("0-1" if v <= 1.0 else "1-10")
            if scale == "1-10":
                if not 1.0 <= v <= 10.0:
                    raise ValueError(f"score on the 1-10 scale must be in [1, 10], got {v}")
                return (v - 1.0) / 9.0
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{self.kind} must be in [0, 1], got {v}")
        return v


MAX_SIGNALS = 32  # per feedback request


class Feedback(BaseModel):
    """Everything the application reports about one decision (all parts optional)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    signals: list[Signal] = Field(default_factory=list, max_length=MAX_SIGNALS)
    cost_usd: NonNegFloat | None = None
    input_tokens: Annotated[int, Field(ge=0)] | None = None
    output_tokens: Annotated[int, Field(ge=0)] | None = None
    cached_input_tokens: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="of input_tokens, those the provider served from its prompt cache (priced at the "
                                  "model's cached input price)")
    latency_ms: NonNegFloat | None = None
    error: bool | str | None = None
    idempotency_key: Annotated[str, Field(max_length=200)] | None = None

    @model_validator(mode="after")
    def _cached_within_input(self) -> Feedback:
        if self.cached_input_tokens is not None and (self.input_tokens is None
                                                     or self.cached_input_tokens > self.input_tokens):
            raise ValueError("cached_input_tokens counts part of input_tokens: give input_tokens, at least as many")
        return self

    def reported(self) -> str:
        """What was reported besides the signals, as the log keeps it (JSON, unset fields left out)."""
        return self.model_dump_json(exclude={"signals", "idempotency_key", "decision_id"}, exclude_none=True)

    def weighted_qualities(self, weights: SignalWeights) -> list[tuple[float, float]]:
        """``(quality, weight)`` per signal, with a failed call counted as a system quality of 0."""
        out = [(s.quality(), getattr(weights, s.source)) for s in self.signals]
        if self.error:
            out.append((0.0, weights.system))
        return [(q, w) for q, w in out if w > 0]

    def cost(self, spec: ModelSpec) -> float | None:
        """The call's cost: as reported, else from token counts and list prices, else unknown."""
        if self.cost_usd is not None:
            return self.cost_usd
        if self.input_tokens is not None or self.output_tokens is not None:
            return spec.price_usd(self.input_tokens or 0, self.output_tokens or 0, self.cached_input_tokens or 0)
        return None


def mean_quality(pairs: list[tuple[float, float]]) -> float | None:
    """Weighted mean of ``(quality, weight)`` pairs, or None when there are none."""
    total = sum(w for _, w in pairs)
    return sum(q * w for q, w in pairs) / total if total > 0 else None


def fingerprint(qualities, weights, reported: str) -> str:
    """What identifies a feedback's payload for its idempotency key: its normalised signals and what
    else it reported (a repeated key with another fingerprint is a conflict, not a retry)."""
    text = json.dumps([[float(q) for q in qualities], [float(w) for w in weights], reported])
    return hashlib.sha256(text.encode()).hexdigest()[:32]
