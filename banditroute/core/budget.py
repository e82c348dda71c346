"""Budgets that route instead of refusing: each tenant's spend paced to its budget over a period.

A budget (``[[budgets]]``) gives each tenant B USD per period (a calendar hour, day or month, UTC).
One controller per tenant (:class:`Pacer`) sets the cost preference p of the tenant's requests (the
scale-free knob of :mod:`banditroute.core.preference`, so the weight it gives is relative to each
request's own price spread) from the gap between what the tenant spends and what it may spend:

* the target per request is the budget left spread over the requests the rest of the period is
  expected to bring (adaptive pacing; Balseiro & Gur, "Learning in Repeated Auctions with Budgets",
  Management Science 65(9), 2019)::

      rho_t = (B - S_t) / R_t,   R_t = max(1, r_t (T_end - t)),
      r_t = (n_t + r_0 T / 100) / (t - T_start + T / 100)

  with S_t the spend and n_t the requests of the period so far, and r_0 the tenant's request rate in
  the previous period (the rate seen so far is shrunk towards it for about a hundredth of the period);
  a tenant's first period has no r_0 and uses (n_t + 1) / max(t - T_start, T / 100) instead;
* the cost weight is the Lagrange multiplier of the budget constraint, updated by dual mirror descent
  with the entropic mirror map, i.e. multiplicatively (Balseiro, Lu & Mirrokni, "Dual Mirror Descent
  for Online Allocation Problems", ICML 2020). The multiplier is one price per USD for all of the
  tenant's requests at a given moment, as the Lagrangian of a constraint on total spend has it:
  w_t = s p_t / (1 - p_t) / mean Delta c, the preference formula of :mod:`banditroute.core.preference`
  with the mean price spread of the period's decisions in place of each request's own (measured
  against its own spread, a long prompt's dollars would be priced lower than a short one's, and the
  budget would go on the long prompts whatever they gain). Kept as the log-odds u of p, since
  w ∝ p / (1 - p) = exp(u)::

      u_{t+1} = clip(u_t + eta min((z_t - rho_t) / rho_t, G), -U, U),   p_t = 1 / (1 + exp(-u_t))

  where z_t is the decision's expected predicted cost (each eligible model's probability times its
  predicted cost), which is less noisy than the cost of the model drawn, and eta is ``pacing_step``.
  Summed over requests, u_t - u_0 = eta sum_s (z_s - rho_s) / rho_s: integral control of the
  overspend counted in requests' worth of budget (G = 10 bounds one request's push);
* a reserve keeps the rest of the period affordable: a model is eligible only when its predicted cost
  fits what is left after the cheapest model is paid for every other request expected,
  c_k <= (B - S_t) - (R_t - 1) c_min (never below c_min, the request's cheapest eligible model with a
  cost estimate, so that one fits while anything is left; a model without one, untried and unpriced,
  stays eligible so that its cost is learned). When less than the cheapest eligible model's predicted
  cost is left the budget is exhausted: the request goes to that model, or is refused with 429
  (``when_exhausted``);
* exploration is paid from the slack: the policy's floor forces probability onto every eligible model,
  which no multiplier can move, so the dearest models are left out of a request while the floor's
  forced spend on them would take more than half the slack per request (:meth:`Pacer.affordable`).

Spend is charged when the decision is taken, at the chosen model's predicted cost, and corrected when
the call's cost is reported (a gateway call that failed is refunded). Predicted costs are scaled by a
calibration, the ratio of reported costs to what was charged for them, over the decisions charged a
positive predicted cost (:attr:`Pacer.calibration`). A request's own cost knob still
counts: the higher of its weight and the budget's applies (a request may save more than its budget
needs, never less). With ``pacing = false`` the budget is only a cap (no weight control, no reserve),
the behaviour of gateways that refuse once a budget is spent.

Decisions log the budget, the tenant and p after the update, so the state of every tenant in the
current period is rebuilt from the log at start (:meth:`Budgets.restore`).
"""

from __future__ import annotations

import calendar
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from banditroute.config import BudgetConfig
from banditroute.core.ids import key_id
from banditroute.core.preference import spread_weights
from banditroute.errors import BudgetExhausted

MAX_LOG_ODDS = 12.0  # |u| bound: p within about 6e-6 of 0 or 1
WARMUP = 0.01  # share of the period before the request rate seen so far is trusted
EXPLORATION_SHARE = 0.5  # of the budget's slack per request, what the policy's floor may spend
MAX_GAP = 10.0  # a step's relative overspend is counted up to this (one dear call moves the weight at most e^(eta MAX_GAP))
MAX_TENANT_CHARS = 256  # longer tenants are kept as their SHA-256 (tenant_of)
CALIBRATION_PRIOR = 0.01  # of the budget: the pseudo-spend that shrinks the calibration towards 1


