"""Anthropic's Messages API (``POST /v1/messages``) in front of the pool: the request translated into chat
completions for whichever model serves it, the answer (or its stream) translated back into a message
(or the Messages API's stream of named events), so that the Anthropic SDK and the applications built on
it (coding agents among them) can be pointed at banditroute like an OpenAI client.

What translates (Anthropic's reference, https://docs.anthropic.com/en/api/messages, and OpenAI's chat
completions): ``system`` (a string or text blocks) as a system message; ``text`` blocks; ``image``
blocks (base64 or URL sources) as ``image_url`` parts; an assistant's ``tool_use`` blocks as its
``tool_calls`` (the input as JSON arguments); a user's ``tool_result`` blocks as ``tool`` messages, ahead
of the rest of that user message; client tools (``name``, ``description``, ``input_schema``) as function
tools; ``tool_choice`` (``auto``, ``any`` as ``required``, ``tool`` as a named function, ``none``) and
its ``disable_parallel_tool_use`` (``parallel_tool_calls: false``); ``max_tokens``, ``stop_sequences``
(``stop``), ``temperature``, ``top_p`` and ``metadata.user_id`` (``user``). ``thinking`` blocks of earlier
turns are dropped. What does not (:func:`untranslatable`, a 422): server tools (web search, code
execution, ...: a tool with a ``type`` but no ``input_schema``) and other block types (documents, ...).

The answer: the text as one ``text`` block, each tool call as a ``tool_use`` block (arguments that are
not a JSON object become ``{}``), ``finish_reason`` as ``stop_reason`` (``stop``: ``end_turn``,
``length``: ``max_tokens``, ``tool_calls``: ``tool_use``, ``content_filter``: ``refusal``), and the usage
in Anthropic's terms: ``input_tokens`` are the prompt tokens not read from a prompt cache,
``cache_read_input_tokens`` those that were; where the upstream reported no usage, the gateway's
estimates, the counts it logs and bills (:meth:`MessagesRequest.estimated_usage`). A stream
(:class:`StreamBridge`) is ``message_start`` (with the prompt's estimated tokens, as Anthropic's stream
counts them up front), per content block ``content_block_start``, its deltas (``text_delta``,
``input_json_delta``) and ``content_block_stop``, then ``message_delta`` with the stop reason and the
usage, and ``message_stop``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from banditroute.gateway.bridge import read_chunk, token_count
from banditroute.gateway.requests import IMAGE_TOKENS, MESSAGE_OVERHEAD_TOKENS, NO_OPTIONS, GatewayOptions

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}
BLOCKS = {"text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking"}
# Anthropic's error types by status (its errors reference), for the errors /v1/messages answers with
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 408: "timeout_error", 413: "request_too_large", 429: "rate_limit_error",
               503: "overloaded_error"}


def error_body(status: int, message: str, **extra) -> dict:
    """Anthropic's error shape, which its SDKs read: ``{"type": "error", "error": {"type", "message"}}``."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message, **extra}}


def _blocks(content) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _block_text(content) -> str:
    """The text of a content (a string or blocks; a tool result's nested content too)."""
    out = []
    for b in _blocks(content):
        if b.get("type") == "text" and isinstance(b.get("text"), str):
            out.append(b["text"])
        elif b.get("type") == "tool_result":
            out.append(_block_text(b.get("content")))
    return "\n".join(out)


def untranslatable(req: MessagesRequest) -> str | None:
    """Why ``req`` cannot be served through chat completions (None: it can)."""
    for tool in req.tools or []:
        if not isinstance(tool, dict) or "input_schema" not in tool:
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            return f"uses the server tool {kind!r}, which only Anthropic's own API runs"
    for m in req.messages:
        for b in _blocks(m.get("content")):
            kind = b.get("type")
            if not isinstance(kind, str) or kind not in BLOCKS:  # a type that is no string is none we know
                return f"has a content block of type {str(kind)[:64]!r}"
    return None


def _image(block: dict) -> dict:
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    else:
        url = source.get("url", "")
    return {"type": "image_url", "image_url": {"url": url}}


