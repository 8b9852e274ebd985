"""Malformed HTTP at the api: answered ``400`` and logged as one line per request, rate-limited.

uvicorn answers a request its parser (httptools, or h11 without it) refuses with ``400 Bad
Request`` and logs ``Invalid HTTP request received.``: a line that names neither the peer nor
how many came, once per request, so anyone who can reach the port decides how much is logged.
:func:`protocol_class` is uvicorn's own HTTP protocol with one change: such a request is
logged as ``malformed HTTP request from 10.0.0.7:51234 answered 400``, at most ``burst``
lines per ``interval_s``; the lines suppressed in between are counted in the next one.
uvicorn's own lines for it are dropped. Nothing else of uvicorn changes.

Thread safety: the counts are updated on the server's event loop only.
"""

from __future__ import annotations

import asyncio
import logging
import time

from uvicorn.protocols.http.auto import AutoHTTPProtocol

DEFAULT_BURST = 10
DEFAULT_INTERVAL_S = 10.0
UVICORN_LOGGER = "uvicorn.error"
# uvicorn's lines for one malformed request; replaced by one of ours.
_UVICORN_LINES = ("Invalid HTTP request received.",)


class MalformedRequestLog:
    """One ``WARNING`` per malformed request, at most ``burst`` per ``interval_s``; the rest counted."""

    def __init__(
        self, logger: logging.Logger, *, burst: int = DEFAULT_BURST, interval_s: float = DEFAULT_INTERVAL_S
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.interval_s = interval_s
        self.total = 0  # malformed requests seen, logged or not
        self._window_start = 0.0
        self._in_window = 0
        self._suppressed = 0

    def malformed(self, peer: tuple[str, int] | None) -> None:
        self.total += 1
        now = time.monotonic()
        if now - self._window_start >= self.interval_s:
            self._window_start, self._in_window = now, 0
        if self._in_window >= self.burst:
            self._suppressed += 1
            return
        self._in_window += 1
        who = f"{peer[0]}:{peer[1]}" if peer else "an unknown peer"
        more = f" ({self._suppressed} more since the last such line)" if self._suppressed else ""
        self._suppressed = 0
        self.logger.warning("malformed HTTP request from %s answered 400%s", who, more)


class _DropUvicornLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(_UVICORN_LINES))


_drop = _DropUvicornLines()


def protocol_class(
    log: MalformedRequestLog | None = None, base: type[asyncio.Protocol] = AutoHTTPProtocol
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol ``base`` (default: httptools when installed, else h11) logging through ``log``.

    Pass it as ``uvicorn.Config(app, http=protocol_class())``.
    """
    log = log or MalformedRequestLog(logging.getLogger(UVICORN_LOGGER))
    logging.getLogger(UVICORN_LOGGER).addFilter(_drop)  # a Filter object is added once however often this runs

    class OneLineMalformedHTTP(base):  # type: ignore[misc, valid-type]
        def send_400_response(self, msg: str) -> None:
            log.malformed(self.client)
            super().send_400_response(msg)

    return OneLineMalformedHTTP
