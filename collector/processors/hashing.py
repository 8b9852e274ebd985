"""Canonical hashes of inputs, outputs and parameters (the ``*_hash`` UInt64 columns).

Two inferences with the same inputs get the same ``input_hash`` whatever the
key order or number formatting of their JSON: values are first put in a
canonical form (mapping keys sorted, integral floats written as integers,
other floats rounded to 15 significant digits, NaN/inf as strings), then
serialised compactly and hashed with BLAKE2b (8-byte digest, read
little-endian). Reproducibility checks group by these hashes.

>>> canonical_hash({"b": 1.0, "a": [2, 0.1]}) == canonical_hash({"a": [2.0, 0.1], "b": 1})
True
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def canonical(value: Any) -> Any:
    """``value`` with floats normalised, recursively (mapping keys become strings)."""
    kind = type(value)  # exact type checks: this runs for every captured value
    if kind is float:
        return _float(value)
    if kind is list or kind is tuple:
        return [_float(v) if type(v) is float else v if type(v) in _PLAIN else canonical(v) for v in value]
    if kind is dict:
        return {str(k): canonical(v) for k, v in value.items()}
    if kind in _PLAIN:
        return value
    if isinstance(value, float):
        return _float(float(value))
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    return value


_PLAIN = frozenset({str, int, bool, type(None)})


def _float(value: float) -> Any:
    if value != value or value in (math.inf, -math.inf):
        return repr(value)
    if value.is_integer() and -(2**63) < value < 2**63:
        return int(value)
    return float(f"{value:.15g}")


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value``: what :func:`canonical_hash` hashes."""
    return _dumps(canonical(value))


def canonical_hash(value: Any) -> int:
    """UInt64 hash of the canonical JSON form of ``value``; 0 is reserved for "nothing to hash"."""
    digest = hashlib.blake2b(canonical_json(value).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


_fast_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode


def features_hash(*columns: list) -> int:
    """UInt64 hash of parallel name/value lists whose numbers are already Python floats.

    The receivers' fast path for ``input_hash``/``output_hash``: the values
    come out of :func:`driftwarden.collector.receivers.base.as_float`, so they need no
    normalisation (NaN is written as ``NaN``). Not interchangeable with
    :func:`canonical_hash`, which writes integral floats as integers.
    """
    digest = hashlib.blake2b(_fast_dumps(columns).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


def bytes_hash(data: bytes) -> int:
    """UInt64 hash of raw bytes, for bodies that are not JSON."""
    if not data:
        return 0
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") or 1
