"""The collector's replay headers: ``X-Driftwarden-Timestamp`` and ``X-Driftwarden-Event-Id``.

Backfills and the demo's replay set the event's time and id; the proxy does not forward
them upstream, and a value that does not parse is ignored (the event keeps the arrival
time and a fresh id) rather than breaking capture.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from driftwarden.collector.exchange import Exchange
from driftwarden.collector.proxy import _NOT_FORWARDED, EVENT_ID_HEADER, TIMESTAMP_HEADER
from driftwarden.collector.receivers.base import base_event

ARRIVAL_US = 1_700_000_000_000_000
HOUR_US = int(dt.datetime(2011, 2, 17, 13, tzinfo=dt.UTC).timestamp()) * 1_000_000


def _event(**extra: str):
    ex = Exchange(method="POST", path="/v2/models/bikes/infer", query="", ts_us=ARRIVAL_US, t_start=0.0)
    ex.extra.update(extra)
    return base_event(ex, model="bikes", model_version="", model_digest="", protocol="oip")


@pytest.mark.parametrize(
    "stamp", ["2011-02-17T13:00:00+00:00", "2011-02-17T13:00:00Z", "2011-02-17T13:00:00", "1297947600"]
)
def test_timestamp_header_sets_the_event_time(stamp: str) -> None:
    assert _event(timestamp=stamp).ts_us == HOUR_US


@pytest.mark.parametrize("stamp", ["yesterday", "nan", "inf", ""])
def test_unparsable_timestamp_keeps_the_arrival_time(stamp: str) -> None:
    assert _event(timestamp=stamp).ts_us == ARRIVAL_US


def test_event_id_header_sets_the_event_id_and_a_bad_one_is_replaced() -> None:
    chosen = uuid.uuid4()
    assert _event(event_id=str(chosen)).event_id == chosen
    fresh = _event(event_id="not-a-uuid").event_id
    assert isinstance(fresh, uuid.UUID) and fresh != chosen


def test_replay_headers_are_not_forwarded_to_the_model_server() -> None:
    assert TIMESTAMP_HEADER in _NOT_FORWARDED and EVENT_ID_HEADER in _NOT_FORWARDED