class MessagesRequest(BaseModel):
    """The interpreted part of a Messages API body (extra fields are kept, and what chat completions has
    of them passed on)."""

    model_config = ConfigDict(extra="allow", strict=True)

    PATH: ClassVar[str] = "/chat/completions"  # always served through chat completions

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool = False
    tools: list[Any] | None = None
    tool_choice: dict[str, Any] | None = None
    stop_sequences: list[str] | None = None
    metadata: dict[str, Any] | None = None
    banditroute: GatewayOptions | None = None

    @model_validator(mode="after")
    def _text_blocks_hold_text(self) -> MessagesRequest:
        """A text block's ``text`` is a string (the API's schema), so that translating it cannot fail."""
        places = [("system", self.system)] + [(f"messages.{i}.content", m.get("content"))
                                              for i, m in enumerate(self.messages)]
        for where, content in places:
            for j, b in enumerate(content if isinstance(content, list) else []):
                if isinstance(b, dict) and b.get("type") == "text" and not isinstance(b.get("text"), str):
                    raise ValueError(f"{where}.{j}.text must be a string")
        return self

    @property
    def options(self) -> GatewayOptions:
        return self.banditroute or NO_OPTIONS

    @property
    def user(self) -> str | None:
        """``metadata.user_id``: the end user, as chat completions' ``user``."""
        uid = (self.metadata or {}).get("user_id")
        return uid[:256] if isinstance(uid, str) else None

    @property
    def max_output_tokens(self) -> int:
        return self.max_tokens

    def wants_usage(self) -> bool:
        return True  # a Messages stream carries its usage, asked for or not

    def native_only(self) -> str | None:
        return untranslatable(self)

    def needs(self) -> list[str]:
        need = []
        if self.tools:
            need.append("tools")
        if any(b.get("type") == "image" for m in self.messages for b in _blocks(m.get("content"))):
            need.append("vision")
        return need

    def routing_text(self) -> str:
        """The last user message's text (tool results left out), else the last message's with text."""
        for want_user in (True, False):
            for m in reversed(self.messages):
                if want_user and m.get("role") != "user":
                    continue
                text = "\n".join(b["text"] for b in _blocks(m.get("content"))
                                 if b.get("type") == "text" and isinstance(b.get("text"), str))
                if text.strip():
                    return text
        return _block_text(self.system) if self.system else ""

    def prompt_tokens(self, tokens_of) -> float:
        """Estimated input tokens: as for chat completions, the system prompt a message of its own, tool
        inputs and results counted as text."""
        total = 0.0 if not self.system else MESSAGE_OVERHEAD_TOKENS + tokens_of(_block_text(self.system))
        for m in self.messages:
            blocks = _blocks(m.get("content"))
            text = _block_text(m.get("content")) + "".join(orjson.dumps(b.get("input")).decode()
                                                           for b in blocks if b.get("type") == "tool_use")
            total += MESSAGE_OVERHEAD_TOKENS + tokens_of(text) + IMAGE_TOKENS * sum(b.get("type") == "image"
                                                                                    for b in blocks)
        if self.tools:
            total += tokens_of(str(self.tools))
        return total

    @staticmethod
    def bridged(capabilities: list[str]) -> bool:
        """Whether a model with ``capabilities`` gets this request translated into chat completions: always."""
        return True

    def to_chat(self, upstream_name: str, include_usage: bool) -> dict:
        """The chat-completions body that asks what this request asks."""
        messages: list[dict[str, Any]] = []
        if self.system:
            messages.append({"role": "system", "content": _block_text(self.system)})
        for m in self.messages:
            role, blocks = m.get("role"), _blocks(m.get("content"))
            if role == "assistant":
                text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
                calls = [{"id": b.get("id"), "type": "function",
                          "function": {"name": b.get("name"), "arguments": orjson.dumps(b.get("input", {})).decode()}}
                         for b in blocks if b.get("type") == "tool_use"]
                message: dict[str, Any] = {"role": "assistant", "content": text or None}
                if calls:
                    message["tool_calls"] = calls
                messages.append(message)
                continue
            for b in blocks:  # tool results first: they answer the assistant message just before
                if b.get("type") == "tool_result":
                    content = _block_text(b.get("content"))
                    messages.append({"role": "tool", "tool_call_id": b.get("tool_use_id"),
                                     "content": ("[error] " + content) if b.get("is_error") else content})
            parts = [{"type": "text", "text": b.get("text", "")} if b.get("type") == "text" else _image(b)
                     for b in blocks if b.get("type") in ("text", "image")]
            if parts:
                plain = all(p["type"] == "text" for p in parts)
                messages.append({"role": "user", "content": "\n".join(p["text"] for p in parts) if plain else parts})
        body: dict[str, Any] = {"model": upstream_name, "messages": messages, "max_tokens": self.max_tokens}
        extra = self.model_extra or {}
        for key in ("temperature", "top_p"):
            if extra.get(key) is not None:
                body[key] = extra[key]
        if self.stop_sequences:
            body["stop"] = self.stop_sequences
        if self.user is not None:
            body["user"] = self.user
        if self.tools:
            body["tools"] = [{"type": "function", "function": {
                "name": t.get("name"), "description": t.get("description", ""), "parameters": t.get("input_schema")}}
                for t in self.tools]
        choice = (self.tool_choice or {}) if self.tools else {}  # a tool choice without tools is an upstream's 400
        kind = choice.get("type")
        if kind in ("auto", "none"):
            body["tool_choice"] = kind
        elif kind == "any":
            body["tool_choice"] = "required"
        elif kind == "tool":
            body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        if choice.get("disable_parallel_tool_use") and self.tools:
            body["parallel_tool_calls"] = False
        if self.stream:
            body["stream"] = True
            if include_usage:
                body["stream_options"] = {"include_usage": True}
        return body

    def from_chat(self, answer: dict) -> dict:
        """The message that a non-streamed chat completion ``answer`` amounts to."""
        choices = answer.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        content = []
        text = message.get("content") or message.get("refusal")
        if isinstance(text, str) and text:
            content.append({"type": "text", "text": text})
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                fn = call["function"]
                content.append({"type": "tool_use", "id": str(call.get("id") or _new_id("toolu_")),
                                "name": str(fn.get("name", "")), "input": _arguments(fn.get("arguments"))})
        return {"id": _new_id("msg_"), "type": "message", "role": "assistant", "model": str(answer.get("model", "")),
                "content": content, "stop_reason": stop_reason(choice.get("finish_reason"),
                                                               any(b["type"] == "tool_use" for b in content)),
                "stop_sequence": None, "usage": usage_from_chat(answer.get("usage"))}

    def stream_bridge(self) -> StreamBridge:
        return StreamBridge()

    @classmethod
    def estimated_usage(cls, usage, prompt_tokens: float, text: str, count: Callable[[str], float]) -> dict:
        """``usage``, or when it is no usage (:meth:`usage_tokens`: the upstream reported none) the
        gateway's estimates, the counts its log and cost feedback use (the prompt's ``prompt_tokens``, the
        answer ``text`` counted by ``count``, only then): the client sees what it is billed."""
        if cls.usage_tokens(usage)[0] is not None:
            return usage
        return {"input_tokens": round(prompt_tokens), "output_tokens": round(count(text)),
                "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}

    @staticmethod
    def usage_tokens(usage) -> tuple[int | None, int | None, int | None]:
        """(input, output, cached input) tokens of a Messages ``usage``: its input is what was not cached,
        so the whole prompt is ``input_tokens`` plus the cache's reads and writes. A usage of no input
        tokens at all (what the translation says when the upstream reported none) is no usage: None."""
        if not isinstance(usage, dict):
            return None, None, None
        fresh, out = token_count(usage.get("input_tokens")), token_count(usage.get("output_tokens"))
        read = token_count(usage.get("cache_read_input_tokens")) or 0
        written = token_count(usage.get("cache_creation_input_tokens")) or 0
        if not fresh and not read and not written:  # no prompt has no tokens: an upstream that reported none
            return None, None, None
        return fresh + read + written, out, read

    @staticmethod
    def answer_text(body: dict[str, Any]) -> str:
        return "".join(b["text"] for b in body.get("content") or []
                       if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))


