"""Micro-batching: requests that arrive within a few event-loop turns are served by one call.

The first request of a batch schedules it ``turns`` loop turns ahead (one ``call_soon`` per turn, no
timer); every request parsed meanwhile joins it. When the loop is idle a turn takes microseconds;
under load each turn reads more requests, and larger batches spread the per-batch cost of features
and policy over more decisions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

# Turns a batch stays open: enough for the requests read in the same burst to join, few enough that a
# lone request waits microseconds (the trade-off is measured by benchmarks/bench_server.py).
BATCH_TURNS = 3


def settle(fut: asyncio.Future, outcome) -> None:
    """Resolve a waiting request's future with ``outcome``, or raise it there if it is an exception
    (nothing to do when the request has gone, its future cancelled)."""
    if fut.done():
        return
    if isinstance(outcome, Exception):
        fut.set_exception(outcome)
    else:
        fut.set_result(outcome)


class MicroBatcher:
    """Calls ``run(items)`` once per batch of submitted items; ``run`` returns one result (or
    exception) per item, in order. When ``run`` itself raises, each item is run again alone, so the
    request that caused it fails alone (``run`` must therefore leave no trace when it raises).

    Example
    -------
    >>> import asyncio
    >>> batcher = MicroBatcher(lambda items: [2 * i for i in items])
    >>> async def main():
    ...     return await asyncio.gather(*(batcher.submit(i) for i in range(3)))
    >>> asyncio.run(main()), batcher.batches
    ([0, 2, 4], 1)
    """

    def __init__(self, run: Callable[[list], Sequence], turns: int = BATCH_TURNS):
        self.run = run
        self.turns = int(turns)
        self.batches = 0  # batches run (items / batches = the mean batch size)
        self._queue: list[tuple[object, asyncio.Future]] = []

    async def submit(self, item):
        """The result for ``item``, computed together with the items submitted around it."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.append((item, fut))
        if len(self._queue) == 1:
            loop.call_soon(self._wait, self.turns - 1)
        return await fut

    def _wait(self, turns: int) -> None:
        if turns > 0:
            asyncio.get_running_loop().call_soon(self._wait, turns - 1)
        else:
            self._flush()

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        self.batches += 1
        try:
            results = self.run([item for item, _ in batch])
        except Exception as err:  # noqa: BLE001 - a bug fails its own request, not the loop or the batch
            results = [err] if len(batch) == 1 else [self._alone(item) for item, _ in batch]
        for (_, fut), result in zip(batch, results):
            settle(fut, result)

    def _alone(self, item):
        """``item``'s result from a batch of one (after its batch failed as a whole), or its exception."""
        try:
            return self.run([item])[0]
        except Exception as err:  # noqa: BLE001
            return err
