"""Prompt featurizer: deterministic, versioned, no network.

A prompt becomes ``x = [1, s_1..s_S, h_1..h_D]``:

* ``1`` is the bias term;
* ``s`` are hand-made signals, each scaled to about [0, 1] (see :data:`SIGNALS`): length, code,
  math, question form, comparison, multiple choice, fill-in-the-blank, few-shot examples, requested
  format and brevity, writing and reasoning requests, script (non-ASCII, CJK, other non-Latin);
* ``h`` are word unigrams and bigrams hashed into ``D`` buckets with a sign bit (the hashing trick,
  Weinberger et al., 2009, "Feature Hashing for Large Scale Multitask Learning"), L2-normalised and
  multiplied by ``hash_scale``.

Words are hashed with CRC-32 (``zlib.crc32``), bigrams by mixing the two words' CRCs with a fixed
odd multiplier, so the same prompt yields the same vector in any process, on any machine, in any
year. Python's salted ``hash()`` is never used. Any change to the signals or the hashing must bump
:data:`FEATURE_VERSION`; logs and policy states record it and refuse to mix versions.

Example
-------
>>> f = Featurizer(hash_dim=64)
>>> x = f.transform("Write a Python function that reverses a list.")
>>> x.shape, f.version
((85,), 'v1-d64')
>>> bool(x[0] == 1.0)
True
"""

from __future__ import annotations

import math
import re
import string
import zlib
from dataclasses import dataclass

import numpy as np

FEATURE_VERSION = "v1"

SIGNALS = (
    "log_chars",
    "log_words",
    "lines",
    "code_markers",
    "code_request",
    "math",
    "digits",
    "question",
    "comparison",
    "choice_options",
    "binary_choice",
    "fill_blank",
    "few_shot",
    "format_request",
    "brevity_request",
    "writing_request",
    "reasoning_request",
    "non_ascii",
    "cjk",
    "other_script",
)

_PUNCT_TO_SPACE = str.maketrans({c: " " for c in string.punctuation})
_OPTION = re.compile(r"([\s(])([A-J])[).:]\s")  # "A) ", "(B) ", "C. " after whitespace or "("
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_OTHER_SCRIPT = re.compile(r"[\u0370-\u03ff\u0400-\u04ff\u0590-\u05ff\u0600-\u06ff\u0900-\u0dff\u0e00-\u0e7f]")

# Keyword signals are looked up in the prompt's set of lower-cased words (one C-level set
# intersection each), phrases by substring search: both far faster than word-boundary regexes.
_CODE_MARKERS = ("```", ";\n", "{\n", "()")
_CODE_KEYWORDS = frozenset("def class import include return elif lambda const var println printf".split())
_CODE_WORDS = frozenset(
    "python javascript java typescript rust golang sql regex function program script code "
    "implement debug refactor compile bug snippet api".split()
)
_MATH_WORDS = frozenset(
    "calculate compute solve equation integral derivative probability percent percentage ratio "
    "prove theorem sum total average remainder".split()
)
_MATH_PHRASES = ("how many", "how much", "what is the value")
_WH_WORDS = frozenset("what why how when where who which whom whose".split())
_COMPARISON_WORDS = frozenset(
    "compare comparison versus vs contrast better worse pros cons advantages disadvantages".split()
)
_FORMAT_WORDS = frozenset("json yaml csv table markdown bullet bulleted list format xml html".split())
_BREVITY_WORDS = frozenset("only briefly concise brief".split())
_BREVITY_PHRASES = ("without explanation", "one word", "single word", "one sentence", "short answer")
_WRITING_WORDS = frozenset(
    "story poem essay email letter blog article speech song rewrite paraphrase summarize "
    "summarise summary translate draft compose".split()
)
_REASONING_WORDS = frozenset("explain why reason reasoning justify analyze analyse evaluate assumption assumptions".split())
_FEW_SHOT_MARKERS = ("answer:", "output:", "solution:", "example:")

_BIGRAM_MULT = np.uint64(0x9E3779B1)
_MASK32 = np.uint64(0xFFFFFFFF)
_MAX_TOKENS = 2048
_CACHE_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class Context:
    """What a policy sees of a prompt: its feature vector and its estimated input tokens."""

    x: np.ndarray
    input_tokens: float


def _squash(count: float, half: float) -> float:
    """Map a count to [0, 1): ``count / (count + half)``, so ``half`` maps to 0.5."""
    return count / (count + half)


