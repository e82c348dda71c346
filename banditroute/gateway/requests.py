"""What the gateway reads from an OpenAI request and its answer: the routing options, the text it
routes on, what the request needs of a model (capabilities, context), its estimated size, and from
the answer its text and token usage.

Two of OpenAI's APIs, each its own wire format: chat completions
(https://platform.openai.com/docs/api-reference/chat/create, :class:`ChatRequest`) and responses
(https://platform.openai.com/docs/api-reference/responses/create, :class:`ResponsesRequest`). Only
the fields below are interpreted, every other field is passed upstream untouched. Routing options
ride in an optional ``banditroute`` object, which the OpenAI SDK sends with
``extra_body={"banditroute": {...}}``; it is removed before the call goes upstream.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from banditroute.config import Fraction, NonNegFloat, PositiveFloat
from banditroute.core.router import RouteOptions
from banditroute.gateway import bridge
from banditroute.gateway.bridge import token_count, untranslatable

ROUTED = "banditroute"  # the model name that asks the gateway to choose
# tokens counted for one image part: OpenAI's base charge per image at low detail (its vision guide);
# high-detail tiles cost more, so this is a lower bound, and the context check errs towards allowing
IMAGE_TOKENS = 85
MESSAGE_OVERHEAD_TOKENS = 4  # role and delimiters per message (OpenAI's cookbook on counting tokens)


class GatewayOptions(BaseModel):
    """The ``banditroute`` object of a chat-completions body (frozen: a request without one shares
    :data:`NO_OPTIONS`)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    cost_weight: NonNegFloat | None = None
    cost_preference: Fraction | None = None
    max_cost_usd: PositiveFloat | None = None
    models: list[str] | None = Field(default=None, min_length=1)
    require: list[str] = Field(default_factory=list)
    max_latency_ms: PositiveFloat | None = Field(default=None, description="only models predicted to answer "
                                                 "within this many milliseconds")
    metadata: dict[str, Any] | None = None
    cascade: str | None = Field(default=None, description="serve through this configured cascade")
    ensemble: str | None = Field(default=None, description="serve through this configured ensemble")


