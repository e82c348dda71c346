"""The Router: eligibility, sampling and propensity, once, for the server and the simulator alike.

``route_many(prompts, options)``: features -> each request's eligible models -> one
``Policy.probabilities`` call for the batch -> one model sampled per row from that exact vector ->
:class:`~banditroute.core.types.Decision` (a single decision is a batch of one).
``apply(pending, feedback)``: signals -> qualities in [0, 1] (:mod:`banditroute.core.reward`) ->
``Policy.update`` for the decision's model -> the :class:`~banditroute.core.types.FeedbackResult`
the log records. Keeping decisions until their feedback, and logging, belong to the service.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from itertools import accumulate
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from banditroute.config import Fraction, NonNegFloat, PositiveFloat, Settings
from banditroute.core.budget import Budgets, Pacer
from banditroute.core.features import Featurizer
from banditroute.core.ids import new_decision_id
from banditroute.core.policies import Policy, make_policy
from banditroute.core.preference import preference_weights, price_spread
from banditroute.core.reward import Feedback, fingerprint
from banditroute.core.rules import Rules, narrow
from banditroute.core.types import Context, Decision, FeedbackResult, Pending
from banditroute.errors import BudgetExhausted, RoutingError, ValidationFailed

METADATA_MAX_DEPTH = 8  # levels of nested objects and arrays below the metadata object itself
METADATA_MAX_BYTES = 16_384  # as compact JSON, which is how the log stores it


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value (0 for a scalar), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, level = stack.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, level + 1))
                deepest = max(deepest, level + 1)
                if deepest > METADATA_MAX_DEPTH:
                    return deepest
    return deepest


class RouteOptions(BaseModel):
    """Per-request options of ``/route``."""

    model_config = ConfigDict(extra="forbid", strict=True)  # no false read as 0, no "1" as 1

    models: list[str] | None = Field(default=None, min_length=1)
    cost_weight: NonNegFloat | None = None
    cost_preference: Fraction | None = Field(default=None, description="instead of cost_weight: 0 quality only, 1 "
                                             "the cheapest, measured against this request's price spread")
    max_cost_usd: PositiveFloat | None = None
    require: list[str] = Field(default_factory=list)
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, Any] | None = Field(
        default=None, description=f"free-form JSON kept in the log: at most {METADATA_MAX_DEPTH} levels of nesting "
                                  f"and {METADATA_MAX_BYTES} bytes as JSON")
    # The request's bearer key, for rules that match on it: set by the HTTP layer, never read from a
    # body. A plain slot, read and written past pydantic's __getattr__ and __setattr__: a pydantic
    # private attribute is initialised on every validation, and either hook costs more than
    # validating the rest of the body.
    __slots__ = ("_api_key",)

    @property
    def api_key(self) -> str | None:
        try:
            return object.__getattribute__(self, "_api_key")
        except AttributeError:  # never set
            return None

    def set_api_key(self, key: str | None) -> None:
        object.__setattr__(self, "_api_key", key)

    def __copy__(self):
        new = super().__copy__()  # pydantic copies its fields, not the slot
        new.set_api_key(self.api_key)
        return new

    def __deepcopy__(self, memo: dict | None = None):
        new = super().__deepcopy__(memo)
        new.set_api_key(self.api_key)
        return new

    @property
    def policy_label(self) -> str | None:
        """The name its decision logs instead of the policy's (a gateway call's; none here)."""
        return None

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, metadata: dict | None) -> dict | None:
        if metadata is None:
            return None
        if _depth(metadata) > METADATA_MAX_DEPTH:
            raise ValueError(f"metadata is nested deeper than {METADATA_MAX_DEPTH} levels")
        size = len(json.dumps(metadata, separators=(",", ":")).encode())
        if size > METADATA_MAX_BYTES:
            raise ValueError(f"metadata takes {size} bytes as JSON, more than the limit of {METADATA_MAX_BYTES}")
        return metadata


class RouteRequest(RouteOptions):
    """A prompt and its routing options (``POST /route``)."""

    prompt: str = Field(min_length=1, description="the prompt to route (stored only as a hash by default)")


class GatewayRoute(RouteRequest):
    """A request routed by the gateway; ``direct``: the client named the model (logged as policy ``direct``,
    so that replay can tell explicit calls from routed ones); ``label``: another name to log as the policy
    (an ensemble's member calls: ``ensemble:NAME``)."""

    direct: bool = False
    label: str | None = None

    @property
    def policy_label(self) -> str | None:
        return "direct" if self.direct else self.label


def _hmac_pads(key: bytes) -> tuple:
    """SHA-256 states that have absorbed ``key XOR ipad`` and ``key XOR opad``, so that
    ``HMAC(key, m) = H(opad_state + H(ipad_state + m))`` (RFC 2104, section 2) costs two state copies
    rather than the two extra compressions :func:`hmac.new` spends on the key for every prompt."""
    block = hashlib.sha256().block_size
    key = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
    return hashlib.sha256(bytes(b ^ 0x36 for b in key)), hashlib.sha256(bytes(b ^ 0x5C for b in key))


def sample(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One column index per row, drawn from that row's probabilities (inverse CDF; zero-probability
    columns are never drawn).

    A single row (the server's usual batch) takes the same draw and the same floating-point sums and
    comparisons in Python, where numpy's fixed cost per call would be most of the time.
    """
    if len(probabilities) == 1:
        cdf = list(accumulate(probabilities[0].tolist()))
        u = rng.random() * cdf[-1]
        return np.array([min(sum(c <= u for c in cdf), len(cdf) - 1)])
    cdf = np.cumsum(probabilities, axis=1)
    u = rng.random(len(probabilities)) * cdf[:, -1]
    return np.minimum((cdf <= u[:, None]).sum(axis=1), probabilities.shape[1] - 1)


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
    store_prompts
        Keep the prompt text in decisions (and logs); otherwise only its hash.
    hash_key
        The secret of the prompt hash, HMAC-SHA256(key, prompt) (RFC 2104): without the key nobody can
        confirm a guessed prompt against the log. ``None`` (offline tools, whose prompts come from
        public tables) hashes with plain SHA-256.
    budgets
        The tenants' budgets and their pacing; by default ``Budgets(pool.budgets)`` on the wall clock.
    """

    def __init__(self, pool: Settings, policy: Policy | None = None, featurizer: Featurizer | None = None,
                 seed: int | None = None, store_prompts: bool = False, hash_key: bytes | None = None,
                 budgets: Budgets | None = None):
        self.pool = pool
        self.featurizer = featurizer or Featurizer()
        if policy is None:
            prices = [(m.input_price_per_mtok, m.output_price_per_mtok) for m in pool.models]
            policy = make_policy(pool.policy.name, pool.names, self.featurizer.dim, prices, pool.policy)
        self._check_policy(policy)
        self.policy = policy
        self.cost_weight = pool.policy.cost_weight
        self.cost_preference = pool.policy.cost_preference  # when set, the default instead of cost_weight
        self.rng = np.random.default_rng(seed)
        self._ids = random.Random(seed if seed is not None else int.from_bytes(np.random.bytes(16), "little"))
        self.store_prompts = store_prompts
        self.hash_key = hash_key
        self._hash_pads = None if hash_key is None else _hmac_pads(hash_key)
        self._caps = {m.name: set(m.capabilities) for m in pool.models}
        self.rules = Rules(pool.rules, semantic_routes=pool.semantic_routes)
        self.budgets = budgets if budgets is not None else Budgets(pool.budgets)
        self._index_arms()

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
            listed = np.zeros_like(mask)
            listed[[self._arm[m] for m in options.models]] = True
            mask &= listed
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

    def _refuses(self, pacer: Pacer) -> bool:
        return self.budgets.configs[pacer.budget].when_exhausted == "refuse"

    def _within_budget(self, pacer: Pacer, mask: np.ndarray, cost: np.ndarray, now: float) -> np.ndarray:
        """``mask`` narrowed to the models ``pacer``'s budget can pay for at the budget's ``cost``
        (:meth:`Pacer.affordable`); when it is exhausted, the cheapest eligible model, or
        :class:`BudgetExhausted` if the budget refuses."""
        out = pacer.affordable(now, cost, mask, self.policy.current_floor())
        if out is not None:
            return out
        pacer.exhausted += 1
        cheapest = int(np.argmin(np.where(mask, cost, np.inf)))
        if self._refuses(pacer):
            raise BudgetExhausted(
                f"budget {pacer.budget!r} of tenant {pacer.tenant!r} is spent: {pacer.left:.6g} of {pacer.amount:g} USD "
                f"left, the cheapest eligible model ({self.policy.models[cheapest]}) is predicted to cost "
                f"{float(cost[cheapest]):.6g} USD", retry_after=max(1, math.ceil(pacer.end - now)))
        out = np.zeros_like(mask)
        out[cheapest] = True
        return out

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
        budgets = self.budgets
        now = budgets.clock() if budgets else 0.0
        capped = budgets or any(options[i].max_cost_usd is not None for i in valid)
        cost = self.policy.cost_model.predict(X, tokens) if capped else None
        rows, masks, weights, matched, prefs, pacers = [], [], [], [], [], []
        for j, i in enumerate(valid):
            opts = options[i]
            rule = self.rules.match(prompts[i], opts.user, opts.metadata, opts.api_key) if self.rules else None
            try:
                if rule is not None:
                    try:
                        opts = narrow(rule, opts)
                    except ValueError as err:
                        raise RoutingError(str(err)) from None
                mask = self.eligible(opts, None if cost is None else cost[j])
                pacer = budgets.pacer(opts, None if rule is None else rule.budget, now) if budgets else None
                if pacer is not None:
                    mask = self._within_budget(pacer, mask, cost[j], now)
            except RoutingError as err:
                out[i] = err
                continue
            rows.append(j)
            masks.append(mask)
            pacers.append(pacer)
            matched.append(None if rule is None else rule.name)
            explicit = opts.cost_weight is not None or opts.cost_preference is not None
            pref = None if opts.cost_weight is not None else (
                opts.cost_preference if opts.cost_preference is not None else self.cost_preference)
            prefs.append(pref)
            weights.append(opts.cost_weight if opts.cost_weight is not None else
                           self.cost_weight if pref is None else np.nan)
            if pacer is not None and pacer.pacing and not explicit:  # the budget's weight replaces the default
                prefs[-1], weights[-1] = None, 0.0
        if not rows:
            return out
        by_pref = [r for r, w in enumerate(weights) if math.isnan(w)]  # weighted by a cost preference
        weights = np.array(weights)
        if by_pref:
            if cost is None:
                cost = self.policy.cost_model.predict(X, tokens)
            weights[by_pref] = preference_weights(
                np.array([prefs[r] for r in by_pref]), cost[[rows[r] for r in by_pref]],
                np.stack([masks[r] for r in by_pref]), self.pool.policy.preference_scale)
        budgeted = [r for r, pacer in enumerate(pacers) if pacer is not None]
        spread_of = {}
        if budgeted:
            spreads = price_spread(cost[[rows[r] for r in budgeted]], np.stack([masks[r] for r in budgeted]))
            spread_of = dict(zip(budgeted, spreads.tolist()))
        paced = [r for r in budgeted if pacers[r].pacing]
        if paced:  # the higher of the request's weight and its budget's
            scale = self.pool.policy.preference_scale
            weights[paced] = np.maximum(weights[paced], [pacers[r].cost_weight(spread_of[r], scale) for r in paced])
        every_model = isinstance(self._pool_arms, slice) and all(m is self._pool_mask for m in masks)
        eligible = None if every_model else np.stack(masks)
        s = self.policy.probabilities(X[rows], tokens[rows], eligible, weights, self.rng)
        picks = sample(s.probabilities, self.rng)
        models = self.policy.models
        version, policy_name, ts = self.featurizer.version, self.policy.describe(), time.time()
        labels = [options[valid[j]].policy_label for j in rows]
        for r, (j, mask, cw, k, label, rule, pacer) in enumerate(zip(rows, masks, weights.tolist(),
                                                                               picks.tolist(), labels, matched, pacers)):
            i = valid[j]
            if pacer is not None and pacer.left < cost[j, k] * pacer.calibration and self._refuses(pacer):
                # an earlier request of the same batch took what this one was allowed
                pacer.exhausted += 1
                out[i] = BudgetExhausted(f"budget {pacer.budget!r} of tenant {pacer.tenant!r} is spent",
                                         retry_after=max(1, math.ceil(pacer.end - now)))
                continue
            if mask is self._pool_mask:
                idx, eligible = self._pool_arms, self._names
            else:
                idx = np.flatnonzero(mask)
                eligible = [models[a] for a in idx.tolist()]
            prompt = prompts[i]
            d = out[i] = Decision(
                decision_id=new_decision_id(ts, self._ids),
                ts=ts,
                model=models[k],
                arm=k,
                propensity=float(s.probabilities[r, k]),
                eligible=eligible,
                probabilities=s.probabilities[r, idx],
                pred_quality=s.quality[r, idx],
                pred_cost=s.cost[r, idx],
                cost_weight=cw,
                policy=label or policy_name,
                feature_version=version,
                context=Context(X[j], float(tokens[j])),
                prompt_hash=self.prompt_hash(prompt),
                prompt=prompt if self.store_prompts else None,
                rule=rule,
            )
            if pacer is not None:
                d.charged = float(cost[j, k])
                pacer.charge(now, float(s.probabilities[r] @ cost[j]), d.charged, cw, spread_of[r])
                d.budget, d.tenant, d.pacer = pacer.budget, pacer.tenant, pacer
                d.pace = pacer.preference if pacer.pacing else None
        return out

    def fallback(self, d: Decision, exclude: set[str]) -> Decision | None:
        """The decision that takes over ``d``'s call after its model failed: a model sampled from ``d``'s
        probabilities renormalised over its eligible models not in ``exclude`` (uniform over them when
        ``d`` gave them no probability at all, as a fixed policy does), with that exact propensity, so
        the fallback is a logged decision like any other; None when none is left.
        """
        keep = [i for i, m in enumerate(d.eligible) if m not in exclude]
        if not keep:
            return None
        p = d.probabilities[keep]
        total = p.sum()
        p = p / total if total > 0 else np.full(len(keep), 1.0 / len(keep))
        k = int(sample(p[None, :], self.rng)[0])
        model = d.eligible[keep[k]]
        now = time.time()
        out = Decision(decision_id=new_decision_id(now, self._ids), ts=now, model=model,
                       arm=self._arm[model], propensity=float(p[k]), eligible=[d.eligible[i] for i in keep],
                       probabilities=p, pred_quality=d.pred_quality[keep], pred_cost=d.pred_cost[keep],
                       cost_weight=d.cost_weight, policy=d.policy, feature_version=d.feature_version,
                       context=d.context, prompt_hash=d.prompt_hash, prompt=d.prompt, rule=d.rule,
                       budget=d.budget, tenant=d.tenant, pace=d.pace, pacer=d.pacer)
        if d.pacer is not None:  # charged like a routed decision, without moving the multiplier
            self.refund(d)
            out.charged = float(d.pred_cost[keep[k]])
            d.pacer.spent += out.charged
        return out

    @staticmethod
    def refund(d: Decision) -> None:
        """Take back what ``d`` was charged to its budget: its call failed and cost nothing."""
        if d.pacer is not None:
            d.pacer.refund(d.charged)
            d.charged = 0.0

    def prompt_hash(self, prompt: str) -> str:
        """The prompt's hash as logged: HMAC-SHA256 under :attr:`hash_key`, or SHA-256 without one (hex)."""
        data = prompt.encode("utf-8")
        if self._hash_pads is None:
            return hashlib.sha256(data).hexdigest()
        inner, outer = (pad.copy() for pad in self._hash_pads)
        inner.update(data)
        outer.update(inner.digest())
        return outer.hexdigest()

    # -- feedback -------------------------------------------------------------------------------
    def check_feedback(self, d: Pending, feedback: Feedback) -> None:
        """Raise :class:`ValidationFailed` (422) when ``feedback`` breaks the pool's
        :class:`~banditroute.config.FeedbackLimits` for decision ``d``: tokens, cost, or the decision's
        total signal weight."""
        limits = self.pool.feedback
        spec = self.pool.spec(d.model) if d.model in self._caps else None
        problems = [{"field": f, "message": f"{v} is more than the limit of {limits.max_tokens} tokens per call "
                                            "(feedback.max_tokens)"}
                    for f, v in (("input_tokens", feedback.input_tokens), ("output_tokens", feedback.output_tokens))
                    if v is not None and v > limits.max_tokens]
        top = limits.max_cost_usd(spec)
        if feedback.cost_usd is not None and feedback.cost_usd > top:
            problems.append({"field": "cost_usd", "message": f"{feedback.cost_usd:g} USD is more than {top:g} USD, "
                             f"the most one call of {d.model} can cost (feedback.cost_tolerance times the list price "
                             "of feedback.max_tokens)"})
        added = sum(w for _, w in feedback.weighted_qualities(self.pool.signal_weights))
        had = sum(w for _, w in d.signals)
        if added and had + added > limits.max_weight_per_decision + 1e-9:
            problems.append({"field": "signals", "message": f"decision {d.decision_id} has signals of weight {had:g}; "
                             f"{added:g} more exceeds feedback.max_weight_per_decision ({limits.max_weight_per_decision:g})"})
        if problems:
            raise ValidationFailed("; ".join(f"{p['field']}: {p['message']}" for p in problems), problems)

    def apply(self, d: Pending, feedback: Feedback) -> FeedbackResult:
        """Learn from ``feedback`` about decision ``d``; returns what was applied (for the log)."""
        pairs = feedback.weighted_qualities(self.pool.signal_weights)
        cost = None
        if d.cost_usd is None:
            cost = feedback.cost(self.pool.spec(d.model)) if d.model in self._caps else feedback.cost_usd
        self.learn(d, pairs, cost)
        return FeedbackResult(d.decision_id, d.model, pairs, cost, d.quality)

    def learn(self, d: Pending, pairs: list[tuple[float, float]], cost: float | None) -> None:
        """Apply normalised ``(quality, weight)`` pairs and a first cost to ``d``'s model.

        The one place feedback reaches the policy: live feedback, late feedback and the replay of
        the log at start-up all come through here, in log order, so they build the same state.
        """
        for q, w in pairs:
            self.policy.update(d.context, d.arm, quality=q, weight=w, propensity=d.propensity)
        d.signals.extend(pairs)
        if cost is not None and d.cost_usd is None:
            self.policy.update(d.context, d.arm, cost_usd=cost)
            d.cost_usd = cost
            if d.pacer is not None:  # the budget was charged the predicted cost
                d.pacer.report(d.charged, cost)

    def restore(self, row: dict) -> Pending:
        """A logged decision (a ``decisions`` row) rebuilt for learning from late feedback."""
        if row["feature_version"] != self.featurizer.version:
            raise RoutingError(
                f"decision {row['decision_id']} was logged with features {row['feature_version']}, "
                f"this router uses {self.featurizer.version}"
            )
        d = self.pending_from_row(row)
        if d is None:
            raise RoutingError(f"decision {row['decision_id']} chose {row['chosen']!r}, not in the policy's models")
        d.cost_usd = row.get("applied_cost")  # set when earlier feedback already gave the cost
        pacer = self.budgets.find(row.get("budget"), row.get("tenant"), row["ts"].timestamp()) if self.budgets else None
        if pacer is not None and d.cost_usd is None:
            d.pacer, d.charged = pacer, float(row["charged"])
        d.signals.extend(zip(row.get("applied_qualities") or (), row.get("applied_weights") or ()))
        if row.get("applied_keys"):
            d.keys = {k["key"]: fingerprint(k["qualities"], k["weights"], k["reported"]) for k in row["applied_keys"]}
        return d

    def pending_from_row(self, row: dict) -> Pending | None:
        """What learning needs of a logged decision (``decision_id``, ``chosen``, ``x``, ``input_tokens``),
        or None when its model is not one of the policy's."""
        arm = self._arm.get(row["chosen"])
        if arm is None:
            return None
        return Pending(row["decision_id"], row["chosen"], arm,
                       Context(np.asarray(row["x"], dtype=float), float(row["input_tokens"])),
                       propensity=row.get("propensity"))