def stop_reason(finish_reason, called: bool) -> str:
    """The Messages API's ``stop_reason`` of a chat completion's ``finish_reason``; ``tool_use`` whenever
    the answer calls a tool and was not cut short (some providers say ``stop`` there, and an agent loop
    continues only on ``tool_use``)."""
    reason = STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"
    return "tool_use" if called and reason != "max_tokens" else reason


class CountTokensRequest(MessagesRequest):
    """``POST /v1/messages/count_tokens``: a Messages body without ``max_tokens``."""

    max_tokens: int = Field(default=1, ge=1)


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _arguments(arguments) -> dict:
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def usage_from_chat(usage) -> dict:
    """Chat completions' usage in the Messages API's terms (zeros where it says nothing)."""
    usage = usage if isinstance(usage, dict) else {}
    prompt = token_count(usage.get("prompt_tokens")) or 0
    details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
    cached = min(token_count(details.get("cached_tokens")) or 0, prompt)
    return {"input_tokens": prompt - cached, "output_tokens": token_count(usage.get("completion_tokens")) or 0,
            "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0}


class StreamBridge:
    """Chat-completion chunks in, the Messages API's events out (see the module's docstring). Content
    blocks are numbered in the order they open and never interleave: a block is stopped when the next
    one starts (chat completions stream a message's text and then its tool calls, each call's chunks
    together)."""

    def __init__(self):
        self.id = _new_id("msg_")
        self.blocks: list[dict] = []  # {"type": "text" | "tool_use", "index" (chat's tool call index)}
        self.open: dict | None = None
        self.usage: dict | None = None
        self.finish: str | None = None

    def start(self) -> list[dict]:
        return [{"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": "", "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}}]

    def _switch(self, block: dict, start: dict) -> list[dict]:
        out = [] if self.open is None else [{"type": "content_block_stop", "index": len(self.blocks) - 1}]
        self.blocks.append(block)
        self.open = block
        return out + [{"type": "content_block_start", "index": len(self.blocks) - 1, "content_block": start}]

    def feed(self, chunk: dict) -> list[dict]:
        """The events one chat-completion chunk gives."""
        out = []
        usage, delta, finish = read_chunk(chunk)
        self.usage = usage_from_chat(usage) if usage is not None else self.usage
        self.finish = finish or self.finish
        if delta is None:
            return out
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self.open is None or self.open["type"] != "text":
                out += self._switch({"type": "text"}, {"type": "text", "text": ""})
            out.append({"type": "content_block_delta", "index": len(self.blocks) - 1,
                        "delta": {"type": "text_delta", "text": text}})
        for tc in delta.get("tool_calls") or []:
            if not isinstance(tc, dict):
                continue
            fn = tc.get("function") if isinstance(tc.get("function"), dict) else {}
            if self.open is None or self.open["type"] != "tool_use" or self.open["index"] != tc.get("index", 0):
                out += self._switch({"type": "tool_use", "index": tc.get("index", 0)},
                                    {"type": "tool_use", "id": str(tc.get("id") or _new_id("toolu_")),
                                     "name": str(fn.get("name") or ""), "input": {}})
            arguments = fn.get("arguments")
            if isinstance(arguments, str) and arguments:
                out.append({"type": "content_block_delta", "index": len(self.blocks) - 1,
                            "delta": {"type": "input_json_delta", "partial_json": arguments}})
        return out

    def end(self) -> list[dict]:
        """The events that close the stream once the chunks are over."""
        out = [] if self.open is None else [{"type": "content_block_stop", "index": len(self.blocks) - 1}]
        # an upstream that streams no usage: the client still gets the field, the gateway estimates the tokens
        usage = self.usage or {"output_tokens": 0}
        called = any(b["type"] == "tool_use" for b in self.blocks)
        return out + [{"type": "message_delta", "delta": {"stop_reason": stop_reason(self.finish, called),
                                                          "stop_sequence": None}, "usage": usage},
                      {"type": "message_stop"}]
