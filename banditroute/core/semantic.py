"""Semantic routes: named intents defined by a few example prompts, matched by similarity.

A prompt matches the route of its most similar example, when that similarity reaches the route's
threshold (else no route): nearest-neighbour matching over the examples, which keeps an intent whose
examples are varied from being averaged into a centroid that resembles none of them. Similarity
blends lexical and semantic evidence::

    sim(p, e) = a cos(t(p), t(e)) + (1 - a) cos(v(p), v(e))

with ``t`` a TF-IDF vector of the prompt's words and word bigrams (sublinear term frequency
1 + log tf; idf = log((1 + N) / (1 + df)) + 1 over the N examples, the smoothed idf of scikit-learn;
a term no example has gets the largest idf, so it counts in the prompt's norm), ``v`` the shipped
static embedding (:mod:`banditroute.core.embedding`), and ``a`` = :data:`LEXICAL_SHARE`. The
lexical part catches the words an intent is named by (``translate``, ``SQL``), the embedding their
paraphrases. Routes are used in rules (``when = { semantic_route = "code" }``).

Example
-------
>>> from banditroute.config import SemanticRoute
>>> routes = SemanticRoutes([SemanticRoute(name="translate", examples=["Translate this into French: good morning",
...                                                                      "How do you say thank you in Spanish?"]),
...                          SemanticRoute(name="code", examples=["Write a Python function that sorts a list",
...                                                                 "Fix the bug in this JavaScript loop"])])
>>> routes.match("Translate 'see you tomorrow' into German")
'translate'
>>> routes.match("Write a Python function that reverses a string")
'code'
>>> routes.match("What were the causes of the First World War?") is None
True
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import pairwise

import numpy as np

from banditroute.config import SemanticRoute
from banditroute.core.embedding import StaticEmbedding, words_of

LEXICAL_SHARE = 0.75  # a: the weight of the TF-IDF cosine in the blend (experiments/semantic_routes.py)
DEFAULT_THRESHOLD = 0.25  # the least similarity to an example that matches its route


def terms(text: str) -> Counter:
    """Words and word bigrams of ``text``, counted."""
    words = words_of(text)
    return Counter(words + [f"{a} {b}" for a, b in pairwise(words)])


class SemanticRoutes:
    """The configured routes, with their examples encoded once; :meth:`match` finds a prompt's route."""

    def __init__(self, routes: list[SemanticRoute], embedding: StaticEmbedding | None = None,
                 lexical_share: float = LEXICAL_SHARE):
        self.routes = routes
        self.lexical_share = lexical_share
        self.embedding = embedding or StaticEmbedding.default()
        examples = [e for r in routes for e in r.examples]
        self.owner = np.array([i for i, r in enumerate(routes) for _ in r.examples])
        self.thresholds = np.array([DEFAULT_THRESHOLD if r.threshold is None else r.threshold for r in routes])
        counted = [terms(e) for e in examples]
        df = Counter(t for c in counted for t in c)
        n = len(examples)
        self.idf = {t: math.log((1 + n) / (1 + k)) + 1.0 for t, k in df.items()}
        self.unknown_idf = math.log(1 + n) + 1.0
        self.vocab = {t: j for j, t in enumerate(self.idf)}
        self.lexical = np.stack([self._tfidf(c)[0] for c in counted]) if examples else np.zeros((0, len(self.vocab)))
        self.semantic = self.embedding.encode_many(examples)

    def __bool__(self) -> bool:
        return bool(self.routes)

    def _tfidf(self, counted: Counter) -> tuple[np.ndarray, float]:
        """The prompt's TF-IDF over the examples' vocabulary, divided by its full norm (unknown terms
        included); and that norm."""
        v = np.zeros(len(self.vocab))
        norm2 = 0.0
        for t, k in counted.items():
            w = (1.0 + math.log(k)) * self.idf.get(t, self.unknown_idf)
            norm2 += w * w
            j = self.vocab.get(t)
            if j is not None:
                v[j] = w
        norm = math.sqrt(norm2)
        return (v / norm if norm > 0 else v), norm

    def cosines(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        """The TF-IDF and the embedding cosines of ``prompt`` with every example, in route order."""
        lexical, _ = self._tfidf(terms(prompt))
        return self.lexical @ lexical, self.semantic @ self.embedding.encode_many([prompt])[0]

    def similarities(self, prompt: str) -> np.ndarray:
        """sim(prompt, e) for every example e, in route order."""
        lexical, semantic = self.cosines(prompt)
        return self.lexical_share * lexical + (1.0 - self.lexical_share) * semantic

    def scores(self, prompt: str) -> np.ndarray:
        """Per route, the similarity of its nearest example."""
        sims = self.similarities(prompt)
        best = np.full(len(self.routes), -np.inf)
        np.maximum.at(best, self.owner, sims)
        return best

    def match(self, prompt: str) -> str | None:
        """The name of the route of the prompt's nearest example, if its similarity reaches that route's
        threshold; else None."""
        if not self.routes:
            return None
        best = self.scores(prompt)
        k = int(np.argmax(best))
        return self.routes[k].name if best[k] >= self.thresholds[k] else None
