"""Prompt featurizer: deterministic, versioned, no network.

A prompt becomes ``x = [1, s_1..s_S, h_1..h_D, e_1..e_E]``:

* ``1`` is the bias term;
* ``s`` are hand-made signals, each scaled to about [0, 1] (see :data:`SIGNALS`): length, code,
  math, question form, comparison, multiple choice, fill-in-the-blank, few-shot examples, requested
  format and brevity, writing and reasoning requests, script (non-ASCII, CJK, other non-Latin);
* ``h`` are word unigrams and bigrams hashed into ``D`` buckets with a sign bit (the hashing trick,
  Weinberger et al., 2009, "Feature Hashing for Large Scale Multitask Learning"), L2-normalised and
  multiplied by ``hash_scale``: lexical evidence. With the policies' isotropic ridge prior, the block's
  norm is its prior weight: at 0.5 (v3) the words count for less, against the embedding and the
  signals, until the evidence says otherwise. Words are maximal runs of characters that are neither
  whitespace nor punctuation, lower-cased. Chinese, Japanese, Thai, Lao, Myanmar and Khmer put no
  spaces between words, so a sentence would be one "word" seen once; since v4 a run of such
  characters (kana, Han, Hangul, Thai, Lao, Myanmar, Khmer) inside a word becomes its overlapping
  character bigrams (a lone character stays a unigram) and those scripts' punctuation and full-width
  punctuation separate words as ASCII punctuation does: the segmentation of Lucene's
  ``CJKBigramFilter`` and of the bigram indexing that matches dictionary word segmentation in
  Chinese retrieval (Kwok, 1997, "Comparing representations in Chinese information retrieval").
  A prompt without characters or punctuation of those scripts gets the same words, and the same
  vector, as in v3;
* ``e`` is the static sentence embedding of :mod:`banditroute.core.embedding` (unit length, times
  ``embed_scale``): what the prompt is about, which words alone cannot tell (a trivia question from a
  code task). Without it (``embedding=False``) the vector is the v1 feature set.

Words are hashed with CRC-32 (``zlib.crc32``), bigrams by mixing the two words' CRCs with a fixed
odd multiplier, so the same prompt yields the same vector in any process, on any machine, in any
year. Python's salted ``hash()`` is never used. Any change to the signals, the hashing or the
embedding must bump :data:`FEATURE_VERSION`; logs and policy states record :attr:`Featurizer.version`
(``v1-d64``: no embedding, hashed block at norm 1; ``v2-d64-<embedding name>``: with the embedding;
``v3-d64-<embedding name>``: the hashed block at norm 0.5; ``v4-d64-<embedding name>``: v3 with text
in scripts written without spaces split into character bigrams, the default) and refuse to mix versions, and
:meth:`Featurizer.from_version` rebuilds the featurizer a log was written with (a test pins the
vectors of a few prompts to a digest).

Two stages: each prompt is reduced to counts (:data:`COUNTS`: characters, words, keyword groups,
phrases, options, ...) and signed bucket counts; numpy turns a batch of those into features. The
counting, and the signals' formulas, are done by the C core ``banditroute.core._featurize`` when it
is built and by :meth:`Featurizer._count` / :meth:`Featurizer._bucket_counts` /
:meth:`Featurizer._signals` otherwise (the reference); tests check both give identical vectors.

Example
-------
>>> f = Featurizer(hash_dim=64)
>>> x = f.transform("Write a Python function that reverses a list.")
>>> x.shape, f.version
((149,), 'v4-d64-minilm-l6-m2v-64')
>>> Featurizer.from_version("v1-d64").dim
85
>>> bool(x[0] == 1.0)
True
"""

from __future__ import annotations

import math
import re
import string
import zlib

import numpy as np

from banditroute.core.embedding import StaticEmbedding
from banditroute.core.tokens import estimate_tokens
from banditroute.core.types import Context

