"""The decision log's schema: the tables the writer appends to, the one builder of each kind of row,
and the SQL that joins feedback to its decision (the log as export, ``simulate --log`` and replay see it).

The exported log has one row per decision, with its feedback joined:

====================  ========================  =================================================
column                type                      meaning
====================  ========================  =================================================
decision_id           string                    unique id returned by ``/route``
ts                    timestamp[us, UTC]        when the decision was taken (int microseconds in rows)
policy                string                    policy that decided (``lints``, ``fixed:M``, ...)
feature_version       string                    :attr:`Featurizer.version` of ``x``
x                     list<float64>             feature vector
input_tokens          float64                   estimated input tokens of the prompt
prompt_hash           string                    HMAC-SHA256 of the prompt (hex)
prompt                string (nullable)         the prompt itself, only where configured
eligible              list<string>              models the policy chose among
probabilities         list<float64>             the policy's probabilities, aligned with eligible
chosen                string                    the sampled model
propensity            float64                   probability of ``chosen`` (exact, > 0)
cost_weight           float64                   quality points per USD used for the decision
pred_quality          list<float64>             predicted quality, aligned with eligible
pred_cost             list<float64>             predicted cost in USD, aligned with eligible
rule                  string (nullable)         the configured rule that shaped the decision
budget                string (nullable)         the budget the decision was charged to...
tenant                string (nullable)         ...for this tenant (an API key appears as its hash)
pace                  float64 (nullable)        the tenant's cost preference after the decision
quality               float64 (nullable)        weighted mean of the normalised feedback signals
cost_usd              float64 (nullable)        reported or derived cost of the call
n_signals             int32                     number of quality signals received
replaces              string (nullable)         a gateway fallback: the decision whose failed call
                                                this decision's call took over
====================  ========================  =================================================

The stored tables: ``decisions`` (the columns above but the joined feedback, plus ``user`` and
``metadata`` as JSON text); ``feedback``, one row per accepted feedback in the order the policy learned
from them (``seq``), with the normalised qualities and weights it applied, the cost it applied (null
when none, or when the decision already had one) and what was reported; ``events``, policy changes;
``calls``, one row per upstream call the gateway made (:data:`CALL_SCHEMA`: its outcome, tokens, cost
and latency, and the decision a fallback replaces), and per attempt it gave up before calling (outcome
``unavailable``: the model reached its rate limit or its circuit opened once it was chosen). A call that answered also sends its tokens and
latency as feedback to its decision, which is how the cost model learns them. ``responses``, one row per
response of the responses API that a later request may continue (:data:`RESPONSE_SCHEMA`): the model
that served it, and for a response the gateway made of a chat completion its turn of the conversation
and the response object (written only where prompts are stored, ``storage.store_prompts``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from banditroute.core.reward import Feedback
from banditroute.core.types import Decision, FeedbackResult

LOG_SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("policy", pa.string()),
        ("feature_version", pa.string()),
        ("x", pa.list_(pa.float64())),
        ("input_tokens", pa.float64()),
        ("prompt_hash", pa.string()),
        ("prompt", pa.string()),
        ("eligible", pa.list_(pa.string())),
        ("probabilities", pa.list_(pa.float64())),
        ("chosen", pa.string()),
        ("propensity", pa.float64()),
        ("cost_weight", pa.float64()),
        ("pred_quality", pa.list_(pa.float64())),
        ("pred_cost", pa.list_(pa.float64())),
        ("rule", pa.string()),
        ("budget", pa.string()),
        ("tenant", pa.string()),
        ("pace", pa.float64()),
        ("quality", pa.float64()),
        ("cost_usd", pa.float64()),
        ("n_signals", pa.int32()),
        ("replaces", pa.string()),
    ]
)
COLUMNS = tuple(LOG_SCHEMA.names)
OUTCOME_COLUMNS = ("quality", "cost_usd", "n_signals", "replaces")  # joined from feedback and calls

# columns added since the first release go last, where ALTER TABLE ... ADD COLUMN puts them in a log
# written before they existed (decisions are appended by position)
ADDED_COLUMNS = ("rule", "budget", "tenant", "pace")
DECISION_SCHEMA = pa.schema(
    [f for f in LOG_SCHEMA if f.name not in OUTCOME_COLUMNS and f.name not in ADDED_COLUMNS]
    + [pa.field("user", pa.string()), pa.field("metadata", pa.string())]
    + [LOG_SCHEMA.field(name) for name in ADDED_COLUMNS]
)
FEEDBACK_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("decision_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("qualities", pa.list_(pa.float64())),
        ("weights", pa.list_(pa.float64())),
        ("cost_usd", pa.float64()),
        ("reported", pa.string()),
        ("idempotency_key", pa.string()),
    ]
)
EVENT_SCHEMA = pa.schema([("ts", pa.timestamp("us", tz="UTC")), ("seq", pa.int64()), ("event", pa.string())])
CALL_SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()),  # the decision this call carried out (a judge's call: the one it judged)
        ("ts", pa.timestamp("us", tz="UTC")),  # when the call started
        ("kind", pa.string()),  # routed | direct | judge
        ("model", pa.string()),
        ("attempt", pa.int32()),  # the request's calls in order: 1, then 2 for its next provider or fallback, ...
        ("replaces", pa.string()),  # the decision whose failed call this one replaces
        ("stream", pa.bool_()),
        ("outcome", pa.string()),  # ok | timeout | connect_error | rate_limited | upstream_error | context_exceeded | output_limit_exceeded | stream_error | unavailable | ...
        ("status", pa.int32()),  # the upstream's HTTP status, when it answered
        ("error", pa.string()),
        ("ttft_ms", pa.float64()),  # time to the first byte of the answer (a stream's first event)
        ("latency_ms", pa.float64()),
        ("input_tokens", pa.int64()),  # the upstream's usage
        ("output_tokens", pa.int64()),
        ("cost_usd", pa.float64()),  # from the pool's prices
        ("judge_rate", pa.float64()),  # an answered call: the probability it was sent to the judge
        ("deployment", pa.string()),  # which of the model's providers took the call (none: given up before it)
        ("cached_input_tokens", pa.int64()),  # of input_tokens, those served from the provider's prompt cache
        # an answer that reported its prompt tokens: the gateway's estimate of them (what the model's token
        # ratio learns from, gateway.model_limits.TokenRatios)
        ("estimated_input_tokens", pa.float64()),
    ]
)
RESPONSE_SCHEMA = pa.schema(
    [
        ("response_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("model", pa.string()),  # the pool model that served it
        ("parent", pa.string()),  # the response it continued (a gateway-made turn)
        ("owner", pa.string()),  # the key id of the client that made it (a gateway-made turn)
        ("items", pa.string()),  # JSON: the turn's input items then output items; null when its provider keeps it
        ("deployment", pa.string()),  # the model's provider that keeps it (null: the gateway keeps the turn)
        ("response", pa.string()),  # JSON: a gateway-made response's object as the client got it
    ]
)

DUCK_TYPES = {
    pa.string(): "VARCHAR", pa.float64(): "DOUBLE", pa.int64(): "BIGINT", pa.int32(): "INTEGER",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ", pa.list_(pa.float64()): "DOUBLE[]",
    pa.list_(pa.string()): "VARCHAR[]", pa.bool_(): "BOOLEAN",
}
TABLES = {"decisions": DECISION_SCHEMA, "feedback": FEEDBACK_SCHEMA, "events": EVENT_SCHEMA, "calls": CALL_SCHEMA,
          "responses": RESPONSE_SCHEMA}


def _list_array(arrays: list[np.ndarray]) -> pa.ListArray:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    values = np.concatenate(arrays) if arrays else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.float64()))


def decision_table(items: list[tuple[Decision, str | None, str | None]]) -> pa.Table:
    """``(decision, user, metadata)`` items as an Arrow table of :data:`DECISION_SCHEMA`, column-wise."""
    ds = [d for d, _, _ in items]
    n_eligible = np.zeros(len(ds) + 1, dtype=np.int32)
    np.cumsum([len(d.eligible) for d in ds], out=n_eligible[1:])
    eligible = pa.ListArray.from_arrays(pa.array(n_eligible), pa.array([m for d in ds for m in d.eligible], pa.string()))
    columns = {
        "decision_id": pa.array([d.decision_id for d in ds], pa.string()),
        "ts": pa.array((np.array([d.ts for d in ds]) * 1e6).astype(np.int64)).cast(pa.timestamp("us", tz="UTC")),
        "policy": pa.array([d.policy for d in ds], pa.string()),
        "feature_version": pa.array([d.feature_version for d in ds], pa.string()),
        "x": _list_array([d.context.x for d in ds]),
        "input_tokens": pa.array([d.context.input_tokens for d in ds], pa.float64()),
        "prompt_hash": pa.array([d.prompt_hash for d in ds], pa.string()),
        "prompt": pa.array([d.prompt for d in ds], pa.string()),
        "eligible": eligible,
        "probabilities": _list_array([d.probabilities for d in ds]),
        "chosen": pa.array([d.model for d in ds], pa.string()),
        "propensity": pa.array([d.propensity for d in ds], pa.float64()),
        "cost_weight": pa.array([d.cost_weight for d in ds], pa.float64()),
        "pred_quality": _list_array([d.pred_quality for d in ds]),
        "pred_cost": _list_array([d.pred_cost for d in ds]),
        "user": pa.array([u for _, u, _ in items], pa.string()),
        "metadata": pa.array([m for _, _, m in items], pa.string()),
        "rule": pa.array([d.rule for d in ds], pa.string()),
        "budget": pa.array([d.budget for d in ds], pa.string()),
        "tenant": pa.array([d.tenant for d in ds], pa.string()),
        "pace": pa.array([d.pace for d in ds], pa.float64()),
    }
    return pa.Table.from_pydict(columns, schema=DECISION_SCHEMA)


def ddl(name: str, schema: pa.Schema) -> list[str]:
    """The statements that create table ``name``, or bring one written by an earlier version up to
    ``schema`` (columns added since are appended, null in the old rows)."""
    cols = ", ".join(f'"{f.name}" {DUCK_TYPES[f.type]}' for f in schema)
    return [f"CREATE TABLE IF NOT EXISTS {name} ({cols})",
            *(f'ALTER TABLE {name} ADD COLUMN IF NOT EXISTS "{f.name}" {DUCK_TYPES[f.type]}' for f in schema)]


def feedback_row(result: FeedbackResult, feedback: Feedback, ts_us: int, reported: str) -> dict:
    """The ``feedback`` row for what ``result`` applied from ``feedback``, whose :meth:`Feedback.reported`
    is ``reported`` (the writer adds ``seq``)."""
    return {
        "decision_id": result.decision_id,
        "ts": ts_us,
        "qualities": [q for q, _ in result.qualities],
        "weights": [w for _, w in result.qualities],
        "cost_usd": result.cost_usd,
        "reported": reported,
        "idempotency_key": feedback.idempotency_key,
    }


# A feedback row's share of its decision's weighted mean quality, sum_i w_i q_i / sum_i w_i (the
# formula of banditroute.core.reward.mean_quality): its numerator and denominator terms in SQL.
QUALITY_WEIGHTED_SQL = "list_dot_product(qualities, weights)"
QUALITY_WEIGHT_SQL = "list_sum(weights)"

# Per decision: the sums behind its mean quality, its number of signals and its cost.
OUTCOMES_SQL = f"""
SELECT decision_id,
       sum({QUALITY_WEIGHTED_SQL}) AS qw,
       sum({QUALITY_WEIGHT_SQL}) AS w,
       sum(len(qualities))::INTEGER AS n_signals,
       max(cost_usd) AS cost_usd
