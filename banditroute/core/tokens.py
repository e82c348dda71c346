"""Estimated token counts of text, with no tokenizer file: a rate per character by Unicode block.

A prompt's tokens decide whether it fits a model's context window and what its input costs, before
any provider has counted them. OpenAI's rule of thumb, characters / 4, holds for English but not
elsewhere: byte-level BPE vocabularies learned mostly from English text spend about a token on a
Chinese character and half a token or more on a Cyrillic or Arabic one, so characters / 4 counts a
fraction of the tokens of text in those scripts.

The estimate is ``sum over characters c of RATES[group(c)]``: ASCII 0.25 tokens a character (the
rule of thumb, so that English text keeps its estimate), and a rate for each of eight groups of
Unicode blocks, fitted by non-negative least squares on the relative error to the mean of OpenAI's
cl100k_base and o200k_base counts (tiktoken's encodings) over text generated in 24 locales.
``experiments/token_estimate.py`` fits the rates and reports the estimate's error per locale on
held-out text (``experiments/results/token_estimate.md``). A model's own tokenizer may still count
differently (cl100k_base counts up to twice o200k_base's tokens in some scripts); the gateway falls
back when a provider refuses a prompt as too long for the model.
"""

from __future__ import annotations

import numpy as np

ASCII_RATE = 0.25
"""Tokens per ASCII character: characters / 4."""

# (first code point of a range, group); a range runs to the next one's start.
_RANGES = (
    (0x0000, "ascii"),
    (0x0080, "latin"),  # Latin-1 supplement, Latin extended A and B, IPA, modifiers, combining marks
    (0x0370, "greek"),  # Greek and Coptic
    (0x0400, "cyrillic"),  # Cyrillic and its supplement
    (0x0530, "armenian"),
    (0x0590, "hebrew_arabic"),  # Hebrew, Arabic, Syriac, Thaana, NKo
    (0x0800, "other"),  # Indic scripts, Thai, Lao, Tibetan, Georgian, Hangul jamo, Ethiopic, ...
    (0x1E00, "latin"),  # Latin extended additional (Vietnamese)
    (0x1F00, "other"),  # Greek extended, punctuation, symbols, arrows, mathematical operators
    (0x2E80, "cjk"),  # CJK radicals and punctuation, kana, CJK ideographs
    (0xA000, "other"),  # Yi, Vai, ...
    (0xAC00, "cjk"),  # Hangul syllables
    (0xD7B0, "other"),  # private use, surrogates
    (0xF900, "cjk"),  # CJK compatibility ideographs
    (0xFB00, "other"),  # presentation forms
    (0xFF00, "cjk"),  # full-width forms (the comma and stops of Chinese and Japanese text)
    (0xFFF0, "other"),
    (0x10000, "astral"),  # emoji and the supplementary planes
)

RATES = {
    "ascii": ASCII_RATE,
    "latin": 1.08,
    "greek": 0.77,
    "cyrillic": 0.48,
    "armenian": 1.37,
    "hebrew_arabic": 0.7,
    "other": 0.89,
    "cjk": 1.03,
    "astral": 2.58,
}
"""Tokens per character of each group (fitted by ``experiments/token_estimate.py``)."""

_STARTS = np.array([start for start, _ in _RANGES[1:]], dtype=np.uint32)
_RATE_OF_RANGE = np.array([RATES[group] for _, group in _RANGES])


def estimate_tokens(text: str) -> float:
    """Estimated tokens of ``text``: characters / 4 when it is ASCII, else the sum of each
    character's rate (:data:`RATES`) by the Unicode block it is in."""
    if text.isascii():
        return len(text) * ASCII_RATE
    code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return float(_RATE_OF_RANGE[np.searchsorted(_STARTS, code_points, side="right")].sum())