FEATURE_VERSION = "v4"
_VERSION = re.compile(r"v(?P<v>[1234])-d(?P<d>\d+)(?:-(?P<emb>.+))?")
# the hashed block's norm of each version (v1 has no embedding; v2, v3 and v4 have one)
_HASH_SCALE = {"1": 1.0, "2": 1.0, "3": 0.5, "4": 0.5}

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
# Any "A) "-like option implies this shorter pattern, which fails fast on most prompts.
_OPTION_HINT = re.compile(r"[A-J][).:]\s")
_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"  # kana, Han (and extension A), Hangul
_CJK = re.compile(f"[{_CJK_RANGES}]")
# v4: scripts written without spaces between words, whose runs become character bigrams: CJK, Thai and
# Lao, Myanmar, Khmer
_UNSPACED_RANGES = _CJK_RANGES + "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff"
_UNSPACED = re.compile(f"[{_UNSPACED_RANGES}]")
_UNSPACED_RUNS = re.compile(f"[{_UNSPACED_RANGES}]+|[^{_UNSPACED_RANGES}]+")
# v4: the punctuation of those scripts and the full-width forms of ASCII punctuation separate words
# (U+30FB, the katakana middle dot, is punctuation inside the kana block; Thai's fongman and angkhankhu,
# Myanmar's section marks, Khmer's khan and its kin likewise)
_UNSPACED_PUNCT = ((0x0E4F, 0x0E4F), (0x0E5A, 0x0E5B), (0x104A, 0x104B), (0x17D4, 0x17D6), (0x17D8, 0x17DA),
                   (0x3001, 0x3003), (0x3008, 0x3011), (0x3014, 0x301F), (0x3030, 0x3030), (0x303D, 0x303D),
                   (0x30FB, 0x30FB), (0xFF01, 0xFF0F), (0xFF1A, 0xFF20), (0xFF3B, 0xFF40), (0xFF5B, 0xFF65))
_PUNCT_TO_SPACE_V4 = _PUNCT_TO_SPACE | {c: " " for a, b in _UNSPACED_PUNCT for c in range(a, b + 1)}
_OTHER_SCRIPT = re.compile(r"[\u0370-\u03ff\u0400-\u04ff\u0590-\u05ff\u0600-\u06ff\u0900-\u0dff\u0e00-\u0e7f]")

# Keyword signals count the distinct words of a group present in the prompt's lower-cased words;
# phrases are counted in the lower-cased text (non-overlapping, as str.count).
_GROUPS = {
    "code_keywords": "def class import include return elif lambda const var println printf",
    "code_words": "python javascript java typescript rust golang sql regex function program script code "
                  "implement debug refactor compile bug snippet api",
    "math_words": "calculate compute solve equation integral derivative probability percent percentage ratio "
                  "prove theorem sum total average remainder",
    "wh_words": "what why how when where who which whom whose",  # used for the first word only (first_wh)
    "comparison_words": "compare comparison versus vs contrast better worse pros cons advantages disadvantages",
    "format_words": "json yaml csv table markdown bullet bulleted list format xml html",
    "brevity_words": "only briefly concise brief",
    "writing_words": "story poem essay email letter blog article speech song rewrite paraphrase summarize "
                     "summarise summary translate draft compose",
    "reasoning_words": "explain why reason reasoning justify analyze analyse evaluate assumption assumptions",
}
_VOCAB = {name: frozenset(words.split()) for name, words in _GROUPS.items()}
_PHRASES = {
    "code_markers": ("```", ";\n", "{\n", "()"),
    "math_phrases": ("how many", "how much", "what is the value"),
    "difference": ("difference between",),
    "blank": (" _ ", " _.", " _,"),
    "few_shot": ("answer:", "output:", "solution:", "example:"),
    "brevity_phrases": ("without explanation", "one word", "single word", "one sentence", "short answer"),
    "step_by_step": ("step by step",),
    "question_marks": ("?",),
}
_PHRASE_LIST = tuple(p for group in _PHRASES.values() for p in group)
# What is counted per prompt, in order: the layout of the C core's rows too (_featurize.c).
COUNTS = (
    ("chars", "words", "newlines", "digits", "options", "ends_question", "first_wh", "non_ascii", "cjk", "other_script")
    + tuple(_GROUPS) + _PHRASE_LIST
)
_COL = {name: i for i, name in enumerate(COUNTS)}