class Featurizer:
    """Turn a prompt into a fixed-length float64 vector.

    Parameters
    ----------
    hash_dim
        Number of hashed n-gram buckets ``D`` (a power of two).
    hash_scale
        L2 norm of the hashed block, relative to the hand-made signals.

    The output dimension is ``1 + len(SIGNALS) + hash_dim``; :attr:`version` names both the
    feature set and ``D``.
    """

    def __init__(self, hash_dim: int = 64, hash_scale: float = 1.0):
        if hash_dim <= 0 or hash_dim & (hash_dim - 1):
            raise ValueError(f"hash_dim must be a positive power of two, got {hash_dim}")
        self.hash_dim = hash_dim
        self.hash_scale = float(hash_scale)
        self.dim = 1 + len(SIGNALS) + hash_dim
        self.version = f"{FEATURE_VERSION}-d{hash_dim}"
        self._crc: dict[str, int] = {}

    def _word_hashes(self, words: list[str]) -> np.ndarray:
        cache = self._crc
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        out = list(map(cache.get, words))
        if None in out:
            for i, w in enumerate(words):
                if out[i] is None:
                    out[i] = cache[w] = zlib.crc32(w.encode("utf-8"))
        return np.array(out, dtype=np.uint64)

    def _signals(self, text: str, low: str, words: list[str], wordset: set[str]) -> np.ndarray:
        n_chars = len(text)
        sample = max(n_chars, 1)
        non_ascii = n_chars - len(text.encode("ascii", "ignore"))
        options = {letter for _, letter in _OPTION.findall("\n" + text[-500:])}
        raw = low.encode("utf-8")
        n_digits = len(raw) - len(raw.translate(None, b"0123456789"))
        stripped = low.rstrip()
        questions = low.count("?") + (bool(words) and words[0] in _WH_WORDS)
        return np.array(
            [
                min(math.log1p(n_chars) / 10.0, 1.0),
                min(math.log1p(len(words)) / 8.0, 1.0),
                _squash(text.count("\n"), 10.0),
                _squash(len(_CODE_KEYWORDS & wordset) + sum(map(low.count, _CODE_MARKERS)), 2.0),
                _squash(len(_CODE_WORDS & wordset), 1.0),
                _squash(len(_MATH_WORDS & wordset) + sum(p in low for p in _MATH_PHRASES), 1.0),
                min(n_digits / sample * 10.0, 1.0),
                _squash(questions + stripped.endswith("?"), 1.0),
                float(bool(_COMPARISON_WORDS & wordset) or "difference between" in low),
                min(len(options) / 5.0, 1.0),
                float(len(options) == 2),
                float(" _ " in text or " _." in text or " _," in text),
                _squash(sum(map(low.count, _FEW_SHOT_MARKERS)), 2.0),
                float(bool(_FORMAT_WORDS & wordset)),
                float(bool(_BREVITY_WORDS & wordset) or any(p in low for p in _BREVITY_PHRASES)),
                _squash(len(_WRITING_WORDS & wordset), 1.0),
                _squash(len(_REASONING_WORDS & wordset) + ("step by step" in low), 1.0),
                non_ascii / sample,
                min(len(_CJK.findall(text)) / sample * 2.0, 1.0) if non_ascii else 0.0,
                min(len(_OTHER_SCRIPT.findall(text)) / sample * 2.0, 1.0) if non_ascii else 0.0,
            ]
        )

    def _hashed(self, words: list[str]) -> np.ndarray:
        if len(words) > _MAX_TOKENS:
            half = _MAX_TOKENS // 2
            words = words[:half] + words[-half:]
        if not words:
            return np.zeros(self.hash_dim)
        h1 = self._word_hashes(words)
        h2 = ((h1[:-1] * _BIGRAM_MULT) ^ h1[1:]) & _MASK32
        h = np.concatenate([h1, h2])
        buckets = (h & np.uint64(self.hash_dim - 1)).astype(np.intp)
        signs = 1.0 - 2.0 * ((h >> np.uint64(24)) & np.uint64(1)).astype(np.float64)
        out = np.bincount(buckets, weights=signs, minlength=self.hash_dim)
        norm = float(np.sqrt(out @ out))
        return out * (self.hash_scale / norm) if norm > 0 else out

    def transform(self, prompt: str) -> np.ndarray:
        """The feature vector of one prompt (float64, length :attr:`dim`).

        Literal two-character ``\\n`` sequences (prompts stored as escaped strings) count as line
        breaks; words are maximal runs of non-punctuation, non-space characters, lower-cased.
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        text = prompt.replace("\\n", "\n")
        low = text.lower()
        words = low.translate(_PUNCT_TO_SPACE).split()
        signals = self._signals(text, low, words, set(words))
        return np.concatenate(([1.0], signals, self._hashed(words)))

    def transform_many(self, prompts) -> np.ndarray:
        """Stack :meth:`transform` over an iterable of prompts."""
        return np.vstack([self.transform(p) for p in prompts])

    def context(self, prompt: str) -> Context:
        """The policy's view of ``prompt``: its vector and estimated input tokens."""
        return Context(self.transform(prompt), self.input_tokens(prompt))

    def input_tokens(self, prompt: str) -> float:
        """Estimated input tokens: characters / 4 (OpenAI's rule of thumb for English)."""
        return len(prompt) / 4.0
