"""The service's Prometheus metrics, through ``prometheus_client`` (one registry per application).

Per request (from the middleware): ``banditroute_requests_total{path,method,status}`` (status 499: the
client went away before its answer, which may still have been logged),
``banditroute_request_seconds{path}`` (histogram); per answer: ``banditroute_decisions_total{model}``, ``banditroute_rule_matches_total{rule}``,
``banditroute_feedback_total{duplicate,late}``; per gateway call: ``banditroute_upstream_calls_total{model,outcome}``,
``banditroute_upstream_seconds{model}``, ``banditroute_fallbacks_total``, ``banditroute_judge_cost_usd_total``. Read from the service at each scrape
(:class:`ServiceCollector`): log positions, the writer's queue and last commit, idle checkpoints,
pending and recalled decisions, micro-batches, each model's share of decisions, and per budget and
tenant its amount, spend, remaining, pace, cost weight and preference (``banditroute_budget_*``). Process and
platform metrics (CPU, memory, open files, GC) come with the registry.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONTENT_TYPE = CONTENT_TYPE_LATEST


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
        yield CounterMetricFamily("banditroute_idle_checkpoints", "checkpoints the log writer ran while no feedback "
                                  "waited", value=s.store.checkpoints)
        yield CounterMetricFamily("banditroute_route_batches", "micro-batches of /route requests routed together "
                                  "(requests / batches = the mean batch size)", value=s.batcher.batches)
        share = GaugeMetricFamily("banditroute_model_share", "share of decisions per model", labels=["model"])
        for row in s.stats.table():
            share.add_metric([row["model"]], row["share"])
        yield share
        budgets = s.router.budgets
        yield from budget_metrics(budgets.view(), {b.name: b.metrics_tenants for b in budgets.order})


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
    """The application's registry, its request and answer metrics, with label children cached."""

    def __init__(self):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter("banditroute_requests", "HTTP requests by path, method and status",
                                ["path", "method", "status"], registry=r)
        self.latency = Histogram("banditroute_request_seconds", "HTTP request latency in seconds", ["path"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.decisions = Counter("banditroute_decisions", "routing decisions by chosen model", ["model"], registry=r)
        self.feedback = Counter("banditroute_feedback", "accepted feedback requests (late: the decision was read "
                                "back from the log)", ["duplicate", "late"], registry=r)
        self.rule_matches = Counter("banditroute_rule_matches", "decisions shaped by each configured rule", ["rule"],
                                    registry=r)
        self.calls = Counter("banditroute_upstream_calls", "gateway calls to upstream models by outcome",
                             ["model", "outcome"], registry=r)
        self.upstream_latency = Histogram("banditroute_upstream_seconds", "latency of answered upstream calls",
                                          ["model"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
                                          registry=r)
        self.fallbacks = Counter("banditroute_fallbacks", "gateway calls moved to another model after a failure",
                                 registry=r)
        self.judge_cost = Counter("banditroute_judge_cost_usd", "USD spent on judge calls (apart from routed calls)",
                                  registry=r)
        self.judge_dropped = Counter("banditroute_judge_dropped", "sampled answers not judged because the judge "
                                     "queue was full or its provider's circuit was open", registry=r)
        # labels() costs a lock and a dict lookup of the label tuple; the few combinations seen are kept
        self._children: dict[tuple, object] = {}

    def _child(self, metric, *labels):
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, path: str, method: str, status: int, seconds: float) -> None:
        self._child(self.requests, path, method, str(status)).inc()
        self._child(self.latency, path).observe(seconds)

    def decision(self, model: str, rule: str | None = None) -> None:
        self._child(self.decisions, model).inc()
        if rule is not None:
            self._child(self.rule_matches, rule).inc()

    def feedback_ack(self, duplicate: bool, late: bool) -> None:
        self._child(self.feedback, "true" if duplicate else "false", "true" if late else "false").inc()

    def call(self, model: str, outcome: str, seconds: float | None) -> None:
        self._child(self.calls, model, outcome).inc()
        if seconds is not None:
            self._child(self.upstream_latency, model).observe(seconds)

    def watch(self, service) -> None:
        """Expose ``service``'s own figures (:class:`ServiceCollector`)."""
        self.registry.register(ServiceCollector(service))

    def render(self) -> bytes:
        """The exposition, in the text format of :data:`CONTENT_TYPE`."""
        return generate_latest(self.registry)