def tenant_of(key: str, options) -> str | None:
    """A request's tenant by ``key`` (``user``, ``api_key``: the id of its bearer key, or
    ``metadata.FIELD``: that field when it is a scalar) of its ``options`` (a RouteOptions); None when it
    has none. Budgets and rate limits tell tenants apart this way. A tenant longer than
    :data:`MAX_TENANT_CHARS` is its SHA-256 (``sha256:<hex>``), so that what a client sends (a metadata
    field can hold kilobytes) does not size the keys kept per tenant in memory and in the log."""
    if key == "user":
        tenant = options.user
    elif key == "api_key":
        return key_id(options.api_key)
    else:
        value = (options.metadata or {}).get(key.removeprefix("metadata."))
        tenant = None if value is None or isinstance(value, dict | list) else str(value)
    if tenant is not None and len(tenant) > MAX_TENANT_CHARS:
        return "sha256:" + hashlib.sha256(tenant.encode()).hexdigest()
    return tenant


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """The calendar period (UTC) that contains ``now``: ``(start, end)`` in Unix seconds."""
    t = datetime.fromtimestamp(now, UTC)
    if period == "hour":
        start = t.replace(minute=0, second=0, microsecond=0)
        return start.timestamp(), start.timestamp() + 3600.0
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.timestamp(), start.timestamp() + 86400.0
    if period == "month":
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        days = calendar.monthrange(t.year, t.month)[1]
        return start.timestamp(), start.timestamp() + 86400.0 * days
    raise ValueError(f"unknown period {period!r}")


