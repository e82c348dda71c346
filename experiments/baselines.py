"""Reference routers that see more than the bandit does, for the experiments' comparisons.

* :func:`full_information` - banditroute's own policy fit on every (train prompt, model) outcome
  (``banditroute pretrain``), evaluated greedily: the same features and model class as the online
  learner, without the cost of exploring.
* :func:`tfidf_ridge` - a TF-IDF (word 1-2 grams) + ridge regression router, one output per model
  for quality and one for cost (scikit-learn), trained on the full-information train split.
* :func:`oracle_point`, :func:`uniform_point` and :func:`single_models` - closed-form points.

Each router is summarised by a frontier: for every cost weight w, the test prompts go to
``argmax_k q_k(x) - w c_k(x)`` and the point records the mean true quality and total true cost.
"""

from __future__ import annotations

import statistics

import numpy as np

from banditroute.config import Settings, pool_from_names
from banditroute.core.features import Featurizer
from banditroute.core.types import net_score
from banditroute.offline.outcomes import Outcomes
from banditroute.offline.pretrain import pretrain


def frontier_from_predictions(test: Outcomes, q_pred: np.ndarray, c_pred: np.ndarray, grid) -> list[dict]:
    rows = np.arange(len(test))
    points = []
    for w in grid:
        k = np.argmax(net_score(q_pred, c_pred, w), axis=1)
        points.append({"cost_weight": float(w), "quality": float(test.quality[rows, k].mean()),
                       "cost_usd": float(test.cost[rows, k].sum())})
    return points


def full_information(outcomes: Outcomes, grid, policy: str = "lints",
                     featurizer: Featurizer | None = None) -> tuple[list[dict], np.ndarray]:
    """Frontier of the full-information fit of ``policy`` (on ``featurizer``'s features, by default
    this version's), and its predicted quality on test."""
    f = featurizer or Featurizer()
    pol = pretrain(outcomes, policy, featurizer=f)
    test = outcomes.subset("test")
    q, c = pol.predict(f.transform_many(test.prompts), [f.input_tokens(p) for p in test.prompts])
    return frontier_from_predictions(test, q, c, grid), q


def tfidf_ridge(outcomes: Outcomes, grid, alpha: float = 1.0, analyzer: str = "word") -> tuple[list[dict], np.ndarray]:
    """Frontier of a TF-IDF ridge router on word (``analyzer="word"``) or character 1-2 grams, and its
    predicted quality on test. Where no term occurs in two train prompts (a text without word
    boundaries is one token a prompt) it has no evidence and predicts each model's train means."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    train, test = outcomes.subset("train"), outcomes.subset("test")
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, analyzer=analyzer)
    try:
        Xtr = vec.fit_transform(train.prompts)
    except ValueError:  # no term left after min_df
        q_pred = np.broadcast_to(train.quality.mean(axis=0), test.quality.shape)
        c_pred = np.broadcast_to(train.cost.mean(axis=0), test.cost.shape)
        return frontier_from_predictions(test, q_pred, c_pred, grid), q_pred
    Xte = vec.transform(test.prompts)
    q_pred = Ridge(alpha=alpha).fit(Xtr, train.quality).predict(Xte)
    c_pred = Ridge(alpha=alpha).fit(Xtr, train.cost).predict(Xte)
    return frontier_from_predictions(test, q_pred, c_pred, grid), q_pred


def oracle_point(test: Outcomes) -> dict:
    """Per prompt, the cheapest among the models with the best quality."""
    best = test.quality.max(axis=1, keepdims=True)
    cost = np.where(test.quality == best, test.cost, np.inf).min(axis=1)
    return {"quality": float(best.mean()), "cost_usd": float(cost.sum())}


def uniform_point(test: Outcomes) -> dict:
    """Expected quality and cost of choosing uniformly at random."""
    return {"quality": float(test.quality.mean()), "cost_usd": float(test.cost.mean(axis=1).sum())}


def single_models(test: Outcomes) -> dict[str, dict]:
    return {m: {"quality": float(test.quality[:, k].mean()), "cost_usd": float(test.cost[:, k].sum())}
            for k, m in enumerate(test.models)}


def priced_pool(outcomes: Outcomes) -> Settings:
    """The table's models priced at their mean train cost per request (for 256 output tokens), standing in
    for configured list prices (the tables carry costs, not prices)."""
    mean = outcomes.subset("train").cost.mean(axis=0)
    return pool_from_names(outcomes.models, {m: (0.0, float(c) * 1e6 / 256) for m, c in zip(outcomes.models, mean)})


def median_present(values) -> float | None:
    """The median of the values that are not None (None if none is)."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
