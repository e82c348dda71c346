"""Per-model traffic and outcome counters, for ``GET /models`` and the metrics endpoint."""

from __future__ import annotations


class ModelStats:
    """Decisions, weighted quality and cost sums per model; :meth:`table` gives shares and means.

    Beside the costs reported for each model's decisions, it sums each decision's predicted cost and the
    predicted cost of the priciest model it could have gone to (:attr:`predicted_cost`,
    :attr:`priciest_cost`): their ratio is what routing saves against sending everything to the priciest
    eligible model, by the cost model's own predictions (so on the same footing on both sides). Both count
    each request once: a gateway fallback's predicted cost replaces that of the decision it replaces, whose
    priciest cost stands for the request."""

    def __init__(self, models):
        self.models = list(models)
        self.reset()

    def reset(self) -> None:
        """Back to no decisions and no feedback (before a reload from the log)."""
        models = self.models
        self.decisions = dict.fromkeys(models, 0)
        self.quality_sum = dict.fromkeys(models, 0.0)
        self.quality_weight = dict.fromkeys(models, 0.0)
        self.cost_sum = dict.fromkeys(models, 0.0)
        self.cost_n = dict.fromkeys(models, 0)
        self.predicted_cost = dict.fromkeys(models, 0.0)
        self.priciest_cost = dict.fromkeys(models, 0.0)

    def decision(self, model: str, predicted: float = 0.0, priciest: float = 0.0) -> None:
        """A decision for ``model`` predicted to cost ``predicted`` USD, where its priciest eligible model
        was predicted to cost ``priciest``."""
        self.decisions[model] = self.decisions.get(model, 0) + 1
        self.predicted_cost[model] = self.predicted_cost.get(model, 0.0) + predicted
        self.priciest_cost[model] = self.priciest_cost.get(model, 0.0) + priciest

    def replaced(self, model: str, predicted: float) -> None:
        """A decision for ``model`` predicted to cost ``predicted`` was replaced by a fallback, which now
        carries its request's predicted cost."""
        self.predicted_cost[model] = self.predicted_cost.get(model, 0.0) - predicted

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
                "cost_usd": self.cost_sum.get(m, 0.0),
                "predicted_cost_usd": self.predicted_cost.get(m, 0.0),
                "priciest_cost_usd": self.priciest_cost.get(m, 0.0),
            })
        return out
