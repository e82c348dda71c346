"""Progress bars for long offline runs (tqdm, on stderr, only when asked)."""

from __future__ import annotations


def progress(iterable, total: int, desc: str, show: bool, unit: str = "prompt"):
    """``iterable`` wrapped in a tqdm bar when ``show``; unchanged otherwise."""
    if not show:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False)
