"""The OpenAI-compatible gateway: route a chat-completions or responses request, call the chosen model,
fall back when its provider fails, answer in OpenAI's wire format, and report what the call cost by
itself.

One request, step by step:

1. Eligibility: the pool's callable models (those with a ``base_url`` or ``deployments``), narrowed by the request's
   ``banditroute.models``, the capabilities it needs (:meth:`ChatRequest.needs` plus
   ``banditroute.require``), its context (estimated prompt tokens plus ``max_tokens`` within
   ``context_window``, the estimate scaled to the model's own count by what its answers reported,
   ``max_tokens`` within ``max_output_tokens``; the limits stated by a provider's earlier
   refusal, :mod:`.model_limits`, ignored when they would leave nothing), ``max_latency_ms`` (:mod:`.latency`), provider health (:mod:`.health`;
   ignored when it would leave nothing) and rate limits (:mod:`.limits`). Nothing eligible: 422
   naming why; every model that could serve it at its rate limit: 429 with ``Retry-After``.
2. The router decides among them exactly as ``/route`` does (same micro-batch, policy, log).
3. The call goes upstream, to one of the model's providers (:mod:`.providers`). A failure before the
   first byte of the answer (connect error, timeout, 429, 5xx) is a provider failure: that provider's
   health state hears of it, and the call moves to the model's next provider, as the same decision;
   once the model has none left, to a fallback decision (:meth:`Router.fallback`: the first decision's probabilities renormalised over the models
   not yet tried, logged with that exact propensity, linked by ``calls.replaces``), up to
   ``gateway.max_attempts``; then a 502 listing each attempt. A provider that refuses the request as
   too large for the model (a prompt longer than its context window, which the estimate undercounted,
   or a ``max_tokens`` above what it writes in one answer) is not failing: its health is untouched and
   the call goes to a fallback decision among the models larger in that respect (or not configured);
   when every model called refused it so, the last refusal goes back as it came (a 400), as a direct
   call's would. A stream that fails after its first event ends with an error event:
   no silent switch mid-answer.
4. The answer goes back with ``model`` set to the pool name and the ``x-banditroute-*`` headers; then,
   in the background, a ``calls`` row and a feedback with the upstream's token usage and the latency
   (so the cost model learns the call's cost), and possibly a judge's score (:mod:`.judge`). A usage the
   provider did not report, or not as its API says, is the gateway's own estimate; whatever fails in that
   accounting, the call's row is written. A client that disconnects, or that takes none of a stream's
   events within the model's timeout, has its call cancelled (logged ``cancelled``, not the provider's
   failure).

A routed chat-completions request can instead go through a cascade or an ensemble
(:mod:`.strategies`), named in its ``banditroute`` options or by the first rule that matches it.

A responses request (:class:`ResponsesRequest`) goes the same way to models with the ``responses``
capability, and its stream is relayed event by event with each event's name; to any other model it
goes translated into chat completions (:mod:`.bridge`). One that continues a response
(``previous_response_id``) goes on with the whole conversation as its input, to any model, when the
gateway made and keeps that response; only to the API root of the provider that stored it otherwise
(:mod:`.stored`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from contextlib import aclosing

import orjson
from aiohttp import web

from banditroute.config import ModelSpec
from banditroute.core.reward import Feedback
from banditroute.core.router import GatewayRoute, RouteOptions
from banditroute.core.types import Decision
from banditroute.errors import NotFound, RateLimited, RoutingError, UpstreamFailed
from banditroute.gateway import messages
from banditroute.gateway.client_writes import write_within
from banditroute.gateway.judge import Judge
from banditroute.gateway.latency import SUMS_SQL, LatencyModel
from banditroute.gateway.messages import MessagesRequest
from banditroute.gateway.model_limits import RATIOS_SQL, REFUSALS_SQL, ModelLimits, TokenRatios
from banditroute.gateway.passthrough import Passthroughs
from banditroute.gateway.providers import Provider, Providers
from banditroute.gateway.requests import ROUTED, ChatRequest, GatewayOptions, ResponsesRequest, route_options
from banditroute.gateway.stored import StoredResponses
from banditroute.gateway.strategies import Strategies
from banditroute.gateway.upstream import CHAT, ERROR_BYTES, MODEL_LIMITS, Answer, UpstreamFailure, Upstreams
from banditroute.service.quotas import Admission, Quotas

log = logging.getLogger("banditroute")


class ClientStalled(Exception):
    """A streaming client took none of an event within the model's timeout."""


NO_TEXT = "[no text]"  # what the router's features see of a request without any text (images only)
GatewayRequest = ChatRequest | ResponsesRequest | MessagesRequest


def _call_row(model: str, decision_id: str, kind: str, attempt: int, replaces: str | None, stream: bool,
              deployment: str | None = None) -> dict:
    """A ``calls`` row (:data:`~banditroute.log.schema.CALL_SCHEMA`) of an attempt starting now, its outcome unset."""
    return {"decision_id": decision_id, "ts": time.time_ns() // 1000, "kind": kind, "model": model,
            "attempt": attempt, "replaces": replaces, "stream": stream, "outcome": None, "status": None,
            "error": None, "ttft_ms": None, "latency_ms": None, "input_tokens": None, "output_tokens": None,
            "cost_usd": None, "judge_rate": None, "deployment": deployment, "cached_input_tokens": None,
            "estimated_input_tokens": None}


