"""What aiohttp's HTTP connection handler logs through: malformed requests as one line, rate-limited.

aiohttp answers a request it cannot parse (a bad request line, method, header, chunk size,
an oversized line...) with ``400`` and logs the parser's exception *with its traceback*
through the handler's ``logger.exception``. Anyone who can reach the port could fill the
log that way. :class:`ProtocolLog` stands in for that logger:

* a malformed request (``aiohttp.http_exceptions.HttpProcessingError``) becomes one
  ``WARNING`` line, ``malformed HTTP request from 10.0.0.7 answered 400: Invalid method
  encountered: b'GE\\x00T'``, at most ``burst`` lines per ``interval_s``; the lines
  suppressed in between are counted in the next one, and every such request in
  ``driftwarden_collector_malformed_requests_total``;
* any other exception (a bug) keeps its traceback: it is rare and needs one to be fixed.

Thread safety: used from the event loop only.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

DEFAULT_BURST = 10
DEFAULT_INTERVAL_S = 10.0


class ProtocolLog:
    """A ``logging.Logger`` stand-in for ``aiohttp.web.Server(logger=...)`` (it calls ``debug`` and ``exception``)."""

    def __init__(
        self,
        logger: logging.Logger,
        counter: Any = None,
        *,
        burst: int = DEFAULT_BURST,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.logger = logger
        self.counter = counter  # a prometheus-client counter child, or None
        self.burst = burst
        self.interval_s = interval_s
        self._window_start = 0.0
        self._in_window = 0
        self._suppressed = 0

    def debug(self, msg: str, *args: Any, exc_info: Any = None, **kw: Any) -> None:
        exc = _exception(exc_info)
        if isinstance(exc, HttpProcessingError):  # aiohttp's "not HTTP at all" case on a first request
            self._malformed(args, exc)
        else:
            self.logger.debug(msg, *args, exc_info=exc_info, **kw)

    def exception(self, msg: str, *args: Any, exc_info: Any = True, **kw: Any) -> None:
        exc = _exception(exc_info)
        if isinstance(exc, HttpProcessingError):
            self._malformed(args, exc)
        else:
            self.logger.error(msg, *args, exc_info=exc_info, **kw)

    def _malformed(self, args: tuple, exc: HttpProcessingError) -> None:
        if self.counter is not None:
            self.counter.inc()
        now = time.monotonic()
        if now - self._window_start >= self.interval_s:
            self._window_start, self._in_window = now, 0
        if self._in_window >= self.burst:
            self._suppressed += 1
            return
        self._in_window += 1
        peer = args[0] if args else "?"
        reason = " ".join(str(getattr(exc, "message", "") or exc).split()) or type(exc).__name__
        more = f" ({self._suppressed} more since the last such line)" if self._suppressed else ""
        self._suppressed = 0
        self.logger.warning("malformed HTTP request from %s answered 400: %.300s%s", peer, reason, more)


def _exception(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        return exc_info[1]
    if exc_info:
        return sys.exc_info()[1]
    return None
