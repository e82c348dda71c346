"""The Router: the one object the server, the simulator and the replay tools drive.

``route(prompt, options)``: features -> eligible models -> ``Policy.probabilities`` -> sample one
model from that exact vector -> :class:`Decision` (kept in a bounded pending cache and handed to
the log sink).
``feedback(decision_id, feedback)``: signals -> qualities in [0, 1] (:mod:`banditroute.core.reward`)
-> ``Policy.update`` for the decision's model -> a feedback record for the log sink.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from banditroute.config import PoolConfig
from banditroute.core.features import Featurizer
from banditroute.core.policies import Policy, make_policy
from banditroute.core.reward import Feedback, mean_quality
from banditroute.core.types import Context, net_score


class RoutingError(ValueError):
    """A request the router cannot serve as asked (unknown model, nothing eligible, bad prompt)."""


class UnknownDecision(KeyError):
    """Feedback for a decision id the router does not hold."""


class RouteOptions(BaseModel):
    """Per-request options of ``/route``."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] | None = Field(default=None, min_length=1)
    cost_weight: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    max_cost_usd: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    require: list[str] = Field(default_factory=list)
    user: str | None = None
    metadata: dict[str, Any] | None = None


# Decisions read back from the log and kept for their next feedback: a few seconds of late feedback
# at thousands per second; the longest a recalled decision must stay is until its feedback commits.
RECALLED = 4096


@dataclass(slots=True)
class Pending:
    """What the router keeps of a decision until its feedback stops: just what learning needs."""

    decision_id: str
    model: str
    arm: int
    context: Context
    cost_usd: float | None = None
    signals: list[tuple[float, float]] = field(default_factory=list)

    @property
    def quality(self) -> float | None:
        """Weighted mean quality of the signals received so far."""
        return mean_quality(self.signals)


@dataclass(slots=True)
class Decision:
    """A routing decision, with everything needed to log it and to learn from its feedback."""

    decision_id: str
    ts: float
    model: str
    arm: int
    propensity: float
    eligible: list[str]
    probabilities: np.ndarray
    pred_quality: np.ndarray
    pred_cost: np.ndarray
    cost_weight: float
    policy: str
    feature_version: str
    context: Context
    prompt_hash: str
    prompt: str | None = None
    signals: list[tuple[float, float]] = field(default_factory=list)
    cost_usd: float | None = None

    @property
    def quality(self) -> float | None:
        """Weighted mean quality of the signals received so far."""
        return mean_quality(self.signals)

    def scores(self) -> dict[str, dict[str, float]]:
        """``{model: {quality, cost_usd, score}}`` behind the choice."""
        cw = self.cost_weight  # in Python floats: the same two roundings as numpy, without its per-call cost
        return {m: {"quality": q, "cost_usd": c, "score": net_score(q, c, cw)}
                for m, q, c in zip(self.eligible, self.pred_quality.tolist(), self.pred_cost.tolist())}

    def join(self, p: Pending) -> None:
        """Copy the feedback a pending record has gathered (for logs written after the fact)."""
        self.signals = list(p.signals)
        self.cost_usd = p.cost_usd

    def log_row(self) -> dict:
        """This decision (and the feedback joined so far) as a row of the decision log."""
        return {
            "decision_id": self.decision_id,
            "ts": int(self.ts * 1e6),
            "policy": self.policy,
            "feature_version": self.feature_version,
            "x": self.context.x.tolist(),
            "input_tokens": self.context.input_tokens,
            "prompt_hash": self.prompt_hash,
            "prompt": self.prompt,
            "eligible": self.eligible,
            "probabilities": self.probabilities.tolist(),
            "chosen": self.model,
            "propensity": self.propensity,
            "cost_weight": self.cost_weight,
            "pred_quality": self.pred_quality.tolist(),
            "pred_cost": self.pred_cost.tolist(),
            "quality": self.quality,
            "cost_usd": self.cost_usd,
            "n_signals": len(self.signals),
        }


