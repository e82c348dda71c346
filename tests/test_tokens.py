"""The token estimate (banditroute.core.tokens) against exact counts, and what it must keep."""

import pytest

from banditroute.core import tokens
from banditroute.core.features import Featurizer
from banditroute.core.tokens import estimate_tokens

# One request in ten scripts, with its exact token counts by cl100k_base and o200k_base (tiktoken's
# encodings, counted with the bpe-openai package that experiments/token_estimate.py uses).
EXACT = {
    "Explain how a hash table handles collisions, with an example in Python.": (15, 14),
    "Expliquez comment une table de hachage gère les collisions, avec un exemple en Python.": (21, 21),
    "Объясните, как хеш-таблица обрабатывает коллизии, с примером на Python.": (32, 23),
    "请解释哈希表如何处理冲突，并用 Python 举一个例子。": (24, 17),
    "ハッシュテーブルが衝突をどのように処理するか、Pythonの例を挙げて説明してください。": (41, 29),
    "اشرح كيف يتعامل جدول التجزئة مع التصادمات، مع مثال بلغة بايثون.": (44, 22),
    "समझाइए कि हैश टेबल टकरावों को कैसे संभालती है, पायथन में एक उदाहरण के साथ।": (75, 30),
    "해시 테이블이 충돌을 어떻게 처리하는지 파이썬 예제와 함께 설명해 주세요.": (40, 24),
    "Εξηγήστε πώς ένας πίνακας κατακερματισμού χειρίζεται τις συγκρούσεις, με ένα παράδειγμα σε Python.": (89, 33),
    "Great job on the release! 🎉🚀👏": (15, 11),
}


@pytest.mark.parametrize("text", list(EXACT), ids=lambda t: t[:12])
def test_the_estimate_is_near_the_mean_of_openais_counts_in_every_script(text):
    """Within 0.8x-1.3x of the mean exact count, and between the two tokenizers' counts but for a
    margin; characters / 4, for comparison, gives 0.3x-0.7x of it outside Latin scripts."""
    cl100k, o200k = EXACT[text]
    mean = (cl100k + o200k) / 2
    assert 0.8 * mean <= estimate_tokens(text) <= 1.3 * mean
    assert 0.75 * min(cl100k, o200k) <= estimate_tokens(text) <= 1.3 * max(cl100k, o200k)


def test_ascii_text_keeps_characters_over_four():
    """English prompts (the shared tables' and the warm start's) keep the estimate they were logged and
    learned with."""
    for text in ("", "a", "What is 17 * 23?", "def f(x):\n    return x ** 2\n" * 50):
        assert estimate_tokens(text) == len(text) / 4
    assert Featurizer().input_tokens("What is 17 * 23?") == 4.0


def test_the_estimate_adds_up_over_characters_and_rates_apply_by_block():
    parts = ["Hello, ", "世界", "! Привет ", "🎉", " café", "\u0591", "\u2014"]
    assert estimate_tokens("".join(parts)) == pytest.approx(sum(map(estimate_tokens, parts)))
    assert estimate_tokens("字" * 100) == pytest.approx(100 * tokens.RATES["cjk"])
    assert estimate_tokens("я" * 100) == pytest.approx(100 * tokens.RATES["cyrillic"])
    assert estimate_tokens("é") == pytest.approx(tokens.RATES["latin"])
    assert estimate_tokens("😀") == pytest.approx(tokens.RATES["astral"])
    assert estimate_tokens("，") == pytest.approx(tokens.RATES["cjk"])  # the full-width comma of Chinese text


def test_every_range_has_a_rate_and_the_ranges_are_ordered():
    starts = [start for start, _ in tokens._RANGES]
    assert starts == sorted(starts) and starts[0] == 0
    assert {group for _, group in tokens._RANGES} == set(tokens.RATES)
    assert all(rate > 0 for rate in tokens.RATES.values())


def test_hostile_text_is_counted_not_raised():
    """Lone surrogates (JSON's "\\ud800" decodes to one), NUL and the last code point."""
    for text in ("\ud800", "a\udfffb", "\x00" * 10, "\U0010ffff"):
        assert estimate_tokens(text) > 0
