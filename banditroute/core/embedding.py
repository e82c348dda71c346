"""A static sentence embedding: a prompt is the mean of its WordPiece tokens' rows in a fixed table.

    e(p) = normalise( (1 / n) sum_{i=1..n} E[t_i] ),    t_1..t_n = the WordPiece tokens of p's words

with ``E`` a vocabulary x dims table distilled from all-MiniLM-L6-v2 by model2vec (Tulkens &
van Dongen, 2024, "Model2Vec: Distill a Small Fast Model from any Sentence Transformer"; built by
``scripts/build_embedding.py``, which alone needs torch) and ``normalise`` the L2 normalisation (a
prompt without known tokens maps to the zero vector).

Tokenisation follows BERT's uncased tokenizer (Devlin et al., 2019) for words, and is done here
rather than by a tokenizer library, because a word's pieces can then be cached: lower-case; split
into words at whitespace and punctuation (punctuation itself is not embedded); each CJK character a
word of its own; accents stripped (NFD, combining marks dropped); each word split into the longest
vocabulary pieces from the left, continuations prefixed ``##`` (WordPiece; Wu et al., 2016), a word
with no such split, or longer than ``max_input_chars_per_word``, being unknown and skipped. Only the
first and last :data:`MAX_WORDS` / 2 words of a long prompt are embedded (instructions usually open a
prompt and the question closes it), which bounds the cost of a decision. Each distinct word's pieces
are looked up once: the sum of their rows is cached (up to :data:`WORD_CACHE` words, then the
cache starts over), so a prompt costs one gather over its words.

The files ship inside the package (``banditroute/data/embedding``): ``vectors.npy`` (float16),
``vocab.txt`` and ``manifest.json``, which records the SHA-256 of the other two; a file whose digest
differs is refused (:class:`EmbeddingError`), so a damaged install cannot route on garbage. Sums run
in float64, over a word's pieces and then over the prompt's words in order, so a prompt gets the
same vector in any process, alone or in a batch. The cache keeps each word's sum in float32, half
the memory of float64: a word's sum is rounded to float32 when its pieces' float16 values need more
than float32's 24 bits together (on about 1% of the shared tables' prompts, by at most 5e-9).

Example
-------
>>> emb = StaticEmbedding.default()
>>> emb.pieces("Tokenizing unaffable words")
['token', '##izing', 'una', '##ffa', '##ble', 'words']
>>> v = emb.encode_many(["Write a Python function that reverses a list.", ""])
>>> v.shape, round(float((v[0] ** 2).sum()), 6), float(abs(v[1]).sum())
((2, 64), 1.0, 0.0)
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import string
import unicodedata
from itertools import chain
from pathlib import Path

import numpy as np

try:  # the C word cache; without it a dict and numpy do the same (the same rows summed in the same order)
    from banditroute.core._featurize import WordCache as _NativeCache
except ImportError:  # pragma: no cover - a build without a C compiler
    _NativeCache = None

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "data" / "embedding"
MAX_WORDS = 512
WORD_CACHE = 65_536

_PUNCT_TO_SPACE_ASCII = bytes.maketrans(string.punctuation.encode(), b" " * len(string.punctuation))
# BERT's "Chinese character" blocks: CJK ideographs, each one a word
_CJK_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_WORD = re.compile(rf"[{_CJK_CLASS}]|[^\W_{_CJK_CLASS}]+")


class EmbeddingError(RuntimeError):
    """The embedding files are missing, damaged or inconsistent."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def words_of(prompt: str) -> list[str]:
    """The lower-cased words of ``prompt`` (module docstring), at most :data:`MAX_WORDS`."""
    low = prompt.lower()
    if low.isascii():  # bytes.translate is several times faster than a regular expression
        words = low.encode().translate(_PUNCT_TO_SPACE_ASCII).decode().split()
    else:
        words = _WORD.findall(low)
    if len(words) > MAX_WORDS:
        words = words[: MAX_WORDS // 2] + words[-MAX_WORDS // 2 :]
    return words


class _DictCache:
    """The word cache in Python: ``word -> row`` of the caller's table of word vectors, rows handed out in
    insertion order. The reference for the C core's ``WordCache``, which has the same methods and finds
    a prompt's words itself (here :func:`words_of` does), but for text with lone surrogates."""

    def __init__(self, capacity: int, max_words: int):
        self.capacity = capacity
        self._row: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._row)

    def clear(self) -> None:
        self._row.clear()

    def sum(self, text: str | list[str], table: np.ndarray, out: np.ndarray, make_room: bool):
        """``out`` = the sum, in word order, of the rows of ``text``'s words (a prompt or its words) and
        None; or the words not cached (nothing summed). ``make_room``: first start over if they might not fit."""
        words = words_of(text) if isinstance(text, str) else text
        if make_room and len(self._row) + len(words) > self.capacity:
            self._row.clear()
        rows = list(map(self._row.get, words))
        if None in rows:
            return [w for w, r in zip(words, rows) if r is None]
        out[:] = np.add.reduce(table[rows].astype(np.float64), axis=0) if rows else 0.0
        return None

    def insert(self, words: list[str]) -> list[int]:
        """The row given to each word, -1 for a word cached already (or earlier in the list)."""
        out = []
        for w in words:
            if w in self._row:
                out.append(-1)
            else:
                if len(self._row) >= self.capacity:
                    raise OverflowError("the word cache is full: sum(..., make_room=True) first")
                out.append(self._row.setdefault(w, len(self._row)))
        return out


