"""Random mutations of JSON values, for the fuzz tests: a valid value with one change somewhere inside it
(a field dropped, a value swapped for an odd one, an unknown field added, an item repeated), from a seeded
``random.Random`` so that a failure names the input that caused it."""

from __future__ import annotations

import copy
import random

ODD = [None, True, False, 0, -1, 1e308, -1e308, 2**70, "", "x" * 3000, "\u0000", [], {}, [None], {"": None}, 3.5,
       "banditroute", [[[]]], {"type": None}, [5], "strong"]
EXTRA = ["n", "stop", "seed", "user", "metadata", "logprobs", "top_logprobs", "previous_response_id", "tool_choice",
         "parallel_tool_calls", "functions", "stream", "banditroute", "max_completion_tokens", "reasoning_effort"]


def odd(rng: random.Random):
    """One of :data:`ODD`, a copy of its own (so that a caller may change it in place)."""
    return copy.deepcopy(rng.choice(ODD))


def mutate(v, rng: random.Random):
    """``v`` with one random change somewhere inside it (``v`` itself is left as it is)."""
    if isinstance(v, dict) and v and rng.random() < 0.7:
        v, k = dict(v), rng.choice(list(v))
        op = rng.random()
        if op < 0.2:
            del v[k]
        elif op < 0.6:
            v[k] = mutate(v[k], rng)
        elif op < 0.8:
            v[k] = odd(rng)
        else:
            v[rng.choice(EXTRA)] = copy.deepcopy(rng.choice([*ODD, 1, 2, "auto"]))
        return v
    if isinstance(v, list) and v and rng.random() < 0.7:
        v, i = list(v), rng.randrange(len(v))
        op = rng.random()
        if op < 0.2:
            del v[i]
        elif op < 0.7:
            v[i] = mutate(v[i], rng)
        elif op < 0.85:
            v.append(copy.deepcopy(v[i]))
        else:
            v[i] = odd(rng)
        return v
    return odd(rng) if rng.random() < 0.9 else v
