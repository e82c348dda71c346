"""The routing service without HTTP: the router, the pending decisions, the log, snapshots, recovery
and policy swaps. The server drives it through :meth:`Service.route` (micro-batched) and
:meth:`Service.feedback`; the simulator through the synchronous :meth:`Service.route_many`
and :meth:`Service.record_feedback` the async ones are built on.

Order of events for feedback (all on the event loop, so the policy learns in log order):
``router.apply`` -> ``store.add_feedback`` (gets the next ``seq``) -> await the batch commit ->
acknowledge. The policy state after feedback ``seq = S`` is therefore a function of the logged
feedback rows ``1..S``; a snapshot written together with ``S`` plus the replay of rows after ``S``
rebuilds exactly the state a crash interrupted (DESIGN.md, decision 6).

Feedback that the policy learned but whose batch never committed (a crash in between) was never
acknowledged and is not in the log; the recovered state does not contain it either.

Storage faults fail closed: when a commit fails or times out, the service answers ``/route`` and
``/feedback`` with 503 (:class:`~banditroute.errors.Unavailable`) and retries the log every
``storage.retry_interval_s``; once a write succeeds it throws away what it learned in memory and
rebuilds everything from the snapshot and the log (:meth:`Service.recover`), exactly as after a
crash, then answers again. So a fault can lose unacknowledged work, never put the policy and the
log out of step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from banditroute.config import Settings
from banditroute.core.features import Featurizer
from banditroute.core.policies import Policy, make_policy
from banditroute.core.reward import Feedback, fingerprint
from banditroute.core.router import Router, RouteRequest
from banditroute.core.state import StateError, dumps_state, load_state, loads_state, transfer, write_atomic
from banditroute.core.stats import ModelStats
from banditroute.core.types import Decision, Pending
from banditroute.errors import IdempotencyConflict, RoutingError, Unavailable, UnknownDecision, ValidationFailed
from banditroute.log.schema import (
    BUDGET_STATE_SQL,
    MODEL_COSTS_SQL,
    QUALITY_WEIGHT_SQL,
    QUALITY_WEIGHTED_SQL,
    feedback_row,
)
from banditroute.log.store import StorageError, Store, one_line, prompt_hash_key
from banditroute.service.batcher import MicroBatcher
from banditroute.service.pending import LateLookups, PendingDecisions
from banditroute.service.quotas import Admission, Quotas
from banditroute.service.retention import Retention

log = logging.getLogger("banditroute")


def _predicted_costs(d: Decision) -> tuple[float, float]:
    """The predicted cost of ``d``'s model and of its priciest eligible model, as Python floats (cheaper
    than numpy's calls on a handful of numbers)."""
    costs = d.pred_cost.tolist()
    return costs[d.eligible.index(d.model)], max(costs)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@dataclass(frozen=True, slots=True)
class FeedbackAck:
    """What the service tells the client about one feedback (the fields of ``FeedbackResponse``)."""

    decision_id: str
    model: str
    applied_signals: int
    quality: float | None
    cost_usd: float | None
    duplicate: bool
    late: bool


