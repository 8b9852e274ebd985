"""Fault injection at the hub: a 2xx from an ingest endpoint means the rows survive a SIGKILL of the hub.

Clients post batches of inference events (``/v1/events``, Arrow) and of ground truth
(``/v1/ground-truth``, JSON lines) to a real ``driftwarden api`` process while it is killed
with SIGKILL. After a restart on the same store, every batch that was answered 2xx is there.
"""

from __future__ import annotations

import itertools
import threading
import uuid

import httpx
import pytest

from driftwarden.collector.arrow import to_ipc, to_table
from driftwarden.collector.event import Event
from tests.hub_process import Hub, query_store, wait_for

BATCH = 20
KILL_AFTER = 60  # acknowledged batches of each kind before the kill


class Senders:
    """Threads posting batches with unique ids until the hub dies; record the ids of 2xx answers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.batch_no = itertools.count()
        self.events_ok: list[int] = []
        self.labels_ok: list[int] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._send, args=(kind,), daemon=True) for kind in ("e", "g") * 2]

    def start(self) -> Senders:
        for thread in self.threads:
            thread.start()
        return self

    def join(self) -> None:
        for thread in self.threads:
            thread.join(60)

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return len(self.events_ok), len(self.labels_ok)

    def _send(self, kind: str) -> None:
        with httpx.Client(timeout=30) as client:
            while True:
                with self.lock:
                    first = next(self.batch_no) * BATCH + 1
                ids = [uuid.UUID(int=first + i) for i in range(BATCH)]
                try:
                    if kind == "e":
                        events = [Event(model="hubkill", event_id=i, num_names=["x"], num_values=[1.0]) for i in ids]
                        r = client.post(
                            self.url + "/v1/events",
                            content=to_ipc(to_table(events)),
                            headers={"content-type": "application/vnd.apache.arrow.stream"},
                        )
                    else:
                        lines = "\n".join(f'{{"event_id": "{i}", "model": "hubkill", "label": "y"}}' for i in ids)
                        r = client.post(
                            self.url + "/v1/ground-truth",
                            content=lines,
                            headers={"content-type": "application/x-ndjson"},
                        )
                except httpx.HTTPError:
                    return  # the hub is gone
                if r.status_code // 100 == 2:
                    with self.lock:
                        (self.events_ok if kind == "e" else self.labels_ok).append(first)


@pytest.mark.timeout(240)
def test_every_batch_answered_2xx_by_a_hub_is_in_its_store_after_a_sigkill(tmp_path):
    hub = Hub(tmp_path / "hub-store").start()
    senders = Senders(hub.url).start()
    try:
        done = wait_for(lambda: min(senders.counts()) >= KILL_AFTER, timeout=120)
        assert done, f"acknowledged batches before the kill: {senders.counts()}"
        hub.process.kill()  # SIGKILL: no shutdown, no flush
        hub.process.wait(30)
        senders.join()
    finally:
        hub.stop()
    ((rows, events_ok, labels, labels_ok),) = query_store(
        hub.store_url,
        "SELECT (SELECT count() FROM inferences WHERE model = 'hubkill'), "
        f"(SELECT count() FROM inferences WHERE model = 'hubkill' AND intDiv(toUInt128(event_id) - 1, {BATCH}) IN "
        f"({','.join(str((f - 1) // BATCH) for f in senders.events_ok)})), "
        "(SELECT count() FROM ground_truth WHERE model = 'hubkill'), "
        f"(SELECT count() FROM ground_truth WHERE model = 'hubkill' AND intDiv(toUInt128(event_id) - 1, {BATCH}) IN "
        f"({','.join(str((f - 1) // BATCH) for f in senders.labels_ok)}))",
    )
    print(f"acknowledged: {len(senders.events_ok)} event batches, {len(senders.labels_ok)} label batches")
    assert events_ok == len(senders.events_ok) * BATCH, "every acknowledged event batch is stored"
    assert labels_ok == len(senders.labels_ok) * BATCH, "every acknowledged ground-truth batch is stored"
    assert rows >= events_ok and labels >= labels_ok
