import subprocess
import sys

import numpy as np
import pytest
from conftest import SHARED_DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from banditroute.core.features import SIGNALS, Featurizer

PROMPTS = [
    "Write a Python function that reverses a linked list.",
    "Quelle est la capitale de l'Australie ?",
    "比较一下 Rust 和 Go 的并发模型。",
    "Which is larger?\nA) 3\nB) 4\nAnswer:",
    "x" * 50_000,
]


def test_vector_shape_bias_and_version():
    f = Featurizer(hash_dim=64)
    x = f.transform(PROMPTS[0])
    assert x.shape == (1 + len(SIGNALS) + 64 + 64,) == (f.dim,)
    assert x[0] == 1.0
    assert f.version == "v4-d64-minilm-l6-m2v-64"
    assert np.all(np.isfinite(x))
    assert np.all((x[1 : 1 + len(SIGNALS)] >= 0) & (x[1 : 1 + len(SIGNALS)] <= 1))
    assert np.linalg.norm(x[1 + len(SIGNALS) : 1 + len(SIGNALS) + 64]) == pytest.approx(0.5)  # v3: the hashed block at norm 0.5
    assert np.linalg.norm(x[1 + len(SIGNALS) + 64 :]) == pytest.approx(1.0)
    v1 = Featurizer(hash_dim=64, embedding=False)
    assert v1.version == "v1-d64" and v1.dim == 85
    np.testing.assert_array_equal(v1.transform(PROMPTS[0]), Featurizer.from_version("v2-d64-minilm-l6-m2v-64").transform(
        PROMPTS[0])[:85])  # v2 is v1 with the embedding appended


def test_a_version_string_rebuilds_its_featurizer():
    for f in (Featurizer(), Featurizer(hash_dim=32), Featurizer(embedding=False), Featurizer(128, embedding=False),
              Featurizer(unspaced_bigrams=False)):
        g = Featurizer.from_version(f.version)
        assert (g.version, g.dim) == (f.version, f.dim)
        np.testing.assert_array_equal(g.transform_many(PROMPTS), f.transform_many(PROMPTS))
    for bad in ("v3-d64", "v2-d64", "v1-d64-minilm-l6-m2v-64", "v2-d64-another-table", "", "d64"):
        with pytest.raises(ValueError):
            Featurizer.from_version(bad)


def test_same_prompt_same_vector_across_processes():
    code = (
        "import sys, numpy as np; from banditroute.core.features import Featurizer; "
        f"f = Featurizer(); prompts = {PROMPTS!r}; "
        "sys.stdout.write(np.vstack([f.transform(p) for p in prompts]).tobytes().hex())"
    )
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout
        for seed in ("1", "2", "random")
    }
    assert len(outs) == 1
    here = np.vstack([Featurizer().transform(p) for p in PROMPTS]).tobytes().hex()
    assert outs == {here}


def test_signals_pick_up_what_they_name():
    f = Featurizer()
    idx = {name: 1 + i for i, name in enumerate(SIGNALS)}
    code = f.transform("Write a Python function that sorts a list.")
    mc = f.transform("Which planet is largest?\nA) Mars\nB) Jupiter\nC) Venus\nD) Earth\nAnswer:")
    cjk = f.transform("请用中文解释量子纠缠。")
    plain = f.transform("Tell me about the weather today")
    assert code[idx["code_request"]] > 0 and plain[idx["code_request"]] == 0
    assert mc[idx["choice_options"]] == pytest.approx(0.8) and mc[idx["binary_choice"]] == 0
    assert mc[idx["question"]] > 0
    assert cjk[idx["cjk"]] > 0 and plain[idx["non_ascii"]] == 0


def test_different_prompts_differ_and_bad_input():
    f = Featurizer()
    assert not np.allclose(f.transform("sort a list in python"), f.transform("capital of france"))
    with pytest.raises(TypeError):
        f.transform(None)
    with pytest.raises(ValueError):
        Featurizer(hash_dim=48)


def test_batch_equals_one_by_one():
    f = Featurizer()
    prompts = PROMPTS + ["", "   ", "A) b) C) d) ", "Ünïcödé ÀB) test", "\x1c\x1dfoo\u3000bar\xa0baz", "K\u212a caf\u00e9"]
    batch = f.transform_many(prompts)
    np.testing.assert_array_equal(batch, np.vstack([f.transform(p) for p in prompts]))
    np.testing.assert_array_equal(batch[2:4], f.transform_many(prompts[2:4]))