class StaticEmbedding:
    """The token table and vocabulary of ``directory``, verified against its manifest.

    Parameters
    ----------
    directory
        Holds ``manifest.json``, ``vectors.npy`` and ``vocab.txt``.
    """

    def __init__(self, directory: str | Path = DEFAULT_DIR):
        directory = Path(directory)
        try:
            manifest = json.loads((directory / "manifest.json").read_text())
            for name, digest in manifest["files"].items():
                if _sha256(directory / name) != digest:
                    raise EmbeddingError(f"{directory / name}: SHA-256 differs from manifest.json; reinstall banditroute")
            vectors = np.load(directory / "vectors.npy", allow_pickle=False)
            tokens = (directory / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
            wordpiece = manifest["wordpiece"]
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise EmbeddingError(f"cannot load the prompt embedding from {directory}: {exc}") from exc
        if vectors.shape != (manifest["vocabulary"], manifest["dims"]) or len(tokens) != len(vectors):
            raise EmbeddingError(f"{directory}: table {vectors.shape} does not match the manifest or vocabulary")
        self.name = manifest["name"]
        self.dims = int(manifest["dims"])
        self._vocab = {t: i for i, t in enumerate(tokens)}
        self._tokens = tokens
        self._prefix = wordpiece["prefix"]
        self._max_chars = int(wordpiece["max_input_chars_per_word"])
        self._vectors = vectors.astype(np.float64)
        # the word cache: word -> row of _sums, its pieces' vector sum (the mean's 1/n cancels in normalise)
        self._cache = (_NativeCache or _DictCache)(WORD_CACHE, MAX_WORDS)
        self._sums = np.zeros((WORD_CACHE, self.dims), dtype=np.float32)

    @classmethod
    @functools.cache
    def default(cls) -> StaticEmbedding:
        """The shipped table, loaded and verified once per process."""
        return cls()

    def _wordpiece(self, word: str) -> tuple[int, ...]:
        """The token ids of one word: accents stripped, then greedy longest-match pieces; () if unknown."""
        if not word.isascii():
            word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
        if not word or len(word) > self._max_chars:
            return ()
        vocab, ids, start = self._vocab, [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else self._prefix + word[start:end]
                if piece in vocab:
                    ids.append(vocab[piece])
                    break
                end -= 1
            if end == start:
                return ()
            start = end
        return tuple(ids)

    def _add(self, words: list[str]) -> None:
        """Cache the row sums of the words not cached yet (after a ``sum`` that made room for them)."""
        for w, r in zip(words, self._cache.insert(words)):
            if r >= 0:
                ids = self._wordpiece(w)
                self._sums[r] = np.add.reduce(self._vectors[list(ids)], axis=0) if ids else 0.0

    def pieces(self, prompt: str) -> list[str]:
        """The tokens ``prompt`` is embedded from, as text (for inspection)."""
        return [self._tokens[t] for t in chain.from_iterable(map(self._wordpiece, words_of(prompt)))]

    def encode_many(self, prompts: list[str]) -> np.ndarray:
        """The unit-length embeddings of ``prompts``, one row each: (B, dims) float64."""
        out = np.zeros((len(prompts), self.dims))
        cache, sums = self._cache, self._sums
        for b, prompt in enumerate(prompts):  # one prompt at a time: a prompt may restart the cache
            missing = cache.sum(prompt, sums, out[b], True)
            if missing is False:  # lone surrogates (no UTF-8): words_of splits it
                prompt = words_of(prompt)
                missing = cache.sum(prompt, sums, out[b], True)
            if missing:
                self._add(missing)
                cache.sum(prompt, sums, out[b], False)
        norm = np.sqrt(np.einsum("ij,ij->i", out, out))
        return np.divide(out, norm[:, None], out=out, where=norm[:, None] > 0)
