"""What every receiver shares: the result type, the common event fields, JSON helpers."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from driftwarden.collector.event import Event
from driftwarden.collector.exchange import Exchange

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_LONG_DIGITS = re.compile(rb"\d{19}")  # a JSON integer that may not fit in 64 bits: see parse_json


@dataclass(slots=True)
class Captured:
    """A receiver's reading of one exchange.

    ``events`` holds one event per inference (one per row of a batched
    request). ``request_json``/``response_json`` are the parsed bodies (None
    when they did not parse), reused for field-name redaction of payloads.
    ``row_payload(i)`` gives the request and response of row ``i`` alone, as
    JSON-able objects, when a batched request was split into rows; else None
    and every event stores the bodies as they were.
    """

    events: list[Event]
    request_json: Any = None
    response_json: Any = None
    row_payload: Callable[[int], tuple[Any, Any]] | None = None
    output_payload_text: str | None = field(default=None)


def base_event(ex: Exchange, *, model: str, model_version: str, model_digest: str, protocol: str) -> Event:
    """An event with everything the proxy knows regardless of the protocol."""
    return Event(
        model=model,
        event_id=_uuid_or_none(ex.extra.get("event_id", "")) or ex.exchange_id,
        ts_us=_client_ts_us(ex.extra.get("timestamp", "")) or ex.ts_us,
        model_version=model_version,
        model_digest=model_digest,
        protocol=protocol,
        endpoint=ex.path,
        tenant=ex.tenant,
        status=ex.status,
        latency_ms=ex.latency_ms,
        upstream_latency_ms=ex.upstream_latency_ms,
        request_bytes=min(ex.request_bytes if ex.request_bytes >= 0 else len(ex.request_body), 0xFFFFFFFF),
        response_bytes=min(ex.response_bytes, 0xFFFFFFFF),
        error_class=ex.error_class,
        trace_id=ex.trace_id,
        is_replay=bool(ex.replay_of),
        replay_of=_uuid_or_none(ex.replay_of),
    )


def _client_ts_us(text: str) -> int | None:
    """``X-Driftwarden-Timestamp`` (ISO-8601, UTC when no zone, or epoch seconds) in microseconds, else None."""
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return round(seconds * 1_000_000) if math.isfinite(seconds) else None
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def _uuid_or_none(text: str) -> uuid.UUID | None:
    if not text:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def parse_json(body: bytes) -> tuple[Any, bool]:
    """``(value, ok)``; ok is False for an empty, non-UTF-8 or invalid JSON body.

    The values are always those of Python's parser. orjson gives the same at a fifth of the cost, and parses first,
    but for a body with 19 digits in a row: orjson would read an integer beyond 64 bits as a float. What orjson
    refuses (``NaN``/``Infinity``, which Python's ``json.dumps`` writes, UTF-16 and UTF-32, lone surrogates) Python's
    parser still reads."""
    if not body:
        return None, False
    if _LONG_DIGITS.search(body) is None:
        try:
            return orjson.loads(body), True
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(body), True
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, False


def as_float(value: Any) -> float | None:
    """A JSON scalar as a number, or None when it is not one (strings are not numbers here)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if value is None:
        return math.nan
    return None


def flatten(data: Any) -> list[Any]:
    """Nested lists (row-major) -> one flat list; a scalar -> a one-element list."""
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    out: list[Any] = []
    stack = [data]
    while stack:  # iterative, so a deeply nested body cannot exhaust the recursion limit
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out
