"""banditroute: an LLM router that learns from feedback, with exact propensities for offline replay."""

__version__ = "0.1.0"
