"""The conversations of the responses the gateway made itself, so that ``previous_response_id`` works
with providers that only speak chat completions.

A provider's own responses API stores each response and continues it when a request names it in
``previous_response_id``. A response the gateway made from a chat completion (:mod:`.bridge`) is
stored nowhere upstream, so the gateway keeps it: each response as its own turn (the input items
of its request and its output items, and the response object as the client got it, which
``GET /v1/responses/{id}`` returns) with a link to the response it continued. A request that
continues one gets the whole chain as its input, oldest turn first, the way OpenAI's responses API
rebuilds a conversation (its "conversation state" guide: the earlier turns' inputs and outputs come
before the new input; the earlier ``instructions`` do not carry over). Such a request no longer
depends on any provider's storage, so the router may send it to any model that can serve it.

Turns are kept in memory, serialised, least recently used first out once they take more than
``gateway.conversations_mb``. Where prompts are stored (``storage.store_prompts``), the gateway also
writes each turn to the log's ``responses`` table, and brings a conversation back from there when it
is no longer in memory (after a restart, or once evicted); elsewhere a chain whose oldest turns were
dropped (or a restart) cannot be continued, and the request is answered as for an unknown id. Each turn
belongs to the API key that made it (its :func:`~banditroute.core.ids.key_id`; none without one), as a
provider scopes its stored responses to the account that made them: another key cannot continue it,
and sees it as unknown. With ``storage.retention_days`` a conversation with a turn older than that is
unknown too (:mod:`banditroute.service.retention`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import orjson

from banditroute.gateway.bridge import as_input


class Conversations:
    """Turns of gateway-made responses by response id, within ``max_bytes`` (see the module's docstring)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evicted = 0
        # response id -> (parent id, owner, items, when it was made, the response object's JSON or b""):
        # with an object, the items are the turn's input only, its output being the object's
        self._turns: OrderedDict[str, tuple[str | None, str | None, bytes, float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._turns)

    def __contains__(self, response_id: object) -> bool:
        return response_id in self._turns

    def put(self, response_id: str, parent: str | None, items: list[dict[str, Any]] | bytes,
            owner: str | None = None, ts: float | None = None, response: bytes = b"") -> bool:
        """Keep one turn: the response ``response_id``, which continued ``parent`` (None: the first turn),
        made of ``items`` (or their JSON) for the client ``owner`` (its key's id) at ``ts`` (seconds since
        the epoch; default: now). With ``response``, the JSON of the response object as the client got it
        (for ``GET /v1/responses/{id}``), ``items`` are the request's input items alone: the output items
        are read from the object when the conversation is rebuilt, so an answer is not kept twice; without
        it (a turn read back from the log), its input items then its output items. False when it is
        larger than the whole store (it is not kept)."""
        data = items if isinstance(items, bytes) else orjson.dumps(items)
        size = len(data) + len(response) + len(response_id)
        if size > self.max_bytes:
            return False
        self.drop(response_id)
        self._turns[response_id] = (parent, owner, data, time.time() if ts is None else ts, response)
        self.bytes += size
        while self.bytes > self.max_bytes:
            rid, dropped = self._turns.popitem(last=False)
            self.bytes -= _size(rid, dropped)
            self.evicted += 1
        return True

    def drop(self, response_id: str) -> None:
        """Forget the turn ``response_id`` (if kept)."""
        old = self._turns.pop(response_id, None)
        if old is not None:
            self.bytes -= _size(response_id, old)

    def turn(self, response_id: str, owner: str | None = None,
             not_before: float | None = None) -> tuple[list[dict[str, Any]], bytes] | None:
        """The items of the turn ``response_id`` alone as :meth:`put` kept them, and its response object's
        JSON (empty when not kept); None when it is not kept for the client ``owner``, or was made before
        ``not_before``."""
        turn = self._turns.get(response_id)
        if turn is None or turn[1] != owner:
            return None
        if not_before is not None and turn[3] < not_before:
            self.drop(response_id)
            return None
        return orjson.loads(turn[2]), turn[4]

    def keeps_for(self, response_id: str, owner: str | None) -> bool:
        """Whether the turn ``response_id`` is kept for the client ``owner``."""
        turn = self._turns.get(response_id)
        return turn is not None and turn[1] == owner

    def history(self, response_id: str, owner: str | None = None,
                not_before: float | None = None) -> list[dict[str, Any]] | None:
        """The items of the conversation up to and including ``response_id``, oldest turn first; None
        when it, or any turn before it, is not kept for the client ``owner``, or was made before
        ``not_before`` (seconds since the epoch; such a turn is forgotten)."""
        chain: list[tuple[bytes, bytes]] = []
        rid: str | None = response_id
        seen: set[str] = set()
        while rid is not None:
            if rid in seen or rid not in self._turns or self._turns[rid][1] != owner:
                return None
            if not_before is not None and self._turns[rid][3] < not_before:
                self.drop(rid)
                return None
            seen.add(rid)
            self._turns.move_to_end(rid)  # a conversation in use is the last to go
            parent, _, data, _, response = self._turns[rid]
            chain.append((data, response))
            rid = parent
        return [item for data, response in reversed(chain) for item in _items(data, response)]


def _items(data: bytes, response: bytes) -> list[dict[str, Any]]:
    """A kept turn's items, input then output (see :meth:`Conversations.put`)."""
    items = orjson.loads(data)
    if response:
        items += as_input(orjson.loads(response).get("output") or [])
    return items


def _size(response_id: str, turn: tuple) -> int:
    """The bytes a kept turn counts for: its id, items and response object."""
    return len(response_id) + len(turn[2]) + len(turn[4])