@dataclass
class Pacer:
    """One tenant's budget over one period, and the controller that paces its spend."""

    budget: str
    tenant: str
    amount: float
    start: float
    end: float
    step: float
    pacing: bool = True
    spent: float = 0.0
    requests: int = 0
    log_odds: float = 0.0
    weight: float | None = None  # the cost weight of the tenant's last decision
    exhausted: int = 0  # requests that found the budget exhausted (served by the cheapest, or refused)
    prior_rate: float | None = None  # r_0, requests per second in the tenant's previous period
    reported_charged: float = 0.0  # what was charged for the decisions whose cost was reported since...
    reported_cost: float = 0.0  # ...and what they cost
    spread_sum: float = 0.0  # the price spreads (dearest minus cheapest eligible prediction) of the period's decisions
    _warmup: float = field(init=False)

    def __post_init__(self):
        self._warmup = WARMUP * (self.end - self.start)

    @property
    def preference(self) -> float:
        return 1.0 / (1.0 + math.exp(-self.log_odds))

    @property
    def left(self) -> float:
        return max(self.amount - self.spent, 0.0)

    def expected_requests(self, now: float) -> float:
        """R_t: the requests expected in the rest of the period, this one included."""
        elapsed = max(now - self.start, 0.0)
        if self.prior_rate is None:
            rate = (self.requests + 1) / max(elapsed, self._warmup)
        else:
            rate = (self.requests + self.prior_rate * self._warmup) / (elapsed + self._warmup)
        return max(1.0, rate * (self.end - now))

    def target(self, now: float) -> float:
        """rho_t: what each of the rest of the period's requests may cost on average."""
        return self.left / self.expected_requests(now)

    def affordable(self, now: float, cost: np.ndarray, mask: np.ndarray, floor: float) -> np.ndarray | None:
        """The models of ``mask`` this budget can pay for at predicted costs ``cost`` (K,), for a policy
        that gives each eligible model at least ``floor``; None when the budget is exhausted (less
        than the cheapest eligible model's cost is left).

        Paced, two limits apply: the reserve (a model fits what is left after the cheapest model is
        paid for every other request expected), and exploration paid from the slack: the floor's
        forced spend on models dearer than the cheapest, ``floor * sum_k (c_k - c_min)``, may take at
        most half the slack per request expected, ``(B - S_t - R_t c_min) / R_t``, so the dearest
        models are left out while the budget is tight (the multiplier cannot move what the floor
        forces).

        A model predicted to cost nothing (no price, no cost seen yet) has no estimate: it stays
        eligible, so that its cost gets learned, but the reserve and the slack are reckoned at the
        cheapest model that has one (``c_min`` is the cheapest positive prediction, while there is
        one): otherwise a pool's untried models would make the rest of the period look free. With no
        slack left, the floor's forced spend leaves only the cheapest predictions eligible, untried
        models among them, whose cost is learned by trying them.
        """
        cost = cost * self.calibration
        eligible = cost[mask]
        cheapest = float(eligible.min())
        left = self.left
        if left < cheapest or left <= 0.0:
            return None
        if not self.pacing:
            return mask & (cost <= left)
        estimated = eligible[eligible > 0.0]
        c_min = float(estimated.min()) if estimated.size else cheapest
        expected = self.expected_requests(now)
        out = mask & (cost <= max(left - (expected - 1.0) * c_min, c_min))
        if floor > 0.0:
            allowance = EXPLORATION_SHARE * max(left - expected * c_min, 0.0) / expected
            idx = np.flatnonzero(out)
            order = idx[np.argsort(cost[idx], kind="stable")]
            forced = floor * np.cumsum(cost[order] - cheapest)
            out = np.zeros_like(out)
            out[order[forced <= allowance]] = True
            out[order[0]] = True
        return out

    def cost_weight(self, spread: float, scale: float) -> float:
        """The budget's cost weight for a request whose eligible models' predictions span ``spread``:
        the preference measured against the mean spread of the period's decisions so far (the
        request's own for the period's first), so that every request of the tenant pays the same
        price per USD at a given moment."""
        reference = self.spread_sum / self.requests if self.requests and self.spread_sum > 0.0 else spread
        return float(spread_weights(self.preference, reference, scale))

    def charge(self, now: float, expected: float, cost: float, weight: float, spread: float = 0.0) -> None:
        """Count a decision predicted to cost ``cost`` (``expected`` under its probabilities) among
        models whose predictions span ``spread``, and move the multiplier towards the spend that keeps
        to the budget (at calibrated costs)."""
        if self.pacing:
            rho, expected = self.target(now), expected * self.calibration
            gap = min((expected - rho) / rho, MAX_GAP) if rho > 0 else MAX_GAP
            self.log_odds = min(max(self.log_odds + self.step * gap, -MAX_LOG_ODDS), MAX_LOG_ODDS)
        self.spent += cost
        self.spread_sum += spread
        self.requests += 1
        self.weight = weight

    def report(self, charged: float, cost: float) -> None:
        """A decision charged ``charged`` (its predicted cost) turned out to cost ``cost``.

        The spend is corrected either way; the calibration counts the decision only when something was
        predicted: a model with no price and no cost seen yet is predicted to cost nothing, which is
        no estimate at all rather than a bias of the cost model (counted, the first call of an unpriced
        model would inflate every later prediction many times over).
        """
        self.spent = max(self.spent + cost - charged, 0.0)
        if charged > 0.0:
            self.reported_charged += charged
            self.reported_cost += cost

    def refund(self, charged: float) -> None:
        """A decision charged ``charged`` cost nothing (its call failed)."""
        self.spent = max(self.spent - charged, 0.0)

    @property
    def calibration(self) -> float:
        """kappa: reported costs over what was charged for them (decisions charged a positive predicted
        cost), shrunk to 1 while they are few (the cost model's predictions for this tenant are scaled
        by it, so that a bias does not break the budget)."""
        prior = CALIBRATION_PRIOR * self.amount
        return (self.reported_cost + prior) / (self.reported_charged + prior)

    def view(self, now: float) -> dict:
        """What ``GET /budgets`` shows of this tenant."""
        elapsed = min(max(now - self.start, 0.0), self.end - self.start)
        on_pace = self.amount * elapsed / (self.end - self.start)
        return {
            "budget": self.budget, "tenant": self.tenant,
            "period_start": datetime.fromtimestamp(self.start, UTC).isoformat(),
            "period_end": datetime.fromtimestamp(self.end, UTC).isoformat(),
            "amount_usd": self.amount, "spent_usd": round(self.spent, 9), "remaining_usd": round(self.left, 9),
            "requests": self.requests,
            "pace": round(self.spent / on_pace, 4) if on_pace > 0 else None,
            "target_usd_per_request": self.target(now) if self.pacing else None,
            "cost_preference": round(self.preference, 6) if self.pacing else None,
            "cost_weight": self.weight, "exhausted_requests": self.exhausted,
        }


