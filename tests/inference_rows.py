"""Rows of ``inferences`` and ``ground_truth`` as the collector and the ingest command write them.

A helper for the detector tests (not a fixture): every column gets the value a
real capture leaves when the protocol does not set it, and a test names only
the columns its behaviour depends on.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

UTC = dt.UTC

DEFAULTS: dict[str, Any] = {
    "model_version": "v1",
    "model_digest": "sha256:0",
    "protocol": "oip",
    "endpoint": "/v2/models/m/infer",
    "tenant": "",
    "status": 200,
    "latency_ms": 1.0,
    "upstream_latency_ms": 1.0,
    "ttft_ms": None,
    "request_bytes": 0,
    "response_bytes": 0,
    "num_names": [],
    "num_values": [],
    "cat_names": [],
    "cat_values": [],
    "prediction": None,
    "prediction_label": "",
    "output_names": [],
    "output_values": [],
    "output_text": "",
    "input_payload": "",
    "output_payload": "",
    "payload_sampled": False,
    "payload_truncated": False,
    "input_hash": 0,
    "output_hash": 0,
    "params_hash": 0,
    "deterministic": False,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "finish_reason": "",
    "error_class": "",
    "trace_id": "",
    "is_replay": False,
    "replay_of": None,
    "redactions": 0,
}
COLUMNS = ["event_id", "ts", "model", *DEFAULTS]


def event(model: str, ts: dt.datetime, **columns: Any) -> dict[str, Any]:
    """One inference row; unknown column names are a test bug and raise."""
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise KeyError(f"not columns of inferences: {sorted(unknown)}")
    return {"event_id": uuid.uuid4(), "ts": ts, "model": model, **DEFAULTS, **columns}


def insert_events(client, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = list(rows)
    if rows:
        client.insert("inferences", [[r[c] for c in COLUMNS] for r in rows], column_names=COLUMNS)
    return rows


def insert_labels(client, model: str, labels: Iterable[tuple[uuid.UUID, str, float | None]], ts: dt.datetime) -> None:
    """Ground truth ``(event_id, label, value)`` observed at ``ts``."""
    names = ["event_id", "model", "ts", "label", "value", "received_at"]
    now = dt.datetime.now(UTC)
    rows = [[eid, model, ts, label, value, now] for eid, label, value in labels]
    if rows:
        client.insert("ground_truth", rows, column_names=names)
