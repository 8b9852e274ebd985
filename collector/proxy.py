"""The transparent reverse proxy: every request goes to the upstream, every response comes back unchanged.

Stack (chosen by measuring, see bench/collector_latency.py): aiohttp's
low-level HTTP server (no router, no middleware) on uvloop, and one aiohttp
``ClientSession`` with a keep-alive connection pool to the upstream.

What "transparent" means here:

* method, path, query string, headers and body go upstream as received,
  except the hop-by-hop headers of RFC 7230 section 6.1 (``Connection`` and
  every header it names, ``Keep-Alive``, ``Proxy-*``, ``TE``, ``Trailer``,
  ``Transfer-Encoding``, ``Upgrade``), ``Host`` (set to the upstream's, as
  nginx does by default), ``Expect`` (answered here) and the
  ``X-Driftwarden-Replay``/``-Timestamp``/``-Event-Id`` headers (read here, see below);
* status, reason, headers and body come back as the upstream sent them (minus
  hop-by-hop headers); compressed bodies stay compressed. Request bodies are
  read whole before they are sent on (as nginx does with request buffering).
  Responses with a ``Content-Length`` up to 1 MiB are read whole and sent in
  one write; everything else (chunked, server-sent events, large bodies) is
  relayed chunk by chunk as it arrives;
* when the upstream cannot be reached the client gets ``502``, when it does
  not answer within ``upstream_timeout_s`` ``504``, each with a short JSON
  body ``{"error": ..., "message": ...}``.

Nothing answered is lost: with a journal (``collector.journal``, in the spool
directory), the exchange is appended to it before the response (or, for a
stream, its last chunk) is released, and released from it once the writer has
acknowledged its events; a restart captures what a crash left there.

Capture happens off the inference path: the handler records references and
timestamps into an :class:`~collector.exchange.Exchange` and, once the last
byte of the response has been handed to the socket, schedules
``pipeline.process`` on the event loop (small exchanges: tens of
microseconds) or, for bodies over ``OFFLOAD_BYTES``, on one capture thread so
that parsing a large batch does not hold up the loop for its whole duration.
Nothing the capture does can reach the client. ``X-Driftwarden-Replay: <event-uuid>`` marks a replayed request
(recorded with ``is_replay``/``replay_of``); the tenant comes from the
configured header (default ``X-Driftwarden-Tenant``), else the default tenant.
When ``trust_client_event_headers`` is on (backfills and replays of recorded
traffic, ``driftwarden demo``), clients may set ``X-Driftwarden-Timestamp``
(ISO-8601 or epoch seconds: the event's ``ts`` instead of the arrival time)
and ``X-Driftwarden-Event-Id`` (a UUID: the event's id, so that the client can
send its ground truth later); both are parsed off the inference path, and a
value that does not parse is ignored. They are never forwarded upstream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict, istr
from yarl import URL

from driftwarden.collector import metrics
from driftwarden.collector.config import CollectorConfig
from driftwarden.collector.exchange import Exchange
from driftwarden.collector.journal import Journal
from driftwarden.collector.pipeline import Pipeline
from driftwarden.collector.protocol_log import ProtocolLog

log = logging.getLogger("driftwarden.collector")

REPLAY_HEADER = istr("X-Driftwarden-Replay")
_BINARY_HEADER = istr("Inference-Header-Content-Length")
TIMESTAMP_HEADER = istr("X-Driftwarden-Timestamp")
EVENT_ID_HEADER = istr("X-Driftwarden-Event-Id")
_HOP_BY_HOP = frozenset(
    istr(h)
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
_NOT_FORWARDED = _HOP_BY_HOP | {
    istr("Host"),
    istr("Content-Length"),
    istr("Expect"),
    REPLAY_HEADER,
    TIMESTAMP_HEADER,
    EVENT_ID_HEADER,
}
_NOT_RETURNED = _HOP_BY_HOP | {istr("Content-Length")}
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE = "0" * 32
OFFLOAD_BYTES = 256 << 10  # exchanges with more body bytes than this are captured on the capture thread
BUFFERED_RESPONSE_MAX = 1 << 20  # responses up to this size (with a Content-Length) are sent in one write
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class Proxy:
    """The reverse proxy server. Owns the upstream connection pool; hands exchanges to ``pipeline``."""

    def __init__(self, config: CollectorConfig, pipeline: Pipeline, journal: Journal | None = None) -> None:
        self.config = config
        self.pipeline = pipeline
        self.journal = journal
        self._prefix = config.upstream  # scheme://host[:port][/base], no trailing slash
        self._tenant_header = istr(config.tenant_header)
        self._default_tenant = config.default_tenant
        self._trust_event_headers = config.trust_client_event_headers
        self._capture_limit = max(config.payload.max_parse_bytes, config.payload.max_bytes)
        self._session: aiohttp.ClientSession | None = None
        self._server: web.Server | None = None
        self._listener: asyncio.AbstractServer | None = None
        self.address: tuple[str, int] | None = None
        self.in_flight = 0
        model, version = config.model, config.model_version
        self._observe = metrics.ExchangeMetrics(model, version).observe
        self._capture_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dw-capture")

    async def start(self) -> tuple[str, int]:
        """Open the upstream pool and the listener; returns the bound (host, port)."""
        cfg = self.config
        connector = aiohttp.TCPConnector(
            limit=cfg.max_connections,
            keepalive_timeout=60,
            ttl_dns_cache=60,
            enable_cleanup_closed=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=cfg.connect_timeout_s, sock_read=cfg.upstream_timeout_s
            ),
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )
        self._server = web.Server(
            self._handle,
            auto_decompress=False,
            access_log=None,
            logger=ProtocolLog(log, metrics.malformed_requests.labels(cfg.model)),
        )
        host, port = cfg.listen_address
        loop = asyncio.get_running_loop()
        try:
            self._listener = await loop.create_server(self._server, host, port, reuse_address=True, backlog=4096)
        except OSError:
            await self._session.close()
            raise
        sock = self._listener.sockets[0]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        bound = sock.getsockname()
        self.address = (bound[0], bound[1])
        return self.address

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace_s``), close the pool."""
        if self._listener is not None:
            self._listener.close()
        deadline = time.monotonic() + grace_s
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._server is not None:
            await self._server.shutdown(max(0.0, deadline - time.monotonic()))
        if self._session is not None:
            await self._session.close()
        await asyncio.sleep(0)  # let captures scheduled with call_soon run
        await asyncio.get_running_loop().run_in_executor(None, self._capture_thread.shutdown, True)

    # -- the inference path ---------------------------------------------------------------------

    async def _handle(self, request: BaseRequest) -> web.StreamResponse:
        t_start = perf_counter()
        ex = Exchange(
            method=request.method,
            path=request.path,
            query=request.query_string,
            ts_us=time.time_ns() // 1000,
            t_start=t_start,
        )
        self.in_flight += 1
        response: web.StreamResponse | None = None
        try:
            response = await self._proxy(request, ex)
        except _ClientGone:
            response = web.Response(status=400)  # nobody is listening; aiohttp's write of it is a no-op
        except Exception as exc:  # the proxy must answer whatever happens; capture is told what
            log.exception("proxying %s %s failed", ex.method, ex.path)
            ex.error_class = ex.error_class or "collector_error"
            if response is None or not response.prepared:
                response = await self._error(request, ex, 502, "collector_error", f"the collector failed: {exc}")
        finally:
            self.in_flight -= 1
        if not ex.t_end:  # _commit sets it as the response is released; else (client gone, stream cut): now
            ex.t_end = perf_counter()
        self._observe(ex)
        if len(ex.request_body) + len(ex.response_body) > OFFLOAD_BYTES:
            self._capture_thread.submit(self.pipeline.process, ex)
        else:
            asyncio.get_running_loop().call_soon(self.pipeline.process, ex)
        return response

    async def _proxy(self, request: BaseRequest, ex: Exchange) -> web.StreamResponse:
        headers = request.headers
        forward = self._forward_headers(headers)
        traceparent = headers.get("traceparent")
        if traceparent:
            m = _TRACEPARENT.match(traceparent)
            if m and m.group(1) != _ZERO_TRACE:
                ex.trace_id = m.group(1)
        ex.tenant = headers.get(self._tenant_header, self._default_tenant)
        ex.replay_of = headers.get(REPLAY_HEADER, "")
        if self._trust_event_headers:
            if TIMESTAMP_HEADER in headers:
                ex.extra["timestamp"] = headers[TIMESTAMP_HEADER]
            if EVENT_ID_HEADER in headers:
                ex.extra["event_id"] = headers[EVENT_ID_HEADER]
        ex.request_content_type = headers.get("Content-Type", "")
        binary = headers.get(_BINARY_HEADER)
        if binary is not None and binary.isdigit():
            ex.request_json_length = int(binary)

        if request.body_exists:
            if request.version == aiohttp.HttpVersion11 and headers.get("Expect", "").lower() == "100-continue":
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                request.writer.output_size = 0
            try:
                ex.request_body = await request.content.read()
            except Exception:
                ex.error_class = "client_disconnected"
                raise _ClientGone() from None

        assert self._session is not None
        url = URL(self._prefix + request.raw_path, encoded=True)
        ex.t_upstream_start = perf_counter()
        try:
            upstream = await self._session.request(
                ex.method,
                url,
                headers=forward,
                data=ex.request_body if request.body_exists else None,
                allow_redirects=False,
            )
        except TimeoutError:
            return await self._error(request, ex, 504, "upstream_timeout", self._timeout_message())
        except aiohttp.ClientError as exc:
            return await self._error(
                request, ex, 502, "upstream_unreachable", f"cannot reach the upstream {self._prefix}: {_why(exc)}"
            )
        try:
            return await self._relay(request, ex, upstream)
        finally:
            upstream.release()

    def _forward_headers(self, headers: Any) -> CIMultiDict[str]:
        connection = headers.get("Connection")
        named = {istr(t.strip()) for t in connection.split(",")} if connection else ()
        forward: CIMultiDict[str] = CIMultiDict()
        for key, value in headers.items():
            if key in _NOT_FORWARDED or key in named:
                continue
            forward.add(key, value)
        return forward

    async def _relay(self, request: BaseRequest, ex: Exchange, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        status = upstream.status
        up_headers = upstream.headers
        connection = up_headers.get("Connection")
        named = {istr(t.strip()) for t in connection.split(",")} if connection else ()
        out_headers: CIMultiDict[str] = CIMultiDict()
        for key, value in up_headers.items():
            if key not in _NOT_RETURNED and key not in named:
                out_headers.add(key, value)
        ex.response_content_type = up_headers.get("Content-Type", "")
        ex.response_content_encoding = up_headers.get("Content-Encoding", "")
        binary = up_headers.get(_BINARY_HEADER)
        if binary is not None and binary.isdigit():
            ex.response_json_length = int(binary)
        length = upstream.content_length
        no_body = ex.method == "HEAD" or status in (204, 304) or 100 <= status < 200

        if no_body:
            if length is not None and ex.method == "HEAD":
                out_headers["Content-Length"] = str(length)
            response = web.StreamResponse(status=status, reason=upstream.reason, headers=out_headers)
            ex.t_upstream_end = perf_counter()
            return await self._send_whole(request, ex, response, b"")

        streamed = length is None or length > BUFFERED_RESPONSE_MAX or "text/event-stream" in ex.response_content_type
        if not streamed:
            try:
                body = await upstream.read()
            except TimeoutError:
                return await self._error(request, ex, 504, "upstream_timeout", self._timeout_message())
            except aiohttp.ClientError as exc:
                return await self._error(
                    request, ex, 502, "upstream_unreachable", f"the upstream broke off its response: {_why(exc)}"
                )
            ex.t_upstream_end = perf_counter()
            response = web.Response(body=body, status=status, reason=upstream.reason, headers=out_headers)
            return await self._send_whole(request, ex, response, body)
        return await self._stream(request, ex, upstream, status, out_headers, length)

    async def _send_whole(
        self, request: BaseRequest, ex: Exchange, response: web.StreamResponse, body: bytes
    ) -> web.StreamResponse:
        ex.status = response.status
        ex.response_body = body
        ex.response_bytes = len(body)
        await self._commit(ex)
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionError:
            ex.error_class = ex.error_class or "client_disconnected"
        return response

    async def _commit(self, ex: Exchange) -> None:
        """Journal an inference before its response is released (see ``collector.journal``).

        One ``write(2)`` into the page cache on the loop; exchanges with large bodies are written
        from a thread, so the loop does not copy and checksum megabytes. With ``fsync: always``
        the response waits for the group ``fdatasync`` that covers its record.
        """
        ex.t_end = perf_counter()
        journal = self.journal
        if journal is None or not self.pipeline.wants(ex.method, ex.path):
            return
        if len(ex.request_body) + len(ex.response_body) > OFFLOAD_BYTES:
            seq = await asyncio.get_running_loop().run_in_executor(None, journal.append, ex)
        else:
            seq = journal.append(ex)
        if journal.fsync == "always":
            await journal.synced(seq)

    async def _stream(
        self,
        request: BaseRequest,
        ex: Exchange,
        upstream: aiohttp.ClientResponse,
        status: int,
        out_headers: CIMultiDict[str],
        length: int | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=status, reason=upstream.reason, headers=out_headers)
        if length is not None:
            response.content_length = length
        ex.status = status
        try:
            await response.prepare(request)
        except ConnectionError:
            ex.error_class = "client_disconnected"
            upstream.close()
            return response
        keep = self.pipeline.wants(ex.method, ex.path)
        limit = self._capture_limit
        parts: list[bytes] = []
        captured = 0
        total = 0
        marks: list[tuple[float, int]] | None = [] if keep and "text/event-stream" in ex.response_content_type else None
        try:
            async for chunk in upstream.content.iter_any():
                try:
                    await response.write(chunk)
                except ConnectionError:
                    ex.error_class = "client_disconnected"
                    upstream.close()  # do not return a half-read connection to the pool
                    break
                total += len(chunk)
                if keep and captured < limit:
                    piece = chunk if captured + len(chunk) <= limit else chunk[: limit - captured]
                    parts.append(piece)
                    captured += len(piece)
                    if marks is not None:
                        marks.append((perf_counter(), captured))
            else:
                ex.t_upstream_end = perf_counter()
                _finish_stream(ex, parts, captured, total, marks)
                await self._commit(ex)
                await response.write_eof()
                return response
        except TimeoutError:
            ex.error_class = "upstream_timeout"
            _abort(request)
        except aiohttp.ClientError:
            ex.error_class = "upstream_unreachable"
            _abort(request)
        except ConnectionError:
            ex.error_class = "client_disconnected"
        ex.t_upstream_end = perf_counter()
        _finish_stream(ex, parts, captured, total, marks)
        return response

    async def _error(self, request: BaseRequest, ex: Exchange, status: int, error: str, message: str) -> web.Response:
        ex.error_class = error
        ex.t_upstream_end = perf_counter()
        body = json.dumps({"error": error, "message": message, "source": "driftwarden-collector"}).encode()
        response = web.Response(body=body, status=status, content_type="application/json")
        ex.status = status
        ex.response_bytes = len(body)
        await self._commit(ex)
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionError:
            ex.error_class = "client_disconnected"
        return response

    def _timeout_message(self) -> str:
        return f"the upstream {self._prefix} did not answer within {self.config.upstream_timeout_s:g} s"


def _finish_stream(
    ex: Exchange, parts: list[bytes], captured: int, total: int, marks: list[tuple[float, int]] | None
) -> None:
    ex.response_bytes = total
    ex.response_body = b"".join(parts)
    ex.response_cut = captured < total
    ex.chunk_marks = marks


class _ClientGone(Exception):
    """The client went away before its request was read: there is no one to answer."""


def _abort(request: BaseRequest) -> None:
    """Close the client connection: the response has started and cannot be completed."""
    transport = request.transport
    if transport is not None:
        transport.close()


def _why(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or str(exc.os_error) or type(exc).__name__
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