def sample(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One column index per row, drawn from that row's probabilities (inverse CDF; zero-probability
    columns are never drawn)."""
    cdf = np.cumsum(probabilities, axis=1)
    u = rng.random(len(probabilities)) * cdf[:, -1]
    return np.minimum((cdf <= u[:, None]).sum(axis=1), probabilities.shape[1] - 1)


def _keep(cache: OrderedDict, p: Pending, limit: int) -> None:
    """Put ``p`` in a bounded cache of decisions; the oldest entry leaves when it is over ``limit``."""
    cache[p.decision_id] = p
    if len(cache) > limit:
        cache.popitem(last=False)


@dataclass
class FeedbackResult:
    """What one feedback call changed."""

    decision_id: str
    model: str
    qualities: list[tuple[float, float]]
    cost_usd: float | None
    quality: float | None


class LogSink(Protocol):
    def decision(self, decision: Decision) -> None: ...

    def feedback(self, pending: Pending, feedback: Feedback, result: FeedbackResult) -> None: ...


class Router:
    """Routes prompts over a pool and learns from feedback.

    Parameters
    ----------
    pool
        The models and the policy settings.
    policy
        A policy instance; by default ``make_policy(pool.policy.name, ...)``.
    featurizer
        By default ``Featurizer()``; must match the policy's dimension.
    seed
        Seeds the sampling and the decision ids (for reproducible simulations); ``None`` draws
        from the operating system.
    sink
        Receives every decision and feedback (the log writer).
    store_prompts
        Keep the prompt text in decisions (and logs); otherwise only its SHA-256.
    """

    def __init__(self, pool: PoolConfig, policy: Policy | None = None, featurizer: Featurizer | None = None,
                 seed: int | None = None, sink: LogSink | None = None, store_prompts: bool = False):
        self.pool = pool
        self.featurizer = featurizer or Featurizer()
        if policy is None:
            prices = [(m.input_price_per_mtok, m.output_price_per_mtok) for m in pool.models]
            policy = make_policy(pool.policy.name, pool.names, self.featurizer.dim, prices, pool.policy)
        self._check_policy(policy)
        self.policy = policy
        self.cost_weight = pool.policy.cost_weight
        self.rng = np.random.default_rng(seed)
        self._ids = random.Random(seed if seed is not None else int.from_bytes(np.random.bytes(16), "little"))
        self.sink = sink
        self.store_prompts = store_prompts
        self.pending: OrderedDict[str, Pending] = OrderedDict()
        self.max_pending = pool.max_pending
        self.recalled: OrderedDict[str, Pending] = OrderedDict()  # read back from the log for late feedback
        self._caps = {m.name: set(m.capabilities) for m in pool.models}
        self._index_arms()
        self.stats = ModelStats(pool.names)

    def _check_policy(self, policy: Policy) -> None:
        if policy.dim != self.featurizer.dim:
            raise ValueError(f"policy dimension {policy.dim} != featurizer dimension {self.featurizer.dim}")
        if policy.feature_version not in (None, self.featurizer.version):
            raise ValueError(
                f"policy state was learned with features {policy.feature_version}, "
                f"this router computes {self.featurizer.version}"
            )
        unknown = set(self.pool.names) - set(policy.models)
        if unknown:
            raise ValueError(f"policy state does not know pool models: {', '.join(sorted(unknown))}")
        policy.feature_version = self.featurizer.version

    def set_policy(self, policy: Policy) -> None:
        """Swap the active policy (e.g. a loaded state); pending decisions keep their contexts."""
        self._check_policy(policy)
        self.policy = policy
        self._index_arms()

    def _index_arms(self) -> None:
        """Arm index of each model name, and the mask and arms of the pool's models in the policy."""
        self._arm = {m: i for i, m in enumerate(self.policy.models)}
        self._pool_mask = np.isin(self.policy.models, self.pool.names)
        arms = np.flatnonzero(self._pool_mask)
        self._names = [self.policy.models[a] for a in arms]
        self._pool_arms = slice(None) if self._pool_mask.all() else arms  # a slice takes views of the rows

    # -- routing --------------------------------------------------------------------------------
    def context(self, prompt: str) -> Context:
        if not isinstance(prompt, str) or not prompt.strip():
            raise RoutingError("prompt must be a non-empty string")
        return self.featurizer.context(prompt)

    def eligible(self, options: RouteOptions, cost: np.ndarray | None) -> np.ndarray:
        """The mask over the policy's models allowed by one request: the pool's models, the listed
        ones, those with the required capabilities, those predicted (``cost``) to fit the cost cap."""
        if options.models is None and not options.require and options.max_cost_usd is None:
            return self._pool_mask
        mask = self._pool_mask.copy()
        if options.models is not None:
            unknown = [m for m in options.models if m not in self._arm or m not in self._caps]
            if unknown:
                raise RoutingError(f"unknown models: {', '.join(unknown)}; known: {', '.join(self._names)}")
            mask &= np.isin(self.policy.models, options.models)
        if options.require:
            need = set(options.require)
            mask &= np.array([need <= self._caps.get(m, set()) for m in self.policy.models])
            if not mask.any():
                raise RoutingError(f"no model in the pool has all of the capabilities {sorted(need)}")
        if options.max_cost_usd is not None:
            fits = mask & (cost <= options.max_cost_usd)
            if not fits.any():
                cheapest = int(np.argmin(np.where(mask, cost, np.inf)))
                raise RoutingError(
                    f"no eligible model is predicted to cost at most {options.max_cost_usd} USD "
                    f"(cheapest: {self.policy.models[cheapest]} at {float(cost[cheapest]):.6g} USD)"
                )
            mask = fits
        return mask

    def route(self, prompt: str, options: RouteOptions | None = None) -> Decision:
        """Choose a model for ``prompt``; the decision is logged and kept for its feedback."""
        out = self.route_many([prompt], [options or RouteOptions()])[0]
        if isinstance(out, RoutingError):
            raise out
        return out

    def route_many(self, prompts: list[str], options: list[RouteOptions]) -> list[Decision | RoutingError]:
        """Route several prompts at once (a single decision is a batch of one): one decision per prompt.

        A request the router cannot serve gets its :class:`RoutingError` in its slot instead of
        a decision, without failing the others. Features and the policy's probabilities are
        computed for the whole batch in one call; each decision is sampled from its own row.
        """
        out: list[Decision | RoutingError | None] = [None] * len(prompts)
        valid = []
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, str) and prompt.strip():
                valid.append(i)
            else:
                out[i] = RoutingError("prompt must be a non-empty string")
        if not valid:
            return out
        texts = [prompts[i] for i in valid]
        X = self.featurizer.transform_many(texts)
        tokens = np.array([self.featurizer.input_tokens(p) for p in texts])
        capped = any(options[i].max_cost_usd is not None for i in valid)
        cost = self.policy.cost_model.predict(X, tokens) if capped else None
        rows, masks, weights = [], [], []
        for j, i in enumerate(valid):
            opts = options[i]
            try:
                masks.append(self.eligible(opts, None if cost is None else cost[j]))
            except RoutingError as err:
                out[i] = err
                continue
            rows.append(j)
            weights.append(self.cost_weight if opts.cost_weight is None else opts.cost_weight)
        if not rows:
            return out
        s = self.policy.probabilities(X[rows], tokens[rows], np.stack(masks), np.array(weights), self.rng)
        picks = sample(s.probabilities, self.rng)
        models = self.policy.models
        version, policy_name, now = self.featurizer.version, self.policy.describe(), time.time()
        for r, (j, mask, cw, k) in enumerate(zip(rows, masks, weights, picks.tolist())):
            i = valid[j]
            if mask is self._pool_mask:
                idx, eligible = self._pool_arms, self._names
            else:
                idx = np.flatnonzero(mask)
                eligible = [models[a] for a in idx.tolist()]
            prompt = prompts[i]
            out[i] = Decision(
                decision_id=f"{self._ids.getrandbits(128):032x}",
                ts=now,
                model=models[k],
                arm=k,
                propensity=float(s.probabilities[r, k]),
                eligible=eligible,
                probabilities=s.probabilities[r, idx],
                pred_quality=s.quality[r, idx],
                pred_cost=s.cost[r, idx],
                cost_weight=cw,
                policy=policy_name,
                feature_version=version,
                context=Context(X[j], float(tokens[j])),
                prompt_hash=hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
                prompt=prompt if self.store_prompts else None,
            )
        for d in out:  # in request order
            if isinstance(d, Decision):
                self.remember(Pending(d.decision_id, d.model, d.arm, d.context))
                self.stats.decision(d.model)
                if self.sink is not None:
                    self.sink.decision(d)
        return out

    def remember(self, p: Pending) -> None:
        """Keep ``p`` in the bounded pending window (the oldest entry leaves when it is full)."""
        _keep(self.pending, p, self.max_pending)

    def recall(self, p: Pending) -> None:
        """Keep ``p``, read back from the log for late feedback, in a small cache of its own.

        Its next feedback then finds the signals and cost applied now without another lookup. The
        cache is separate from the pending window so that a sweep of late feedback cannot push the
        most recent decisions out of it (each recalled decision would evict one, which would turn late
        in its turn).
        """
        _keep(self.recalled, p, RECALLED)

    def held(self, decision_id: str) -> Pending | None:
        """The decision if it is in memory: in the pending window or among the recalled ones."""
        return self.pending.get(decision_id) or self.recalled.get(decision_id)

    # -- feedback -------------------------------------------------------------------------------
    def feedback(self, decision_id: str, feedback: Feedback) -> FeedbackResult:
        """Apply feedback to a pending decision's model and hand the record to the sink."""
        d = self.held(decision_id)
        if d is None:
            raise UnknownDecision(decision_id)
        result = self.apply(d, feedback)
        if self.sink is not None:
            self.sink.feedback(d, feedback, result)
        return result

    def apply(self, d: Pending, feedback: Feedback) -> FeedbackResult:
        """Learn from ``feedback`` about decision ``d``; returns what was applied (for the log)."""
        pairs = feedback.weighted_qualities(self.pool.signal_weights)
        cost = None
        if d.cost_usd is None:
            cost = feedback.cost(self.pool.spec(d.model)) if d.model in self._caps else feedback.cost_usd
        self.learn(d, pairs, cost)
        return FeedbackResult(d.decision_id, d.model, pairs, cost, d.quality)

    def learn(self, d: Pending, pairs: list[tuple[float, float]], cost: float | None,
              count_stats: bool = True) -> None:
        """Apply normalised ``(quality, weight)`` pairs and a first cost to ``d``'s model.

        The one place feedback reaches the policy: live feedback, late feedback and the replay of
        the log at start-up all come through here, in log order, so they build the same state.
        """
        for q, w in pairs:
            self.policy.update(d.context, d.arm, quality=q, weight=w)
        d.signals.extend(pairs)
        if cost is not None and d.cost_usd is None:
            self.policy.update(d.context, d.arm, cost_usd=cost)
            d.cost_usd = cost
        if count_stats:
            self.stats.feedback(d.model, pairs, cost)

    def restore(self, row: dict) -> Pending:
        """A logged decision (a ``decisions`` row) rebuilt for learning from late feedback."""
        if row["feature_version"] != self.featurizer.version:
            raise RoutingError(
                f"decision {row['decision_id']} was logged with features {row['feature_version']}, "
                f"this router uses {self.featurizer.version}"
            )
        if row["chosen"] not in self._arm:
            raise RoutingError(f"decision {row['decision_id']} chose {row['chosen']!r}, not in the policy's models")
        return Pending(
            row["decision_id"], row["chosen"], self._arm[row["chosen"]],
            Context(np.asarray(row["x"], dtype=float), float(row["input_tokens"])),
            cost_usd=row.get("applied_cost"),  # set when earlier feedback already gave the cost
        )