# Each signal's numerator: (counts added, phrases whose presence is added), and its kind.
_NUMERATORS = {
    "lines": (("newlines",), (), ("squash", 10.0)),
    "code_markers": (("code_keywords", *_PHRASES["code_markers"]), (), ("squash", 2.0)),
    "code_request": (("code_words",), (), ("squash", 1.0)),
    "math": (("math_words",), _PHRASES["math_phrases"], ("squash", 1.0)),
    "digits": (("digits",), (), ("share", 10.0, 1.0)),
    "question": (("?", "first_wh", "ends_question"), (), ("squash", 1.0)),
    "comparison": (("comparison_words", *_PHRASES["difference"]), (), ("present",)),
    "choice_options": (("options",), (), ("options",)),
    "binary_choice": (("options",), (), ("options",)),
    "fill_blank": (_PHRASES["blank"], (), ("present",)),
    "few_shot": (_PHRASES["few_shot"], (), ("squash", 2.0)),
    "format_request": (("format_words",), (), ("present",)),
    "brevity_request": (("brevity_words", *_PHRASES["brevity_phrases"]), (), ("present",)),
    "writing_request": (("writing_words",), (), ("squash", 1.0)),
    "reasoning_request": (("reasoning_words",), _PHRASES["step_by_step"], ("squash", 1.0)),
    "non_ascii": (("non_ascii",), (), ("share", 1.0, np.inf)),
    "cjk": (("cjk",), (), ("share", 2.0, 1.0)),
    "other_script": (("other_script",), (), ("share", 2.0, 1.0)),
}
_SUM_COUNTS = np.zeros((len(COUNTS), len(SIGNALS)))
_SUM_PRESENT = np.zeros((len(COUNTS), len(SIGNALS)))
for _j, (_counts, _present, _) in ((SIGNALS.index(k), v) for k, v in _NUMERATORS.items()):
    _SUM_COUNTS[[_COL[name] for name in _counts], _j] = 1.0
    _SUM_PRESENT[[_COL[name] for name in _present], _j] = 1.0
_SQUASH = np.array([SIGNALS.index(k) for k, v in _NUMERATORS.items() if v[2][0] == "squash"])
_SQUASH_HALF = np.array([v[2][1] for v in _NUMERATORS.values() if v[2][0] == "squash"])
_PRESENT = np.array([SIGNALS.index(k) for k, v in _NUMERATORS.items() if v[2][0] == "present"])
_SHARE = np.array([SIGNALS.index(k) for k, v in _NUMERATORS.items() if v[2][0] == "share"])
_SHARE_MULT = np.array([v[2][1] for v in _NUMERATORS.values() if v[2][0] == "share"])
_SHARE_CAP = np.array([v[2][2] for v in _NUMERATORS.values() if v[2][0] == "share"])
_OPTIONS = SIGNALS.index("choice_options")  # and binary_choice right after it


def _signal_formulas() -> list[tuple]:
    """What :meth:`Featurizer._signals` computes, signal by signal, for the C core: (kind, columns added,
    columns counted when positive, a, b), the kinds numbered as in ``_featurize.c``."""
    kinds = {"log": 0, "squash": 1, "present": 2, "share": 3, "options": 4, "two_options": 5}
    out = [(kinds["log"], [_COL["chars"]], [], 10.0, 0.0), (kinds["log"], [_COL["words"]], [], 8.0, 0.0)]
    for name in SIGNALS[2:]:
        counts, present, (kind, *params) = _NUMERATORS[name]
        kind = "two_options" if name == "binary_choice" else kind
        a, b = (*params, 0.0, 0.0)[:2]
        out.append((kinds[kind], [_COL[c] for c in counts], [_COL[c] for c in present], a, b))
    return out


