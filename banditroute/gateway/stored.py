"""Responses a later request may continue, and a client retrieve or delete: the gateway's memory of
them.

A response a provider's own responses API stored stays there: the gateway remembers which model and
deployment served it (the last :data:`STORED_RESPONSES` in memory, every one in the log's ``responses``
table, which then holds no prompt), so that a request continuing it goes only to that provider's API
root (:meth:`StoredResponses.provider`), and retrieval, input items, cancellation and deletion are
relayed there. A response the gateway made of a chat completion is stored nowhere upstream: the gateway
keeps its turn of the conversation and its response object (:mod:`.conversations`; in the log too where
prompts are stored, committed before the answer goes out), continues it with the whole conversation as
input (:meth:`StoredResponses.continue_conversation`), answers ``GET /v1/responses/{id}`` and its input
items itself, and forgets it on ``DELETE``. Each such turn belongs to the API key that made it. An
id known neither way goes to the models that serve the responses API (their provider may hold it), or
is not found when the pool has none.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import duckdb
import orjson
from aiohttp import web

from banditroute.config import ModelSpec
from banditroute.core.ids import key_id
from banditroute.errors import ClientError, NotFound, UpstreamFailed, ValidationFailed
from banditroute.gateway import bridge
from banditroute.gateway.conversations import Conversations
from banditroute.gateway.messages import MessagesRequest
from banditroute.gateway.passthrough import relay
from banditroute.gateway.providers import Provider, Providers
from banditroute.gateway.requests import ChatRequest, ResponsesRequest
from banditroute.gateway.upstream import UpstreamFailure, Upstreams

log = logging.getLogger("banditroute")

STORED_RESPONSES = 100_000  # response ids remembered with the model that served them
Request = ChatRequest | ResponsesRequest | MessagesRequest


class StoredResponses:
    """The responses the gateway remembers or keeps (see the module's docstring), for one gateway whose
    ``service``, ``providers``, ``upstreams``, model ``specs`` and ``callable_models`` it shares."""

    def __init__(self, service, providers: Providers, upstreams: Upstreams, specs: dict[str, ModelSpec],
                 callable_models: Callable[[], list[str]]):
        self.service = service
        self.providers = providers
        self.upstreams = upstreams
        self.specs = specs
        self._callable_models = callable_models
        # response id -> the model and deployment that served it, when its provider stored it
        self._stored: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self.conversations = Conversations(int(service.config.gateway.conversations_mb * 2**20))

    def provider(self, rid: str | None) -> Provider | None:
        """The provider that stored the response ``rid``, while the gateway remembers it in memory."""
        stored = self._stored.get(rid) if rid is not None else None
        return None if stored is None else self.providers.find(*stored)

    async def continue_conversation(self, req: ResponsesRequest, api_key: str | None = None) -> ResponsesRequest:
        """``req`` with the conversation it continues as its input when the gateway keeps it for the client
        with ``api_key`` (see the module's docstring); raises :class:`NotFound` for an id nobody can continue.
        An id not in memory is looked up in the log (after a restart, or once evicted)."""
        req.keep(self.conversations.max_bytes > 0, key_id(api_key))
        rid = req.previous_response_id
        if rid is None or rid in self._stored:
            return req
        history = self.conversations.history(rid, req.owner, self.service.retention.cutoff())
        if history is None:
            history = await self._recall(rid, req.owner)
        if history is not None:
            return req.continued(rid, history)
        if rid in self._stored:
            return req
        if not any("responses" in self.specs[m].capabilities for m in self._callable_models()):
            raise NotFound(f"previous_response_id {rid!r} is not a response the gateway keeps (it keeps the "
                           "conversations of the responses it made of chat completions, in memory up to "
                           "gateway.conversations_mb and, where prompts are stored (storage.store_prompts), in "
                           "its log, for storage.retention_days where that is set; not those stored with store: "
                           "false), and no model of the pool serves the "
                           "responses API to look it up")
        return req

    async def stored_response(self, request: web.Request, rid: str, api_key: str | None = None) -> web.StreamResponse:
        """``GET /v1/responses/{id}``, ``.../input_items`` and ``POST .../cancel``: relayed to the provider
        that stored the response (:func:`~banditroute.gateway.passthrough.relay`). A response the gateway made
        of a chat completion and keeps for the client with ``api_key`` (in memory, else in the log): the
        response object as the client got it; its input items, the request's own (not the conversation it
        continued), listed as the responses API lists them (``limit`` 1-100, default 20; ``order`` ``asc``
        or ``desc``, the default; ``after`` an item's id); cancel: a 400, as for any response not made in
        the background. An id nobody knows, or one kept for another key: 404."""
        provider, row = await self._provider_of(rid)
        if provider is not None:
            return await relay(self.upstreams, request, provider.base_url, self.upstreams.key(provider.api_key_env),
                               self.upstreams.timeout(provider), self.service.config.gateway.connect_timeout_s)
        owner = key_id(api_key)
        turn = self._own_turn(rid, owner, row)
        if turn is None:
            if self._keeps(rid, owner, row):
                raise NotFound(f"response {rid!r} was made by the gateway before it kept response objects: it keeps "
                               "its conversation for previous_response_id, not the response object")
            raise NotFound(f"response {rid!r} is not a response a provider of the pool stored, nor one the gateway "
                           "keeps for this API key")
        inputs, response = turn
        if request.method == "POST":
            raise ClientError(f"response {rid!r} cannot be cancelled: only responses made in the background can be, "
                              "and the gateway made this one of a chat completion")
        if not request.path.endswith("/input_items"):
            if request.query.get("stream", "false").lower() not in ("false", "0"):
                raise ValidationFailed("stream: a response the gateway made is retrieved as JSON, not replayed as a "
                                       "stream")
            return web.Response(body=orjson.dumps(response), content_type="application/json")
        listed = bridge.listed_items(inputs, rid)
        return web.Response(body=orjson.dumps(_page(listed, request.query)), content_type="application/json")

    def _own_turn(self, rid: str, owner: str | None, row: dict | None) -> tuple[list[dict], dict] | None:
        """The input items and the response object of the gateway-made response ``rid`` kept for ``owner``,
        from memory or else its logged ``row``; None when neither has it whole (or it is older than the
        retention)."""
        cutoff = self.service.retention.cutoff()
        kept = self.conversations.turn(rid, owner, cutoff)
        if kept is not None and kept[1]:
            return kept[0], orjson.loads(kept[1])
        if (row is None or row["owner"] != owner or row["items"] is None or row["response"] is None
                or (cutoff is not None and row["ts"] < cutoff)):
            return None
        items, response = _logged(row["items"], list, rid), _logged(row["response"], dict, rid)
        outputs = len(bridge.as_input(response.get("output") or []))  # the logged items end with them
        return items[:len(items) - outputs], response

    async def _provider_of(self, rid: str) -> tuple[Provider | None, dict | None]:
        """The provider that stored the response ``rid`` (None: none known; :class:`NotFound` when its model
        is no longer a callable model of the pool; its model's first provider when its deployment is no
        longer configured), and the response's logged row (:meth:`Store.response_row`)."""
        try:
            row = await asyncio.to_thread(self.service.store.response_row, rid)
        except duckdb.Error as err:
            raise self.service.unreadable(err) from None
        stored = self._stored.get(rid) or ((row["model"], row["deployment"]) if row is not None and row["items"] is None
                                           else None)
        if stored is None:
            return None, row
        provider = self.providers.find(*stored)
        if provider is None:
            raise NotFound(f"response {rid!r} was stored by {stored[0]}, which is no longer a callable model of the pool")
        return provider, row

    def _keeps(self, rid: str, owner: str | None, row: dict | None) -> bool:
        """Whether the gateway keeps the turn of response ``rid`` for the client ``owner``, in memory or in
        the log (``row``: its logged row, if any)."""
        return self.conversations.keeps_for(rid, owner) or (row is not None and row["owner"] == owner)

    async def delete_response(self, rid: str, api_key: str | None = None) -> dict:
        """``DELETE /v1/responses/{id}``: forget a response the gateway keeps for the client with
        ``api_key`` (its turn, in memory and in the log), or have the provider that stored it delete it
        there; :class:`NotFound` for an id neither knows. As at OpenAI, a response that continued it can
        no longer be continued: its conversation is no longer whole."""
        provider, row = await self._provider_of(rid)
        if provider is not None:  # its provider keeps it
            try:
                answer = await self.upstreams.complete(provider, None, f"/responses/{rid}", method="DELETE")
            except UpstreamFailure as failure:
                if failure.status == 404:
                    raise NotFound(f"response {rid!r}: {failure}") from None
                raise UpstreamFailed(f"deleting response {rid!r} failed: {failure}", [
                    {"model": provider.model, "deployment": provider.deployment, "outcome": failure.outcome, "status": failure.status,
                     "message": str(failure)}]) from None
            self._stored.pop(rid, None)
            body = answer.body
        elif self._keeps(rid, key_id(api_key), row):
            self.conversations.drop(rid)
            body = {"id": rid, "object": "response.deleted", "deleted": True}
        else:
            raise NotFound(f"response {rid!r} is not a response the gateway keeps for this API key, nor one a "
                           "provider of the pool stored")
        if row is not None:
            try:
                await asyncio.to_thread(self.service.store.delete_response, rid)
            except duckdb.Error as err:
                raise self.service.unreadable(err, "changed") from None
        return body

    async def _recall(self, rid: str, owner: str | None) -> list[dict] | None:
        """The conversation up to the logged response ``rid`` (as :meth:`Conversations.history`), read from
        the log and kept in memory again; None when it is not logged whole for ``owner``; :class:`Unavailable`
        when the log cannot be read. A response its
        provider keeps is remembered with its model instead (and None returned)."""
        try:
            rows = await asyncio.to_thread(self.service.store.response_chain, rid)
        except duckdb.Error as err:  # it may well be logged: a 503 to retry, not a 404 to give up on
            raise self.service.unreadable(err) from None
        if not rows:
            return None
        if rows[0]["items"] is None:  # its provider keeps it
            self._remember_provider(rid, rows[0]["model"], rows[0]["deployment"])
            return None
        cutoff = self.service.retention.cutoff()
        whole = all(r["owner"] == owner and r["items"] is not None and (cutoff is None or r["ts"] >= cutoff)
                    for r in rows) and rows[-1]["parent"] is None
        if not whole or any(newer["parent"] != older["response_id"] for newer, older in itertools.pairwise(rows)):
            return None
        turns = [_logged(r["items"], list, r["response_id"]) for r in reversed(rows)]
        for r in reversed(rows):  # oldest first, so the newest turns are the last to be evicted
            self.conversations.put(r["response_id"], r["parent"], r["items"].encode(), owner, r["ts"])
        return [item for turn in turns for item in turn]

    def _remember(self, req: Request, response: dict, call: dict) -> concurrent.futures.Future | None:
        """Keep what the requests that continue a response (``previous_response_id``) need: which model
        served it, when its provider's responses API stored it; its turn of the conversation, when the
        gateway made it of a chat completion (once it is finished, and unless ``store`` is false). Both go
        to the log too (a turn only where prompts are stored); for a turn, the future of its commit, which
        the answer waits for, since the client is told the response is stored. ``call``: the ``calls`` row of
        the call that answered (its model and deployment)."""
        rid, model = response.get("id"), call["model"]
        if not isinstance(req, ResponsesRequest) or not isinstance(rid, str):
            return None
        if "responses" in self.specs[model].capabilities:
            if rid not in self._stored:
                self._remember_provider(rid, model, call["deployment"])
                self._log_response(rid, model, None, None, None, call["deployment"])
            return None
        if not req.kept or response.get("status") not in ("completed", "incomplete"):
            return None
        inputs = req.turn_items()
        obj = orjson.dumps({**response, "model": model})  # a stream's event gets the pool's name after this
        self.conversations.put(rid, req.continues, orjson.dumps(inputs), req.owner, response=obj)
        if not self.service.config.storage.store_prompts:
            return None
        items = orjson.dumps(inputs + bridge.as_input(response.get("output") or [])).decode()
        return self._log_response(rid, model, req.continues, req.owner, items, response=obj.decode())

    async def keep(self, req: Request, response: dict, call: dict) -> None:
        """:meth:`_remember` ``response``, and wait until a turn it logs is committed. A turn the log could
        not take is not kept at all, and the answer says so (``store: false``): the client gets its answer
        and is not told that something is stored which a restart would lose."""
        committed = self._remember(req, response, call)
        if committed is None:
            return
        try:
            await asyncio.wait_for(asyncio.wrap_future(committed), self.service.config.storage.commit_timeout_s)
        except Exception as err:  # noqa: BLE001 - a failed or late commit: the answer still goes out
            log.warning("response %s not stored: %s", response.get("id"), err)
            self.conversations.drop(response["id"])
            response["store"] = False

    def _remember_provider(self, rid: str, model: str, deployment: str | None) -> None:
        self._stored[rid] = (model, deployment)
        if len(self._stored) > STORED_RESPONSES:
            self._stored.popitem(last=False)

    def _log_response(self, rid: str, model: str, parent: str | None, owner: str | None,
                      items: str | None, deployment: str | None = None,
                      response: str | None = None) -> concurrent.futures.Future:
        row = {"response_id": rid, "ts": time.time_ns() // 1000, "model": model, "parent": parent,
               "owner": owner, "items": items, "deployment": deployment, "response": response}
        return self.service.store.add_response(row, commit_now=items is not None)


def _logged(text: str, kind: type, rid: str):
    """The JSON of a logged turn (its items: a list; its response object: a dict); :class:`NotFound`
    naming the damage when the row does not hold that (a log edited or damaged outside the service)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, kind):
        log.warning("response %s: its logged turn is damaged (not a JSON %s)", rid, kind.__name__)
        raise NotFound(f"response {rid!r}: its turn in the log is damaged and cannot be read")
    return value


def _page(items: list[dict], query) -> dict:
    """One page of ``items`` as the responses API lists a response's input items: ``limit`` (1-100,
    default 20), ``order`` (``asc``: the turn's order; ``desc``, the default: newest first), ``after``
    (the id of the item the page starts after); :class:`ValidationFailed` naming a bad parameter."""
    unknown = sorted(set(query) - {"limit", "order", "after", "include", "include[]"})
    if unknown:
        raise ValidationFailed(f"unknown query parameter {unknown[0]!r}; use limit, order, after or include")
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise ValidationFailed("limit must be an integer from 1 to 100")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ValidationFailed("order must be asc or desc")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise ValidationFailed(f"after: {after!r} is not an input item of this response")
        ordered = ordered[ids.index(after) + 1:]
    data = ordered[:limit]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(ordered) > limit}