class ModelStats:
    """Per-model traffic and outcome counters for ``GET /models`` and the metrics endpoint."""

    def __init__(self, models):
        self.decisions = dict.fromkeys(models, 0)
        self.quality_sum = dict.fromkeys(models, 0.0)
        self.quality_weight = dict.fromkeys(models, 0.0)
        self.cost_sum = dict.fromkeys(models, 0.0)
        self.cost_n = dict.fromkeys(models, 0)

    def decision(self, model: str) -> None:
        self.decisions[model] = self.decisions.get(model, 0) + 1

    def feedback(self, model: str, pairs, cost: float | None) -> None:
        for q, w in pairs:
            self.quality_sum[model] = self.quality_sum.get(model, 0.0) + q * w
            self.quality_weight[model] = self.quality_weight.get(model, 0.0) + w
        if cost is not None:
            self.cost_sum[model] = self.cost_sum.get(model, 0.0) + cost
            self.cost_n[model] = self.cost_n.get(model, 0) + 1

    def table(self) -> list[dict]:
        total = sum(self.decisions.values())
        out = []
        for m, n in self.decisions.items():
            qw, cn = self.quality_weight.get(m, 0.0), self.cost_n.get(m, 0)
            out.append({
                "model": m,
                "decisions": n,
                "share": n / total if total else 0.0,
                "mean_quality": self.quality_sum[m] / qw if qw > 0 else None,
                "mean_cost_usd": self.cost_sum[m] / cn if cn else None,
                "observations": cn,
                "quality_weight": qw,
            })
        return out
