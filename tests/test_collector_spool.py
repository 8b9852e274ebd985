"""The on-disk spool: framing, torn records, bounds, and the writer's use of it."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import uuid

import pytest

from driftwarden.collector import metrics
from driftwarden.collector.arrow import from_ipc, to_ipc, to_table
from driftwarden.collector.event import Event
from driftwarden.collector.spool import Spool, SpoolError
from driftwarden.collector.writer import open_writer
from tests.hub_process import free_port, wait_for


def _payloads(n: int, size: int = 100) -> list[bytes]:
    return [bytes([i % 251]) * size + i.to_bytes(4, "little") for i in range(n)]


def _read_all(spool: Spool) -> list[bytes]:
    out = []
    while (segment := spool.oldest()) is not None:
        out.extend(r.payload for r in spool.read(segment))
        spool.remove(segment)
    return out


def test_records_come_back_in_order_across_segment_rotation(tmp_path):
    spool = Spool(tmp_path, segment_bytes=1000)
    payloads = _payloads(50)
    assert all(spool.append(p) for p in payloads)
    assert spool.segments > 5
    assert _read_all(spool) == payloads
    assert spool.empty() and spool.bytes == 0


def test_segments_left_by_a_previous_run_are_read_after_a_restart(tmp_path):
    first = Spool(tmp_path, segment_bytes=1000)
    payloads = _payloads(20)
    for p in payloads:
        first.append(p)
    first.close()
    again = Spool(tmp_path, segment_bytes=1000)
    again.append(b"after restart")
    assert _read_all(again) == [*payloads, b"after restart"]


@pytest.mark.parametrize("cut", [1, 5, 11, 60], ids=["in-payload-end", "in-payload", "in-header", "mid-record"])
def test_a_torn_last_record_is_skipped_and_the_records_before_it_are_kept(tmp_path, cut):
    spool = Spool(tmp_path)
    payloads = _payloads(5)
    for p in payloads:
        spool.append(p)
    spool.close()
    (segment,) = tmp_path.glob("segment-*.spool")
    os.truncate(segment, segment.stat().st_size - cut)  # what kill -9 during an append leaves
    reopened = Spool(tmp_path)
    assert _read_all(reopened) == payloads[:4]
    assert list(tmp_path.glob("segment-*.spool")) == []


def test_a_corrupt_record_ends_the_readable_part_of_its_segment(tmp_path):
    spool = Spool(tmp_path)
    payloads = _payloads(5)
    for p in payloads:
        spool.append(p)
    spool.close()
    (segment,) = tmp_path.glob("segment-*.spool")
    data = bytearray(segment.read_bytes())
    record = len(data) // 5
    data[2 * record + 20] ^= 0xFF  # a flipped bit inside the third record's payload
    segment.write_bytes(bytes(data))
    assert _read_all(Spool(tmp_path)) == payloads[:2]


def test_a_second_spool_on_the_same_directory_is_refused(tmp_path):
    holder = Spool(tmp_path)
    with pytest.raises(SpoolError, match="in use by another collector"):
        Spool(tmp_path)
    holder.close()


def test_appends_beyond_max_bytes_are_refused_without_writing(tmp_path):
    spool = Spool(tmp_path, max_bytes=1000)
    accepted = [spool.append(p) for p in _payloads(20)]
    assert accepted == [True] * 8 + [False] * 12  # 8 records of 116 bytes fit in 1000
    assert spool.bytes == 8 * 116
    assert len(_read_all(spool)) == 8


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs: a real file system that runs out of space (needs root or CAP_SYS_ADMIN)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_refuses_appends_and_leaves_the_segment_readable(tiny_disk):
    spool = Spool(tiny_disk, segment_bytes=64 * 1024 * 1024)
    payload = os.urandom(10_000)
    accepted = 0
    refused = 0
    for _ in range(60):  # 600 KB into 256 KiB
        if spool.append(payload):
            accepted += 1
        else:
            refused += 1
    assert accepted > 10 and refused > 0
    (segment,) = tiny_disk.glob("segment-*.spool")
    assert segment.stat().st_size == spool.bytes == accepted * (10_000 + 12), "a failed append leaves no partial record"
    assert _read_all(spool) == [payload] * accepted


def _closed_port_hub() -> str:
    return f"http://127.0.0.1:{free_port()}"


def _dropped(model: str, reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "driftwarden_collector_events_dropped_total", {"model": model, "reason": reason}
    )
    return value or 0.0


HANG_S = 60.0  # against a hang only: how fast a submit returns is measured in bench/, not asserted here


def _submit_all(writer, events) -> None:
    """Submit every event from another thread; fails if the submits do not all return (a blocked submit)."""
    submitter = threading.Thread(target=lambda: [writer.submit(event) for event in events], daemon=True)
    submitter.start()
    submitter.join(HANG_S)
    assert not submitter.is_alive(), f"submit() blocked: {len(events)} submits did not return within {HANG_S:g} s"


def test_a_full_spool_drops_the_newest_events_counts_them_and_never_blocks(tmp_path):
    writer = open_writer(
        model="spoolfull",
        hub=_closed_port_hub(),
        spool_dir=tmp_path / "spool",
        batch_events=100,
        flush_interval_ms=10,
        spool_max_bytes=100_000,
    ).start()
    before = _dropped("spoolfull", "spool_full")
    events = [Event(model="spoolfull", num_names=["x"], num_values=[1.0]) for _ in range(3000)]
    _submit_all(writer, events)
    stats = writer.close(timeout=5)
    assert stats.spooled > 0 and stats.dropped["spool_full"] > 0
    assert stats.spool_bytes <= 100_000
    assert stats.acknowledged + sum(stats.dropped.values()) == stats.submitted == 3000
    assert _dropped("spoolfull", "spool_full") - before == stats.dropped["spool_full"]


def test_a_full_disk_under_the_writer_drops_and_counts_instead_of_failing(tiny_disk):
    writer = open_writer(
        model="diskfull", hub=_closed_port_hub(), spool_dir=tiny_disk, batch_events=200, flush_interval_ms=10
    ).start()
    events = [Event(model="diskfull", output_text="x" * 500) for _ in range(3000)]  # ~1.5 MB into 256 KiB
    _submit_all(writer, events)
    stats = writer.close(timeout=5)
    assert stats.spooled > 0 and stats.dropped.get("spool_full", 0) > 0
    assert stats.acknowledged + sum(stats.dropped.values()) == 3000


def test_a_stalled_sink_fills_memory_and_drops_the_newest_events_without_blocking(tmp_path):
    # A listening socket that never accepts: connections hang until the sink's timeout.
    with socket.socket() as stalled:
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(1)
        hub = f"http://127.0.0.1:{stalled.getsockname()[1]}"
        writer = open_writer(
            model="memfull", hub=hub, batch_events=100, flush_interval_ms=10, max_buffer_events=500, sink_timeout_s=30
        ).start()
        before = _dropped("memfull", "memory_full")
        # The first batch is stuck in the sink's write (the socket never accepts) while 2,000 events arrive.
        _submit_all(writer, [Event(model="memfull") for _ in range(2000)])
        stats = writer.stats()
        assert stats.submitted == 2000
        assert stats.dropped.get("memory_full", 0) >= 1000
        assert stats.buffered <= 500
        assert _dropped("memfull", "memory_full") - before == stats.dropped["memory_full"]
        writer.close(timeout=1)


def test_close_spools_the_buffer_when_the_sink_is_down_and_a_restart_delivers_it(tmp_path, store, store_url):
    spool_dir = tmp_path / "spool"
    events = [Event(model="restart", event_id=uuid.UUID(int=i + 1)) for i in range(300)]
    down = open_writer(
        model="restart", hub=_closed_port_hub(), spool_dir=spool_dir, batch_events=1000, flush_interval_ms=60_000
    ).start()
    for event in events:
        down.submit(event)
    stats = down.close(timeout=5)  # the SIGTERM path: memory -> sink, else -> spool
    assert stats.spooled == 300 and stats.spool_bytes > 0
    (segment,) = spool_dir.glob("segment-*.spool")
    with open(segment, "ab") as fh:
        fh.write(b"DWS1\xff\xff")  # and a torn record after it, as a crash would leave
    up = open_writer(model="restart", store=store_url, spool_dir=spool_dir).start()
    assert wait_for(lambda: up.stats().replayed == 300, timeout=20)
    up.close()
    assert store.query("SELECT count(), uniqExact(event_id) FROM inferences FINAL").result_rows == [(300, 300)]
    assert list(spool_dir.glob("segment-*.spool")) == []


def test_a_spooled_batch_keeps_every_column(tmp_path):
    events = [Event(model="m", ttft_ms=None, prediction=1.5, replay_of=uuid.UUID(int=3), num_names=["a"])]
    events[0].num_values = [2.0]
    table = to_table(events)
    spool = Spool(tmp_path)
    spool.append(to_ipc(table))
    (payload,) = _read_all(spool)
    assert from_ipc(payload).equals(table)


def test_a_segment_replayed_twice_after_a_crash_before_its_deletion_counts_once(tmp_path, store, store_url):
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    events = [Event(model="twice", event_id=uuid.UUID(int=i + 1)) for i in range(500)]
    spool.append(to_ipc(to_table(events[:250])))
    spool.append(to_ipc(to_table(events[250:])))
    spool.close()
    (segment,) = spool_dir.glob("segment-*.spool")
    kept = segment.read_bytes()
    for _ in range(2):  # the second run finds the segment again, as if the first died before deleting it
        writer = open_writer(model="twice", store=store_url, spool_dir=spool_dir).start()
        assert wait_for(lambda w=writer: w.stats().replayed == 500, timeout=20)
        writer.close()
        assert not segment.exists()
        segment.write_bytes(kept)
    assert store.query("SELECT count() FROM inferences").result_rows == [(500,)], "identical blocks deduplicated"
    assert store.query("SELECT count(), uniqExact(event_id) FROM inferences FINAL").result_rows == [(500, 500)]