FROM feedback GROUP BY decision_id
"""

JOINED_LOG_SQL = f"""
WITH fb AS ({OUTCOMES_SQL}),
     fallbacks AS (SELECT decision_id, any_value(replaces) AS replaces FROM calls
                   WHERE replaces IS NOT NULL GROUP BY decision_id)
SELECT {", ".join(f"d.{c}" for c in COLUMNS if c not in OUTCOME_COLUMNS)},
       CASE WHEN fb.w > 0 THEN fb.qw / fb.w END AS quality, fb.cost_usd,
       coalesce(fb.n_signals, 0)::INTEGER AS n_signals, fallbacks.replaces
FROM decisions d LEFT JOIN fb USING (decision_id) LEFT JOIN fallbacks USING (decision_id)
ORDER BY d.ts, d.rowid
"""

# The decisions that are a gateway's fallback (their calls name the decision they replace).
FALLBACKS_SQL = "SELECT DISTINCT decision_id FROM calls WHERE replaces IS NOT NULL"

# Per chosen model: its decisions, their predicted costs and the predicted cost of each one's priciest
# eligible model (:class:`banditroute.core.stats.ModelStats`), counting each request once as the service
# does live: a decision a fallback replaced adds no predicted cost (the fallback's does), and a fallback
# adds no priciest cost (the decision it replaced did).
MODEL_COSTS_SQL = f"""
WITH fallbacks AS ({FALLBACKS_SQL}),
     replaced AS (SELECT DISTINCT replaces AS decision_id FROM calls WHERE replaces IS NOT NULL)
