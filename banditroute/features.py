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
_PUNCT_TO_SPACE_ASCII = bytes.maketrans(string.punctuation.encode(), b" " * len(string.punctuation))
_OPTION = re.compile(r"([\s(])([A-J])[).:]\s")  # "A) ", "(B) ", "C. " after whitespace or "("
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
# Any "A) "-like option implies this shorter pattern, which fails fast on most prompts.
_OPTION_HINT = re.compile(r"[A-J][).:]\s")
_OTHER_SCRIPT = re.compile(r"[\u0370-\u03ff\u0400-\u04ff\u0590-\u05ff\u0600-\u06ff\u0900-\u0dff\u0e00-\u0e7f]")

# Keyword signals are looked up in the prompt's set of lower-cased words (one C-level set
# intersection each), phrases by substring search: both far faster than word-boundary regexes.
_CODE_KEYWORDS = frozenset("def class import include return elif lambda const var println printf".split())
_CODE_WORDS = frozenset(
    "python javascript java typescript rust golang sql regex function program script code "
    "implement debug refactor compile bug snippet api".split()
)
_MATH_WORDS = frozenset(
    "calculate compute solve equation integral derivative probability percent percentage ratio "
    "prove theorem sum total average remainder".split()
)
_WH_WORDS = frozenset("what why how when where who which whom whose".split())
_COMPARISON_WORDS = frozenset(
    "compare comparison versus vs contrast better worse pros cons advantages disadvantages".split()
)
_FORMAT_WORDS = frozenset("json yaml csv table markdown bullet bulleted list format xml html".split())
_BREVITY_WORDS = frozenset("only briefly concise brief".split())
_WRITING_WORDS = frozenset(
    "story poem essay email letter blog article speech song rewrite paraphrase summarize "
    "summarise summary translate draft compose".split()
)
_REASONING_WORDS = frozenset("explain why reason reasoning justify analyze analyse evaluate assumption assumptions".split())

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

    @staticmethod
    def _signals(text: str, low: str, words: list[str], wordset: set[str]) -> list[float]:
        n_chars = len(text)
        sample = max(n_chars, 1)
        non_ascii = n_chars - len(text.encode("ascii", "ignore"))
        tail = "\n" + text[-500:]
        options = {letter for _, letter in _OPTION.findall(tail)} if _OPTION_HINT.search(tail) else ()
        raw = low.encode("utf-8")
        n_digits = len(raw) - len(raw.translate(None, b"0123456789"))
        questions = low.count("?") + (bool(words) and words[0] in _WH_WORDS)
        count = low.count
        return [
            min(math.log1p(n_chars) / 10.0, 1.0),
            min(math.log1p(len(words)) / 8.0, 1.0),
            _squash(text.count("\n"), 10.0),
            _squash(len(_CODE_KEYWORDS & wordset) + count("```") + count(";\n") + count("{\n") + count("()"), 2.0),
            _squash(len(_CODE_WORDS & wordset), 1.0),
            _squash(len(_MATH_WORDS & wordset) + ("how many" in low) + ("how much" in low)
                    + ("what is the value" in low), 1.0),
            min(n_digits / sample * 10.0, 1.0),
            _squash(questions + low.rstrip().endswith("?"), 1.0),
            float(bool(_COMPARISON_WORDS & wordset) or "difference between" in low),
            min(len(options) / 5.0, 1.0),
            float(len(options) == 2),
            float(" _ " in text or " _." in text or " _," in text),
            _squash(count("answer:") + count("output:") + count("solution:") + count("example:"), 2.0),
            float(bool(_FORMAT_WORDS & wordset)),
            float(bool(_BREVITY_WORDS & wordset) or "without explanation" in low or "one word" in low
                  or "single word" in low or "one sentence" in low or "short answer" in low),
            _squash(len(_WRITING_WORDS & wordset), 1.0),
            _squash(len(_REASONING_WORDS & wordset) + ("step by step" in low), 1.0),
            non_ascii / sample,
            min(len(_CJK.findall(text)) / sample * 2.0, 1.0) if non_ascii else 0.0,
            min(len(_OTHER_SCRIPT.findall(text)) / sample * 2.0, 1.0) if non_ascii else 0.0,
        ]

    def _hashed(self, words: list[str], lengths: list[int]) -> np.ndarray:
        """Signed bucket counts of each prompt's words and bigrams, L2-normalised per row.

        ``words`` holds the prompts' words back to back, ``lengths`` how many belong to each.
        Bucket sums are sums of +-1, so they are exact whatever the batch.
        """
        n, dim = len(lengths), self.hash_dim
        if not words:
            return np.zeros((n, dim))
        row = np.repeat(np.arange(n, dtype=np.intp), lengths)
        h1 = self._word_hashes(words)
        h2 = ((h1[:-1] * _BIGRAM_MULT) ^ h1[1:]) & _MASK32
        same = row[:-1] == row[1:]  # a bigram never spans two prompts
        h = np.concatenate([h1, h2[same]])
        rows = np.concatenate([row, row[:-1][same]])
        buckets = rows * dim + (h & np.uint64(dim - 1)).astype(np.intp)
        signs = 1.0 - 2.0 * ((h >> np.uint64(24)) & np.uint64(1)).astype(np.float64)
        out = np.bincount(buckets, weights=signs, minlength=n * dim).reshape(n, dim)
        norm = np.sqrt(np.einsum("ij,ij->i", out, out))
        scale = np.divide(self.hash_scale, norm, out=np.zeros(n), where=norm > 0)
        return out * scale[:, None]

    def transform(self, prompt: str) -> np.ndarray:
        """The feature vector of one prompt (float64, length :attr:`dim`).

        Literal two-character ``\\n`` sequences (prompts stored as escaped strings) count as line
        breaks; words are maximal runs of non-punctuation, non-space characters, lower-cased.
        """
        return self.transform_many([prompt])[0]

    def transform_many(self, prompts) -> np.ndarray:
        """The feature vectors of several prompts, one row each: :meth:`transform` in one pass.

        The string work is per prompt; hashing and normalisation run once for the whole batch
        (the server routes the requests that arrive together as one batch).
        """
        signals, words, lengths = [], [], []
        for prompt in prompts:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
            text = prompt.replace("\\n", "\n")
            low = text.lower()
            if low.isascii():  # the same words; bytes.translate is several times faster
                ws = low.encode().translate(_PUNCT_TO_SPACE_ASCII).decode().split()
            else:
                ws = low.translate(_PUNCT_TO_SPACE).split()
            signals.append(self._signals(text, low, ws, set(ws)))
            if len(ws) > _MAX_TOKENS:
                ws = ws[: _MAX_TOKENS // 2] + ws[-_MAX_TOKENS // 2 :]
            words += ws
            lengths.append(len(ws))
        out = np.empty((len(lengths), self.dim))
        out[:, 0] = 1.0
        out[:, 1 : 1 + len(SIGNALS)] = signals
        out[:, 1 + len(SIGNALS) :] = self._hashed(words, lengths)
        return out

    def context(self, prompt: str) -> Context:
        """The policy's view of ``prompt``: its vector and estimated input tokens."""
        return Context(self.transform(prompt), self.input_tokens(prompt))

    def input_tokens(self, prompt: str) -> float:
        """Estimated input tokens: characters / 4 (OpenAI's rule of thumb for English)."""
        return len(prompt) / 4.0
