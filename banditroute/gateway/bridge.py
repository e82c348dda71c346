"""A responses request served by a provider that only speaks chat completions: the request translated
into a chat-completions body, the answer (or its stream of chunks) translated back into a response (or
its stream of named events).

What translates (OpenAI's two references: https://platform.openai.com/docs/api-reference/responses and
.../chat): ``instructions`` (a system message first), message items (``input_text`` and ``output_text``
parts as text, ``input_image`` as ``image_url``, the ``developer`` role as ``system``), function calls
and their outputs (an assistant message's ``tool_calls``, ``tool`` messages), function tools and
``tool_choice``, ``text.format`` (``response_format``), ``max_output_tokens`` (``max_tokens``),
``temperature``, ``top_p``, ``parallel_tool_calls``, ``user`` and ``reasoning.effort``
(``reasoning_effort``); reasoning items of earlier turns are dropped. What does not (:func:`untranslatable`):
built-in tools (web search, file search, ...), file inputs, other item types, and a conversation the
provider stores (``previous_response_id``, ``conversation``): such a request needs a model whose
provider serves the responses API itself, unless the gateway made and kept the response it continues
(:mod:`.conversations`; the request then carries the conversation as input).

The answer: the first choice's text as one ``message`` item, its tool calls as ``function_call`` items,
``finish_reason: length`` as an ``incomplete`` response, the usage renamed. A stream becomes the
responses API's sequence of events (:class:`StreamBridge`): ``response.created``, ``response.in_progress``,
for each output item ``response.output_item.added``, its deltas (``response.output_text.delta`` after a
``response.content_part.added``; ``response.function_call_arguments.delta``) and their ``.done``
events, ``response.output_item.done``, then ``response.completed`` with the whole response and its usage.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from banditroute.gateway.requests import ResponsesRequest

PASSED = ("temperature", "top_p", "parallel_tool_calls", "user")  # the same name and meaning in both APIs
KNOWN_ITEMS = {"message", "function_call", "function_call_output", "reasoning"}
FUNCTION_KEYS = ("name", "description", "parameters", "strict")


def token_count(value) -> int | None:
    """``value`` if it is a token count (a non-negative integer), else None: what a provider's usage says."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class Untranslatable(ValueError):
    """The request uses something chat completions cannot express."""


def untranslatable(req: ResponsesRequest) -> str | None:
    """Why ``req`` cannot be served through chat completions (None: it can)."""
    extra = req.model_extra or {}
    if req.previous_response_id is not None or extra.get("conversation") is not None:
        return "continues a conversation its provider stores (previous_response_id or conversation)"
    for tool in req.tools or []:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            return f"uses the built-in tool {kind!r}"
    if not isinstance(req.input, str):
        for item in req.input:
            kind = item.get("type", "message")
            if not isinstance(kind, str) or kind not in KNOWN_ITEMS:
                return f"has an input item of type {kind!r}"
            content = item.get("content")
            if kind == "message" and isinstance(content, list):
                for part in content:
                    if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "input_image",
                                                                             "refusal"):
                        return f"has a content part of type {part.get('type') if isinstance(part, dict) else part!r}"
    return None


def _parts(content: list) -> list[dict] | str:
    """Message parts in chat completions' form (text and image parts)."""
    out = []
    for part in content:
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            out.append({"type": "text", "text": part.get("text", "")})
        elif kind == "refusal":
            out.append({"type": "text", "text": part.get("refusal", "")})
        else:  # input_image: a URL (or data URL), or a file id the provider holds
            image = {"url": part.get("image_url") or part.get("file_id")}
            if part.get("detail") is not None:
                image["detail"] = part["detail"]
            out.append({"type": "image_url", "image_url": image})
    return out


