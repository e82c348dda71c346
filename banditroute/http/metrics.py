"""The service's Prometheus metrics, through ``prometheus_client`` (one registry per application).

The request, answer and call metrics are updated on the event loop's thread only, every request: they
are plain counts (:class:`LoopCounter`, :class:`LoopHistogram`) turned into metric families at scrape
time, without the lock and the calls a ``prometheus_client`` child takes per update.

Per request (from the middleware): ``banditroute_requests_total{path,method,status}`` (status 499: the
client went away before its answer, which may still have been logged),
``banditroute_request_seconds{path}`` (histogram); per answer: ``banditroute_decisions_total{model}``, ``banditroute_rule_matches_total{rule}``,
``banditroute_feedback_total{duplicate,late}``; per gateway call: ``banditroute_upstream_calls_total{model,deployment,outcome}``,
``banditroute_upstream_seconds{model}``, ``banditroute_fallbacks_total``, ``banditroute_judge_cost_usd_total``. The event loop's
lag, ``banditroute_event_loop_lag_seconds`` (histogram): every :data:`LAG_INTERVAL` a timer asks to be run
then, and records how much later the loop ran it; a saturated or blocked loop delays every request by
that much (the measure of Node.js's ``monitorEventLoopDelay``). Read from the service at each scrape
(:class:`ServiceCollector`): log positions, the writer's queue and last commit, idle checkpoints,
pending and recalled decisions, micro-batches, each model's share of decisions, per budget and
tenant its amount, spend, remaining, pace, cost weight and preference (``banditroute_budget_*``), per
tenant rate limit its refusals and tracked tenants (``banditroute_rate_limit_*``), and the
gateway's kept conversations (``banditroute_conversation_*``). Process and
platform metrics (CPU, memory, open files, GC) come with the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
from bisect import bisect_left
from itertools import accumulate

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LAG_INTERVAL = 0.02  # seconds between the loop-lag timer's samples
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class LoopCounter:
    """A counter family whose series are updated from one thread (the event loop's): a dict of floats.

    >>> c = LoopCounter("demo_events", "events by kind", ["kind"])
    >>> c.inc("a"); c.inc("a"); c.inc("b", amount=0.5)
    >>> c.value("a"), c.value("b"), c.value("c")
    (2.0, 0.5, 0.0)
    """

    def __init__(self, name: str, doc: str, labels: list[str] | tuple = ()):
        self.name, self.doc, self.labels = name, doc, list(labels)
        self.values: dict[tuple, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def collect(self):
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        values = self.values or ({} if self.labels else {(): 0.0})  # a counter without labels reads 0 from the start
        for labels, value in list(values.items()):
            family.add_metric(list(labels), value)
        yield family


class LoopHistogram:
    """A histogram family with one label (or none: ``label=None``, every observation under ``""``), updated
    from one thread: per series the count of observations in each bucket (``bounds[i-1] < v <= bounds[i]``,
    Prometheus' ``le``; the last one above every bound) and their sum, made cumulative at scrape time.

    >>> h = LoopHistogram("demo_seconds", "durations", "path", (0.1, 1.0))
    >>> for v in (0.05, 0.1, 0.5, 3.0): h.observe("/x", v)
    >>> [(s.name, s.labels.get("le"), s.value) for s in next(h.collect()).samples]  # doctest: +NORMALIZE_WHITESPACE
    [('demo_seconds_bucket', '0.1', 2.0), ('demo_seconds_bucket', '1.0', 3.0),
     ('demo_seconds_bucket', '+Inf', 4.0), ('demo_seconds_count', None, 4.0), ('demo_seconds_sum', None, 3.65)]
    """

    def __init__(self, name: str, doc: str, label: str | None, bounds: tuple[float, ...]):
        self.name, self.doc, self.label, self.bounds = name, doc, label, tuple(float(b) for b in bounds)
        self.series: dict[str, list[float]] = {}  # label value -> bucket counts, then the sum

    def observe(self, label: str, value: float) -> None:
        counts = self.series.get(label)
        if counts is None:
            counts = self.series[label] = [0.0] * (len(self.bounds) + 2)
        counts[bisect_left(self.bounds, value)] += 1
        counts[-1] += value

    def collect(self):
        family = HistogramMetricFamily(self.name, self.doc, labels=[] if self.label is None else [self.label])
        bounds = [*(str(b) for b in self.bounds), "+Inf"]
        for label, counts in list(self.series.items()):
            family.add_metric([] if self.label is None else [label], list(zip(bounds, accumulate(counts[:-1]))),
                              counts[-1])
        yield family


class ServiceCollector:
    """Values read from a running :class:`~banditroute.service.service.Service` at scrape time."""

    def __init__(self, service):
        self.service = service

    def collect(self):
        s = self.service
        gauges = [
            ("banditroute_feedback_seq", "feedback rows queued (log position)", s.store.seq),
            ("banditroute_committed_seq", "feedback rows committed", s.store.committed_seq),
            ("banditroute_snapshot_seq", "log position of the last snapshot", s.snapshot_seq),
            ("banditroute_write_queue_rows", "rows waiting for the log writer", s.store.pending_rows),
            ("banditroute_commit_seconds", "duration of the last commit", s.store.last_commit_seconds),
            ("banditroute_pending_decisions", "decisions held in memory for their feedback", len(s.pending.window)),
            ("banditroute_recalled_decisions",
             "decisions read back from the log for late feedback and kept for their next feedback",
             len(s.pending.recalled)),
            ("banditroute_available", "1 while the log accepts writes and requests are answered, 0 while they get 503",
             int(s.unavailable is None)),
        ]
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=value)
        yield CounterMetricFamily("banditroute_log_write_failures", "commits of the log that failed",
                                  value=s.store.failures)
        yield CounterMetricFamily("banditroute_outages", "times requests were refused until the log took writes again",
                                  value=s.outages)
        yield CounterMetricFamily("banditroute_log_reopens", "times the log's database was opened again after "
                                  "DuckDB invalidated it", value=s.store.reopens)
        yield CounterMetricFamily("banditroute_idle_checkpoints", "checkpoints the log writer ran while no feedback "
                                  "waited", value=s.store.checkpoints)
        yield CounterMetricFamily("banditroute_expired_prompts", "prompts erased from the log once older than "
                                  "storage.retention_days", value=s.retention.prompts)
        yield CounterMetricFamily("banditroute_expired_turns", "kept conversation turns deleted from the log once "
                                  "older than storage.retention_days", value=s.retention.turns)
        yield CounterMetricFamily("banditroute_retention_failures", "passes erasing what is older than "
                                  "storage.retention_days that failed (the next pass tries again)",
                                  value=s.retention.failures)
        yield CounterMetricFamily("banditroute_route_batches", "micro-batches of /route requests routed together "
                                  "(requests / batches = the mean batch size)", value=s.batcher.batches)
        share = GaugeMetricFamily("banditroute_model_share", "share of decisions per model", labels=["model"])
        cost = CounterMetricFamily("banditroute_cost_usd", "USD reported for each model's decisions (the gateway's "
                                   "own calls at the pool's prices, or the cost_usd of /feedback)", labels=["model"])
        predicted = CounterMetricFamily("banditroute_predicted_cost_usd", "predicted cost of each model's decisions "
                                        "when they were taken", labels=["model"])
        priciest = CounterMetricFamily("banditroute_priciest_cost_usd", "predicted cost, for the same decisions, of "
                                       "the priciest model each could have gone to (the ratio to "
                                       "banditroute_predicted_cost_usd is what routing saves)", labels=["model"])
        for row in s.stats.table():
            m = row["model"]
            share.add_metric([m], row["share"])
            cost.add_metric([m], row["cost_usd"])
            predicted.add_metric([m], row["predicted_cost_usd"])
            priciest.add_metric([m], row["priciest_cost_usd"])
        yield from (share, cost, predicted, priciest)
        budgets = s.router.budgets
        yield from budget_metrics(budgets.view(), {b.name: b.metrics_tenants for b in budgets.order})
        if s.quotas:
            refused = CounterMetricFamily("banditroute_rate_limit_refusals", "requests refused by a tenant rate limit",
                                          labels=["limit"])
            tenants = GaugeMetricFamily("banditroute_rate_limit_tenants", "tenants of a rate limit with requests in "
                                        "the last minute (and perhaps a few idle ones)", labels=["limit"])
            for c in s.quotas.configs:
                refused.add_metric([c.name], s.quotas.refused[c.name])
                tenants.add_metric([c.name], s.quotas.tenants(c.name))
            yield from (refused, tenants)


class ConversationCollector:
    """The gateway's kept conversations (:class:`~banditroute.gateway.conversations.Conversations`)."""

    def __init__(self, conversations):
        self.conversations = conversations

    def collect(self):
        c = self.conversations
        yield GaugeMetricFamily("banditroute_conversation_turns", "turns of gateway-made responses kept for "
                                "previous_response_id", value=len(c))
        yield GaugeMetricFamily("banditroute_conversation_bytes", "memory those turns take (serialised)", value=c.bytes)
        yield CounterMetricFamily("banditroute_conversation_evictions", "turns dropped, least recently used first, "
                                  "to stay within gateway.conversations_mb", value=c.evicted)


OTHER_TENANTS = "_other"


def budget_metrics(tenants: list[dict], limits: dict[str, int]):
    """Gauges per budget and tenant, for the tenants with decisions in their current period.

    A budget with many tenants would make one series per tenant (Prometheus' cardinality problem): the
    ``limits[budget]`` tenants that spent the most keep their own series, and the others' amounts, spend,
    remaining and exhausted requests are summed under the tenant ``_other`` (their pace, weight and
    preference, which do not add up, are left out). ``banditroute_budget_tenants`` counts them all.
    """
    summed = ("amount_usd", "spent_usd", "remaining_usd", "exhausted_requests")
    by_budget: dict[str, list[dict]] = {}
    for t in tenants:
        by_budget.setdefault(t["budget"], []).append(t)
    shown, other = [], {}
    for budget, mine in by_budget.items():
        mine.sort(key=lambda t: (-t["spent_usd"], t["tenant"]))
        keep = limits.get(budget, len(mine))
        shown += mine[:keep]
        if len(mine) > keep:
            other[budget] = {k: sum(t[k] for t in mine[keep:]) for k in summed}
    families = [
        ("banditroute_budget_amount_usd", "what the tenant may spend in the current period", "amount_usd"),
        ("banditroute_budget_spent_usd", "what the tenant has spent in the current period", "spent_usd"),
        ("banditroute_budget_remaining_usd", "what the tenant has left in the current period", "remaining_usd"),
        ("banditroute_budget_pace", "spend over the even pace for the share of the period gone", "pace"),
        ("banditroute_budget_cost_weight", "the cost weight of the tenant's last decision", "cost_weight"),
        ("banditroute_budget_cost_preference", "the cost preference the pacing sets", "cost_preference"),
        ("banditroute_budget_exhausted_requests", "requests that found the budget exhausted this period",
         "exhausted_requests"),
    ]
    for name, doc, key in families:
        g = GaugeMetricFamily(name, doc, labels=["budget", "tenant"])
        for t in shown:
            if t[key] is not None:
                g.add_metric([t["budget"], t["tenant"]], t[key])
        if key in summed:
            for budget, sums in other.items():
                g.add_metric([budget, OTHER_TENANTS], sums[key])
        yield g
    g = GaugeMetricFamily("banditroute_budget_tenants", "tenants with decisions in the current period",
                          labels=["budget"])
    for budget, mine in by_budget.items():
        g.add_metric([budget], len(mine))
    yield g


class Metrics:
    """The application's registry and its request, answer and call metrics (see the module docstring)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = LoopCounter("banditroute_requests", "HTTP requests by path, method and status",
                                    ["path", "method", "status"])
        self.latency = LoopHistogram("banditroute_request_seconds", "HTTP request latency in seconds", "path",
                                     LATENCY_BUCKETS)
        self.decisions = LoopCounter("banditroute_decisions", "routing decisions by chosen model", ["model"])
        self.feedback = LoopCounter("banditroute_feedback", "accepted feedback requests (late: the decision was "
                                    "read back from the log)", ["duplicate", "late"])
        self.rule_matches = LoopCounter("banditroute_rule_matches", "decisions shaped by each configured rule", ["rule"])
        self.calls = LoopCounter("banditroute_upstream_calls", "gateway calls to upstream models by deployment and "
                                 "outcome (deployment empty: given up before the call)", ["model", "deployment", "outcome"])
        self.upstream_latency = LoopHistogram("banditroute_upstream_seconds", "latency of answered upstream calls",
                                              "model", (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.fallbacks = LoopCounter("banditroute_fallbacks", "gateway calls moved to another model after a failure")
        self.judge_cost = LoopCounter("banditroute_judge_cost_usd", "USD spent on judge calls (apart from routed calls)")
        self.judge_dropped = LoopCounter("banditroute_judge_dropped", "sampled answers not judged because the judge "
                                         "queue was full or its provider's circuit was open")
        self.loop_lag = LoopHistogram("banditroute_event_loop_lag_seconds", "how much later than asked the event "
                                      f"loop ran a timer, sampled every {LAG_INTERVAL:g} s", None, LAG_BUCKETS)
        for family in (self.requests, self.latency, self.decisions, self.feedback, self.rule_matches, self.calls,
                       self.upstream_latency, self.fallbacks, self.judge_cost, self.judge_dropped, self.loop_lag):
            self.registry.register(family)
        self._lag_task: asyncio.Task | None = None

    async def _sample_loop_lag(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + interval
            await asyncio.sleep(interval)
            self.loop_lag.observe("", max(0.0, loop.time() - due))

    def start_loop_lag(self, interval: float = LAG_INTERVAL) -> None:
        """Sample the running event loop's lag into ``banditroute_event_loop_lag_seconds`` until
        :meth:`stop_loop_lag`."""
        self._lag_task = asyncio.get_running_loop().create_task(self._sample_loop_lag(interval))

    async def stop_loop_lag(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
            self._lag_task = None

    def request(self, path: str, method: str, status: int, seconds: float) -> None:
        self.requests.inc(path, method, str(status))
        self.latency.observe(path, seconds)

    def decision(self, model: str, rule: str | None = None) -> None:
        self.decisions.inc(model)
        if rule is not None:
            self.rule_matches.inc(rule)

    def feedback_ack(self, duplicate: bool, late: bool) -> None:
        self.feedback.inc("true" if duplicate else "false", "true" if late else "false")

    def call(self, model: str, deployment: str | None, outcome: str, seconds: float | None) -> None:
        self.calls.inc(model, deployment or "", outcome)
        if seconds is not None:
            self.upstream_latency.observe(model, seconds)

    def watch(self, service) -> None:
        """Expose ``service``'s own figures (:class:`ServiceCollector`)."""
        self.registry.register(ServiceCollector(service))

    def watch_conversations(self, conversations) -> None:
        """Expose the gateway's kept conversations (:class:`ConversationCollector`)."""
        self.registry.register(ConversationCollector(conversations))

    def render(self) -> bytes:
        """The exposition, in the text format of :data:`CONTENT_TYPE`."""
        return generate_latest(self.registry)