def test_every_feature_version_is_frozen():
    """Any change to what a version computes must come with a new FEATURE_VERSION (logs and states record it)."""
    import hashlib

    def digest(version: str) -> str:
        return hashlib.sha256(Featurizer.from_version(version).transform_many(PROMPTS).tobytes()).hexdigest()

    assert digest("v1-d64") == "7b26278173cd911943cdf81f14b07c78dc9fea118a13b3096da6815143657242"
    assert digest("v2-d64-minilm-l6-m2v-64") == "9845e799d952632a0c734b3e299d8dc0b354e80d3f271985dc48db9b8fba9a7f"
    assert digest("v3-d64-minilm-l6-m2v-64") == "41a6e075d78a2832720f9fb0ce9e348998d8ddc3841a138557ecf51592dc8473"
    assert digest("v4-d64-minilm-l6-m2v-64") == "22b56ab17852d020742a406ec67bcbeb65fd61290a0855d43dcb2d5987d99e80"
    v2, v3 = (Featurizer.from_version(v).transform_many(PROMPTS) for v in ("v2-d64-minilm-l6-m2v-64",
                                                                           "v3-d64-minilm-l6-m2v-64"))
    hashed = slice(1 + len(SIGNALS), 1 + len(SIGNALS) + 64)  # v3 is v2 with the hashed block at half its norm
    np.testing.assert_array_equal(v3[:, hashed], 0.5 * v2[:, hashed])
    np.testing.assert_array_equal(np.delete(v3, hashed, axis=1), np.delete(v2, hashed, axis=1))
    v4 = Featurizer.from_version("v4-d64-minilm-l6-m2v-64").transform_many(PROMPTS)
    same = [i for i, p in enumerate(PROMPTS) if p.isascii() or p.startswith("Quelle")]  # v4 is v3 but for CJK text
    np.testing.assert_array_equal(v4[same], v3[same])
    assert (v4[2] != v3[2]).any()


def test_scales_no_version_has_are_named_and_not_rebuilt():
    f = Featurizer(hash_scale=2.0)
    assert f.version == "v4-d64-minilm-l6-m2v-64+hash_scale=2,embed_scale=1"
    with pytest.raises(ValueError, match="unknown feature version"):
        Featurizer.from_version(f.version)


def _python_path(prompts, unspaced_bigrams: bool = True):
    """Features with the C counting core switched off (the reference implementation)."""
    from banditroute.core import embedding, features

    native, features._native = features._native, None
    cache, embedding._NativeCache = embedding._NativeCache, None
    try:
        return Featurizer(embedding=embedding.StaticEmbedding(), unspaced_bigrams=unspaced_bigrams).transform_many(prompts)
    finally:
        features._native = native
        embedding._NativeCache = cache


def test_c_core_is_built():
    """The C counting core ships with the package (setup.py); without it every prompt takes the slower Python path."""
    from banditroute.core import embedding, features

    assert features._native is not None and embedding._NativeCache is not None


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data not present")
def test_c_core_equals_python_path_on_the_shared_data():
    import pyarrow.parquet as pq

    DATA = SHARED_DATA

    prompts = []
    for f in sorted(DATA.glob("*.parquet")):
        prompts += sorted(set(pq.read_table(f, columns=["prompt"]).column(0).to_pylist()))
    assert len(prompts) > 10_000
    v4 = Featurizer().transform_many(prompts)
    np.testing.assert_array_equal(v4, _python_path(prompts))
    # v4 differs from v3 exactly on the prompts with text of a script written without spaces (three: two MT
    # Bench prompts quote a Chinese poem, a CRUXEval function holds a Hangul syllable)
    from banditroute.core.features import _UNSPACED

    changed = (v4 != Featurizer(unspaced_bigrams=False).transform_many(prompts)).any(axis=1)
    assert changed.tolist() == [_UNSPACED.search(p) is not None for p in prompts] and changed.sum() == 3


