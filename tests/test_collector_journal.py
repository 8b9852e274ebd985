"""The write-ahead journal of answered exchanges: records, recovery, release, fsync policies."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest

from driftwarden.collector.config import CollectorConfig
from driftwarden.collector.exchange import Exchange
from driftwarden.collector.journal import Journal, JournalError, decode, encode
from driftwarden.collector.pipeline import Pipeline


def _exchange(i: int = 0, **kw) -> Exchange:
    ex = Exchange(
        method="POST", path="/v2/models/m/infer", query="a=1&b=é", ts_us=1_772_366_400_000_000 + i, t_start=50.0
    )
    ex.request_body = json.dumps(
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [float(i)]}]}
    ).encode()
    ex.response_body = b'{"outputs": [{"name": "y", "shape": [1], "datatype": "FP64", "data": [2.0]}]}'
    ex.response_bytes = len(ex.response_body)
    ex.status = 200
    ex.t_upstream_start, ex.t_upstream_end, ex.t_end = 50.001, 50.003, 50.004
    for key, value in kw.items():
        setattr(ex, key, value)
    return ex


def _payload(record: bytes) -> bytes:
    return record[12:]  # after the frame: magic, length, CRC


def test_a_record_keeps_every_field_a_receiver_reads():
    ex = _exchange(
        7,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        tenant="acme",
        replay_of=str(uuid.UUID(int=5)),
        request_content_type="application/json",
        response_content_type="text/event-stream",
        response_content_encoding="gzip",
        error_class="client_disconnected",
        chunk_marks=[(50.002, 10), (50.0035, 20)],
        response_cut=True,
        request_json_length=12,
        extra={"timestamp": "2026-03-01T12:00:00Z"},
    )
    back = decode(_payload(encode(ex)))
    for name in ("method", "path", "query", "ts_us", "request_body", "response_body", "status", "response_bytes"):
        assert getattr(back, name) == getattr(ex, name), name
    for name in ("trace_id", "tenant", "replay_of", "request_content_type", "response_content_type"):
        assert getattr(back, name) == getattr(ex, name), name
    assert (back.response_content_encoding, back.error_class, back.response_cut) == (
        "gzip",
        "client_disconnected",
        True,
    )
    assert (back.request_json_length, back.response_json_length, back.extra) == (12, -1, ex.extra)
    assert back.exchange_id == ex.exchange_id
    assert back.latency_ms == pytest.approx(ex.latency_ms) and back.upstream_latency_ms == pytest.approx(2.0)
    assert [(round(t - back.t_start, 6), n) for t, n in back.chunk_marks] == [(0.002, 10), (0.0035, 20)]
    assert decode(_payload(encode(_exchange()))).chunk_marks is None


def test_unreleased_exchanges_come_back_after_a_crash_in_order_and_released_ones_do_not(tmp_path):
    journal = Journal(tmp_path, fsync="off", segment_bytes=2000)
    exchanges = [_exchange(i) for i in range(30)]
    seqs = [journal.append(ex) for ex in exchanges]
    assert seqs == list(range(30))
    journal.release([0, 1, 2, 5, 6])  # 5 and 6 are released behind 3, which is not
    segments_before = sorted(tmp_path.glob("journal-*.log"))
    assert len(segments_before) > 3
    # no close(): as after a SIGKILL
    _abandon(journal)
    again = Journal(tmp_path, fsync="off", segment_bytes=2000)
    recovered = again.recover()
    assert [ex.journal_seq for ex in recovered] == list(range(3, 30))  # from the checkpoint, in order
    assert [ex.exchange_id for ex in recovered] == [ex.exchange_id for ex in exchanges[3:]]
    assert again.recover() == []
    assert again.append(_exchange(99)) == 30  # numbering goes on
    again.release(range(3, 31))
    assert again.pending == 0
    again.close()
    assert list(tmp_path.glob("journal-*.log")) == []


def _abandon(journal: Journal) -> None:
    """Let go of a journal's files without closing it properly, as a killed process does (the kernel closes them)."""
    for fd in (journal._active_fd, journal._checkpoint_fd, journal._lock_fd):
        if fd is not None:
            os.close(fd)
    journal._closed = True


def test_a_record_torn_by_a_crash_ends_its_segment_and_the_ones_before_it_come_back(tmp_path):
    journal = Journal(tmp_path, fsync="off")
    for i in range(5):
        journal.append(_exchange(i))
    _abandon(journal)
    (segment,) = tmp_path.glob("journal-*.log")
    os.truncate(segment, segment.stat().st_size - 7)
    recovered = Journal(tmp_path, fsync="off").recover()
    assert [ex.journal_seq for ex in recovered] == [0, 1, 2, 3]


def test_a_second_journal_on_the_same_directory_is_refused(tmp_path):
    holder = Journal(tmp_path, fsync="off")
    with pytest.raises(JournalError, match="in use by another collector"):
        Journal(tmp_path, fsync="off")
    holder.close()


def test_with_fsync_always_each_answer_waits_for_a_group_fdatasync_that_covers_its_record(tmp_path):
    journal = Journal(tmp_path, fsync="always")

    async def answer_many() -> list[int]:
        seqs = [journal.append(_exchange(i)) for i in range(50)]
        await asyncio.wait_for(asyncio.gather(*(journal.synced(s) for s in seqs)), 60)  # against a hang only
        return seqs

    seqs = asyncio.run(answer_many())
    assert journal._synced_seq >= seqs[-1]
    journal.close()


def test_capturing_the_same_exchange_twice_gives_the_same_event_ids():
    class Events:
        def __init__(self) -> None:
            self.events = []

        def submit(self, event) -> None:
            self.events.append(event)

    config = CollectorConfig(upstream="http://127.0.0.1:9", model="m")
    ex = _exchange(0)
    ex.request_body = json.dumps(
        {"inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP64", "data": [[1.0], [2.0], [3.0]]}]}
    ).encode()
    first, second = Events(), Events()
    Pipeline(config, first).process(ex)
    Pipeline(config, second).process(decode(_payload(encode(ex))))
    ids = [e.event_id for e in first.events]
    assert len(ids) == len(set(ids)) == 3
    assert [e.event_id for e in second.events] == ids
