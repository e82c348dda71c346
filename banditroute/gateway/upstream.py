"""Calling OpenAI-compatible upstreams: one pooled keep-alive session per API root, and every way a
call can fail sorted into what the gateway does next.

A failure before the first byte of the answer is an :class:`UpstreamFailure` whose ``retry`` says
whether another model may take the call (connect errors, timeouts, 429, 5xx, and 401/403/404, which
the client cannot fix) or whether it is the request's own fault and goes back to the client as is
(other 4xx: the upstream's status and body). Two 4xx are neither: a prompt longer than the model's
context window, and a ``max_tokens`` above what the model writes in one answer (:func:`beyond_model_limit`), say
nothing about the provider's health, but a larger model may serve the request, so it falls back to
another model without counting against the provider.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import orjson

from banditroute.config import GatewayConfig

if TYPE_CHECKING:
    from banditroute.gateway.providers import Provider

PROVIDER_STATUSES = {401, 403, 404, 408, 409, 429}  # 4xx that say nothing about the request itself
LIMIT_STATUSES = {400, 413, 422}  # how providers refuse a request too large for the model
# How OpenAI-compatible servers word that refusal: OpenAI's and Groq's code, OpenAI's and vLLM's
# "maximum context length is N tokens", Anthropic's "prompt is too long: M tokens > N maximum", Gemini's
# "input token count (M) exceeds the maximum number of tokens allowed (N)", Mistral's "too large for
# model with N maximum context length", text-generation-inference's "must be <= N".
_CONTEXT = re.compile(r"context_length_exceeded|context length|context window|prompt is too long|input is too long"
                      r"|exceeds the maximum number of tokens|max_new_tokens. must be <=", re.IGNORECASE)
_LIMIT = re.compile(r"maximum context length is (\d+)|> (\d+) maximum|maximum number of tokens allowed \((\d+)\)"
                    r"|with (\d+) maximum context length|must be <= (\d+)", re.IGNORECASE)
# ... and a max_tokens above the model's output limit: OpenAI's "max_tokens is too large: M. This model
# supports at most N completion tokens", Anthropic's "max_tokens: M > N, which is the maximum allowed number
# of output tokens"
_OUTPUT = re.compile(r"max_(?:completion_)?tokens is too large|maximum allowed number of output tokens", re.IGNORECASE)
_OUTPUT_LIMIT = re.compile(r"supports at most (\d+) completion tokens|> (\d+), which is the maximum", re.IGNORECASE)
# the outcome of each refusal, and the model setting that limit is configured by
MODEL_LIMITS = {"context_exceeded": "context_window", "output_limit_exceeded": "max_output_tokens"}
# how an error message ends when the refusal stated a limit (read back from calls.error, see stated_limit)
_STATED = re.compile(r"\(stated limit: (\d+) tokens\)$")
ERROR_BYTES = 300  # of an upstream's error body quoted in a failure's message (and the calls log)
CHAT = "/chat/completions"  # below the API root
# a responses stream's last event: the response completed, was cut short (max_output_tokens) or failed
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


@dataclass
class UpstreamFailure(Exception):
    """A call that produced no answer: ``outcome`` (timeout, connect_error, rate_limited,
    upstream_error, rejected, context_exceeded, output_limit_exceeded, stream_error, too_large), the
    upstream's status and body when it answered, the seconds its ``Retry-After`` asked for, and for the
    two refusals of a request too large for the model the limit in tokens when the refusal states it."""

    outcome: str
    message: str
    status: int | None = None
    body: bytes | None = None
    retry_after: float | None = None
    limit: int | None = None

    @property
    def retry(self) -> bool:
        """Another model may take the call (the provider failed, or the request is beyond this model's limits)."""
        return self.outcome != "rejected"

    @property
    def provider_fault(self) -> bool:
        """The provider failed, not the request: its health hears of it, and another provider of the same
        model may take the call."""
        return self.outcome != "rejected" and self.outcome not in MODEL_LIMITS

    def __str__(self) -> str:
        return self.message


def beyond_model_limit(status: int, body: bytes) -> tuple[str | None, int | None]:
    """Whether an error answer refuses the request as too large for the model: ``context_exceeded`` (the
    prompt and answer exceed its context window) or ``output_limit_exceeded`` (``max_tokens`` exceeds what
    it writes in one answer), with the limit in tokens when the answer states it; ``(None, None)`` else."""
    if status not in LIMIT_STATUSES:
        return None, None
    text = body[:4096].decode(errors="replace")
    for outcome, kind, limit in (("output_limit_exceeded", _OUTPUT, _OUTPUT_LIMIT), ("context_exceeded", _CONTEXT, _LIMIT)):
        if kind.search(text):
            m = limit.search(text)
            return outcome, None if m is None else int(next(g for g in m.groups() if g is not None))
    return None, None


def error_message(name: str, status: int, body: bytes, limit: int | None) -> str:
    """A failure's message: the start of the upstream's error body, and the limit a refusal stated (found
    in up to 4,096 bytes of it, :func:`beyond_model_limit`), so that the logged message keeps it."""
    text = f"{name}: upstream answered {status}: {body[:ERROR_BYTES].decode(errors='replace')}"
    return text if limit is None else f"{text} (stated limit: {limit} tokens)"


def stated_limit(message: str) -> int | None:
    """The limit an :func:`error_message` carries (None: none stated)."""
    m = _STATED.search(message)
    return None if m is None else int(m[1])


def _retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header (delta-seconds only; an HTTP date is ignored)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


@dataclass
class Answer:
    """A non-streamed answer: the upstream's JSON body and when its first byte came."""

    body: dict
    ttft_ms: float


class Upstreams:
    """One ``aiohttp.ClientSession`` per API root (HTTP keep-alive, a bounded connection pool), created on
    first use on the running loop and closed by :meth:`close`."""

    def __init__(self, config: GatewayConfig, environ=os.environ):
        self.config = config
        self.environ = environ
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def session(self, base_url: str) -> aiohttp.ClientSession:
        """The pooled session of the API root ``base_url``."""
        s = self._sessions.get(base_url)
        if s is None or s.closed:
            connector = aiohttp.TCPConnector(limit=self.config.connections_per_upstream, keepalive_timeout=60)
            s = aiohttp.ClientSession(connector=connector, json_serialize=lambda o: orjson.dumps(o).decode(),
                                      auto_decompress=True)
            self._sessions[base_url] = s
        return s

    async def close(self) -> None:
        for s in self._sessions.values():
            await s.close()
        self._sessions.clear()

    def key(self, env_name: str | None) -> str | None:
        """The key held in the environment variable ``env_name`` (None: no variable named, or it is empty)."""
        return (self.environ.get(env_name) or None) if env_name else None

    def _headers(self, spec: Provider) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = self.key(spec.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def timeout(self, spec: Provider) -> float:
        return spec.timeout_s or self.config.timeout_s

    async def _open(self, spec: Provider, path: str, body: dict | None, timeout: aiohttp.ClientTimeout,
                    method: str = "POST") -> aiohttp.ClientResponse:
        """Send the request to ``path`` below the model's API root (``body`` None: without one); the
        response once its status is in, or an :class:`UpstreamFailure`."""
        url = spec.base_url.rstrip("/") + path
        try:
            resp = await self.session(spec.base_url).request(
                method, url, data=None if body is None else orjson.dumps(body), headers=self._headers(spec),
                timeout=timeout)
        except TimeoutError:
            raise UpstreamFailure("timeout", f"{spec.name}: no answer within {self.timeout(spec):g} s") from None
        except aiohttp.ClientError as err:
            raise UpstreamFailure("connect_error", f"{spec.name}: {type(err).__name__}: {err}") from None
        if resp.status < 400:
            return resp
        try:
            data = await asyncio.wait_for(resp.content.read(64 << 10), self.timeout(spec))
        except (TimeoutError, aiohttp.ClientError):
            data = b""
        finally:
            resp.release()
        retry_after = _retry_after(resp.headers.get("Retry-After"))
        refusal, limit = beyond_model_limit(resp.status, data)
        outcome = ("rate_limited" if resp.status == 429 else "upstream_error" if resp.status >= 500 or
                   resp.status in PROVIDER_STATUSES else refusal or "rejected")
        raise UpstreamFailure(outcome, error_message(spec.name, resp.status, data, limit),
                              resp.status, data, retry_after, limit)

    async def complete(self, spec: Provider, body: dict | None, path: str = CHAT, method: str = "POST") -> Answer:
        """A non-streamed call: the upstream's JSON answer (an answer whose ``error`` is set is a failure:
        chat completions' error body, or a response that failed)."""
        t0 = time.perf_counter()
        total = self.timeout(spec)
        resp = await self._open(spec, path, body, aiohttp.ClientTimeout(total=total, connect=self.config.connect_timeout_s),
                                method)
        try:
            limit = self.config.max_response_bytes
            data = await resp.content.read(limit + 1)
            ttft = (time.perf_counter() - t0) * 1000.0
            if len(data) > limit:
                raise UpstreamFailure("too_large", f"{spec.name}: answer larger than {limit} bytes "
                                      "(gateway.max_response_bytes)", resp.status)
        except TimeoutError:
            raise UpstreamFailure("timeout", f"{spec.name}: answer not complete within {total:g} s") from None
        except aiohttp.ClientError as err:
            raise UpstreamFailure("connect_error", f"{spec.name}: {type(err).__name__}: {err}") from None
        finally:
            resp.release()
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamFailure("upstream_error", f"{spec.name}: the answer is not JSON", resp.status) from None
        if not isinstance(answer, dict):
            raise UpstreamFailure("upstream_error", f"{spec.name}: the answer is not a JSON object", resp.status)
        if answer.get("error") and "choices" not in answer:
            raise UpstreamFailure("upstream_error", f"{spec.name}: the answer is an error: {str(answer)[:ERROR_BYTES]}",
                                  resp.status)
        return Answer(answer, ttft)

    async def stream(self, spec: Provider, body: dict, path: str = CHAT) -> AsyncIterator[list[dict]]:
        """A streamed call: its events (the JSON of each ``data:`` line) until the last (chat completions'
        ``[DONE]``, or a responses stream's terminal event: :data:`TERMINAL`), in batches of the events
        that arrived together (one write to the client per batch, not per event). An error event
        (chat completions' ``{"error": ...}``, responses' ``{"type": "error"}``) is a failure.

        Failures raise :class:`UpstreamFailure` (before the first batch the gateway can still take the
        call elsewhere; after it, it ends the client's stream with an error event). Each read must
        return within the model's timeout.
        """
        timeout = self.timeout(spec)
        resp = await self._open(spec, path, body, aiohttp.ClientTimeout(total=None, connect=self.config.connect_timeout_s,
                                                                        sock_read=timeout))
        received, limit, done, tail = 0, self.config.max_response_bytes, False, b""
        try:
            while True:
                try:
                    chunk = await resp.content.readany()
                except TimeoutError:
                    raise UpstreamFailure("timeout", f"{spec.name}: no event within {timeout:g} s") from None
                except aiohttp.ClientError as err:
                    raise UpstreamFailure("stream_error", f"{spec.name}: {type(err).__name__}: {err}") from None
                if not chunk:
                    raise UpstreamFailure("stream_error", f"{spec.name}: the stream ended before its last event")
                received += len(chunk)
                if received > limit:
                    raise UpstreamFailure("too_large", f"{spec.name}: stream larger than {limit} bytes "
                                          "(gateway.max_response_bytes)")
                *lines, tail = (tail + chunk).split(b"\n")
                batch, failure = [], None
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue  # blank separators, comments, event names
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        break
                    try:
                        event = orjson.loads(payload)
                    except orjson.JSONDecodeError:
                        failure = UpstreamFailure("stream_error", f"{spec.name}: an event is not JSON")
                        break
                    if not isinstance(event, dict):
                        failure = UpstreamFailure("stream_error", f"{spec.name}: an event is not a JSON object")
                        break
                    if "error" in event and "choices" not in event or event.get("type") == "error":
                        failure = UpstreamFailure("stream_error", f"{spec.name}: error event: "
                                                  f"{str(event.get('error') or event.get('message'))[:ERROR_BYTES]}")
                        break
                    batch.append(event)
                    if isinstance(event.get("type"), str) and event["type"] in TERMINAL:
                        done = True
                        break
                if batch:
                    yield batch
                if failure is not None:
                    raise failure
                if done:
                    return
        finally:
            if done:
                resp.release()
            else:
                resp.close()  # an unfinished stream's connection must not go back to the pool
