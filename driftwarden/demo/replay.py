"""Replaying the demo's hours as inference traffic, in accelerated simulated time.

Each hour of January and February 2011 is one Open Inference Protocol request
through the collector, sent when the simulated clock reaches the hour
(``speed`` simulated seconds per real second). Two headers tell the collector
what a live client would not: ``X-Driftwarden-Timestamp`` (the simulated hour,
recorded as the event's ``ts``) and ``X-Driftwarden-Event-Id`` (the event's id,
derived from the hour, chosen here so that the rental count of the hour can be sent later, by id, to
``POST /v1/ground-truth``). Ground truth arrives one simulated day after the
hour ends, as it would from a nightly job.

Once a simulated day the client retries its noon request (``RETRY_HOUR``), as clients do after a
timeout: the retry is a second event with the same inputs and no label of its own, which gives the
consistency detector repeated inputs whose answers it can compare.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pandas as pd

from driftwarden.demo.model import FEATURES, MODEL_NAME, TARGET

LABEL_DELAY = dt.timedelta(days=1)  # after the end of the hour
HOUR = dt.timedelta(hours=1)
# Each hour has the same event id in every run, so replaying into the same store again replaces the
# events and labels of the first run (ReplacingMergeTree on the id) instead of doubling them.
EVENT_NAMESPACE = uuid.UUID("5d1f2f0e-8a4b-4c8e-9a57-6c2b1f3e7d10")
TENSOR = "features"  # the input tensor's name; the collector maps its columns to FEATURES
RETRY_HOUR = 12  # the hour of each day whose request the client sends twice


@dataclass(frozen=True)
class Label:
    event_id: str
    observed: dt.datetime  # end of the hour: when the count is known
    value: float


class Replay:
    """Sends the hours through ``collector_url`` and their labels to ``api_url``; not thread-safe (one driver)."""

    def __init__(self, hours: pd.DataFrame, collector_url: str, api_url: str, speed: float) -> None:
        self.hours = hours
        self.infer_url = f"{collector_url}/v2/models/{MODEL_NAME}/infer"
        self.truth_url = f"{api_url}/v1/ground-truth"
        self.speed = speed
        self.sent = 0  # requests answered 2xx (each one event)
        self.failed = 0
        self.labels_sent = 0
        self.now: dt.datetime | None = None  # simulated time of the last hour sent
        self.pending: deque[Label] = deque()
        # No proxy from the environment: the demo talks to its own loopback servers only.
        self.http = httpx.Client(timeout=30.0, trust_env=False)

    def run(self, stop: threading.Event, on_day: Callable[[dt.datetime], None]) -> bool:
        """Send every hour in order; ``on_day(midnight)`` runs as each new simulated day begins.

        Returns True when every hour was sent, False when ``stop`` was set first.
        """
        start = self.hours["ts"].iloc[0].to_pydatetime()
        real_start = time.monotonic()
        day: dt.date | None = None
        columns = list(FEATURES)
        for ts, values, label in zip(
            self.hours["ts"], self.hours[columns].to_numpy(), self.hours[TARGET].to_numpy(), strict=True
        ):
            moment = ts.to_pydatetime()
            if day is not None and moment.date() != day:
                on_day(dt.datetime.combine(moment.date(), dt.time(), tzinfo=dt.UTC))
            day = moment.date()
            if not wait_until(moment, start, real_start, self.speed, stop):
                return False
            self._send(moment, [float(v) for v in values], float(label))
            if moment.hour == RETRY_HOUR:
                self._send(moment, [float(v) for v in values], None)
        return True

    def _send(self, moment: dt.datetime, values: list[float], label: float | None) -> None:
        """One request; ``label`` None: a retry of the hour's request (its own event id, no label)."""
        name = f"{MODEL_NAME}/{moment.isoformat()}" + ("" if label is not None else "/retry")
        event_id = str(uuid.uuid5(EVENT_NAMESPACE, name))
        body = {
            "id": event_id,
            "inputs": [{"name": TENSOR, "shape": [1, len(values)], "datatype": "FP64", "data": [values]}],
        }
        headers = {"X-Driftwarden-Timestamp": moment.isoformat(), "X-Driftwarden-Event-Id": event_id}
        try:
            answer = self.http.post(self.infer_url, json=body, headers=headers)
        except httpx.HTTPError:
            self.failed += 1
            return
        self.now = moment
        if answer.is_success:
            self.sent += 1
            if label is not None:
                self.pending.append(Label(event_id, moment + HOUR, label))
        else:
            self.failed += 1

    def send_labels(self, now: dt.datetime | None) -> int:
        """POST the ground truth of every hour whose label is due at simulated time ``now`` (None: all)."""
        batch = []
        while self.pending and (now is None or self.pending[0].observed + LABEL_DELAY <= now):
            label = self.pending.popleft()
            batch.append(
                {
                    "event_id": label.event_id,
                    "model": MODEL_NAME,
                    "ts": label.observed.isoformat(),
                    "value": label.value,
                }
            )
        if not batch:
            return 0
        body = "\n".join(json.dumps(record) for record in batch)
        answer = self.http.post(self.truth_url, content=body, headers={"Content-Type": "application/x-ndjson"})
        answer.raise_for_status()
        self.labels_sent += len(batch)
        return len(batch)

    def close(self) -> None:
        self.http.close()


def wait_until(moment: dt.datetime, start: dt.datetime, real_start: float, speed: float, stop) -> bool:
    """Sleep until simulated ``moment`` comes (``start`` was at ``real_start`` on the monotonic clock, time
    runs ``speed`` times faster); False when ``stop`` is set first."""
    due = real_start + (moment - start).total_seconds() / speed
    while (wait := due - time.monotonic()) > 0:
        if stop.wait(min(wait, 0.2)):
            return False
    return not stop.is_set()
