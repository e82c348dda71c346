"""Route strategies beyond one call: cascades (check a cheap answer, escalate when it fails) and
ensembles (several models answer, one answer is picked).

**Cascade** (``[[cascades]]``; Chen, Zaharia & Zou, 2023, "FrugalGPT", sec. 3): the router decides the
model to start at, among the request's eligible models, exactly as for a routed call (same policy,
propensity and log). Its answer is checked (:func:`check_answer`: JSON, JSON keys, a regular
expression, a minimum length, the mean token log-probability, or the judge's rating); when the check
fails, the next model of ``escalate_to`` answers (a start that is itself in ``escalate_to`` goes on from
there), up to the last, whose answer is final. A step whose provider fails counts as a failed check; a
later step whose provider's circuit is open or that is at its rate limit is skipped.
Every step is a ``calls`` row of kind ``cascade`` (``attempt`` is its place in the chain), with its
cost and latency. The decision learns from the total: one feedback with the cost of every step
(judge checks included) and the cascade's latency, and the quality signals the client reports
about the final answer; so the router learns, per prompt, which start makes the cascade pay off.

**Ensemble** (``[[ensembles]]``): each member model answers in parallel; ``pick = "majority"`` returns
the most common answer (after normalising case, spaces and final punctuation: meant for short answers
such as numbers or labels; ties go to the earlier member), ``pick = "judge"`` asks the judge model to
pick the best (the majority if it gives no verdict). Each member's call is a decision of its own,
logged with policy ``ensemble:NAME`` and propensity 1 (the ensemble called it for sure), with its
usage as feedback and a quality signal: 1 for the picked answer (or one that agrees with the
majority) and 0 for the others, from the ``judge`` (judge pick) or ``system`` (majority) source.

Both answer a streamed request with the final answer as one content event, since no step can be
streamed before it has passed its check.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import time

import orjson
from aiohttp import web

from banditroute.config import CascadeConfig, CheckConfig, EnsembleConfig
from banditroute.core.reward import Feedback, Signal
from banditroute.core.router import GatewayRoute
from banditroute.core.types import Decision
from banditroute.errors import RoutingError, UpstreamFailed
from banditroute.gateway.judge import ask_judge, grading_messages, picking_messages
from banditroute.gateway.requests import ChatRequest

FENCED = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def _json(text: str):
    """The answer as JSON (a fenced block's content counts), or None."""
    text = text.strip()
    fenced = FENCED.match(text)
    try:
        return json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return None


def mean_logprob(body: dict) -> float | None:
    """The mean token log-probability of the first choice (OpenAI's ``logprobs.content``), or None."""
    try:
        tokens = body["choices"][0]["logprobs"]["content"]
        values = [float(t["logprob"]) for t in tokens]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return sum(values) / len(values) if values else None


def check_answer(check: CheckConfig, text: str, body: dict) -> tuple[bool, str | None]:
    """Whether ``text`` (of the answer ``body``) passes the checks that need no model call, and why not."""
    if check.is_json or check.json_keys:
        value = _json(text)
        if not isinstance(value, dict | list):
            return False, "not JSON"
        missing = [k for k in check.json_keys or () if not isinstance(value, dict) or k not in value]
        if missing:
            return False, f"JSON without {', '.join(missing)}"
    if check.regex is not None and re.search(check.regex, text) is None:
        return False, "regex not found"
    if check.min_length is not None and len(text.strip()) < check.min_length:
        return False, f"shorter than {check.min_length} characters"
    if check.min_logprob is not None:
        lp = mean_logprob(body)
        if lp is not None and lp < check.min_logprob:
            return False, f"mean logprob {lp:.3f} < {check.min_logprob}"
    return True, None


def normalise(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".!")


async def as_stream(request: web.Request, body: dict, headers: dict, usage: bool) -> web.StreamResponse:
    """A complete answer sent as an OpenAI stream: one event with the content, one with the finish reason
    (and one with the usage when asked), then ``[DONE]``."""
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    base = {"id": body.get("id", "chatcmpl-banditroute"), "object": "chat.completion.chunk",
            "created": body.get("created", int(time.time())), "model": body.get("model")}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": message.get("content")},
                                    "finish_reason": None}]},
              {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason", "stop")}]}]
    if usage and body.get("usage"):
        events.append({**base, "choices": [], "usage": body["usage"]})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers})
    await response.prepare(request)
    await response.write(b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events))
    await response.write_eof(b"data: [DONE]\n\n")
    return response


