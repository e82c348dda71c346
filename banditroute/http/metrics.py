"""Counters and latency histograms rendered in the Prometheus text exposition format (0.0.4)."""

from __future__ import annotations

import bisect
from collections import defaultdict

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in labels)
    return "{" + inner + "}"


class Metrics:
    """A minimal registry: labelled counters, gauges (callables) and histograms."""

    def __init__(self):
        self.counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self.histograms: dict[str, dict[tuple, list]] = defaultdict(dict)
        self.gauges: dict[str, callable] = {}
        self.help: dict[str, str] = {}

    def inc(self, name: str, value: float = 1.0, **labels) -> None:
        self.counters[name][tuple(sorted(labels.items()))] += value

    def observe(self, name: str, seconds: float, **labels) -> None:
        key = tuple(sorted(labels.items()))
        h = self.histograms[name].get(key)
        if h is None:
            h = self.histograms[name][key] = [[0] * len(LATENCY_BUCKETS), 0, 0.0]
        i = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        if i < len(LATENCY_BUCKETS):
            h[0][i] += 1
        h[1] += 1
        h[2] += seconds

    def gauge(self, name: str, fn, help_text: str) -> None:
        self.gauges[name] = fn
        self.help[name] = help_text

    def render(self) -> str:
        out = []
        for name, series in sorted(self.counters.items()):
            out.append(f"# HELP {name} {self.help.get(name, name)}")
            out.append(f"# TYPE {name} counter")
            out += [f"{name}{_labels(k)} {v:g}" for k, v in sorted(series.items())]
        for name, series in sorted(self.histograms.items()):
            out.append(f"# HELP {name} {self.help.get(name, name)}")
            out.append(f"# TYPE {name} histogram")
            for key, (buckets, count, total) in sorted(series.items()):
                acc = 0
                for le, n in zip(LATENCY_BUCKETS, buckets):
                    acc += n
                    out.append(f"{name}_bucket{_labels(key + (('le', f'{le:g}'),))} {acc}")
                out.append(f"{name}_bucket{_labels(key + (('le', '+Inf'),))} {count}")
                out.append(f"{name}_sum{_labels(key)} {total:.6f}")
                out.append(f"{name}_count{_labels(key)} {count}")
        for name, fn in sorted(self.gauges.items()):
            out.append(f"# HELP {name} {self.help.get(name, name)}")
            out.append(f"# TYPE {name} gauge")
            value = fn()
            if isinstance(value, dict):
                out += [f"{name}{_labels(tuple(sorted(k)))} {v:g}" for k, v in value.items()]
            else:
                out.append(f"{name} {value:g}")
        return "\n".join(out) + "\n"
