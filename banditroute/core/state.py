"""Policy states on disk: named arrays in NumPy's ``.npz`` format under a JSON header, checksummed.

A state file is three lines and a payload::

    banditroute-state 2
    {"class": "lints", "models": [...], "dim": 85, "feature_version": "v1-d64", "params": {...}, ...}
    <SHA-256 of the header line, a newline and the payload, in hex>
    <the policy's arrays as an uncompressed .npz archive>

Nothing in it is executable: the header is JSON, the arrays are read with ``allow_pickle=False``, and
the policy is rebuilt from its class name and constructor parameters (:meth:`Policy.params`), then
given its learned arrays (:meth:`Policy.load_arrays`). The checksum covers header and payload, so a
flipped byte anywhere is reported as :class:`StateError` rather than loaded; the server then rebuilds
the state from its log.

Example
-------
>>> from banditroute.core.policies import make_policy
>>> pol = make_policy("lints", ["a", "b"], dim=3)
>>> header, again = loads_state(dumps_state(pol, seq=7))
>>> header["seq"], again.describe(), again.models
(7, 'lints', ['a', 'b'])
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from banditroute.core.policies import POLICY_CLASSES, Policy

MAGIC = b"banditroute-state 2"


class StateError(ValueError):
    """A policy state that cannot be read: missing, of another format, corrupted or inconsistent."""


def dumps_state(policy: Policy, **extra) -> bytes:
    """The policy as state-file bytes; ``extra`` (JSON values, e.g. the log position) joins the header."""
    buf = io.BytesIO()
    np.savez(buf, **policy.arrays())
    payload = buf.getvalue()
    header = {"class": policy.name, "policy": policy.describe(), "models": policy.models, "dim": policy.dim,
              "feature_version": policy.feature_version, "params": policy.params(), **extra}
    line = json.dumps(header, sort_keys=True).encode()
    digest = hashlib.sha256(line + b"\n" + payload).hexdigest().encode()
    return b"\n".join([MAGIC, line, digest, payload])


def loads_state(data: bytes, source: str = "<bytes>") -> tuple[dict, Policy]:
    """``(header, policy)`` from :func:`dumps_state` bytes; :class:`StateError` if they are not intact."""
    parts = data.split(b"\n", 3)
    if len(parts) != 4 or parts[0] != MAGIC:
        raise StateError(f"{source} is not a banditroute policy state ({MAGIC.decode()!r})")
    _, line, digest, payload = parts
    if hashlib.sha256(line + b"\n" + payload).hexdigest().encode() != digest:
        raise StateError(f"{source}: checksum mismatch, the state is corrupted")
    try:
        header = json.loads(line)
        cls = POLICY_CLASSES[header["class"]]
        policy = cls(header["models"], header["dim"], **header["params"])
        with np.load(io.BytesIO(payload), allow_pickle=False) as arrays:
            policy.load_arrays(dict(arrays))
    except (KeyError, TypeError, ValueError, OSError) as err:
        raise StateError(f"{source}: inconsistent policy state: {err!r}") from None
    policy.feature_version = header["feature_version"]
    return header, policy


def _per_model(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays with one row per model that every policy of a model class keeps: all but the pooled
    fit (``.pool_``), the change detector (``drift.``) and the learned noise (``noise.``), which a policy
    may or may not keep, whatever its model class."""
    return {k: v for k, v in arrays.items() if ".pool_" not in k and not k.startswith(("drift.", "noise."))}


def transfer(source: Policy, target: Policy) -> list[str]:
    """Copy what ``source`` learned about each model into ``target``, model by model where names match.

    Every per-model array (:meth:`Policy.arrays`) has one row per model, so a model's rows move to its
    place in ``target``; ``target``'s other models keep their priors. The pooled fit of a pooled state
    is copied whole (it describes prompts, not one model); a pooled target loading an unpooled state
    pools what the copied models learned. The change detectors start afresh, and so does a learned noise
    that the source did not learn. Returns the models copied.
    Raises :class:`StateError` when the two cannot share state: other features, other learned
    arrays (a different model class; ``lints`` and ``linucb`` share theirs), or no model in common.
    """
    if source.feature_version not in (None, target.feature_version) or source.dim != target.dim:
        raise StateError(f"the state was learned with features {source.feature_version} (dimension {source.dim}), "
                         f"the pool routes with {target.feature_version} (dimension {target.dim})")
    theirs, ours = source.arrays(), target.arrays()
    if set(_per_model(theirs)) != set(_per_model(ours)):
        raise StateError(f"a {source.describe()} state cannot start a {target.describe()} policy: they learn "
                         "different things")
    common = [m for m in target.models if m in source.models]
    if not common:
        raise StateError(f"the state knows none of the pool's models (it knows {', '.join(source.models)})")
    src = [source.models.index(m) for m in common]
    dst = [target.models.index(m) for m in common]
    merged = {}
    noise = {k: v for k, v in ours.items() if k.startswith("noise.") and k in theirs}
    for name, value in (_per_model(ours) | noise).items():
        value = np.array(value)
        value[dst] = theirs[name][src]
        merged[name] = value
    merged |= {k: v for k, v in theirs.items() if ".pool_" in k and k in ours}
    target.load_arrays(merged)
    return common


def write_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:  # a full disk: the old file stays, the partial one goes
        tmp.unlink(missing_ok=True)
        raise


def save_state(policy: Policy, path: str | Path, **extra) -> None:
    """Write the policy's state to ``path`` atomically (temporary file, fsync, rename)."""
    write_atomic(path, dumps_state(policy, **extra))


def load_state(path: str | Path) -> Policy:
    """The policy saved at ``path`` by :func:`save_state`."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise StateError(f"cannot read policy state {path}: {err.strerror}") from None
    return loads_state(data, str(path))[1]