SELECT chosen, count(*) AS n,
       sum(pred_cost[list_position(eligible, chosen)]) FILTER (WHERE decision_id NOT IN (FROM replaced)) AS predicted,
       sum(list_max(pred_cost)) FILTER (WHERE decision_id NOT IN (FROM fallbacks)) AS priciest
FROM decisions GROUP BY chosen
"""

# Per tenant of one budget (``$budget``): its requests and spend since ``$start`` (a decision costs what
# its feedback reported, else its model's predicted cost; nothing when every call the gateway made for it
# failed or was given up), what was charged for those whose cost was reported and what they cost (the
# calibration; only decisions charged a positive predicted cost count there), the sum of the requests'
# price spreads, its requests in the period before (``$previous`` to ``$start``), and the cost preference
# after its last decision. A request is a decision that is not a gateway's fallback (the calls of a
# fallback name the decision it ``replaces``), as the pacers count them.
# What :meth:`banditroute.core.budget.Budgets.restore` rebuilds the pacers from.
BUDGET_STATE_SQL = f"""
WITH costs AS (SELECT decision_id, max(cost_usd) AS cost FROM feedback GROUP BY decision_id),
     unpaid AS (SELECT decision_id FROM calls WHERE kind <> 'judge' GROUP BY decision_id
                HAVING bool_and(outcome NOT IN ('ok', 'cancelled'))),
     fallbacks AS ({FALLBACKS_SQL})
