"""Off-policy estimators of a candidate policy's mean outcome on a logged decision log.

Notation, for logged decisions i = 1..n: context x_i, logged model a_i chosen with propensity
p_i = mu(a_i | x_i), observed outcome r_i (quality, cost or reward), candidate probabilities
pi(a | x_i), importance weight w_i = pi(a_i | x_i) / p_i, and a reward model rhat(x, a).

Every estimator exposes per-decision terms whose mean (or ratio of means) is the estimate, so the
same bootstrap gives every confidence interval (:func:`bootstrap_ci`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IPS:
    """Inverse propensity scoring (Horvitz & Thompson, 1952; Dudik et al., 2011).

    V = (1/n) sum_i min(w_i, clip) r_i. Unbiased without clipping when every model the candidate
    may choose had p > 0 in the log; clipping trades that bias for variance.
    """

    clip: float = np.inf
    name: str = "ips"
    needs_model: bool = False

    def terms(self, w, r, dm_pi, dm_logged):
        return np.minimum(w, self.clip) * r, None


@dataclass(frozen=True)
class SNIPS:
    """Self-normalised IPS (Swaminathan & Joachims, 2015, "The Self-Normalized Estimator for
    Counterfactual Learning"): V = sum_i w_i r_i / sum_i w_i. Biased but consistent; bounded by the
    range of r and far less variable than IPS when weights are large."""

    name: str = "snips"
    needs_model: bool = False

    def terms(self, w, r, dm_pi, dm_logged):
        return w * r, w


@dataclass(frozen=True)
class DirectMethod:
    """The direct method: V = (1/n) sum_i sum_a pi(a | x_i) rhat(x_i, a), with rhat fit on the log.
    No importance weights, so low variance; biased wherever the reward model is wrong."""

    name: str = "dm"
    needs_model: bool = True

    def terms(self, w, r, dm_pi, dm_logged):
        return dm_pi, None


@dataclass(frozen=True)
class DoublyRobust:
    """Doubly robust (Dudik, Langford & Li, 2011, "Doubly Robust Policy Evaluation and Learning"):

    V = (1/n) sum_i [ sum_a pi(a | x_i) rhat(x_i, a) + w_i (r_i - rhat(x_i, a_i)) ].

    Unbiased when either the propensities or the reward model are right; with a cross-fitted
    reward model (rhat for fold k fit on the other folds; Chernozhukov et al., 2018) the model never
    scores the rows it learned from.
    """

    name: str = "dr"
    needs_model: bool = True

    def terms(self, w, r, dm_pi, dm_logged):
        return dm_pi + w * (r - dm_logged), None


def estimate(terms: np.ndarray, denom: np.ndarray | None) -> float:
    if denom is None:
        return float(terms.mean()) if terms.size else float("nan")
    s = denom.sum()
    return float(terms.sum() / s) if s > 0 else float("nan")


MAX_GROUPS = 10_000  # bootstrap units: beyond this many decisions, random groups of decisions


def bootstrap_groups(n: int, rng: np.random.Generator, max_groups: int = MAX_GROUPS) -> np.ndarray | None:
    """Each decision's bootstrap unit: None (every decision its own) up to ``max_groups`` decisions,
    else a uniformly random group out of ``max_groups``."""
    return None if n <= max_groups else rng.integers(0, max_groups, size=n, dtype=np.int32)


def bootstrap_ci(terms: np.ndarray, denom: np.ndarray | None, n_boot: int = 500, alpha: float = 0.05,
                 rng: np.random.Generator | None = None, groups: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile interval of :func:`estimate` by the Poisson bootstrap.

    Each replicate weights decision i by an independent Poisson(1) count, the large-n equivalent
    of resampling with replacement (Hanley & MacGibbon, 2006; Chamandy et al., 2012, "Estimating
    Uncertainty for Massive Data Streams"); weights apply to the per-decision terms by matrix
    products. With ``groups`` (:func:`bootstrap_groups`, for large logs) the counts weight random
    groups of decisions instead: the groups' sums of terms and of denominators are i.i.d., so
    resampling them estimates the same sampling distribution of the ratio, at a cost set by the number
    of groups rather than of decisions.
    """
    n = terms.size
    if n == 0:
        return float("nan"), float("nan")
    rng = rng or np.random.default_rng(0)
    denom = np.ones(n) if denom is None else denom
    if groups is not None:
        size = int(groups.max()) + 1
        terms, denom = np.bincount(groups, terms, size), np.bincount(groups, denom, size)
        n = size
    out = np.empty(n_boot)
    chunk = max(1, min(n_boot, 10_000_000 // n))
    done = 0
    while done < n_boot:
        m = min(chunk, n_boot - done)
        counts = rng.poisson(1.0, size=(m, n)).astype(float)
        out[done:done + m] = (counts @ terms) / np.maximum(counts @ denom, 1e-300)
        done += m
    lo, hi = np.quantile(out, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def wilson_interval(value: float, low_bound: float, high_bound: float, n_eff: float,
                    z: float = 1.959964) -> tuple[float, float]:
    """Wilson's score interval (Wilson, 1927) for the mean of an outcome bounded in
    [low_bound, high_bound], from ``n_eff`` effective observations.

    The estimate is rescaled to p in [0, 1] and
    (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n) is mapped back. It assumes the largest
    variance a bounded outcome with that mean can have (a Bernoulli's), so it stays honest when the
    sample cannot show the variance (a handful of decisions, all with the same outcome), never has zero
    width for finite n, and stays inside the bounds.
    """
    span = high_bound - low_bound
    if not (np.isfinite(value) and span > 0 and n_eff > 0):
        return float("nan"), float("nan")
    p = min(max((value - low_bound) / span, 0.0), 1.0)
    z2n = z * z / n_eff
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * np.sqrt(p * (1 - p) / n_eff + z2n / (4 * n_eff)) / (1 + z2n)
    return low_bound + span * max(centre - half, 0.0), low_bound + span * min(centre + half, 1.0)


def effective_sample_size(w: np.ndarray) -> float:
    """Kish's effective sample size of importance weights: (sum w)^2 / sum w^2."""
    s2 = float((w * w).sum())
    return float(w.sum() ** 2 / s2) if s2 > 0 else 0.0


ESTIMATORS = {"ips": IPS, "snips": SNIPS, "dm": DirectMethod, "dr": DoublyRobust}