class Service:
    """Everything the HTTP handlers call; usable directly in tests and scripts."""

    def __init__(self, config: Settings, store: Store, seed: int | None = None, router: Router | None = None):
        self.config = config
        self.store = store
        self.snapshot_path = Path(str(store.path) + ".snapshot") if store.path != ":memory:" else None
        self._features_from_log = False  # set by _featurizer: the features are the log's, not the default's
        self.router = router or Router(config, seed=seed, featurizer=self._featurizer(),
                                       store_prompts=config.storage.store_prompts,
                                       hash_key=prompt_hash_key(store.path, config.storage.prompt_hash_key))
        self.pending = PendingDecisions(config.max_pending)
        self.quotas = Quotas(config.rate_limits)
        self.stats = ModelStats(config.names)
        self.feedback_since_snapshot = 0
        self.snapshot_seq = 0
        self._snapshotting: asyncio.Task | None = None
        self._learning = asyncio.Lock()  # held while feedback is applied and queued, and by policy swaps
        self.batcher = MicroBatcher(lambda requests: self.route_many(requests))
        self.lookups = LateLookups(lambda ids: self.store.decisions(ids))
        self.retention = Retention(store, config.storage.retention_days)
        self._commit_future: concurrent.futures.Future | None = None  # the writer's, and its loop-side waiter
        self._commit_waiter: asyncio.Future | None = None
        self.unavailable: str | None = None  # why requests are refused (the log is failing), or None
        self.outages = 0  # times the service stopped answering because of the log
        self._resuming: asyncio.Task | None = None

    # -- start-up ----------------------------------------------------------------------------------
    def _featurizer(self) -> Featurizer:
        """The features this deployment routes with (``policy.features``).

        Left unset, they are those of the log's last decision: the log holds feature vectors, and the
        state is rebuilt from them, so a deployment whose log was written before an upgrade changed
        the default features goes on with the features its log and snapshot were learned with
        (instead of failing to rebuild its state from vectors of another length). A new log takes
        the warm start's features, and without one this installation's default. ``latest`` forces
        the default and ``vN-...`` a given version (feedback on decisions logged with other features
        is then not learned, see :meth:`replay_into`).
        """
        wanted, default = self.config.policy.features, Featurizer()
        source = "policy.features"
        if wanted is None:
            rows = self.store.query("SELECT feature_version FROM decisions ORDER BY ts DESC LIMIT 1").to_pylist()
            wanted, source = (rows[0]["feature_version"], "the log") if rows else (None, "")
            self._features_from_log = wanted is not None
        if wanted is None and self.config.policy.warm_start is not None:
            try:
                wanted, source = load_state(self.config.policy.warm_start).feature_version, "the warm start"
            except StateError:  # reported with its reason when the warm start is loaded
                wanted = None
        if wanted in (None, "latest", default.version):
            return default
        try:
            featurizer = Featurizer.from_version(wanted)
        except ValueError as err:
            raise StateError(f"{source}: {err}") from None
        if source == "policy.features":
            log.info("routing with features %s (policy.features)", featurizer.version)
            return featurizer
        log.warning("routing with features %s (%s), not this version's default %s: set policy.features = "
                    "\"latest\" to switch (feedback on decisions logged with other features is then not "
                    "learned), or start a new log", featurizer.version, source, default.version)
        return featurizer

    def recover(self) -> dict:
        """Load the snapshot and replay later feedback from the log; returns what it did."""
        t0 = time.perf_counter()
        self.pending = PendingDecisions(self.config.max_pending)
        self.stats.reset()
        self.feedback_since_snapshot = 0
        settings = self._last_policy_event()
        policy, seq = self._load_snapshot(settings.get("policy", self.config.policy.name), settings)
        if policy is None:
            policy = self._fresh_policy(settings.get("policy", self.config.policy.name), strict=True)
        self.router.set_policy(policy)
        self._apply_settings(settings)
        self._warn_overrides(settings)
        replayed = self.replay_into(self.router, seq)
        self.snapshot_seq = seq
        self._load_stats()
        self._restore_budgets()
        info = {"snapshot_seq": seq, "replayed": replayed, "seconds": round(time.perf_counter() - t0, 3),
                "policy": self.router.policy.describe()}
        log.info("recovered: %s", info)
        return info

    def _fresh_policy(self, name: str, strict: bool = False) -> Policy:
        """A new policy before any feedback of the log: its priors, or the configured warm start.

        A warm start that does not fit the policy fails the start-up (``strict``); a policy swap goes
        on from the priors, with a warning. So does a warm start learned with other features than a
        log's that the service follows (:meth:`_featurizer`): after an upgrade that changed the default
        features and rebuilt the bundled warm start with them, a deployment with an older log goes on
        from its log.
        """
        prices = [(m.input_price_per_mtok, m.output_price_per_mtok) for m in self.config.models]
        policy = make_policy(name, self.config.names, self.router.featurizer.dim, prices, self.config.policy)
        path = self.config.policy.warm_start
        if path is not None:
            policy.feature_version = self.router.featurizer.version
            try:
                state = load_state(path)
                if self._features_from_log and state.feature_version != policy.feature_version:
                    log.warning("warm start %s was learned with features %s, this deployment routes with its "
                                "log's (%s): the policy starts from its priors and the log", path,
                                state.feature_version, policy.feature_version)
                    return policy
                copied = transfer(state, policy)
            except StateError as err:
                if strict:
                    raise StateError(f"warm start {path}: {err}") from None
                log.warning("warm start %s not used for %s: %s", path, name, err)
            else:
                log.info("warm start %s: %d of %d models (%s)", path, len(copied), len(policy.models),
                         ", ".join(copied))
        return policy

    def _load_snapshot(self, name: str, settings: dict) -> tuple[Policy | None, int]:
        """The snapshot's policy and the feedback position it covers, if it is the policy this configuration
        (and the last ``PUT /policy``, ``settings``) asks for: same features, policy, models and settings
        (an upgrade that changes a default, or an edited ``[policy]``, rebuilds the state from the log
        under the new settings instead of keeping the old ones)."""
        if self.snapshot_path is None or not self.snapshot_path.exists():
            return None, 0
        try:
            header, policy = loads_state(self.snapshot_path.read_bytes(), str(self.snapshot_path))
        except ValueError as err:
            log.warning("ignoring snapshot (the state is rebuilt from the log): %s", err)
            return None, 0
        usable = (header.get("feature_version") == self.router.featurizer.version
                  and header.get("policy") == name and set(self.config.names) <= set(policy.models)
                  and header.get("seq", 0) <= self.store.seq)
        if not usable:
            log.warning("snapshot %s does not match the configuration; rebuilding from the log", self.snapshot_path)
            return None, 0
        configured = make_policy(name, policy.models, policy.dim, None, self.config.policy).params()
        mine = policy.params()
        put = {k for k in ("exploration", "floor") if settings.get(k) is not None}  # applied after loading
        changed = [f"{k} {mine.get(k)} -> {v}" for k, v in configured.items()
                   if k != "prices" and k not in put and mine.get(k) != v]
        if changed:
            log.warning("snapshot %s was taken with other policy settings (%s); rebuilding from the log",
                        self.snapshot_path, ", ".join(changed))
            return None, 0
        return policy, int(header["seq"])

    def _last_policy_event(self) -> dict:
        """The settings of the last ``PUT /policy`` (the events table also records storage incidents)."""
        t = self.store.query("SELECT event FROM events ORDER BY seq DESC, ts DESC")
        for text in t.column(0).to_pylist():
            event = json.loads(text)
            if "policy" in event:
                return event
        return {}

    def _apply_settings(self, settings: dict) -> None:
        if settings.get("cost_weight") is not None:
            self.router.cost_weight = float(settings["cost_weight"])
        if "cost_preference" in settings:  # a PUT of either knob logs both: null means the weight is in force
            self.router.cost_preference = settings["cost_preference"]
        pol = self.router.policy
        if settings.get("exploration") is not None and hasattr(pol, "exploration"):
            pol.exploration = float(settings["exploration"])
        if settings.get("floor") is not None:
            pol.floor = float(settings["floor"])

    def _warn_overrides(self, settings: dict) -> None:
        """Say so when a ``PUT /policy`` change kept in the log overrides the configuration at start."""
        configured = self.config.policy
        changed = [f"{key} {configured_value} -> {settings[key]}"
                   for key, configured_value in (("policy", configured.name), ("cost_weight", configured.cost_weight),
                                                 ("cost_preference", configured.cost_preference),
                                                 ("exploration", configured.exploration), ("floor", configured.floor))
                   if settings.get(key) is not None and settings[key] != configured_value]
        if changed:
            log.warning("PUT /policy changes in the log override the configuration: %s", ", ".join(changed))

    def replay_into(self, router: Router, after_seq: int, until_seq: int | None = None) -> int:
        """Feed logged feedback with ``after_seq < seq <= until_seq`` to ``router``'s policy."""
        n = other = 0
        version = router.featurizer.version
        for row in self.store.feedback_since(after_seq):
            if until_seq is not None and row["seq"] > until_seq:
                break
            if row["feature_version"] != version:  # vectors of another layout (policy.features changed)
                other += 1
                continue
            d = router.pending_from_row(row)
            if d is None:  # a model no longer in the policy
                continue
            router.learn(d, list(zip(row["qualities"], row["weights"])), row["cost_usd"])
            n += 1
        if other:
            log.warning("%d feedbacks on decisions logged with features other than %s were not learned", other, version)
        return n

    def _restore_budgets(self) -> None:
        """Each tenant's spend in the current period and its pacing, from the log."""
        budgets = self.router.budgets
        if not budgets:
            return
        now, rows = budgets.clock(), []
        for config in budgets.order:
            start, _ = budgets.bounds(config, now)
            previous, _ = budgets.bounds(config, start - 1.0)
            rows += self.store.query(BUDGET_STATE_SQL, {"budget": config.name, "start": _utc(start),
                                                        "previous": _utc(previous)}).to_pylist()
        budgets.restore(rows, now)

    def _load_stats(self) -> None:
        stats = self.stats
        for r in self.store.query(MODEL_COSTS_SQL).to_pylist():
            stats.decisions[r["chosen"]] = int(r["n"])
            stats.predicted_cost[r["chosen"]] = float(r["predicted"] or 0.0)
            stats.priciest_cost[r["chosen"]] = float(r["priciest"] or 0.0)
        rows = self.store.query(
            f"SELECT d.chosen, sum({QUALITY_WEIGHTED_SQL}) AS qw, sum({QUALITY_WEIGHT_SQL}) AS w, "
            "sum(f.cost_usd) AS c, count(f.cost_usd) AS cn FROM feedback f JOIN decisions d USING (decision_id) "
            "GROUP BY d.chosen"
        ).to_pylist()
        for r in rows:
            m = r["chosen"]
            stats.quality_sum[m] = float(r["qw"] or 0.0)
            stats.quality_weight[m] = float(r["w"] or 0.0)
            stats.cost_sum[m] = float(r["c"] or 0.0)
            stats.cost_n[m] = int(r["cn"] or 0)

    # -- storage faults ------------------------------------------------------------------------------
    def watch_storage(self) -> None:
        """Hear of failed commits on the running event loop (the server calls this at start)."""
        loop = asyncio.get_running_loop()
        self.store.on_failure = lambda err: loop.call_soon_threadsafe(self.storage_failed, str(err))

    def check_available(self) -> None:
        """Raise :class:`Unavailable` while the log is failing."""
        if self.unavailable is not None:
            raise Unavailable(f"the decision log is not accepting writes ({self.unavailable}); retry later",
                              retry_after=math.ceil(self.config.storage.retry_interval_s))

    def unreadable(self, err: Exception, what: str = "read") -> Unavailable:
        """The 503 for a read (or another change, ``what``) of the log that failed (the log is being
        opened again after a fault, or the disk fails): what the client asked about may well be in the
        log, so it should retry, not give up."""
        log.warning("a %s of the decision log failed: %s", what, err)
        return Unavailable(f"the decision log cannot be {what} right now ({one_line(err)}); retry later",
                           retry_after=math.ceil(self.config.storage.retry_interval_s))

    def storage_failed(self, reason: str) -> None:
        """Stop answering, and keep trying the log until it takes writes; then rebuild and answer again."""
        if self.unavailable is None:
            self.outages += 1
            log.error("refusing requests until the log accepts writes again: %s", reason)
        self.unavailable = reason
        if self._resuming is None:
            self._resuming = asyncio.ensure_future(self._resume())

    async def _resume(self) -> None:
        """Probe the log every ``retry_interval_s``; once it takes a write, rebuild the state from it. A
        rebuild that fails (the log fails again while it is read) waits for the next probe, so the
        service never stays down after the log has recovered."""
        try:
            while True:
                await asyncio.sleep(self.config.storage.retry_interval_s)
                if not await asyncio.wrap_future(self.store.probe()):
                    continue
                async with self._learning:
                    if self._snapshotting is not None:  # its flush failed or will: let it finish
                        await asyncio.shield(self._snapshotting)
                    try:
                        info = self.recover()  # what was learned but not logged is thrown away here
                    except Exception as err:  # noqa: BLE001 - keep trying, as for a failed probe
                        log.error("the log takes writes again but the state could not be rebuilt from it: %s; "
                                  "retrying", err)
                        continue
                break
            self.unavailable = None
            log.warning("the log accepts writes again; state rebuilt from it (%d feedback replayed)", info["replayed"])
        finally:
            self._resuming = None

    # -- requests ----------------------------------------------------------------------------------
    def route_many(self, requests: list[RouteRequest]) -> list[Decision | RoutingError]:
        """Route, remember and log a batch of requests (a :class:`RouteRequest` is options + prompt)."""
        out = self.router.route_many([r.prompt for r in requests], requests)
        logged = []
        for i, (r, d) in enumerate(zip(requests, out)):
            if isinstance(d, Decision):
                try:
                    metadata = json.dumps(r.metadata, allow_nan=False) if r.metadata is not None else None
                except (TypeError, ValueError, RecursionError) as err:
                    out[i] = RoutingError(f"metadata cannot be stored as JSON: {err}")
                    continue
                logged.append((d, r.user, metadata))
        self._keep(logged)
        return out

    def _keep(self, logged: list[tuple[Decision, str | None, str | None]], fallback: bool = False) -> None:
        """Hold ``(decision, user, metadata as JSON)`` items for their feedback, count and log them. A
        ``fallback`` serves the request of the decision it replaces: its priciest model's cost is counted
        once, with that decision."""
        for d, _, _ in logged:
            self.pending.remember(d.pending())
            chosen, priciest = _predicted_costs(d)
            self.stats.decision(d.model, chosen, 0.0 if fallback else priciest)
        self.store.add_decisions(logged)

    def fallback(self, d: Decision, exclude: set[str], user: str | None, metadata: dict | None) -> Decision | None:
        """Take ``d``'s call to another model (:meth:`Router.fallback`), remembered and logged like a route."""
        self.check_available()
        out = self.router.fallback(d, exclude)
        if out is not None:
            self.stats.replaced(d.model, _predicted_costs(d)[0])
            self._keep([(out, user, json.dumps(metadata) if metadata is not None else None)], fallback=True)
        return out

    def admit(self, request: RouteRequest, tokens: float | None = None) -> Admission | None:
        """Count one request (its API key set) against the tenants' rate limits (:mod:`.quotas`), with
        ``tokens`` estimated tokens (None: its prompt's, plus the expected output); raises
        :class:`RateLimited` when a limit has no room. None when no limit is configured."""
        if not self.quotas:
            return None
        if tokens is None:
            tokens = self.router.featurizer.input_tokens(request.prompt) + self.config.policy.expected_output_tokens
        return self.quotas.admit(request, tokens)

    async def route(self, request: RouteRequest) -> Decision:
        """Route one request as part of the micro-batch of requests that arrived with it
        (:class:`~banditroute.service.batcher.MicroBatcher`). Raises :class:`RoutingError`, or
        :class:`Unavailable` while the log is failing."""
        self.check_available()
        return await self.batcher.submit(request)

    async def feedback(self, decision_id: str, feedback: Feedback) -> FeedbackAck:
        """Apply feedback and answer once it is durably logged; raises :class:`UnknownDecision`, or
        :class:`Unavailable` when the log fails or does not commit within ``storage.commit_timeout_s``."""
        self.check_available()
        late = False
        d = self.pending.get(decision_id)
        if d is None:
            try:
                row = await self.lookups.get(decision_id)
            except duckdb.Error as err:
                raise self.unreadable(err) from None
            if row is None:
                raise UnknownDecision(decision_id)
            d = self.router.restore(row)
            late = True
        async with self._learning:  # check, learn and queue without interleaving another request
            self.check_available()  # the log may have failed while this waited
            if late and (recalled := self.pending.get(decision_id)) is not None:
                d, late = recalled, False  # another feedback recalled it meanwhile: its signals, keys and cost
            result, committed = self.record_feedback(d, feedback, late)
        if result is None:
            await self._durable(asyncio.wrap_future(self.store.flush()))  # the first one is durable before we say so
            return FeedbackAck(decision_id, d.model, 0, d.quality, None, True, late)
        self._count_for_snapshot()
        await self._durable(self._committed(committed))
        return FeedbackAck(decision_id, d.model, len(result.qualities), result.quality, result.cost_usd, False, late)

    def _count_for_snapshot(self) -> None:
        self.feedback_since_snapshot += 1
        if self.feedback_since_snapshot >= self.config.storage.snapshot_every and self._snapshotting is None:
            self._snapshotting = asyncio.ensure_future(self.snapshot())

    def feedback_nowait(self, decision_id: str, feedback: Feedback) -> bool:
        """Learn from feedback that no client waits for (the gateway's own usage reports) and queue its
        row for the next group commit instead of committing it at once; False when that cannot be done
        synchronously (the decision is not in memory, a policy swap holds the learning, the log is
        failing), in which case :meth:`feedback` must be awaited instead.

        Nothing changes in the order of events: the policy learns in log order, and a commit that fails
        puts the service in the failed state, whose recovery rebuilds the state from the log.
        """
        if self.unavailable is not None or self._learning.locked():
            return False
        d = self.pending.get(decision_id)
        if d is None:
            return False
        result, _ = self.record_feedback(d, feedback, commit_now=False)
        if result is not None:
            self._count_for_snapshot()
        return True

    def record_feedback(self, d: Pending, feedback: Feedback, late: bool = False, commit_now: bool = True):
        """Learn from ``feedback`` about ``d`` and queue its log row: ``(result, commit future)``, or
        ``(None, None)`` for an idempotency key seen before (nothing is applied again). ``commit_now``:
        wake the writer for it (group commit), else it waits for the next flush interval."""
        key, reported = feedback.idempotency_key, feedback.reported()
        if key is not None:
            pairs = feedback.weighted_qualities(self.config.signal_weights)
            mark = fingerprint([q for q, _ in pairs], [w for _, w in pairs], reported)
            seen = d.keys.get(key) if d.keys else None
            if seen is not None:
                if seen != mark:
                    raise IdempotencyConflict(f"idempotency key {key!r} was used on decision {d.decision_id} "
                                              "for another payload")
                return None, None
        self.router.check_feedback(d, feedback)
        if late:  # kept, so that its next feedback sees the cost applied now
            self.pending.recall(d)
        result = self.router.apply(d, feedback)
        self.stats.feedback(d.model, result.qualities, result.cost_usd)
        if key is not None:
            d.keys = {**(d.keys or {}), key: mark}
        _, committed = self.store.add_feedback(feedback_row(result, feedback, time.time_ns() // 1000, reported),
                                              commit_now)
        return result, committed

    async def _durable(self, commit: asyncio.Future) -> None:
        """Wait for ``commit``; a failed or late commit is a 503, and a late one puts the service in
        the failed state too (its learning may be ahead of the log)."""
        timeout = self.config.storage.commit_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await commit
        except StorageError as err:
            self.storage_failed(str(err))
            raise Unavailable(f"feedback not stored: {err}",
                              retry_after=math.ceil(self.config.storage.retry_interval_s)) from None
        except TimeoutError:
            self.storage_failed(f"a commit took longer than {timeout:g} s")
            raise Unavailable(f"feedback not stored within {timeout:g} s (storage.commit_timeout_s)",
                              retry_after=math.ceil(self.config.storage.retry_interval_s)) from None

    def _committed(self, fut: concurrent.futures.Future) -> asyncio.Future:
        """Wait for a group commit: one loop-side future per commit, shielded for each waiter.

        Wrapping the writer's future once per commit rather than once per request means one
        thread-safe wake-up of the loop per commit rather than one per acknowledged feedback.
        """
        if fut is not self._commit_future:
            self._commit_future, self._commit_waiter = fut, asyncio.wrap_future(fut)
        return asyncio.shield(self._commit_waiter)

    # -- policy management ---------------------------------------------------------------------------
    def policy_view(self) -> dict:
        pol = self.router.policy
        return {"policy": pol.describe(), "cost_weight": self.router.cost_weight,
                "cost_preference": self.router.cost_preference,
                "exploration": getattr(pol, "exploration", None),
                "exploration_decay": getattr(pol, "exploration_decay", None),
                "current_exploration": pol.current_exploration() if hasattr(pol, "current_exploration") else None,
                "floor": pol.floor,
                "floor_decay": pol.floor_decay, "floor_min": pol.floor_min, "current_floor": pol.current_floor(),
                "feature_version": self.router.featurizer.version, "feedback_seq": self.store.seq}

    async def update_policy(self, update: dict) -> dict:
        """Apply a ``PUT /policy``; a new policy class is rebuilt from the whole feedback log."""
        update = {k: v for k, v in update.items() if v is not None}
        if "cost_weight" in update and "cost_preference" in update:
            raise ValidationFailed("give cost_weight or cost_preference, not both",
                                   [{"field": "cost_preference", "message": "cost_weight is given too"}])
        if "cost_weight" in update:  # the weight asked for is the one in force from now
            update["cost_preference"] = None
        k = len(self.router.policy.models)
        if update.get("floor") is not None and update["floor"] * k > 1.0 + 1e-12:
            raise ValidationFailed(f"floor: {update['floor']:g} times {k} models is more than 1; at most {1 / k:.6g}",
                                   [{"field": "floor", "message": f"at most 1 / {k} models"}])
        name = update.get("policy")
        if name is not None and name != self.router.policy.describe():
            candidate = self._fresh_policy(name)  # raises ValueError for an unknown name
            shadow = Router(self.config, policy=candidate, featurizer=self.router.featurizer)
            until = self.store.seq
            await asyncio.wrap_future(self.store.flush())
            await asyncio.get_running_loop().run_in_executor(None, self.replay_into, shadow, 0, until)
            async with self._learning:  # feedback waits while the new policy catches up and takes over
                await asyncio.wrap_future(self.store.flush())
                self.replay_into(shadow, until)
                self.router.set_policy(candidate)
        self._apply_settings(update)
        event = {**self.policy_view(), "changed": sorted(k for k, v in update.items() if v is not None)}
        await asyncio.wrap_future(self.store.add_event(event))
        await self.snapshot()
        return self.policy_view()

    async def snapshot(self) -> None:
        """Write the policy state with the feedback position it covers, once that position is durable."""
        try:
            if self.snapshot_path is None:
                return
            if self.unavailable is not None:  # the state may hold learning the log lost
                return
            seq = self.store.seq
            data = dumps_state(self.router.policy, seq=seq)
            self.feedback_since_snapshot = 0
            await asyncio.wrap_future(self.store.flush())
            await asyncio.get_running_loop().run_in_executor(None, write_atomic, self.snapshot_path, data)
            self.snapshot_seq = seq
        except (StorageError, OSError) as err:  # the log is not durable up to seq, or no room for the file
            log.warning("snapshot not written: %s", err)
        finally:
            self._snapshotting = None

