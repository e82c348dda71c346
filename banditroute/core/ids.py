"""Decision ids that carry their own time, so the log finds a decision without an index.

An id is a UUID version 7 (RFC 9562, "Universally Unique IDentifiers", sec. 5.7) written as 32
lowercase hex digits without dashes::

    unix_ts_ms (48 bits) | version 0111 (4) | rand_a (12) | variant 10 (2) | rand_b (62)

The first 48 bits are the decision's time in milliseconds, so ids sort by time and a lookup can
restrict the log's ``ts`` column to a second around that time: DuckDB's min-max zone maps then skip
every row group but one, and the log needs no ART index on ``decision_id`` (an ART index lives in
memory and grows with every decision, until it no longer fits the log's memory limit).

Ids written before (128 random bits) have no readable time; :func:`id_time` returns None for them
and for anything else that is not this layout.

A client's API key is named by :func:`key_id`, a hash, wherever the service keeps what belongs to a
key (a budget's tenant, a kept conversation's owner): the key itself is never kept.

Example
-------
>>> import random
>>> i = new_decision_id(1_700_000_000.123, random.Random(0))
>>> len(i), i[:12], i[12]
(32, '018bcfe5687b', '7')
>>> id_time(i)
1700000000.123
>>> id_time("0" * 32) is None
True
"""

from __future__ import annotations

import hashlib
import random

_VERSION = 0x7
_VARIANT = 0b10


def new_decision_id(ts: float, rng: random.Random) -> str:
    """A version-7 id for a decision taken at ``ts`` (seconds since the epoch), its 74 random bits from ``rng``."""
    ms = int(ts * 1000.0) & ((1 << 48) - 1)
    bits = rng.getrandbits(74)
    rand_a, rand_b = bits >> 62, bits & ((1 << 62) - 1)
    value = (ms << 80) | (_VERSION << 76) | (rand_a << 64) | (_VARIANT << 62) | rand_b
    return f"{value:032x}"


def id_time(decision_id: str) -> float | None:
    """The time (seconds since the epoch, to the millisecond) a version-7 id carries; None for any other string."""
    if len(decision_id) != 32 or decision_id[12] != "7" or decision_id[16] not in "89ab":
        return None
    try:
        return int(decision_id[:12], 16) / 1000.0
    except ValueError:
        return None


def key_id(api_key: str | None) -> str | None:
    """The name of a client's API key: ``key:`` and the first 16 hex digits of its SHA-256 (None: no key)."""
    return None if api_key is None else "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:16]
