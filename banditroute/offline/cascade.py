"""Cascades on a full-information outcome table: what the router sees when a checked answer escalates.

A cascade starts at the model the router picks; when that model's answer fails a check it escalates
to ``escalate_to`` (the last tier), whose answer is final. Learning uses the final outcome and the
total cost of the steps (:mod:`banditroute.gateway.cascade` does the same with real calls), so on a
table the cascade is a new table with the same prompts and models, where model k's entry is the
outcome of the cascade that starts at k (Chen, Zaharia & Zou, 2023, "FrugalGPT: How to Use Large
Language Models While Reducing Cost and Improving Performance", sec. 3, cascades with a scorer):

* the simulated check passes when the table's quality of k's answer is at least ``threshold``, and
  also, with probability ``false_pass``, when it is not (a check that lets a bad answer through);
* passing: quality q_k, cost c_k; failing: quality q_top, cost c_k + c_top; starting at the top
  model: q_top, c_top.

On the train split each check is drawn once (seeded), since the online stream sees one answer per
request; on the test split the entries are expectations over the check, P = 1 if q_k >= threshold
else ``false_pass``: quality P q_k + (1 - P) q_top, cost c_k + (1 - P) c_top.
"""

from __future__ import annotations

import numpy as np

from banditroute.offline.outcomes import Outcomes


def cascade_outcomes(outcomes: Outcomes, escalate_to: str, false_pass: float = 0.0, threshold: float = 0.5,
                     seed: int = 0) -> Outcomes:
    """``outcomes`` as seen through a cascade that escalates to ``escalate_to`` (see the module)."""
    if escalate_to not in outcomes.models:
        raise ValueError(f"escalate_to {escalate_to!r} is not a model of the table")
    if not 0.0 <= false_pass <= 1.0:
        raise ValueError(f"false_pass must be in [0, 1], got {false_pass}")
    top = outcomes.models.index(escalate_to)
    q, c = outcomes.quality, outcomes.cost
    good = q >= threshold
    drawn = good | (np.random.default_rng(seed).random(q.shape) < false_pass)
    expected = np.where(good, 1.0, false_pass)
    p = np.where((outcomes.splits == "train")[:, None], drawn.astype(float), expected)
    p[:, top] = 1.0
    quality = p * q + (1.0 - p) * q[:, [top]]
    cost = c + (1.0 - p) * c[:, [top]]
    return Outcomes(outcomes.prompt_ids, outcomes.prompts, outcomes.tasks, outcomes.splits, outcomes.models,
                    quality, cost)
