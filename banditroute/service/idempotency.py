"""Idempotency keys of accepted feedback: a repeated key is acknowledged but not applied again."""

from __future__ import annotations


class IdempotencyKeys:
    """The keys of every logged feedback (loaded from the log at start, then kept up to date)."""

    def __init__(self, keys: set[str] | None = None):
        self._keys = set(keys or ())

    def seen(self, key: str | None) -> bool:
        """Whether a feedback with this key was accepted before (never true for no key)."""
        return key is not None and key in self._keys

    def add(self, key: str | None) -> None:
        if key is not None:
            self._keys.add(key)

    def __len__(self) -> int:
        return len(self._keys)
