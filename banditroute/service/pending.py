"""The decisions the service holds for their feedback: a bounded window of recent ones, a small cache of
those read back from the log for late feedback, and the shared lookups that read them back.

The cache is separate from the window so that a sweep of late feedback cannot push the most recent
decisions out of it (each recalled decision would evict one, which would turn late in its turn).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from banditroute.core.types import Pending
from banditroute.service.batcher import settle

# Decisions read back from the log and kept for their next feedback: a few seconds of late feedback
# at thousands per second; the longest a recalled decision must stay is until its feedback commits.
RECALLED = 4096


def _keep(cache: OrderedDict, p: Pending, limit: int) -> None:
    """Put ``p`` in a bounded cache of decisions; the oldest entry leaves when it is over ``limit``."""
    cache[p.decision_id] = p
    if len(cache) > limit:
        cache.popitem(last=False)


class PendingDecisions:
    """Recent decisions (at most ``window``) and recalled ones (at most :data:`RECALLED`), by id.

    Example
    -------
    >>> import numpy as np
    >>> from banditroute.core.types import Context
    >>> held = PendingDecisions(window=2)
    >>> for i in range(3):
    ...     held.remember(Pending(f"d{i}", "m", 0, Context(np.zeros(1), 1.0)))
    >>> list(held.window), held.get("d0")
    (['d1', 'd2'], None)
    """

    def __init__(self, window: int):
        self.limit = int(window)
        self.window: OrderedDict[str, Pending] = OrderedDict()
        self.recalled: OrderedDict[str, Pending] = OrderedDict()

    def remember(self, p: Pending) -> None:
        """Keep ``p`` in the bounded window (the oldest entry leaves when it is full)."""
        _keep(self.window, p, self.limit)

    def recall(self, p: Pending) -> None:
        """Keep ``p``, read back from the log, so that its next feedback finds the signals and cost
        applied now without another lookup."""
        _keep(self.recalled, p, RECALLED)

    def get(self, decision_id: str) -> Pending | None:
        """The decision if it is in memory: in the window or among the recalled ones."""
        return self.window.get(decision_id) or self.recalled.get(decision_id)


class LateLookups:
    """Decisions read back from the log for late feedback, looked up together: every id asked for while
    a lookup runs joins the next one, so one query serves however many late feedbacks wait.

    ``fetch(ids)`` runs in a worker thread and returns ``{decision_id: row}`` for the ids it found.
    """

    def __init__(self, fetch):
        self.fetch = fetch
        self._waiting: dict[str, list[asyncio.Future]] = {}
        self._task: asyncio.Future | None = None

    async def get(self, decision_id: str) -> dict | None:
        """The logged decision's row, or None when the log does not hold it."""
        fut = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(decision_id, []).append(fut)
        if self._task is None:
            self._task = asyncio.ensure_future(self._rounds())
        return await fut

    async def _rounds(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                waiting, self._waiting = self._waiting, {}
                try:
                    rows = await loop.run_in_executor(None, self.fetch, list(waiting))
                except Exception as err:  # noqa: BLE001 - every waiting request must hear of it
                    rows = dict.fromkeys(waiting, err)
                for decision_id, futs in waiting.items():
                    for f in futs:
                        settle(f, rows.get(decision_id))
        finally:
            self._task = None
