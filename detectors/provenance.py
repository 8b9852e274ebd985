"""Provenance of a result: the code and schema that produced it and a hash of its inputs.

Every result row records ``code_version``, ``schema_version`` and
``input_hash``: the SHA-256 of a canonical JSON document of everything the
result depends on (model, windows, row counts, method, thresholds, reference
profile, code and schema version). Running a detector again on the same data
gives the same hash, so a reviewer can check that a number is reproducible.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import math
from typing import Any

from driftwarden.storage.migrate import latest_version
from driftwarden.version import __version__


def code_version() -> str:
    return __version__


@functools.cache  # the migrations shipped with the code do not change while it runs (read once, not per result)
def schema_version() -> int:
    return latest_version()


def _canonical(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def content_hash(inputs: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``inputs``, with code and schema version added."""
    document = {"code_version": code_version(), "schema_version": schema_version(), **inputs}
    text = json.dumps(_canonical(document), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