def chat_body(req: ResponsesRequest, upstream_name: str, include_usage: bool) -> dict:
    """The chat-completions body that asks what ``req`` asks (raises :class:`Untranslatable`)."""
    why = untranslatable(req)
    if why is not None:
        raise Untranslatable(why)
    messages: list[dict[str, Any]] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    items = [{"role": "user", "content": req.input}] if isinstance(req.input, str) else req.input
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role", "user")
            content = item.get("content")
            if isinstance(content, list):
                content = _parts(content)
                if role == "assistant":  # an assistant message's content is text in chat completions
                    content = "".join(p["text"] for p in content if p["type"] == "text" and isinstance(p["text"], str))
            messages.append({"role": "system" if role == "developer" else role, "content": content})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "")}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)  # parallel calls: one assistant message
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str) else orjson.dumps(output).decode()})
    body: dict[str, Any] = {"model": upstream_name, "messages": messages}
    extra = req.model_extra or {}
    for key in PASSED:
        value = req.user if key == "user" else extra.get(key)
        if value is not None:
            body[key] = value
    if req.tools:
        body["tools"] = [{"type": "function", "function": {k: t[k] for k in FUNCTION_KEYS if k in t}} for t in req.tools]
    choice = extra.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        body["tool_choice"] = choice
    fmt = (req.text or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {
            k: fmt[k] for k in ("name", "description", "schema", "strict") if k in fmt}}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        body["response_format"] = {"type": "json_object"}
    if req.max_output_tokens is not None:
        body["max_tokens"] = req.max_output_tokens
    reasoning = extra.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        body["reasoning_effort"] = reasoning["effort"]
    if req.stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def _usage(usage: dict | None) -> dict | None:
    if not isinstance(usage, dict):
        return None
    # counts only: what is not a count (a provider's bug) says nothing
    tokens_in, tokens_out = token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens"))
    prompt = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
    completion = usage.get("completion_tokens_details") if isinstance(usage.get("completion_tokens_details"), dict) else {}
    cached, written = token_count(prompt.get("cached_tokens")) or 0, token_count(prompt.get("cache_write_tokens")) or 0
    reasoning = token_count(completion.get("reasoning_tokens")) or 0
    total = token_count(usage.get("total_tokens"))
    return {"input_tokens": tokens_in, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
            "output_tokens": tokens_out, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": (tokens_in or 0) + (tokens_out or 0) if total is None else total}


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _response(req: ResponsesRequest, rid: str, created: int, status: str, output: list, usage: dict | None,
              model: str) -> dict:
    extra = req.model_extra or {}
    return {"id": rid, "object": "response", "created_at": created, "status": status, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": req.instructions, "max_output_tokens": req.max_output_tokens, "model": model,
            "output": output, "parallel_tool_calls": extra.get("parallel_tool_calls", True),
            "previous_response_id": req.continues, "store": req.kept, "temperature": extra.get("temperature"),
            "text": req.text or {"format": {"type": "text"}}, "tool_choice": extra.get("tool_choice", "auto"),
            "tools": req.tools or [], "top_p": extra.get("top_p"), "usage": usage, "user": req.user, "metadata": {}}


def _message(item_id: str, text: str, refusal: str | None, status: str) -> dict:
    content = [{"type": "output_text", "text": text, "annotations": []}] if text or refusal is None else []
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _function_call(call_id: str, name: str, arguments: str, status: str) -> dict:
    return {"type": "function_call", "id": "fc_" + call_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def as_input(output: list) -> list[dict]:
    """A response's output items as input items of a later turn: the assistant's messages and function
    calls without their ids and statuses (which name them in a provider's storage, not in a request)."""
    items = []
    for item in output:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            items.append({"type": "message", "role": "assistant", "content": item.get("content") or []})
        elif item.get("type") == "function_call":
            items.append({"type": "function_call", **{k: item[k] for k in ("call_id", "name", "arguments") if k in item}})
    return items


def listed_items(items: list, response_id: str) -> list[dict]:
    """A turn's input items as the responses API lists them (``GET /v1/responses/{id}/input_items``):
    each with its ``type`` and an ``id`` (``<response id>_item<i>``, its place in the turn, where the
    request gave none), a message's text as a list of text parts."""
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        item = dict(item)
        if "type" not in item and "role" in item:
            item["type"] = "message"
        if item.get("type") == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": part, "text": item["content"]}]
        item.setdefault("id", f"{response_id}_item{i}")
        out.append(item)
    return out


def response_from_chat(answer: dict, req: ResponsesRequest) -> dict:
    """The response that a non-streamed chat completion ``answer`` amounts to."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    output = []
    text, refusal = message.get("content"), message.get("refusal")
    if isinstance(text, str) and text or isinstance(refusal, str) and refusal:
        output.append(_message(_new_id("msg_"), text if isinstance(text, str) else "", refusal or None, "completed"))
    for call in message.get("tool_calls") or []:
        if isinstance(call, dict) and isinstance(call.get("function"), dict):
            fn = call["function"]
            output.append(_function_call(str(call.get("id") or _new_id("call_")), str(fn.get("name", "")),
                                         str(fn.get("arguments", "")), "completed"))
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    created = answer.get("created") if isinstance(answer.get("created"), int) else int(time.time())
    return _response(req, _new_id("resp_"), created, status, output, _usage(answer.get("usage")),
                     str(answer.get("model", "")))


def read_chunk(chunk: dict) -> tuple[dict | None, dict | None, str | None]:
    """A chat-completion chunk's usage (None: none), its first choice's delta (None: no choice; ``{}``: an
    empty one) and finish reason (None: not yet)."""
    usage = chunk["usage"] if isinstance(chunk.get("usage"), dict) and chunk["usage"] else None
    choices = chunk.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    if choice is None:
        return usage, None, None
    delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
    return usage, delta, choice.get("finish_reason")


class StreamBridge:
    """Chat-completion chunks in, the responses API's events out (see the module's docstring).

    Output items are numbered in the order they first appear: the message when the first text arrives,
    each tool call when its first chunk arrives (chat completions number them by ``index``).
    """

    def __init__(self, req: ResponsesRequest):
        self.req = req
        self.rid, self.created = _new_id("resp_"), int(time.time())
        self.seq = 0
        self.items: list[dict] = []  # output items in order: {"kind", "id", "text" | "call_id", "name", "arguments"}
        self.message: dict | None = None
        self.calls: dict[int, dict] = {}
        self.usage: dict | None = None
        self.finish: str | None = None
        self.model = ""

    def _event(self, kind: str, **fields) -> dict:
        event = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return event

    def start(self) -> list[dict]:
        """The events that open the stream (before the first chunk's)."""
        shell = _response(self.req, self.rid, self.created, "in_progress", [], None, self.model)
        return [self._event("response.created", response=shell),
                self._event("response.in_progress", response=dict(shell))]

    def feed(self, chunk: dict) -> list[dict]:
        """The events one chat-completion chunk gives."""
        out = []
        usage, delta, finish = read_chunk(chunk)
        self.usage = _usage(usage) if usage is not None else self.usage
        self.finish = finish or self.finish
        if delta is None:
            return out
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self.message is None:
                self.message = {"kind": "message", "id": _new_id("msg_"), "text": "", "index": len(self.items)}
                self.items.append(self.message)
                out.append(self._event("response.output_item.added", output_index=self.message["index"],
                                       item=_message(self.message["id"], "", None, "in_progress") | {"content": []}))
                out.append(self._event("response.content_part.added", item_id=self.message["id"],
                                       output_index=self.message["index"], content_index=0,
                                       part={"type": "output_text", "text": "", "annotations": []}))
            self.message["text"] += text
            out.append(self._event("response.output_text.delta", item_id=self.message["id"],
                                   output_index=self.message["index"], content_index=0, delta=text, logprobs=[]))
        for tc in delta.get("tool_calls") or []:
            if not isinstance(tc, dict):
                continue
            fn = tc.get("function") if isinstance(tc.get("function"), dict) else {}
            call = self.calls.get(tc.get("index", 0))
            if call is None:
                call_id = str(tc.get("id") or _new_id("call_"))
                call = {"kind": "function_call", "call_id": call_id, "id": "fc_" + call_id,
                        "name": str(fn.get("name") or ""), "arguments": "", "index": len(self.items)}
                self.calls[tc.get("index", 0)] = call
                self.items.append(call)
                out.append(self._event("response.output_item.added", output_index=call["index"],
                                       item=_function_call(call_id, call["name"], "", "in_progress")))
            arguments = fn.get("arguments")
            if isinstance(arguments, str) and arguments:
                call["arguments"] += arguments
                out.append(self._event("response.function_call_arguments.delta", item_id=call["id"],
                                       output_index=call["index"], delta=arguments))
        return out

    def end(self) -> list[dict]:
        """The events that close the stream once the chunks are over, the last ``response.completed``
        (``response.incomplete`` when the answer was cut at ``max_output_tokens``)."""
        out, output = [], []
        for item in self.items:
            if item["kind"] == "message":
                done = _message(item["id"], item["text"], None, "completed")
                out.append(self._event("response.output_text.done", item_id=item["id"], output_index=item["index"],
                                       content_index=0, text=item["text"], logprobs=[]))
                out.append(self._event("response.content_part.done", item_id=item["id"], output_index=item["index"],
                                       content_index=0, part=done["content"][0]))
            else:
                done = _function_call(item["call_id"], item["name"], item["arguments"], "completed")
                out.append(self._event("response.function_call_arguments.done", item_id=item["id"],
                                       output_index=item["index"], name=item["name"], arguments=item["arguments"]))
            out.append(self._event("response.output_item.done", output_index=item["index"], item=done))
            output.append(done)
        status = "incomplete" if self.finish == "length" else "completed"
        final = _response(self.req, self.rid, self.created, status, output, self.usage, self.model)
        out.append(self._event(f"response.{status}", response=final))
        return out