_TRICKY = ("A", "B", "J", "K", "a", ")", ".", ":", "(", " ", "\t", "\n", "\x1c", "\x0b", "\\", "n", "\\n", "?", "_",
           " _ ", "```", ";\n", "{\n", "()", "how many", "step by step", "Answer:", "Why", "why", "what", "JSON",
           "python", "code", "vs", "Compare", "one word", "7", "é", "İ", "ß", "\u3000", "\xa0", "中", "Ж", "ا", "ก",
           "\u212a", "\U0001f600", "ﬁ", "Σ", "语言", "是", "テスト", "・", "ー", "、", "。", "「", "」", "，", "？", "！",
           "Ａ", "ａ", "한국어", "〇", "々", "\u3400", "\u4dbf", "\u9fff", "\uac00", "\ud7af", "\u3040", "\u30ff",
           "ภาษาไทย", "ๆ", "\u0e4f", "\u0e5a", "ພາສາລາວ", "မြန်မာ", "\u104a", "ភាសាខ្មែរ", "\u17d4", "\u0dff", "\u1100")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_TRICKY) | st.text(max_size=6), max_size=40).map("".join), min_size=1,
                max_size=6), st.booleans())
def test_c_core_equals_python_path_on_generated_text(prompts, unspaced_bigrams):
    np.testing.assert_array_equal(Featurizer(unspaced_bigrams=unspaced_bigrams).transform_many(prompts),
                                  _python_path(prompts, unspaced_bigrams))


def test_unspaced_scripts_are_split_into_character_bigrams():
    """v4: a run of a script written without spaces gives its overlapping bigrams, other runs of the word
    stay words, and those scripts' and full-width punctuation separate words; v3 kept a whole unspaced
    sentence as one word."""
    words = Featurizer._count("Python是一种语言，Pythonで書く「テスト」・カタカナ！ 中", unspaced_bigrams=True)[1]
    assert words == ["python", "是一", "一种", "种语", "语言", "python", "で書", "書く", "テス", "スト", "カタ", "タカ",
                     "カナ", "中"]
    assert Featurizer._count("Python是一种语言，Pythonで書く", unspaced_bigrams=False)[1] == ["python是一种语言，pythonで書く"]
    # Thai, written without spaces between words too; its own punctuation (U+0E5A) separates
    assert Featurizer._count("ภาษาไทย\u0e5aดี", unspaced_bigrams=True)[1] == ["ภา", "าษ", "ษา", "าไ", "ไท", "ทย", "ดี"]
    counts = Featurizer._count("Python是一种语言", unspaced_bigrams=True)[0]
    assert counts[1] == 5  # words: python and four bigrams
    assert Featurizer._count("Write a Python function", unspaced_bigrams=True)[0][1] == 4


def test_cjk_prompts_on_one_topic_share_lexical_features():
    """Two Chinese questions about sorting in Python share much of their hashed block under v4 (the bigrams
    they have in common: 快速, 排序, 函数, 时间, 复杂, ...) and, in v3, nothing but the word "python" split
    off by spaces; a question about the weather shares none of it."""
    a = "请用 Python 写一个快速排序函数，并解释时间复杂度。"
    b = "用 Python 实现快速排序函数，并说明它的时间复杂度是多少？"
    c = "明天北京的天气怎么样？会下雨吗？"
    hashed = slice(1 + len(SIGNALS), 1 + len(SIGNALS) + 64)

    def cosine(f, p, q):
        x, y = f.transform(p)[hashed], f.transform(q)[hashed]
        return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    v3, v4 = Featurizer(unspaced_bigrams=False), Featurizer()
    assert cosine(v4, a, b) > cosine(v3, a, b) + 0.2
    assert cosine(v4, a, b) > cosine(v4, a, c) + 0.4
    # the keyword groups see an ASCII word glued to CJK text: "python" counts as a code word
    code = 1 + SIGNALS.index("code_request")
    assert v4.transform("用python写")[code] > 0 == v3.transform("用python写")[code]


def test_phrases_are_counted_as_str_count_does():
    """Overlaps, runs, a phrase cut off by the end, phrases next to non-ASCII text."""
    prompts = ["`````", "``````", "````````` ```", "??? ?", "how many how manyhow many", "ends with how man",
               "step by step by step", " _ _ _ _.", "Ünï how much? 中 one word", "(((())))()", "answer:answer:"]
    np.testing.assert_array_equal(Featurizer().transform_many(prompts), _python_path(prompts))


def test_long_prompts_are_clipped_the_same_way():
    prompts = [" ".join(f"w{i}" for i in range(5000)), "x " * 3000 + "Ünï " * 10]
    np.testing.assert_array_equal(Featurizer().transform_many(prompts), _python_path(prompts))
