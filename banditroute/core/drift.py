"""Change detection per model: a two-sided Page-Hinkley test on the quality model's residuals.

After each quality observation ``y`` of model k, with ``r = y - q_k(x)`` the residual of the prediction
made before learning it and ``rbar`` the running mean of model k's residuals since its last alarm,

    m_up   <- m_up   + (r - rbar - delta),    M_up   = min over time of m_up,
    m_down <- m_down + (r - rbar + delta),    M_down = max over time of m_down,

and an alarm is raised when ``m_up - M_up > threshold`` (the model answers better than it is credited
for) or ``M_down - m_down > threshold`` (worse). ``delta`` is the size of a shift tolerated as noise.
Page, 1954, "Continuous Inspection Schemes"; the form used in stream learning is Gama et al., 2014, "A
Survey on Concept Drift Adaptation", sec. 3.2. On an alarm the policy forgets most of what it learned
about that model (:meth:`~banditroute.core.policies.bayes_linear.BayesLinear.forget`) and re-learns it.

Under no change, with residuals of standard deviation ``sigma``, a statistic exceeds ``threshold`` in a
given excursion with probability about ``exp(-2 delta threshold / sigma^2)``; a shift of size ``s > delta``
is detected after about ``threshold / (s - delta)`` observations of that model.
"""

from __future__ import annotations

import numpy as np


class PageHinkley:
    """One two-sided Page-Hinkley test per model.

    Parameters
    ----------
    n_arms
        Number of models.
    threshold, delta
        The alarm level and the tolerated shift, in quality points (module docstring).
    """

    def __init__(self, n_arms: int, threshold: float = 10.0, delta: float = 0.1):
        self.threshold = float(threshold)
        self.delta = float(delta)
        self.state = np.zeros((n_arms, 6))  # n, mean residual, m_up, M_up, m_down, M_down
        self.alarms = np.zeros(n_arms, dtype=np.int64)

    def update(self, arm: int, residual: float) -> bool:
        """Add one residual of ``arm``; True (and the arm's test restarts) on an alarm."""
        n, mean, m_up, lo, m_down, hi = self.state[arm]
        n += 1.0
        mean += (residual - mean) / n
        m_up += residual - mean - self.delta
        m_down += residual - mean + self.delta
        lo, hi = min(lo, m_up), max(hi, m_down)
        if m_up - lo > self.threshold or hi - m_down > self.threshold:
            self.state[arm] = 0.0
            self.alarms[arm] += 1
            return True
        self.state[arm] = (n, mean, m_up, lo, m_down, hi)
        return False

    def arrays(self) -> dict[str, np.ndarray]:
        return {"state": self.state, "alarms": self.alarms}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.state = np.array(arrays["state"], dtype=float).reshape(self.state.shape)
        self.alarms = np.array(arrays["alarms"], dtype=np.int64).reshape(self.alarms.shape)