SELECT d.budget, d.tenant,
       count(*) FILTER (WHERE d.ts >= $start AND fallbacks.decision_id IS NULL) AS requests,
       sum(CASE WHEN unpaid.decision_id IS NOT NULL THEN 0.0
                ELSE coalesce(costs.cost, d.pred_cost[list_position(d.eligible, d.chosen)]) END)
           FILTER (WHERE d.ts >= $start) AS spent,
       sum(d.pred_cost[list_position(d.eligible, d.chosen)])
           FILTER (WHERE d.ts >= $start AND costs.cost IS NOT NULL AND d.pred_cost[list_position(d.eligible, d.chosen)] > 0)
           AS reported_charged,
       sum(costs.cost) FILTER (WHERE d.ts >= $start AND d.pred_cost[list_position(d.eligible, d.chosen)] > 0)
           AS reported_cost,
       sum(list_max(d.pred_cost) - list_min(d.pred_cost)) FILTER (WHERE d.ts >= $start AND fallbacks.decision_id IS NULL)
           AS spread_sum,
       count(*) FILTER (WHERE d.ts >= $previous AND d.ts < $start AND fallbacks.decision_id IS NULL) AS previous,
       arg_max(d.pace, d.ts) AS preference
FROM decisions d LEFT JOIN costs USING (decision_id) LEFT JOIN unpaid USING (decision_id)
     LEFT JOIN fallbacks USING (decision_id)
WHERE d.budget = $budget
GROUP BY d.budget, d.tenant
"""