class Strategies:
    """The gateway's cascades and ensembles (see the module's docstring)."""

    def __init__(self, gateway, cascades: list[CascadeConfig], ensembles: list[EnsembleConfig], judge: str | None):
        self.gw = gateway
        self.cascades = {c.name: c for c in cascades}
        self.ensembles = {e.name: e for e in ensembles}
        self.judge = judge

    async def _call(self, model: str, decision_id: str, kind: str, attempt: int, req: ChatRequest,
                    logprobs: bool = False, size: float = 0.0):
        """One non-streamed upstream call to ``model``, logged, moving to its next provider (deployment)
        after a failure that another may not share: ``(body, text, calls row)``, or ``(None, error, row)``
        once none is left."""

        def body_for(p) -> dict:
            body = req.upstream_body(p.upstream_name, False)
            body["stream"] = False
            body.pop("stream_options", None)
            if logprobs:
                body["logprobs"] = True
            return body

        gw = self.gw
        reply, call, errors = await gw.complete_any(model, decision_id, kind, attempt, body_for, size)
        if reply is None:
            return None, "; ".join(errors), call
        usage = reply.body.get("usage")
        tokens_in, tokens_out, cached = ChatRequest.usage_tokens(usage)
        text = ChatRequest.answer_text(reply.body)
        row = gw.end_call(call, "ok", 200, None, reply.ttft_ms, tokens_in, tokens_out,
                          cached_input_tokens=cached)
        if tokens_in is not None and tokens_out is not None:
            gw.latency.observe(model, tokens_in, tokens_out, row["latency_ms"], reply.ttft_ms)
        reply.body["model"] = model
        return reply.body, text, row

    def _learn(self, decision_id: str, fb: Feedback) -> None:
        if not self.gw.service.feedback_nowait(decision_id, fb):
            self.gw.background(self.gw._feedback(decision_id, fb))

    async def _answer(self, request: web.Request, req: ChatRequest, body: dict, headers: dict) -> web.StreamResponse:
        if req.stream:
            return await as_stream(request, body, headers, req.wants_usage())
        response = web.Response(body=orjson.dumps(body), content_type="application/json")
        response.headers.update(headers)
        return response

    # -- cascades ------------------------------------------------------------------------------------
    async def cascade(self, request: web.Request, req: ChatRequest, d: Decision, cfg: CascadeConfig,
                      tokens: float) -> web.StreamResponse:
        """Serve ``req`` (``tokens``: its estimated prompt tokens) through cascade ``cfg`` from the decision
        ``d`` (its start)."""
        if d.model in cfg.escalate_to:
            chain = cfg.escalate_to[cfg.escalate_to.index(d.model):]
        else:
            chain = [d.model, *cfg.escalate_to]
        t0, total, steps, final = time.perf_counter(), 0.0, [], None
        question = req.routing_text()
        for attempt, model in enumerate(chain, start=1):
            size = self.gw.size(req, tokens, model)
            skip = None if attempt == 1 else self.gw.unavailable(model, size)  # the start was eligible
            if skip is not None:
                self.gw.skip_call(model, d.decision_id, "cascade", attempt, None, False, skip)
                steps.append({"model": model, "outcome": "skipped", "message": skip})
                continue
            body, text, row = await self._call(model, d.decision_id, "cascade", attempt, req,
                                               logprobs=cfg.check.min_logprob is not None, size=size)
            if body is None:
                steps.append({"model": model, "outcome": row["outcome"], "message": text})
                continue
            total += row["cost_usd"] or 0.0
            final = (body, model)
            passed, why = check_answer(cfg.check, text, body)
            if passed and cfg.check.judge_min is not None and attempt < len(chain):
                rating, cost = await ask_judge(self.gw, self.judge, d.decision_id, grading_messages(question, text))
                total += cost
                if rating is not None and (rating - 1) / 9 < cfg.check.judge_min:
                    passed, why = False, f"judge rating {rating}/10"
            steps.append({"model": model, "outcome": "passed" if passed else "failed", "message": why})
            if passed:
                break
        latency = (time.perf_counter() - t0) * 1000.0
        if final is None:
            self.gw.service.router.refund(d)
            raise UpstreamFailed(f"every step of cascade {cfg.name!r} failed: "
                                 + "; ".join(f"{s['model']}: {s['message']}" for s in steps), steps)
        self._learn(d.decision_id, Feedback(cost_usd=total, latency_ms=latency,
                                            idempotency_key="banditroute-cascade"))
        body, model = final
        headers = {**self.gw.headers(d, 1), "x-banditroute-model": model,
                   "x-banditroute-cascade": ",".join(s["model"] for s in steps if s["outcome"] != "skipped")}
        return await self._answer(request, req, body, headers)

    # -- ensembles -----------------------------------------------------------------------------------
    async def ensemble(self, request: web.Request, req: ChatRequest, route: GatewayRoute, eligible: list[str],
                       cfg: EnsembleConfig, tokens: float) -> web.StreamResponse:
        """Serve ``req`` (``tokens``: its estimated prompt tokens) through ensemble ``cfg``: its members among
        ``eligible``, each a decision of its own."""
        members = [m for m in cfg.models if m in eligible]
        if not members:
            raise RoutingError(f"no member of ensemble {cfg.name!r} can serve this request")
        svc = self.gw.service
        decisions = await asyncio.gather(*(svc.route(route.model_copy(update={"models": [m], "label": f"ensemble:{cfg.name}"}))
                                           for m in members))
        for d in decisions:
            self.gw.metrics.decision(d.model, d.rule)
        results = await asyncio.gather(*(self._call(d.model, d.decision_id, "ensemble", 1, req,
                                                    size=self.gw.size(req, tokens, d.model)) for d in decisions))
        answered = [(d, body, text, row) for d, (body, text, row) in zip(decisions, results) if body is not None]
        for d, (body, _, _) in zip(decisions, results):
            if body is None:
                svc.router.refund(d)
        if not answered:
            raise UpstreamFailed(f"every member of ensemble {cfg.name!r} failed",
                                 [{"model": d.model, "message": text} for d, (_, text, _) in zip(decisions, results)])
        counts = collections.Counter(normalise(text) for _, _, text, _ in answered)
        majority = max(range(len(answered)), key=lambda i: (counts[normalise(answered[i][2])], -i))
        picked, source = majority, "system"
        if cfg.pick == "judge" and len(answered) > 1:
            verdict, _ = await ask_judge(self.gw, self.judge, answered[0][0].decision_id,
                                         picking_messages(req.routing_text(), [a[2] for a in answered]))
            if verdict is not None and 1 <= verdict <= len(answered):
                picked, source = verdict - 1, "judge"
        limit = svc.config.feedback.max_tokens
        for i, (d, _, text, row) in enumerate(answered):
            good = i == picked if source == "judge" else normalise(text) == normalise(answered[picked][2])
            self._learn(d.decision_id, Feedback(
                input_tokens=None if row["input_tokens"] is None else min(row["input_tokens"], limit),
                output_tokens=None if row["output_tokens"] is None else min(row["output_tokens"], limit),
                cached_input_tokens=None if row["cached_input_tokens"] is None else min(row["cached_input_tokens"], limit),
                latency_ms=row["latency_ms"],
                signals=[Signal(source=source, kind="quality", value=1.0 if good else 0.0)],
                idempotency_key="banditroute-ensemble"))
        d, body, _, _ = answered[picked]
        headers = {**self.gw.headers(d, 1), "x-banditroute-ensemble": ",".join(members)}
        return await self._answer(request, req, body, headers)
