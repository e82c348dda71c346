import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from banditroute.core import embedding
from banditroute.core.embedding import DEFAULT_DIR, EmbeddingError, StaticEmbedding, words_of

PROMPTS = [
    "Write a Python function that reverses a linked list.",
    "Quelle est la capitale de l'Australie ? Café, naïve, résumé.",
    "比较一下 Rust 和 Go 的并发模型。",
    "Which is larger?\nA) 3\nB) 4\nAnswer:",
    "supercalifragilisticexpialidocious " * 3,
    "",
    "!!! ??? ...",
    "word " * 5000 + "the final question is about chemistry",
]


def test_the_shipped_files_match_their_manifest():
    manifest = json.loads((DEFAULT_DIR / "manifest.json").read_text())
    assert set(manifest["files"]) == {"vectors.npy", "vocab.txt"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((DEFAULT_DIR / name).read_bytes()).hexdigest() == digest
    emb = StaticEmbedding()
    assert emb.dims == manifest["dims"] == 64


@pytest.mark.parametrize("damage", ["flip a byte of the table", "truncate the vocabulary", "remove the table",
                                    "garble the manifest"])
def test_a_damaged_embedding_file_is_refused(tmp_path, damage):
    d = tmp_path / "embedding"
    shutil.copytree(DEFAULT_DIR, d)
    if damage == "flip a byte of the table":
        raw = bytearray((d / "vectors.npy").read_bytes())
        raw[len(raw) // 2] ^= 0x40
        (d / "vectors.npy").write_bytes(bytes(raw))
    elif damage == "truncate the vocabulary":
        (d / "vocab.txt").write_text("\n".join((d / "vocab.txt").read_text().split("\n")[:1000]))
    elif damage == "remove the table":
        (d / "vectors.npy").unlink()
    else:
        (d / "manifest.json").write_text("{not json")
    with pytest.raises(EmbeddingError):
        StaticEmbedding(d)


def test_wordpiece_splits_like_bert_uncased():
    emb = StaticEmbedding.default()
    assert emb.pieces("Hello, World!") == ["hello", "world"]
    assert emb.pieces("Tokenizing unaffable words") == ["token", "##izing", "una", "##ffa", "##ble", "words"]
    assert emb.pieces("Café NAÏVE") == ["cafe", "naive"]  # lower-cased, accents stripped
    assert emb.pieces("中文") == ["中", "文"]  # one word per CJK character
    assert emb.pieces("x" * 200) == []  # longer than max_input_chars_per_word: unknown, skipped
    assert words_of("a-b_c.d") == ["a", "b", "c", "d"]


def test_embedding_is_unit_length_deterministic_and_batch_independent():
    emb = StaticEmbedding.default()
    batch = emb.encode_many(PROMPTS)
    assert batch.shape == (len(PROMPTS), 64)
    norms = np.linalg.norm(batch, axis=1)
    assert np.allclose(norms[[0, 1, 2, 3, 4, 7]], 1.0) and norms[5] == 0.0 and norms[6] == 0.0
    np.testing.assert_array_equal(batch, np.vstack([emb.encode_many([p]) for p in PROMPTS]))
    np.testing.assert_array_equal(batch, StaticEmbedding().encode_many(PROMPTS))  # a fresh word cache


def test_a_full_word_cache_starts_over_without_changing_any_vector(monkeypatch):
    reference = StaticEmbedding().encode_many(PROMPTS)
    monkeypatch.setattr(embedding, "WORD_CACHE", 600)
    emb = StaticEmbedding()
    for _ in range(3):
        np.testing.assert_array_equal(emb.encode_many(PROMPTS), reference)
    assert len(emb._cache) <= 600


def test_same_embedding_in_every_process():
    code = ("import sys; from banditroute.core.embedding import StaticEmbedding; "
            f"sys.stdout.write(StaticEmbedding().encode_many({PROMPTS!r}).tobytes().hex())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")}
    assert outs == {StaticEmbedding().encode_many(PROMPTS).tobytes().hex()}


def test_topics_are_closer_within_than_across():
    """What the embedding is for: prompts on one task lie nearer each other than prompts on another."""
    emb = StaticEmbedding.default()
    code = emb.encode_many(["Write a Python function to sort a list of integers.",
                            "Fix the bug in this JavaScript loop that never terminates."])
    trivia = emb.encode_many(["Who was the first president of the United States?",
                              "What is the capital city of Australia?"])
    within = min(code[0] @ code[1], trivia[0] @ trivia[1])
    across = max(code[i] @ trivia[j] for i in range(2) for j in range(2))
    assert within > across


def test_long_prompts_keep_their_head_and_tail():
    words = words_of("start " + "filler " * 10_000 + "end")
    assert len(words) == embedding.MAX_WORDS and words[0] == "start" and words[-1] == "end"


@pytest.mark.parametrize("cache_type", [embedding._DictCache, embedding._NativeCache])
def test_the_word_cache_hands_out_rows_in_order_and_refuses_to_overflow(cache_type):
    cache = cache_type(4, 512)
    table = np.arange(12.0, dtype=np.float32).reshape(4, 3)
    out = np.empty(3)
    assert cache.sum(["b", "a", "b"], table, out, True) == ["b", "a", "b"]  # nothing summed
    assert cache.insert(["b", "a", "b"]) == [0, 1, -1]
    assert cache.sum(["b", "a", "b"], table, out, False) is None
    np.testing.assert_array_equal(out, table[0] + table[1] + table[0])
    assert cache.sum(["c", "a"], table, out, True) == ["c"] and len(cache) == 2  # fits: nothing forgotten
    assert cache.insert(["c", "d"]) == [2, 3] and len(cache) == 4
    with pytest.raises(OverflowError):
        cache.insert(["e"])
    assert cache.sum(["a"], table, out, True) == ["a"] and len(cache) == 0  # would not fit: starts over


@pytest.mark.parametrize("cache_type", [embedding._DictCache, embedding._NativeCache])
def test_the_word_cache_tells_apart_words_that_share_a_long_head(cache_type):
    """The C cache keeps a word's first 16 bytes in its slot and the rest in an arena: words that
    differ only after the 16th byte, or only in length, are different words."""
    head = "abcdefghijklmnop"  # 16 bytes
    words = [head[:15], head, head + "q", head + "r", head + "qq", head * 3, head * 3 + "s", "é" * 9, "é" * 8 + "e"]
    cache = cache_type(64, 512)
    table = np.arange(len(words), dtype=np.float32)[:, None] * np.ones((1, 2), dtype=np.float32)
    out = np.empty(2)
    assert cache.sum(words, table, out, True) == words
    assert cache.insert(words) == list(range(len(words)))
    for i, w in enumerate(words):
        assert cache.sum([w], table, out, False) is None and out[0] == i
    assert cache.sum([head + "z"], table, out, False) == [head + "z"]


UNICODE_PROMPTS = [
    "café naïve RÉSUMÉ", "\u212a is the Kelvin sign: ASCII once lower-cased", "İstanbul ÇAĞ straße ﬁne",
    "x_y\u00e9_z", "日本語のテキスト and 한국어", "a\U00020001b \U0002fa1f\U0002fa20", "emoji 😀 ok",
    "\x01ab\u00e9\x02cd", "٣٤٥ numbers ²³ ½", "combining e\u0301x", "— dashes – and ‘quotes’ —",
    " ".join(f"wörd{i}" for i in range(40)),
]


@pytest.mark.skipif(embedding._NativeCache is None, reason="the C core is not built")
@pytest.mark.parametrize("prompt", ["Hello, World!  a-b_c.d", "\x1c\x1dfoo\x0bbar\tbaz\r\nqux", "UPPER lower MiXeD 42",
                                    "", "  ...  ", " ".join(f"w{i}" for i in range(40)), *UNICODE_PROMPTS])
def test_the_c_word_cache_splits_prompts_as_words_of_does(prompt):
    table, out = np.zeros((1000, 1), dtype=np.float32), np.zeros(1)
    cache = embedding._NativeCache(1000, 6)
    assert (cache.sum(prompt, table, out, True) or []) == words_of(prompt)[:3] + words_of(prompt)[3:][-3:]


@pytest.mark.skipif(embedding._NativeCache is None, reason="the C core is not built")
def test_the_c_word_cache_leaves_text_without_utf8_to_words_of():
    table, out = np.zeros((10, 1), dtype=np.float32), np.zeros(1)
    assert embedding._NativeCache(10, 6).sum("a\ud800b", table, out, True) is False
    assert StaticEmbedding().encode_many(["a\ud800b"]).shape == (1, 64)


def test_unicode_prompts_embed_the_same_through_the_c_cache_and_the_python_one(monkeypatch):
    native = StaticEmbedding().encode_many(UNICODE_PROMPTS)
    monkeypatch.setattr(embedding, "_NativeCache", None)
    np.testing.assert_array_equal(StaticEmbedding().encode_many(UNICODE_PROMPTS), native)


def test_a_hostile_prompt_costs_bounded_work_and_changes_nothing_else():
    emb = StaticEmbedding()
    before = emb.encode_many(PROMPTS)
    hostile = ["x" * 1_000_000, " ".join(f"w{i}" for i in range(200_000)), "!" * 100_000]
    v = emb.encode_many(hostile)
    assert np.isfinite(v).all()
    np.testing.assert_array_equal(emb.encode_many(PROMPTS), before)