class Budgets:
    """The configured budgets and a :class:`Pacer` per (budget, tenant) in the current period.

    ``clock`` gives the time (Unix seconds); ``window``, when given, is the one period every budget
    covers instead of calendar periods (the simulator's: its clock counts requests, and ``rate``, its
    requests per unit of time, is known).
    """

    def __init__(self, configs: list[BudgetConfig], clock: Callable[[], float] = time.time,
                 window: tuple[float, float] | None = None, rate: float | None = None):
        self.configs = {b.name: b for b in configs}
        self.order = list(configs)
        self.clock = clock
        self.window = window
        self.rate = rate
        self.pacers: dict[tuple[str, str], Pacer] = {}
        # carried from a tenant's period to the next: the multiplier (log-odds) and the request rate
        self.carried: dict[tuple[str, str], tuple[float, float | None]] = {}

    def __bool__(self) -> bool:
        return bool(self.order)

    def bounds(self, config: BudgetConfig, now: float) -> tuple[float, float]:
        return self.window if self.window is not None else period_bounds(config.period, now)

    def tenant(self, config: BudgetConfig, options) -> str | None:
        """The request's tenant under ``config`` (``options``: a RouteOptions), or None when it has none."""
        return tenant_of(config.tenant, options)

    def pacer(self, options, rule_budget: str | None, now: float) -> Pacer | None:
        """The pacer a request is charged to: its rule's budget, else the first budget whose tenant it has."""
        configs = [self.configs[rule_budget]] if rule_budget is not None else self.order
        for config in configs:
            tenant = self.tenant(config, options)
            if tenant is not None:
                return self.get(config, tenant, now)
        return None

    def get(self, config: BudgetConfig, tenant: str, now: float) -> Pacer:
        key = (config.name, tenant)
        p = self.pacers.get(key)
        if p is not None and p.start <= now < p.end:
            return p
        if p is not None:  # a new period: the multiplier and the rate carry over, the spend does not
            self._carry(key, p)
        elif len(self.pacers) >= config.max_tenants * len(self.order):
            self._prune(now)
            if sum(1 for b, _ in self.pacers if b == config.name) >= config.max_tenants:
                raise BudgetExhausted(f"budget {config.name!r} tracks {config.max_tenants} tenants already "
                                      "(budgets.max_tenants); a new tenant cannot be admitted this period")
        start, end = self.bounds(config, now)
        log_odds, rate = self.carried.pop(key, (0.0, self.rate))
        p = self.pacers[key] = Pacer(config.name, tenant, config.tenants.get(tenant, config.usd), start, end,
                                     config.pacing_step, config.pacing, log_odds=log_odds, prior_rate=rate)
        return p

    def _prune(self, now: float) -> None:
        for key, p in list(self.pacers.items()):
            if not p.start <= now < p.end:
                self._carry(key, p)
                del self.pacers[key]

    def _carry(self, key: tuple[str, str], p: Pacer) -> None:
        """Keep what a tenant's next period starts from; the tenants gone longest are forgotten first, so
        that this stays within the same bound as the pacers."""
        self.carried.pop(key, None)
        self.carried[key] = (p.log_odds, p.requests / (p.end - p.start))
        limit = sum(c.max_tenants for c in self.order)
        while len(self.carried) > limit:
            del self.carried[next(iter(self.carried))]

    def find(self, budget: str | None, tenant: str | None, ts: float) -> Pacer | None:
        """The live pacer of a logged decision, if its period is the current one."""
        p = self.pacers.get((budget, tenant)) if budget is not None else None
        return p if p is not None and p.start <= ts < p.end else None

    def restore(self, rows: list[dict], now: float) -> None:
        """Rebuild the pacers from the log: rows of ``budget, tenant, requests, spent, reported_charged,
        reported_cost, spread_sum, previous, preference`` (the current period's decisions, their cost,
        calibration and price spreads, the previous period's decisions, and the preference after the
        tenant's last decision)."""
        self.pacers.clear()
        self.carried.clear()
        for r in rows:
            config = self.configs.get(r["budget"])
            if config is None:  # a budget no longer configured
                continue
            key = (config.name, r["tenant"])
            pref = r.get("preference")
            log_odds = math.log(pref / (1.0 - pref)) if pref is not None and 0.0 < pref < 1.0 else 0.0
            rate = None
            if r.get("previous"):
                start, end = period_bounds(config.period, self.bounds(config, now)[0] - 1.0)
                rate = r["previous"] / (end - start)
            self.carried[key] = (log_odds, rate)
            if r.get("requests"):
                p = self.get(config, r["tenant"], now)
                p.requests, p.spent = int(r["requests"]), float(r["spent"] or 0.0)
                p.reported_charged = float(r.get("reported_charged") or 0.0)
                p.reported_cost = float(r.get("reported_cost") or 0.0)
                p.spread_sum = float(r.get("spread_sum") or 0.0)

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.order]

    def view(self, budget: str | None = None, tenant: str | None = None) -> list[dict]:
        """Every tenant with decisions in its current period (of ``budget`` and ``tenant`` only, when given)."""
        now = self.clock()
        return [p.view(now) for p in sorted(self.pacers.values(), key=lambda p: (p.budget, p.tenant))
                if p.start <= now < p.end and budget in (None, p.budget) and tenant in (None, p.tenant)]