try:  # the C counting core; without it (no C compiler at install) every prompt takes the Python path
    from banditroute.core import _featurize as _native

    _native.configure([sorted(_VOCAB[g]) for g in _GROUPS], list(_GROUPS).index("wh_words"), list(_PHRASE_LIST))
    _native.configure_signals(_COL["chars"], _signal_formulas())
except ImportError:  # pragma: no cover - a build without a C compiler
    _native = None


def _unspaced_bigrams(words: list[str]) -> list[str]:
    """``words`` with each run of characters of a script written without spaces (:data:`_UNSPACED`)
    inside a word replaced by its overlapping character bigrams (a run of one character stays as it
    is); the other runs of a word stay words: ``["python是一种语言"]`` -> ``["python", "是一", "一种",
    "种语", "语言"]``."""
    out = []
    for w in words:
        if _UNSPACED.search(w) is None:
            out.append(w)
            continue
        for run in _UNSPACED_RUNS.findall(w):
            if len(run) > 1 and _UNSPACED.match(run):
                out += [run[i : i + 2] for i in range(len(run) - 1)]
            else:
                out.append(run)
    return out


_BIGRAM_MULT = np.uint64(0x9E3779B1)
_MASK32 = np.uint64(0xFFFFFFFF)
_MAX_TOKENS = 2048
_CACHE_LIMIT = 100_000


