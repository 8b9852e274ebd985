"""Replaying the second demo's tweets as inference traffic, in accelerated simulated time.

Each tweet is one Open Inference Protocol request through the collector: one ``BYTES``
tensor ``text`` with the tweet (the collector stores it as the text feature ``text``,
redacted), answered by the model's label. The tweets of a simulated hour are sent
together, a few at a time, once the simulated clock reaches the hour (``speed``
simulated seconds per real second). ``X-Driftwarden-Timestamp`` gives each event its
simulated moment and ``X-Driftwarden-Event-Id`` its id (derived from the moment, so a
second run into the same store replaces the first one's events instead of doubling them).
The true author of each tweet (the app it was posted from) arrives a simulated day
later through ``POST /v1/ground-truth``.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pandas as pd

from driftwarden.demo.replay import wait_until
from driftwarden.demo.text_model import MODEL_NAME, TENSOR

LABEL_DELAY = dt.timedelta(days=1)
EVENT_NAMESPACE = uuid.UUID("0b7c3c52-52a4-4f38-9f0e-3f0a3c1d2e91")
CONCURRENCY = 4  # requests in flight at once: the model server and the collector each have a core or two


def event_id(moment: dt.datetime) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{MODEL_NAME}/{moment.isoformat()}"))


class TextReplay:
    """Sends the tweets through ``collector_url`` and their authors to ``api_url``; one driver thread."""

    def __init__(self, requests: pd.DataFrame, collector_url: str, api_url: str, speed: float) -> None:
        self.requests = requests
        self.infer_url = f"{collector_url}/v2/models/{MODEL_NAME}/infer"
        self.truth_url = f"{api_url}/v1/ground-truth"
        self.speed = speed
        self.sent = 0
        self.failed = 0
        self.labels_sent = 0
        self.pending: deque[tuple[str, dt.datetime, str]] = deque()  # (event id, moment, label)
        self._lock = threading.Lock()
        # No proxy from the environment: the demo talks to its own loopback servers only.
        self.http = httpx.Client(timeout=30.0, trust_env=False, limits=httpx.Limits(max_connections=CONCURRENCY))
        self.pool = ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="dw-demo-text")

    def run(self, stop: threading.Event, on_day: Callable[[dt.datetime], None]) -> bool:
        """Send every tweet in order, an hour at a time; ``on_day(midnight)`` runs as each new day begins.

        Returns True when every tweet was sent, False when ``stop`` was set first.
        """
        moments = pd.to_datetime(self.requests["ts"], utc=True)
        hours = moments.dt.floor("h")
        start = moments.iloc[0].to_pydatetime()
        real_start = time.monotonic()
        day: dt.date | None = None
        for hour, rows in self.requests.groupby(hours, sort=True):
            moment = hour.to_pydatetime()
            if day is not None and moment.date() != day:
                on_day(dt.datetime.combine(moment.date(), dt.time(), tzinfo=dt.UTC))
            day = moment.date()
            if not wait_until(moment, start, real_start, self.speed, stop):
                return False
            batch = [
                (ts.to_pydatetime(), text, label)
                for ts, text, label in zip(moments[rows.index], rows["text"], rows["label"], strict=True)
            ]
            list(self.pool.map(lambda item: self._send(*item), batch))
        return True

    def _send(self, moment: dt.datetime, text: str, label: str) -> None:
        ident = event_id(moment)
        body = {"id": ident, "inputs": [{"name": TENSOR, "shape": [1], "datatype": "BYTES", "data": [text]}]}
        headers = {"X-Driftwarden-Timestamp": moment.isoformat(), "X-Driftwarden-Event-Id": ident}
        try:
            answer = self.http.post(self.infer_url, json=body, headers=headers)
        except httpx.HTTPError:
            with self._lock:
                self.failed += 1
            return
        with self._lock:
            if answer.is_success:
                self.sent += 1
                self.pending.append((ident, moment, label))
            else:
                self.failed += 1

    def send_labels(self, now: dt.datetime | None) -> int:
        """POST the author of every tweet whose label is due at simulated time ``now`` (None: all)."""
        with self._lock:
            due = sorted(self.pending, key=lambda item: item[1])
            ready = [item for item in due if now is None or item[1] + LABEL_DELAY <= now]
            self.pending = deque(item for item in due if not (now is None or item[1] + LABEL_DELAY <= now))
        if not ready:
            return 0
        body = "\n".join(
            json.dumps({"event_id": ident, "model": MODEL_NAME, "ts": moment.isoformat(), "label": label})
            for ident, moment, label in ready
        )
        answer = self.http.post(self.truth_url, content=body, headers={"Content-Type": "application/x-ndjson"})
        answer.raise_for_status()
        self.labels_sent += len(ready)
        return len(ready)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.http.close()
