"""The hub sink: each batch as an Arrow IPC stream, ``POST``-ed to the ingest endpoint of the
process that owns the store (``driftwarden api``/``up``), for collectors that share an embedded store."""

from __future__ import annotations

import os

import pyarrow as pa

from driftwarden.collector.arrow import to_ipc
from driftwarden.collector.sinks import RejectedBatch

CONTENT_TYPE = "application/vnd.apache.arrow.stream"
PATH = "/v1/events"
INGEST_TOKEN_ENV = "DRIFTWARDEN_INGEST_TOKEN"  # noqa: S105 (the variable's name, not a secret)


def ingest_headers() -> dict[str, str]:
    """The ``Authorization`` header for a hub that requires the ingest token, when one is set."""
    token = os.environ.get(INGEST_TOKEN_ENV)
    return {"authorization": f"Bearer {token}"} if token else {}


# Answers about the batch itself, which sending it unchanged cannot change: the writer writes it around the events
# the hub refuses and sets those aside. Other errors (404 of a wrong hub URL, 401/403, 5xx, timeouts) are retried
# through the spool: fixing the cause delivers.
_REFUSED_CONTENT = (400, 413, 415, 422)


class HubSink:
    """POSTs batches to ``{hub}/v1/events``. A 400, 413, 415 or 422 means the hub refused the batch's
    content and raises :class:`RejectedBatch` (the writer sets aside the events refused, see
    ``collector.sinks``); any other failure raises ``OSError`` (or httpx's error) and the writer
    retries through the spool. Thread-safe (httpx clients are)."""

    name = "hub"

    def __init__(self, hub: str, *, timeout_s: float = 10.0) -> None:
        import httpx

        self.url = hub.rstrip("/") + PATH
        self._http = httpx.Client(timeout=timeout_s, trust_env=False)
        self._headers = {"content-type": CONTENT_TYPE, **ingest_headers()}

    def write(self, table: pa.Table) -> None:
        self.write_ipc(to_ipc(table))

    def write_ipc(self, body: bytes) -> None:
        """Send an already-encoded batch (the spool keeps batches encoded)."""
        response = self._http.post(self.url, content=body, headers=self._headers)
        if response.status_code < 300:
            return
        message = f"hub {self.url} answered {response.status_code}: {response.text[:300]}"
        if response.status_code in _REFUSED_CONTENT:
            raise RejectedBatch(message)
        raise OSError(message)

    def close(self) -> None:
        self._http.close()
