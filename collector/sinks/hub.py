"""The hub sink: each batch as an Arrow IPC stream, ``POST``-ed to the ingest endpoint of the
process that owns the store (``driftwarden api``/``up``), for collectors that share an embedded store."""

from __future__ import annotations

import logging
import os
import time

import pyarrow as pa

from driftwarden.collector.arrow import to_ipc
from driftwarden.collector.sinks import RejectedBatch

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.apache.arrow.stream"
PATH = "/v1/events"
RELEARN_S = 3600.0
"""Seconds after which a body limit learned from a 413 is forgotten, and whole batches are tried again."""
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
    """POSTs batches to ``{hub}/v1/events`` (or ``path``: ``driftwarden ingest --hub`` sends ground truth to
    ``/v1/ground-truth`` so). A 400, 413, 415 or 422 means the hub refused the batch's
    content and raises :class:`RejectedBatch` (the writer sets aside the events refused, see
    ``collector.sinks``); any other failure raises ``OSError`` (or httpx's error) and the writer
    retries through the spool. Thread-safe (httpx clients are).

    A 413 to a batch of several events is a body limit on the way (the hub's ``MAX_BATCH_BYTES``, or a proxy's:
    an ingress's ``client_max_body_size``, 1 MiB by default in nginx): the batch is sent again in halves at once,
    and the sink remembers half the refused size as the largest body to send, so that later batches go in
    pieces under it without being refused first. Only a single event larger than the limit is refused. The limit
    is forgotten ``relearn_s`` (an hour) after it was learned: a limit raised meanwhile lets whole batches through
    again, one that still holds costs one refused request an hour."""

    name = "hub"

    def __init__(self, hub: str, *, timeout_s: float = 10.0, path: str = PATH, relearn_s: float = RELEARN_S) -> None:
        import httpx

        self.url = hub.rstrip("/") + path
        self._http = httpx.Client(timeout=timeout_s, trust_env=False)
        self._headers = {"content-type": CONTENT_TYPE, **ingest_headers()}
        self.max_body_bytes: int | None = None
        """The largest body to send, learned from a 413 (None until one, and again ``relearn_s`` after it)."""
        self.relearn_s = relearn_s
        """Seconds after which the limit learned is forgotten (``RELEARN_S``)."""
        self._learned_at = 0.0  # time.monotonic() of the last 413 learned from

    def write(self, table: pa.Table) -> None:
        self._send(table, to_ipc(table))

    def _send(self, table: pa.Table, body: bytes) -> None:
        limit = self.max_body_bytes
        if limit is not None and time.monotonic() - self._learned_at >= self.relearn_s:
            log.info(
                "sending whole batches to %s again, %.0f s after a 413 made them go in pieces of at most %d bytes "
                "(the limit on the way may have been raised since)",
                self.url,
                self.relearn_s,
                limit,
            )
            self.max_body_bytes = limit = None
        if limit is not None and len(body) > limit and table.num_rows > 1:
            self._in_pieces(table, -(-len(body) // limit))
            return
        response = self._http.post(self.url, content=body, headers=self._headers)
        if response.status_code < 300:
            return
        message = f"hub {self.url} answered {response.status_code}: {_detail(response)}"
        if response.status_code == 413 and table.num_rows > 1:
            learned = max(1, len(body) // 2)
            if limit is None or learned < limit:
                self.max_body_bytes = learned
                self._learned_at = time.monotonic()
                log.warning(
                    "%s to a batch of %d bytes: sending batches in pieces of at most %d bytes from now on",
                    message.split(": ", 1)[0],
                    len(body),
                    learned,
                )
            self._in_pieces(table, 2)
            return
        if response.status_code in _REFUSED_CONTENT:
            raise RejectedBatch(message)
        raise OSError(message)

    def _in_pieces(self, table: pa.Table, pieces: int) -> None:
        """``table`` sent as ``pieces`` slices of about equal rows (each split again while above the limit)."""
        pieces = min(pieces, table.num_rows)
        bounds = [table.num_rows * i // pieces for i in range(pieces + 1)]
        for start, end in zip(bounds, bounds[1:], strict=False):
            part = table.slice(start, end - start)
            self._send(part, to_ipc(part))

    def close(self) -> None:
        self._http.close()


def _detail(response) -> str:
    """What an answer says: the hub's ``detail``, else the start of its body (a proxy's page)."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return detail if isinstance(detail, str) else response.text[:300]