class Featurizer:
    """Turn a prompt into a fixed-length float64 vector.

    Parameters
    ----------
    hash_dim
        Number of hashed n-gram buckets ``D`` (a power of two).
    hash_scale
        L2 norm of the hashed block, relative to the hand-made signals; by default 0.5 with the
        embedding (v3), 1 without (v1).
    embedding
        The static embedding appended to the vector: True for the shipped one, a
        :class:`StaticEmbedding`, or False for none (the v1 feature set).
    embed_scale
        L2 norm of the embedding block.
    unspaced_bigrams
        Split runs of characters of scripts written without spaces (CJK, Thai, Lao, Myanmar, Khmer)
        into character bigrams (v4; the module docstring): by default with the embedding, not without (v1).

    The output dimension is ``1 + len(SIGNALS) + hash_dim + E``; :attr:`version` names the feature
    set, ``D`` and the embedding. Scales that no version has (experiments) are appended to the
    version, ``+hash_scale=2,embed_scale=1``, which :meth:`from_version` does not rebuild.
    """

    def __init__(self, hash_dim: int = 64, hash_scale: float | None = None,
                 embedding: bool | StaticEmbedding = True, embed_scale: float = 1.0, unspaced_bigrams: bool | None = None):
        if hash_dim <= 0 or hash_dim & (hash_dim - 1):
            raise ValueError(f"hash_dim must be a positive power of two, got {hash_dim}")
        self.hash_dim = hash_dim
        self.embedding = StaticEmbedding.default() if embedding is True else (embedding or None)
        self.unspaced_bigrams = bool(self.embedding) if unspaced_bigrams is None else bool(unspaced_bigrams)
        self.hash_scale = _HASH_SCALE["4" if self.embedding else "1"] if hash_scale is None else float(hash_scale)
        self.embed_scale = float(embed_scale)
        embed_dim = self.embedding.dims if self.embedding else 0
        self.dim = 1 + len(SIGNALS) + hash_dim + embed_dim
        if not self.embedding:
            v = "1"
        elif self.unspaced_bigrams:
            v = "4"
        else:
            v = "2" if (self.hash_scale, self.embed_scale) == (_HASH_SCALE["2"], 1.0) else "3"
        self.version = f"v{v}-d{hash_dim}" + (f"-{self.embedding.name}" if self.embedding else "")
        if self.hash_scale != _HASH_SCALE[v] or self.embed_scale != 1.0:
            self.version += f"+hash_scale={self.hash_scale:g},embed_scale={self.embed_scale:g}"
        if self.unspaced_bigrams and not self.embedding:
            self.version += "+unspaced_bigrams"
        self._crc: dict[str, int] = {}

    @classmethod
    def from_version(cls, version: str) -> Featurizer:
        """The featurizer that writes ``version`` (a log's or a state's), if this installation has it."""
        m = _VERSION.fullmatch(version or "")
        if m is None or (m["v"] == "1") != (m["emb"] is None) or "+" in version:
            raise ValueError(f"unknown feature version {version!r}")
        f = cls(int(m["d"]), hash_scale=_HASH_SCALE[m["v"]], embedding=m["v"] != "1", unspaced_bigrams=m["v"] == "4")
        if f.version != version:
            raise ValueError(f"features {version!r} need an embedding this installation does not ship "
                             f"(it has {f.embedding.name})")
        return f

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
    def _count(prompt: str, unspaced_bigrams: bool = False) -> tuple[list[float], list[str]]:
        """The Python path: one prompt's :data:`COUNTS` and its words (the reference for the C core);
        ``unspaced_bigrams``: runs of scripts written without spaces as character bigrams (v4, see the
        module docstring)."""
        text = prompt.replace("\\n", "\n")
        low = text.lower()
        if low.isascii():  # the same words; bytes.translate is several times faster
            words = low.encode().translate(_PUNCT_TO_SPACE_ASCII).decode().split()
        elif unspaced_bigrams:
            words = low.translate(_PUNCT_TO_SPACE_V4).split()
            if _UNSPACED.search(low):
                words = _unspaced_bigrams(words)
        else:
            words = low.translate(_PUNCT_TO_SPACE).split()
        wordset = set(words)
        n_chars = len(text)
        non_ascii = n_chars - len(text.encode("ascii", "ignore"))
        tail = "\n" + text[-500:]
        options = {letter for _, letter in _OPTION.findall(tail)} if _OPTION_HINT.search(tail) else ()
        raw = low.encode("utf-8")
        counts = [
            n_chars,
            len(words),
            text.count("\n"),
            len(raw) - len(raw.translate(None, b"0123456789")),
            len(options),
            low.rstrip().endswith("?"),
            bool(words) and words[0] in _VOCAB["wh_words"],
            non_ascii,
            len(_CJK.findall(text)) if non_ascii else 0,
            len(_OTHER_SCRIPT.findall(text)) if non_ascii else 0,
        ]
        counts += [len(_VOCAB[g] & wordset) for g in _GROUPS]
        counts += map(low.count, _PHRASE_LIST)
        return counts, words

    def _bucket_counts(self, words: list[str], lengths: list[int]) -> np.ndarray:
        """Signed bucket counts of each prompt's words and bigrams (the Python path), one row each.

        ``words`` holds the prompts' words back to back, ``lengths`` how many belong to each.
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
        return np.bincount(buckets, weights=signs, minlength=n * dim).reshape(n, dim)

    @staticmethod
    def _signals(c: np.ndarray) -> np.ndarray:
        """The 20 :data:`SIGNALS` from a (B, len(COUNTS)) count matrix, one row per prompt.

        Each signal's numerator is a sum of counts and of phrase presences (:data:`_NUMERATORS`),
        so all of them come from two products with 0/1 matrices (exact: sums of small integers).
        The numerator ``n`` is then mapped to [0, 1] by its kind: ``n / (n + h)`` (squash),
        ``n > 0`` (present), ``min(n / chars * m, cap)`` (share of characters) or, for the option
        count and the two lengths, their own formula. Logarithms use ``math.log1p`` (the same libm
        result on every machine, unlike vectorised variants).
        """
        n = c @ _SUM_COUNTS + (c > 0) @ _SUM_PRESENT
        chars = c[:, _COL["chars"]]
        out = np.empty((len(c), len(SIGNALS)))
        out[:, 0] = np.minimum([math.log1p(v) / 10.0 for v in chars.tolist()], 1.0)
        out[:, 1] = np.minimum([math.log1p(v) / 8.0 for v in c[:, _COL["words"]].tolist()], 1.0)
        sq = n[:, _SQUASH]
        out[:, _SQUASH] = sq / (sq + _SQUASH_HALF)
        out[:, _PRESENT] = n[:, _PRESENT] > 0
        out[:, _SHARE] = np.minimum(n[:, _SHARE] / np.maximum(chars, 1.0)[:, None] * _SHARE_MULT, _SHARE_CAP)
        options = n[:, _OPTIONS]
        out[:, _OPTIONS] = np.minimum(options / 5.0, 1.0)
        out[:, _OPTIONS + 1] = options == 2
        return out

    def transform(self, prompt: str) -> np.ndarray:
        """The feature vector of one prompt (float64, length :attr:`dim`).

        Literal two-character ``\\n`` sequences (prompts stored as escaped strings) count as line
        breaks; words are maximal runs of non-punctuation, non-space characters, lower-cased (since
        v4 with runs of scripts written without spaces as character bigrams).
        """
        return self.transform_many([prompt])[0]

    def transform_many(self, prompts) -> np.ndarray:
        """The feature vectors of several prompts, one row each: :meth:`transform` in one pass.

        Prompts are counted by the C core when it is built (non-strings and text with lone
        surrogates are left to Python), otherwise in Python; both fill the same count and bucket
        rows, which the same numpy code turns into features. Bucket sums are sums of +-1 and so
        exact, whatever the path or the batch.
        """
        prompts = prompts if isinstance(prompts, list) else list(prompts)
        n = len(prompts)
        counts = np.zeros((n, len(COUNTS)))
        buckets = np.zeros((n, self.hash_dim))
        rest = range(n) if _native is None else _native.count_many(prompts, counts, buckets, self.unspaced_bigrams)
        words, lengths = [], []
        for i in rest:
            if not isinstance(prompts[i], str):
                raise TypeError(f"prompt must be a string, got {type(prompts[i]).__name__}")
            counts[i], ws = self._count(prompts[i], self.unspaced_bigrams)
            if len(ws) > _MAX_TOKENS:
                ws = ws[: _MAX_TOKENS // 2] + ws[-_MAX_TOKENS // 2 :]
            words += ws
            lengths.append(len(ws))
        if lengths:
            buckets[list(rest)] = self._bucket_counts(words, lengths)
        norm = np.sqrt(np.einsum("ij,ij->i", buckets, buckets))
        scale = np.divide(self.hash_scale, norm, out=np.zeros(n), where=norm > 0)
        out = np.empty((n, self.dim))
        out[:, 0] = 1.0
        if _native is None:
            out[:, 1 : 1 + len(SIGNALS)] = self._signals(counts)
        else:
            _native.signals(counts, out, 1)
        end = 1 + len(SIGNALS) + self.hash_dim
        out[:, 1 + len(SIGNALS) : end] = buckets * scale[:, None]
        if self.embedding:
            out[:, end:] = self.embedding.encode_many(prompts) * self.embed_scale
        return out

    def context(self, prompt: str) -> Context:
        """The policy's view of ``prompt``: its vector and estimated input tokens."""
        return Context(self.transform(prompt), self.input_tokens(prompt))

    def input_tokens(self, prompt: str) -> float:
        """Estimated input tokens (:func:`banditroute.core.tokens.estimate_tokens`: characters / 4 for
        ASCII text, a rate per character by Unicode block otherwise)."""
        return estimate_tokens(prompt)