NO_OPTIONS = GatewayOptions()


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The interpreted part of a chat-completions body (extra fields are kept for the upstream)."""

    model_config = ConfigDict(extra="allow", strict=True)

    PATH: ClassVar[str] = "/chat/completions"  # below the upstream's API root

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=256)
    banditroute: GatewayOptions | None = None

    @property
    def options(self) -> GatewayOptions:
        return self.banditroute or NO_OPTIONS

    @property
    def max_output_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @staticmethod
    def bridged(capabilities: list[str]) -> bool:
        """Whether a model with ``capabilities`` gets this request translated into chat completions: never."""
        return False

    @staticmethod
    def usage_tokens(usage) -> tuple[int | None, int | None, int | None]:
        """(input, output, cached input) tokens of an answer's ``usage`` (None where it does not say; the
        cached ones: ``prompt_tokens_details.cached_tokens``, OpenAI's prompt caching, at most the input; a
        ``usage`` that is no JSON object says nothing)."""
        if not isinstance(usage, dict):
            return None, None, None
        details = usage.get("prompt_tokens_details")
        return _tokens(usage.get("prompt_tokens"), usage.get("completion_tokens"),
                       details.get("cached_tokens") if isinstance(details, dict) else None)

    @staticmethod
    def answer_text(body: dict[str, Any]) -> str:
        """The first choice's text of a non-streamed answer ('' when it has none, e.g. tool calls only)."""
        try:
            content = body["choices"][0]["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            return ""
        return content if isinstance(content, str) else ""

    def wants_usage(self) -> bool:
        """The client asked for the usage chunk at the end of a stream."""
        return bool((self.stream_options or {}).get("include_usage"))

    def needs(self) -> list[str]:
        """The capabilities a model must have to serve this request."""
        need = []
        if self.tools or self.functions:
            need.append("tools")
        if any(part.get("type") in ("image_url", "input_image") for m in self.messages if isinstance(m.content, list)
               for part in m.content):
            need.append("vision")
        if (self.response_format or {}).get("type") in ("json_object", "json_schema"):
            need.append("json")
        return need

    def routing_text(self) -> str:
        """The text the router's features see: the last user message (the question being asked), or the
        last message with text when there is no user message."""
        for want_user in (True, False):
            for m in reversed(self.messages):
                if want_user and m.role != "user":
                    continue
                text = _text(m.content)
                if text.strip():
                    return text
        return ""

    def prompt_tokens(self, tokens_of) -> float:
        """Estimated prompt tokens: ``tokens_of(text)`` per message plus a fixed overhead per message
        and per image, and the tool definitions as text."""
        total = 0.0
        for m in self.messages:
            total += MESSAGE_OVERHEAD_TOKENS + tokens_of(_text(m.content))
            if isinstance(m.content, list):
                total += IMAGE_TOKENS * sum(p.get("type") in ("image_url", "input_image") for p in m.content)
        for defs in (self.tools, self.functions):
            if defs:
                total += tokens_of(str(defs))
        return total

    def upstream_body(self, upstream_name: str, include_usage: bool) -> dict:
        """The body sent upstream: the client's, with the upstream's model name, without the
        ``banditroute`` options, and asking a stream for its usage."""
        body = self.model_dump(exclude={"banditroute"}, exclude_unset=True, by_alias=True)
        body["model"] = upstream_name
        if self.stream and include_usage:
            body["stream_options"] = {**(self.stream_options or {}), "include_usage": True}
        return body


class ResponsesRequest(BaseModel):
    """The interpreted part of a responses body (extra fields are kept for the upstream).

    ``input`` is a string or a list of items: messages (``{"role", "content"}``, the content a string or
    ``input_text`` / ``input_image`` / ``input_file`` parts), tool calls and their outputs, references.
    A model with the ``responses`` capability gets the request as it is (its provider answers
    ``POST {base_url}/responses``); any other gets it translated into chat completions
    (:mod:`~banditroute.gateway.bridge`), unless the request uses what only the responses API
    offers: then it needs ``responses``.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    PATH: ClassVar[str] = "/responses"

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    stream: bool = False
    tools: list[Any] | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    previous_response_id: str | None = None
    store: bool | None = None
    user: str | None = Field(default=None, max_length=256)
    banditroute: GatewayOptions | None = None
    # set by continued(): the gateway-kept response this request continues, and its own input items
    _continues: str | None = PrivateAttr(default=None)
    _turn: list[dict[str, Any]] | None = PrivateAttr(default=None)
    _kept: bool = PrivateAttr(default=False)  # set by keep(): a response made here is kept for later turns
    _owner: str | None = PrivateAttr(default=None)  # ...for the client with this key id

    @property
    def options(self) -> GatewayOptions:
        return self.banditroute or NO_OPTIONS

    @property
    def continues(self) -> str | None:
        """The id of the gateway-kept response this request continues (see :meth:`continued`)."""
        return self._continues

    def continued(self, response_id: str, history: list[dict[str, Any]]) -> ResponsesRequest:
        """This request with the conversation it continues (``history``: the items of the kept response
        ``response_id`` and of the turns before it) in place of ``previous_response_id``."""
        turn = self._items()
        new = self.model_copy(update={"input": history + turn, "previous_response_id": None})
        new.__pydantic_fields_set__ = self.__pydantic_fields_set__ - {"previous_response_id"}
        new._continues, new._turn = response_id, turn
        return new

    @property
    def kept(self) -> bool:
        """A response made of a chat completion for this request is kept by the gateway for later turns."""
        return self._kept

    @property
    def owner(self) -> str | None:
        """The id of the client's API key (:func:`~banditroute.core.ids.key_id`), whose conversation a kept
        response joins."""
        return self._owner

    def keep(self, on: bool, owner: str | None = None) -> None:
        """Say whether the gateway keeps the response (it can, and ``store`` is not false), for the client
        ``owner``."""
        self._kept, self._owner = on and self.store is not False, owner

    def turn_items(self) -> list[dict[str, Any]]:
        """The input items of this turn alone (without the conversation it continues)."""
        return self._turn if self._turn is not None else self._items()

    def wants_usage(self) -> bool:
        return True  # a responses stream carries its usage in its last event, asked for or not

    @staticmethod
    def bridged(capabilities: list[str]) -> bool:
        """Whether a model with ``capabilities`` gets this request translated into chat completions
        (:mod:`~banditroute.gateway.bridge`): when it lacks ``responses``."""
        return "responses" not in capabilities

    def to_chat(self, upstream_name: str, include_usage: bool) -> dict:
        return bridge.chat_body(self, upstream_name, include_usage)

    def from_chat(self, answer: dict) -> dict:
        return bridge.response_from_chat(answer, self)

    def stream_bridge(self) -> bridge.StreamBridge:
        return bridge.StreamBridge(self)

    def _items(self) -> list[dict[str, Any]]:
        return [{"role": "user", "content": self.input}] if isinstance(self.input, str) else self.input

    def native_only(self) -> str | None:
        """Why only a provider's own responses API can serve this request (None: chat completions can too)."""
        return untranslatable(self)

    def needs(self) -> list[str]:
        need = [] if self.native_only() is None else ["responses"]
        if self.tools:
            need.append("tools")
        if any(isinstance(part, dict) and part.get("type") == "input_image"
               for item in self._items() if isinstance(item.get("content"), list) for part in item["content"]):
            need.append("vision")
        fmt = (self.text or {}).get("format")
        if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
            need.append("json")
        return need

    def routing_text(self) -> str:
        """As for chat completions: the last user message's text, or the last item's with text."""
        items = self._items()
        for want_user in (True, False):
            for item in reversed(items):
                if want_user and item.get("role") != "user":
                    continue
                text = _text(item.get("content"))
                if text.strip():
                    return text
        return self.instructions or ""

    def prompt_tokens(self, tokens_of) -> float:
        """Estimated input tokens: as for chat completions, with each item a message (a tool call's
        arguments and a tool output counted as text) and the instructions as one more."""
        total = 0.0 if self.instructions is None else MESSAGE_OVERHEAD_TOKENS + tokens_of(self.instructions)
        for item in self._items():
            content = item.get("content", item.get("output", item.get("arguments")))
            total += MESSAGE_OVERHEAD_TOKENS + tokens_of(_text(content))
            if isinstance(content, list):
                total += IMAGE_TOKENS * sum(isinstance(p, dict) and p.get("type") == "input_image" for p in content)
        if self.tools:
            total += tokens_of(str(self.tools))
        return total

    def upstream_body(self, upstream_name: str, include_usage: bool) -> dict:
        """The client's body with the upstream's model name, without the ``banditroute`` options."""
        body = self.model_dump(exclude={"banditroute"}, exclude_unset=True, by_alias=True)
        body["model"] = upstream_name
        return body

    @staticmethod
    def usage_tokens(usage) -> tuple[int | None, int | None, int | None]:
        """As :meth:`ChatRequest.usage_tokens`, from the responses API's names (``input_tokens_details``)."""
        if not isinstance(usage, dict):
            return None, None, None
        details = usage.get("input_tokens_details")
        return _tokens(usage.get("input_tokens"), usage.get("output_tokens"),
                       details.get("cached_tokens") if isinstance(details, dict) else None)

    @staticmethod
    def answer_text(body: dict[str, Any]) -> str:
        """The text of a response's message items ('' when it has none, e.g. function calls only)."""
        output = body.get("output")
        if not isinstance(output, list):
            return ""
        return "".join(part["text"] for item in output if isinstance(item, dict) and item.get("type") == "message"
                       and isinstance(item.get("content"), list) for part in item["content"]
                       if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str))


def _tokens(input_tokens, output_tokens, cached_tokens) -> tuple[int | None, int | None, int | None]:
    """Usage counts as the gateway keeps them: valid counts or None, and the cached input at most the input
    (none without an input count), whatever a provider reports."""
    tokens_in, cached = token_count(input_tokens), token_count(cached_tokens)
    return tokens_in, token_count(output_tokens), None if tokens_in is None or cached is None else min(cached, tokens_in)


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))


def route_options(req: ChatRequest | ResponsesRequest) -> RouteOptions:
    """The :class:`RouteOptions` of a request's ``banditroute`` object and ``user``."""
    o = req.options
    return RouteOptions(models=o.models, cost_weight=o.cost_weight, cost_preference=o.cost_preference,
                        max_cost_usd=o.max_cost_usd,
                        require=o.require, user=req.user, metadata=o.metadata)
