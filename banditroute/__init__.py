"""banditroute: an LLM router that learns from feedback, with exact propensities for offline replay.

One code path online and offline (docs/architecture.md draws it)::

    prompt -> core.features -> core.router (eligibility) -> core.policies: probabilities(X, eligible, w)
           -> sample -> core.types.Decision -> log.store (the one writer)
    feedback -> core.reward (signals -> quality) -> policy.update -> log.store
    simulate: outcome table -> service.Service on an in-memory log.store -> log.export
    replay:   log.export's table -> offline.candidates (the same probabilities) -> offline.estimators
"""

__version__ = "0.1.0"