class Gateway:
    """The gateway of one service (see the module's docstring)."""

    def __init__(self, service, metrics, environ=None, clock=time.monotonic):
        cfg = service.config
        self.service = service
        self.metrics = metrics
        self.config = cfg.gateway
        self.specs: dict[str, ModelSpec] = {m.name: m for m in cfg.models}
        self.pool = list(cfg.names)
        self.upstreams = Upstreams(cfg.gateway, os.environ if environ is None else environ)
        self.passthroughs = Passthroughs(cfg.gateway, self.upstreams)
        self.providers = Providers(self.specs, cfg.gateway, clock)
        self.limits = ModelLimits(self.specs, clock)
        self.token_ratios = TokenRatios(self.specs)
        self.stored = StoredResponses(service, self.providers, self.upstreams, self.specs, self.callable_models)
        self.latency = LatencyModel(cfg.names)
        self.judge = Judge(self, cfg.gateway.judge)
        self.strategies = Strategies(self, cfg.cascades, cfg.ensembles, cfg.gateway.judge.model)
        self.routed_models = {r.name: r for r in cfg.gateway.routed_models}
        self._tasks: set[asyncio.Task] = set()

    def load(self) -> None:
        """Learn the latency of each model, the limits its refusals stated in the last hour and how it counts
        prompt tokens, from the calls already in the log (at start)."""
        self.latency.load(self.service.store.query(SUMS_SQL).to_pylist())
        self.limits.load(self.service.store.query(REFUSALS_SQL).to_pylist())
        self.token_ratios.load(self.service.store.query(RATIOS_SQL).to_pylist())

    async def close(self) -> None:
        """Let the background work (feedback, judge calls) finish, then close the upstream sessions."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=30)
        await self.upstreams.close()

    def background(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- eligibility ---------------------------------------------------------------------------------
    def callable_models(self) -> list[str]:
        return [m for m, s in self.specs.items() if s.callable]

    def eligible(self, req: GatewayRequest, prompt_tokens: float) -> list[str]:
        """The models that may serve ``req`` (step 1 of the module's docstring); raises :class:`RoutingError`."""
        opts = req.options
        if opts.models is not None:
            unknown = [m for m in opts.models if m not in self.specs]
            if unknown:
                raise RoutingError(f"unknown models: {', '.join(unknown)}; known: {', '.join(self.specs)}")
        candidates = opts.models or list(self.specs)
        stored_by = self.pinned(req)
        pinned = None if stored_by is None else stored_by.base_url
        need = set(req.needs()) | set(opts.require)
        out_tokens = req.max_output_tokens or 0
        expected_out = req.max_output_tokens or self.service.config.policy.expected_output_tokens
        reasons: dict[str, list[str]] = {}
        healthy, unhealthy, limited, refused_before = [], [], [], []
        for m in candidates:
            spec = self.specs[m]
            own = self.own_tokens(m, prompt_tokens)
            why = None
            if not spec.callable:
                why = "no base_url (routable by /route only)"
            elif need and not need <= set(spec.capabilities):
                why = f"lacks {', '.join(sorted(need - set(spec.capabilities)))}"
                if "responses" in need - set(spec.capabilities):
                    why += f" (the request {req.native_only()})"
            elif pinned is not None and not self.providers.of(m, pinned):
                why = f"previous_response_id is stored by the provider of {stored_by.model} ({pinned})"
            elif spec.context_window is not None and own + out_tokens > spec.context_window:
                why = (f"context_window {spec.context_window} < about {own:.0f} prompt tokens"
                       + (f" + max_tokens {out_tokens}" if out_tokens else ""))
            elif spec.max_output_tokens is not None and out_tokens > spec.max_output_tokens:
                why = f"max_output_tokens {spec.max_output_tokens} < max_tokens {out_tokens}"
            elif opts.max_latency_ms is not None:
                predicted = self.latency.predict(m, prompt_tokens, expected_out)
                if predicted is not None and predicted > opts.max_latency_ms:
                    why = f"predicted latency {predicted:.0f} ms > max_latency_ms {opts.max_latency_ms:g}"
            full = None if why is not None else self.providers.full(m, own + expected_out, pinned)
            if why is not None:
                reasons.setdefault(why, []).append(m)
            elif self.limits.beyond_learned(m, own, out_tokens):
                refused_before.append(m)
            elif full is not None:
                self.providers.refused(m)
                limited.append((m, full))
            elif self.providers.healthy(m, pinned):
                healthy.append(m)
            else:
                unhealthy.append(m)
        if healthy:
            return healthy
        if unhealthy:  # every provider left is cooling down: better to try one than to refuse
            return unhealthy
        if refused_before:  # a learned limit is a hint: the provider's refusal itself is the answer to give
            return refused_before
        if limited:
            raise RateLimited("every model that could serve this request is at its rate limit: " + "; ".join(
                f"{m} {full}" for m, full in limited), retry_after=self.providers.retry_after([m for m, _ in limited]))
        raise RoutingError("no model can serve this request: " + "; ".join(
            f"{', '.join(ms)}: {why}" for why, ms in reasons.items()))

    def size(self, req: GatewayRequest, prompt_tokens: float | None = None, model: str | None = None) -> float:
        """A call's estimated tokens for the rate limits: the prompt (as ``model`` counts it, when given:
        :meth:`own_tokens`) plus ``max_tokens`` or the expected output."""
        if prompt_tokens is None:
            prompt_tokens = req.prompt_tokens(self.service.router.featurizer.input_tokens)
        if model is not None:
            prompt_tokens = self.own_tokens(model, prompt_tokens)
        return prompt_tokens + (req.max_output_tokens or self.service.config.policy.expected_output_tokens)

    def unavailable(self, model: str, size: float, base_url: str | None = None) -> str | None:
        """Why a call of ``size`` tokens cannot go to ``model`` now (every provider's circuit is open, or at
        a rate limit); None when one of its providers can take it."""
        return self.providers.unavailable(model, size, base_url)

    def own_tokens(self, model: str, prompt_tokens: float) -> float:
        """A prompt's estimated tokens as ``model`` counts them: the estimate times the ratio of the prompt
        tokens its provider reported to the gateway's estimates on its recent calls (:class:`TokenRatios`)."""
        return prompt_tokens * self.token_ratios.ratio(model)

    def no_larger(self, models: list[str], refusals: list[tuple[str, UpstreamFailure]]) -> set[str]:
        """Of ``models``, those no larger than a model that refused the request as too large for it: by
        ``context_window`` after a prompt too long, by ``max_output_tokens`` after a ``max_tokens`` too
        large, compared with the limit a refusal states, else with the refusing model's limit in force
        (configured or learned, :mod:`.model_limits`).
        A request that reached a provider and was too large for it passed the gateway's own checks, so
        its prompt was undercounted (text far from English, say) or the limit is not configured, and a
        model no larger would refuse it too."""
        out = set()
        for outcome, field in MODEL_LIMITS.items():
            limits = [f.limit or self.limits.get(m, field) for m, f in refusals if f.outcome == outcome]
            limits = [n for n in limits if n is not None]
            if limits:
                out |= {m for m in models if (n := self.limits.get(m, field)) is not None and n <= max(limits)}
        return out

    def pinned(self, req: GatewayRequest) -> Provider | None:
        """The provider whose API root a request must go to: the one that stored the response it continues."""
        if not isinstance(req, ResponsesRequest):
            return None
        return self.stored.provider(req.previous_response_id)

    def strategy(self, route: GatewayRoute, req: GatewayRequest):
        """``(cascade, ensemble)`` configurations for a routed request (at most one is set): the one its
        ``banditroute`` options name, else the one of the first rule that matches it."""
        opts = req.options
        name_c, name_e = opts.cascade, opts.ensemble
        if name_c is None and name_e is None:
            rules = self.service.router.rules
            rule = rules.match(route.prompt, route.user, route.metadata, route.api_key) if rules else None
            if rule is not None:
                name_c, name_e = rule.cascade, rule.ensemble
        if name_c is not None and name_e is not None:
            raise RoutingError("ask for a cascade or an ensemble, not both")
        if (name_c is not None or name_e is not None) and not isinstance(req, ChatRequest):
            raise RoutingError(f"{'cascade ' + repr(name_c) if name_c else 'ensemble ' + repr(name_e)}: cascades and "
                               "ensembles serve /v1/chat/completions only")
        for name, known, kind in ((name_c, self.strategies.cascades, "cascade"),
                                  (name_e, self.strategies.ensembles, "ensemble")):
            if name is not None and name not in known:
                raise RoutingError(f"no {kind} named {name!r}; configured: {', '.join(known) or 'none'}")
        return (None if name_c is None else self.strategies.cascades[name_c],
                None if name_e is None else self.strategies.ensembles[name_e])

    def preset(self, req: GatewayRequest) -> GatewayRequest:
        """``req`` routed with the options of the routed model it names (``gateway.routed_models``), its own
        options on top (see :class:`~banditroute.config.RoutedModel`); ``req`` itself for any other name."""
        preset = self.routed_models.get(req.model)
        if preset is None:
            return req
        own = req.options
        models = own.models if preset.models is None else preset.models if own.models is None else [
            m for m in own.models if m in preset.models]
        if not models and models is not None:
            raise RoutingError(f"none of the request's models ({', '.join(own.models)}) is among those of "
                               f"{req.model!r} ({', '.join(preset.models)})")
        knob = own if own.cost_weight is not None or own.cost_preference is not None else preset
        strategy = own if own.cascade is not None or own.ensemble is not None else preset

        def stricter(a, b):
            return b if a is None else a if b is None else min(a, b)

        options = GatewayOptions(
            models=models, require=list(dict.fromkeys([*preset.require, *own.require])),
            cost_weight=knob.cost_weight, cost_preference=knob.cost_preference,
            max_cost_usd=stricter(own.max_cost_usd, preset.max_cost_usd),
            max_latency_ms=stricter(own.max_latency_ms, preset.max_latency_ms),
            metadata=own.metadata, cascade=strategy.cascade, ensemble=strategy.ensemble)
        return req.model_copy(update={"model": ROUTED, "banditroute": options})

    # -- the call ------------------------------------------------------------------------------------
    async def serve(self, request: web.Request, req: GatewayRequest, api_key: str | None = None) -> web.StreamResponse:
        """Serve one chat-completions or responses request (the module's steps 1-4); ``api_key``: the
        client's bearer key, for the rules that match on it."""
        svc = self.service
        svc.check_available()
        req = self.preset(req)
        if isinstance(req, MessagesRequest) and (why := req.native_only()) is not None:
            raise RoutingError(f"the request {why}: the gateway serves the Messages API through chat completions")
        if isinstance(req, ResponsesRequest):
            req = await self.stored.continue_conversation(req, api_key)
        tokens = req.prompt_tokens(svc.router.featurizer.input_tokens)
        direct = req.model != ROUTED
        if direct:
            spec = self.specs.get(req.model)
            if spec is None:
                raise NotFound(f"model {req.model!r} does not exist; use {ROUTED!r} or one of: "
                               f"{', '.join([*self.routed_models, *self.callable_models()])}")
            if not spec.callable:
                raise RoutingError(f"model {req.model!r} has no base_url: it can be routed by /route, not called")
            missing = set(req.needs()) - set(spec.capabilities)
            if missing:
                why = f" (it {req.native_only()})" if "responses" in missing else ""
                raise RoutingError(f"model {req.model!r} lacks {', '.join(sorted(missing))}, which this request "
                                   f"needs{why}")
            full = self.providers.full(req.model, self.size(req, tokens, req.model))
            if full is not None:
                self.providers.refused(req.model)
                raise RateLimited(f"{req.model} {full}", retry_after=self.providers.retry_after([req.model]))
            models = [req.model]
        else:
            models = self.eligible(req, tokens)
        opts = route_options(req)
        # every model of the pool: the router's path for an unrestricted request (no per-request mask)
        routed = GatewayRoute(prompt=req.routing_text() or NO_TEXT, models=None if models == self.pool else models,
                              cost_weight=opts.cost_weight,
                              cost_preference=opts.cost_preference, max_cost_usd=opts.max_cost_usd,
                              require=opts.require, user=opts.user, metadata=opts.metadata, direct=direct)
        routed.set_api_key(api_key)
        admission = svc.admit(routed, self.size(req, tokens))  # a tenant's quota: in the gateway's own count
        cascade, ensemble = (None, None) if direct else self.strategy(routed, req)
        if ensemble is not None:
            return await self.strategies.ensemble(request, req, routed, models, ensemble, tokens)
        d = await svc.route(routed)
        self.metrics.decision(d.model, d.rule)
        if cascade is not None:
            return await self.strategies.cascade(request, req, d, cascade, tokens)
        deferred: list[tuple[Provider, float | None]] = []  # 5xx answers and their Retry-After, blamed once the request ends
        try:
            return await self._attempts(request, req, d, opts, tokens, deferred, admission)
        finally:
            for p, retry_after in deferred:
                self.providers.health.failure(p.key, retry_after)

    async def _attempts(self, request: web.Request, req: GatewayRequest, d: Decision, opts: RouteOptions,
                        tokens: float, deferred: list, admission: Admission | None = None) -> web.StreamResponse:
        """The calls of one request, the first for decision ``d``, each failure before the first byte moving
        to the model's next provider (the same decision) or, when it has none left, to another model (the
        module's step 4); server errors go to ``deferred``. ``admission``: what the tenants' rate limits
        counted the request as, corrected to the answer's usage."""
        svc, replaces, direct = self.service, None, req.model != ROUTED
        kind = "direct" if direct else "routed"
        attempts: list[dict] = []
        tried: set[str] = set()
        refusals: list[tuple[str, UpstreamFailure]] = []  # (model, its refusal of the request as beyond its limits)
        used: list[Provider] = []  # the providers the current decision tried
        stored_by = self.pinned(req)
        pinned = None if stored_by is None else stored_by.base_url
        for attempt in range(1, self.config.max_attempts + 1):
            size = self.size(req, tokens, d.model)  # for the rate limits of d's model, in its own count
            # a direct call goes to its model whatever its providers' circuits say; a model whose providers
            # filled their rate limits (or whose circuits opened) while the request was being routed, by the
            # requests routed with it: no call, a fallback, as after a failure
            provider = self.providers.pick(d.model, size, used, pinned, health=not direct)
            if provider is None:
                busy = self.unavailable(d.model, size, pinned) or "no provider left to try"
                self.skip_call(d.model, d.decision_id, kind, attempt, replaces, req.stream, busy)
                attempts.append({"decision_id": d.decision_id, "model": d.model, "outcome": "unavailable",
                                 "status": None, "message": f"{d.model}: {busy}"})
            else:
                call = self.begin_call(provider, d.decision_id, kind, attempt, replaces, req.stream, size)
                call["admission"] = admission
                try:
                    bridged = req.bridged(self.specs[d.model].capabilities)
                    if req.stream:
                        return await self._stream(request, req, d, provider, call, tokens, bridged)
                    if bridged:
                        answer = await self.upstreams.complete(provider, req.to_chat(provider.upstream_name, False), CHAT)
                        answer.body = req.from_chat(answer.body)
                    else:
                        answer = await self.upstreams.complete(provider, req.upstream_body(provider.upstream_name, False),
                                                               req.PATH)
                except UpstreamFailure as failure:
                    self.fail_call(call, failure, deferred=deferred)
                    attempts.append({"decision_id": d.decision_id, "model": d.model, "deployment": provider.deployment,
                                     "outcome": failure.outcome, "status": failure.status, "message": str(failure)})
                    if not failure.retry:  # the request's own fault: the upstream's answer, as it is
                        svc.router.refund(d)
                        return self._passthrough(failure, d, attempt, req)
                    used.append(provider)
                    if not failure.provider_fault:  # the model's own limit: its other providers share it
                        refusals.append((d.model, failure))
                    elif self.providers.pick(d.model, size, used, pinned, health=not direct) is not None:
                        continue  # the same decision, at the model's next provider
                except asyncio.CancelledError:  # the client went away: the upstream call is cancelled with us
                    self.cancel_call(call)
                    raise
                else:
                    return await self._answer(req, d, call, answer, tokens, attempt)
            svc.router.refund(d)
            tried.add(d.model)
            if direct:
                break
            unavailable = {m for m in d.eligible if self.unavailable(m, self.size(req, tokens, m), pinned) is not None}
            nxt = svc.fallback(d, tried | unavailable | self.no_larger(d.eligible, refusals), opts.user, opts.metadata)
            if nxt is None:
                break
            self.metrics.fallbacks.inc()
            self.metrics.decision(nxt.model, nxt.rule)
            replaces, d, used = d.decision_id, nxt, []
        if refusals and len(refusals) == sum(a["outcome"] != "unavailable" for a in attempts):
            # every model called found the request beyond its limits: its own fault, as a direct call says it
            return self._passthrough(refusals[-1][1], d, len(attempts), req)
        why = "; ".join(a["message"] for a in attempts)
        if self._request_at_fault(deferred):
            for p, _ in deferred:
                self.providers.health.release(p.key)
            deferred.clear()
            why += ("; every provider tried answered this request with a server error, so none of them is counted "
                    "as failing (the request itself is the likelier cause)")
        raise UpstreamFailed(f"every attempt failed ({len(attempts)}): {why}", attempts)

    async def _answer(self, req: GatewayRequest, d: Decision, call: dict, answer: Answer, tokens: float,
                      attempt: int) -> web.Response:
        """The upstream's answer to ``d``'s call, as sent back (the pool's model name, the decision's
        headers); its accounting runs on the loop's next turn, once this task has written it out."""
        body = answer.body
        body["model"] = d.model
        usage = body.get("usage")  # whatever it is: usage_tokens reads what it can of it
        if isinstance(req, MessagesRequest):
            usage = body["usage"] = req.estimated_usage(usage, tokens, req.answer_text(body),
                                                        self.service.router.featurizer.input_tokens)
        await self.stored.keep(req, body, call)
        asyncio.get_running_loop().call_soon(self._account, call, d, req, answer.ttft_ms, usage,
                                             req.answer_text(body), tokens, time.perf_counter())
        response = web.Response(body=orjson.dumps(body), content_type="application/json")
        response.headers.update(self.headers(d, attempt))
        return response

    @staticmethod
    def headers(d: Decision, attempt: int) -> dict[str, str]:
        return {"x-banditroute-decision-id": d.decision_id, "x-banditroute-model": d.model,
                "x-banditroute-propensity": repr(d.propensity), "x-banditroute-attempt": str(attempt)}

    def _passthrough(self, failure: UpstreamFailure, d: Decision, attempt: int, req: GatewayRequest) -> web.Response:
        """The upstream's answer to a request it refused as the request's own fault (a 4xx), as it came; in
        the Messages API's error shape for a Messages request."""
        try:
            body = orjson.loads(failure.body or b"")
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or "error" not in body:
            body = {"error": {"message": str(failure), "type": "invalid_request_error", "code": None, "param": None}}
        if isinstance(req, MessagesRequest):
            inner = body["error"] if isinstance(body["error"], dict) else {}
            body = messages.error_body(failure.status or 400, str(inner.get("message") or failure))
        response = web.Response(body=orjson.dumps(body), status=failure.status or 400, content_type="application/json")
        response.headers.update(self.headers(d, attempt))
        return response

    def _relay(self, req: GatewayRequest, event: dict, model: str, parts: list[str],
               prompt_tokens: float) -> tuple[bytes | None, dict | None]:
        """One upstream stream event as sent on to the client (None: not sent), and the usage it carries.

        Chat completions: each chunk's ``model`` is the pool name; a usage chunk goes on only when the
        client asked for it. Responses: the response object that some events carry gets the pool name,
        and the event's name goes before its data (a name with a line break is left out). Messages (the
        gateway's own translation): the event's type is its name; ``message_start``'s message gets the pool
        name and, as Anthropic's stream does, the prompt's tokens (``prompt_tokens``, the gateway's estimate:
        the upstream's count comes at the end), and ``message_delta`` the upstream's usage or, when it
        streamed none, the gateway's estimates (those its accounting uses).
        """
        if isinstance(req, MessagesRequest):
            kind, usage = event.get("type"), None
            if kind == "message_start" and isinstance(event.get("message"), dict):
                event["message"]["model"] = model
                event["message"]["usage"]["input_tokens"] = round(prompt_tokens)
            elif kind == "content_block_delta" and isinstance(event.get("delta"), dict):
                if isinstance(event["delta"].get("text"), str):
                    parts.append(event["delta"]["text"])
            elif kind == "message_delta" and isinstance(event.get("usage"), dict):
                usage = event["usage"] = req.estimated_usage(event["usage"], prompt_tokens, "".join(parts),
                                                             self.service.router.featurizer.input_tokens)
            return b"event: " + str(kind).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n", usage
        if isinstance(req, ResponsesRequest):
            inner = event.get("response")
            usage = None
            if isinstance(inner, dict):
                inner["model"] = model
                usage = inner.get("usage") if isinstance(inner.get("usage"), dict) else None
            kind = event.get("type")
            if kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
                parts.append(event["delta"])
            name = (b"event: " + kind.encode() + b"\n" if isinstance(kind, str) and "\n" not in kind
                    and "\r" not in kind else b"")
            return name + b"data: " + orjson.dumps(event) + b"\n\n", usage
        event["model"] = model
        choices = event.get("choices") if isinstance(event.get("choices"), list) else []
        for c in choices[:1]:
            delta = c.get("delta") if isinstance(c, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                parts.append(content)
        usage = event["usage"] if isinstance(event.get("usage"), dict) and event["usage"] else None
        return (b"data: " + orjson.dumps(event) + b"\n\n") if choices or req.wants_usage() else None, usage

    async def _stream(self, request: web.Request, req: GatewayRequest, d: Decision, spec: Provider, call: dict,
                      tokens: float, bridged: bool = False) -> web.StreamResponse:
        """Relay a stream from the provider ``spec`` (``bridged``: a responses stream made of a
        chat-completions one); raises :class:`UpstreamFailure` only before its first event (so it can fall back)."""
        name = spec.upstream_name
        if bridged:
            translate = req.stream_bridge()
            batches = self.upstreams.stream(spec, req.to_chat(name, spec.stream_usage), CHAT)
        else:
            translate = None
            batches = self.upstreams.stream(spec, req.upstream_body(name, include_usage=spec.stream_usage), req.PATH)

        async def client_batches(batch: list[dict]):
            """The events to send, a batch per upstream batch (translated when bridged)."""
            opening = [] if translate is None else translate.start()
            while True:
                yield batch if translate is None else opening + [e for chunk in batch for e in translate.feed(chunk)]
                opening = []
                try:
                    batch = await batches.__anext__()
                except StopAsyncIteration:
                    break
            if translate is not None:
                yield translate.end()

        response = None
        patience = self.upstreams.timeout(spec)

        async def send(data: bytes, eof: bool = False) -> None:
            """Write to the client, who must take it within the model's timeout (:mod:`.client_writes`)."""
            try:
                await write_within(request, response, data, patience, eof)
            except TimeoutError:
                raise ClientStalled(f"the client read nothing for {patience:g} s") from None

        try:
            try:
                first = await batches.__anext__()
            except StopAsyncIteration:
                raise UpstreamFailure("stream_error", f"{spec.name}: the stream had no events") from None
            ttft = (time.perf_counter() - call["t0"]) * 1000.0
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                                   **self.headers(d, call["attempt"])})
            await response.prepare(request)
            usage, parts, last = {}, [], None
            try:
                async with aclosing(client_batches(first)) as relayed:
                    async for batch in relayed:
                        out = []
                        for event in batch:
                            if isinstance(req, ResponsesRequest) and isinstance(event.get("response"), dict):
                                await self.stored.keep(req, event["response"], call)
                            data, carried = self._relay(req, event, d.model, parts, tokens)
                            usage, last = carried or usage, event
                            if data is not None:
                                out.append(data)
                        if out:
                            await send(b"".join(out))
            except UpstreamFailure as failure:  # after the first event: end the stream with an error event
                self.fail_call(call, failure, ttft)
                message = f"the upstream stream failed: {failure}"
                if isinstance(req, ResponsesRequest):  # the responses API's own error event
                    error = {"type": "error", "code": failure.outcome, "message": message, "param": None}
                    await send(b"event: error\ndata: " + orjson.dumps(error) + b"\n\n")
                elif isinstance(req, MessagesRequest):  # the Messages API's
                    error = messages.error_body(502, message, code=failure.outcome)
                    await send(b"event: error\ndata: " + orjson.dumps(error) + b"\n\n")
                else:
                    error = {"error": {"message": message, "type": "upstream_error", "code": failure.outcome,
                                       "param": None}}
                    await send(b"data: " + orjson.dumps(error) + b"\n\n")
                await send(b"", eof=True)
                return response
            if isinstance(req, ResponsesRequest):
                await send(b"", eof=True)
                if last.get("type") == "response.failed":  # relayed as it came; the provider failed it
                    error = (last.get("response") or {}).get("error") if isinstance(last.get("response"), dict) else None
                    self.fail_call(call, UpstreamFailure("upstream_error", f"{spec.name}: the response failed: "
                                                         f"{str(error)[:ERROR_BYTES]}"), ttft)
                    return response
            elif isinstance(req, MessagesRequest):
                await send(b"", eof=True)
            else:
                await send(b"data: [DONE]\n\n", eof=True)
            self._account(call, d, req, ttft, usage, "".join(parts), tokens)
            return response
        except ClientStalled as stalled:  # given up on our side, the connection closed at once
            self.cancel_call(call, ttft, str(stalled))
            if request.transport is not None:
                request.transport.abort()
            return response
        except (ConnectionResetError, asyncio.CancelledError) as err:
            self.cancel_call(call, None if response is None else ttft)
            if isinstance(err, asyncio.CancelledError) or response is None:
                raise
            return response  # a write found the connection gone: nothing more can be sent
        finally:
            await batches.aclose()

    # -- accounting ----------------------------------------------------------------------------------
    def begin_call(self, provider: Provider, decision_id: str, kind: str, attempt: int, replaces: str | None,
                   stream: bool, tokens: float = 0.0) -> dict:
        """The ``calls`` row of a call to ``provider`` that starts now (completed by :meth:`end_call`), counted
        against its rate limits with ``tokens``, its estimated size; a judge's call carries the decision it judges."""
        return _call_row(provider.model, decision_id, kind, attempt, replaces, stream, provider.deployment) | {
            "t0": time.perf_counter(), "limit": self.providers.begin(provider, tokens)}

    async def complete_any(self, model: str, decision_id: str, kind: str, attempt: int,
                           body_for: Callable[[Provider], dict], size: float = 0.0,
                           cancelled: str = "the client disconnected") -> tuple[Answer | None, dict | None, list[str]]:
        """A non-streamed call of ``model`` outside the routed path (a cascade's step, an ensemble's member,
        a judge's rating), logged, moving to the model's next provider after a failure that another may not
        share; ``body_for(provider)``: the body sent to that provider. ``(answer, calls row, [])`` with the row
        still open (:meth:`end_call` it with the answer's usage), or ``(None, the last row, what failed)``."""
        tried, errors, call = [], [], None
        while (p := self.providers.pick(model, size, tried) or (None if tried else self.providers.of(model)[0])) is not None:
            call = self.begin_call(p, decision_id, kind, attempt, None, False, size)
            try:
                answer = await self.upstreams.complete(p, body_for(p))
            except UpstreamFailure as failure:
                self.fail_call(call, failure)
                errors.append(str(failure))
                if not failure.provider_fault:  # another provider of the model would answer the same
                    break
                tried.append(p)
            except asyncio.CancelledError:
                self.cancel_call(call, why=cancelled)
                raise
            else:
                self.providers.health.success(p.key)
                return answer, call, []
        return None, call, errors

    def provider_of(self, call: dict) -> Provider:
        """The provider a ``calls`` row went to."""
        return self.providers.find(call["model"], call["deployment"])

    def end_call(self, call: dict, outcome: str, status: int | None, error: str | None, ttft_ms: float | None = None,
                 input_tokens: int | None = None, output_tokens: int | None = None, end: float | None = None,
                 cached_input_tokens: int | None = None) -> dict:
        """Complete and log a call's row (once: a later call for the same row changes nothing); returns it.
        ``end``: the ``perf_counter`` time the call ended, when that was before now."""
        if "t0" not in call:
            return call
        seconds = (time.perf_counter() if end is None else end) - call.pop("t0")
        entry, admission = call.pop("limit"), call.pop("admission", None)
        used = None if input_tokens is None and output_tokens is None else (input_tokens or 0) + (output_tokens or 0)
        self.providers.end(self.provider_of(call), entry, used)
        if used is not None:
            Quotas.settle(admission, used)
        call.update(outcome=outcome, status=status, error=error, ttft_ms=ttft_ms, latency_ms=seconds * 1000.0,
                    input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached_input_tokens)
        if outcome == "ok" and (input_tokens is not None or output_tokens is not None):
            call["cost_usd"] = self.specs[call["model"]].price_usd(input_tokens or 0, output_tokens or 0,
                                                                   cached_input_tokens or 0)
        self.metrics.call(call["model"], call["deployment"], outcome, seconds if outcome == "ok" else None)
        self.service.store.add_call(call)
        return call

    def skip_call(self, model: str, decision_id: str, kind: str, attempt: int, replaces: str | None, stream: bool,
                  why: str) -> None:
        """Log an attempt given up before its call (outcome ``unavailable``: the model filled its rate limit
        or its circuit opened since it was chosen), so that the log, like the answer, tells why the decision
        was not carried out and that it cost nothing (what a budget rebuilt from the log counts)."""
        self.metrics.call(model, None, "unavailable", None)
        self.service.store.add_call(_call_row(model, decision_id, kind, attempt, replaces, stream) | {
            "outcome": "unavailable", "error": why})

    def fail_call(self, call: dict, failure: UpstreamFailure, ttft_ms: float | None = None,
                  deferred: list | None = None) -> None:
        """Log a call that failed; its provider's health hears of it unless the request was at fault. With
        ``deferred`` (a request that may fall back), a server error's blame waits there for the request's
        end (see :meth:`_request_at_fault`)."""
        self.end_call(call, failure.outcome, failure.status, str(failure), ttft_ms)
        provider = self.provider_of(call)
        if not failure.provider_fault:
            self.providers.health.release(provider.key)
            self.limits.learn(provider.model, failure)
        elif deferred is not None and failure.status is not None and failure.status >= 500:
            deferred.append((provider, failure.retry_after))
        else:
            self.providers.health.failure(provider.key, failure.retry_after)

    def _request_at_fault(self, deferred: list) -> bool:
        """Whether a request whose every attempt failed carries the blame for the server errors in
        ``deferred`` rather than their providers: when providers at two API roots or more answered it with
        a 5xx, a request that breaks them (a malformed or hostile body they fail to reject cleanly) is
        likelier than independent outages at the same moment. Its calls are then released rather than
        counted, so that such a request, sent again and again, cannot open every circuit of the pool and
        deny service to everyone else. A request that another model answered charges them all, as does
        one that reached a single API root (that root's outage looks the same)."""
        return len({p.base_url for p, _ in deferred}) >= 2

    def cancel_call(self, call: dict, ttft_ms: float | None = None, why: str = "the client disconnected") -> None:
        """Log a call given up on our side: nothing learned about its provider."""
        self.providers.health.release(self.provider_of(call).key)
        self.end_call(call, "cancelled", None, why, ttft_ms)

    def _account(self, call: dict, d: Decision, req: GatewayRequest, ttft_ms: float, usage, text: str,
                 prompt_tokens: float, end: float | None = None) -> None:
        """:meth:`_served`, and whatever goes wrong there, the call's row all the same: an answer that went
        out is in the log (without its usage and cost, then), and the failure in the server's log."""
        try:
            self._served(call, d, req, ttft_ms, usage, text, prompt_tokens, end)
        except Exception:
            log.exception("the accounting of %s's answer failed; its call is logged without its usage",
                          d.decision_id)
            self.end_call(call, "ok", 200, None, ttft_ms, end=end)  # nothing if its row went already

    def _served(self, call: dict, d: Decision, req: GatewayRequest, ttft_ms: float, usage, text: str,
                prompt_tokens: float, end: float | None = None) -> None:
        """An answer went back: health, latency, the call's row, its cost feedback and perhaps the judge
        (``end``: when the upstream's answer was complete, if before now)."""
        self.providers.health.success(self.provider_of(call).key)
        tokens_in, tokens_out, cached = req.usage_tokens(usage)
        kept_turns = isinstance(req, ResponsesRequest) and req.previous_response_id is not None  # not in our estimate
        if not kept_turns and self.token_ratios.observe(d.model, prompt_tokens, tokens_in):
            call["estimated_input_tokens"] = prompt_tokens
        if tokens_in is None:  # an upstream that reports no usage: the gateway's own estimates
            tokens_in = round(prompt_tokens)
        if tokens_out is None:
            tokens_out = round(self.service.router.featurizer.input_tokens(text))
        judged = d.policy != "direct" and self.judge.sample()
        call["judge_rate"] = self.judge.rate if d.policy != "direct" else 0.0
        end = time.perf_counter() if end is None else end
        # learned before the row is queued: whoever sees the row in the log sees its latency learned
        self.latency.observe(d.model, tokens_in, tokens_out, (end - call["t0"]) * 1000.0, ttft_ms)
        row = self.end_call(call, "ok", 200, None, ttft_ms, tokens_in, tokens_out, end, cached)
        limit = self.service.config.feedback.max_tokens
        fb = Feedback(input_tokens=min(tokens_in, limit), output_tokens=min(tokens_out, limit),
                      cached_input_tokens=None if cached is None else min(cached, limit),
                      latency_ms=row["latency_ms"], idempotency_key="banditroute-gateway")
        if not self.service.feedback_nowait(d.decision_id, fb):
            self.background(self._feedback(d.decision_id, fb))
        if judged:
            self.judge.submit(d.decision_id, req.routing_text(), text)

    async def _feedback(self, decision_id: str, fb: Feedback) -> None:
        try:
            await self.service.feedback(decision_id, fb)
        except Exception as err:  # noqa: BLE001 - logged; the call's row keeps its tokens and cost regardless
            log.warning("usage of %s not learned: %s", decision_id, err)

    # -- views ---------------------------------------------------------------------------------------
    def model_view(self, model: str) -> dict:
        """What ``GET /models`` adds for a model: callable, its configured capabilities and limits, the limits
        learned from its providers' refusals, how its prompt tokens compare with the gateway's estimates, its
        providers' health and rate limits, latency."""
        expected = self.service.config.policy.expected_output_tokens
        spec = self.specs[model]
        return {"callable": spec.callable, "capabilities": list(spec.capabilities), "context_window": spec.context_window,
                "max_output_tokens": spec.max_output_tokens, "learned_limits": self.limits.view(model),
                "prompt_tokens": self.token_ratios.view(model),
                **self.providers.view(model),
                "latency": self.latency.view(model, expected)}

