"""How long the service keeps what clients wrote: ``storage.retention_days``.

A decision's prompt text (logged only with ``storage.store_prompts``) and the turns of the
conversations the gateway keeps (the ``responses`` table and the gateway's memory: prompts and
answers) are personal data more often than not, and a log that keeps them for ever is a liability
(OpenAI keeps stored responses for 30 days by default; LiteLLM's proxy has a retention period for its
spend logs). With ``storage.retention_days = D``:

* a pass at start-up and then every :data:`EVERY_S` seconds erases what is older than D days
  (:meth:`banditroute.log.store.Store.expire`): an older decision keeps its row (features,
  probabilities, outcomes: what learning, replay and budgets read) with its prompt set to null, and
  older conversation turns are deleted;
* between passes, a conversation with a turn older than D days cannot be continued, from memory or
  from the log (:meth:`Retention.cutoff` is checked as it is read).

Replaying a candidate with features other than the log's needs the prompt text, so decisions older
than D days replay under their own features only. A pass that fails (a full disk, for example) is
logged and counted, and the next one tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time

from banditroute.log.store import ExpirePutOff, Store

log = logging.getLogger("banditroute")

EVERY_S = 600.0
DAY_S = 86_400.0


class Retention:
    """Erases prompts and conversation turns older than ``days`` from ``store`` (module docstring)."""

    def __init__(self, store: Store, days: float | None):
        self.store = store
        self.days = days
        self.prompts = 0  # prompts erased since start
        self.turns = 0  # conversation turns deleted since start
        self.failures = 0  # passes that failed
        self._task: asyncio.Task | None = None
        self._stopping: asyncio.Event | None = None

    def cutoff(self, now: float | None = None) -> float | None:
        """The time (seconds since the epoch) before which nothing a client wrote is kept; None without
        a retention period."""
        if self.days is None:
            return None
        return (time.time() if now is None else now) - self.days * DAY_S

    def expire(self, now: float | None = None) -> None:
        """One pass (blocking: run it off the event loop)."""
        try:
            prompts, turns = self.store.expire(self.cutoff(now))
        except Exception as err:  # noqa: BLE001 - the next pass tries again
            self.failures += 1
            log.warning("erasing what is older than storage.retention_days failed: %s", err)
            prompts, turns = err.erased if isinstance(err, ExpirePutOff) else (0, 0)
        self.prompts += prompts
        self.turns += turns
        if prompts or turns:
            log.info("retention: erased %d prompts and %d conversation turns older than %g days",
                     prompts, turns, self.days)

    def start(self) -> None:
        """Run a pass now and then every :data:`EVERY_S` seconds, on the running event loop."""
        if self.days is not None and self._task is None:
            self._stopping = asyncio.Event()
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop the passes, after the one under way (the store must outlive it)."""
        if self._task is not None:
            self._stopping.set()
            await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await asyncio.to_thread(self.expire)
            try:
                await asyncio.wait_for(self._stopping.wait(), EVERY_S)
            except TimeoutError:
                pass
