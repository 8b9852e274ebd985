"""The write-ahead journal: every answered exchange is on disk before its response is released.

The proxy appends one record per exchange (its bodies, headers it read, status and
timings: everything a receiver needs) with one ``write(2)`` into the page cache, *then*
releases the response. Capture (parsing, hashing, redaction, the writer) runs afterwards,
off the response path. Once the writer has acknowledged every event of an exchange (in
the sink, or fsync'd in the spool) the exchange is *released*; the journal keeps a
checkpoint, the lowest sequence number not yet released, and deletes segments that lie
wholly below it. After a crash, :meth:`Journal.recover` returns the exchanges at or above
the checkpoint and the collector captures them again. Their event ids are derived from
the exchange's journaled id (``collector.pipeline``), so an exchange captured twice (its
batch was written, the crash came before the checkpoint moved) gives the same rows,
which ``inferences`` (a ReplacingMergeTree on ``event_id``) keeps once.

Durability, ``fsync`` policy (``CollectorConfig.fsync``):

* ``off``: records reach the page cache only. A crash of the process (SIGKILL, OOM kill)
  loses nothing; a power cut or kernel crash loses what the kernel had not written back
  (``vm.dirty_expire_centisecs``: 30 s by default).
* ``interval`` (default): a background thread ``fdatasync``s the journal every
  ``fsync_interval_ms`` (1 s) when something was written: a power cut loses at most the
  exchanges answered in the last interval. No cost on the response path.
* ``always``: the response waits until its record is ``fdatasync``'d. Group commit: one
  ``fdatasync`` covers every record written while the previous one ran, so the cost is
  one disk flush per group, not per request (milliseconds on a disk without a
  battery-backed cache).

Record framing (as the spool's): ``b"DWJ1" | payload length u32 LE | CRC-32 u32 LE | payload``;
a record cut short by a crash, or with a bad CRC, ends its segment's readable part.
Segments are ``journal-<12-digit first seq>.log``, rotated at ``segment_bytes``; the
checkpoint is 8 bytes in ``CHECKPOINT``, rewritten in place as releases move it.

Thread safety: ``append`` runs on the event loop (or the capture thread), ``release``
on the writer's flusher thread, the fsync thread on its own; one lock guards the state.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import fcntl
import json
import logging
import os
import re
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterable
from operator import attrgetter
from pathlib import Path
from typing import Literal

from driftwarden.collector.exchange import Exchange

log = logging.getLogger("driftwarden.collector")

FsyncPolicy = Literal["off", "interval", "always"]
MAGIC = b"DWJ1"
_FRAME = struct.Struct("<4sII")
# id, ts_us, status, request/response json lengths, response bytes, cut, then durations relative to t_start
_FIXED = struct.Struct("<16sqHqqQBddd")
_TEXTS = (
    "method",
    "path",
    "query",
    "request_content_type",
    "trace_id",
    "tenant",
    "replay_of",
    "response_content_type",
    "response_content_encoding",
    "error_class",
)
_TEXT_FIELDS = attrgetter(*_TEXTS)
_SEP = "\0"  # cannot occur in these fields: HTTP parsers refuse NUL in request lines and header values
_LENGTHS = struct.Struct("<5I")  # texts, extra, chunk marks, request body, response body
_MARK = struct.Struct("<dq")
_SEGMENT = re.compile(r"^journal-(\d{12})\.log$")
_NO_MARKS = 0xFFFFFFFF
_T0 = 1.0  # a decoded exchange's t_start: perf_counter values are per process, so records keep durations
DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_FSYNC_INTERVAL_MS = 1000


class JournalError(OSError):
    """The journal directory cannot be used."""


def encode(ex: Exchange) -> bytes:
    """One exchange as a framed record (see :func:`decode`): bodies are copied once, into the record."""
    t0 = ex.t_start
    fixed = _FIXED.pack(
        ex.exchange_id.bytes,
        ex.ts_us,
        ex.status,
        ex.request_json_length,
        ex.response_json_length,
        ex.response_bytes,
        ex.response_cut,
        ex.t_end - t0,
        ex.t_upstream_start - t0 if ex.t_upstream_start else -1.0,
        ex.t_upstream_end - t0 if ex.t_upstream_end else -1.0,
    )
    fields = _TEXT_FIELDS(ex)
    joined = _SEP.join(fields)
    if joined.count(_SEP) != len(_TEXTS) - 1:
        joined = _SEP.join(f.replace(_SEP, "\ufffd") for f in fields)
    texts = joined.encode("utf-8", "surrogateescape")
    extra = json.dumps(ex.extra).encode() if ex.extra else b""
    marks = ex.chunk_marks
    packed_marks = b"".join(_MARK.pack(t - t0, n) for t, n in marks) if marks else b""
    request_body, response_body = ex.request_body, ex.response_body
    lengths = _LENGTHS.pack(
        len(texts),
        len(extra),
        _NO_MARKS if marks is None else len(packed_marks),
        len(request_body),
        len(response_body),
    )
    pieces = (fixed, lengths, texts, extra, packed_marks, request_body, response_body)
    crc = 0
    size = 0
    for piece in pieces:
        crc = zlib.crc32(piece, crc)
        size += len(piece)
    return b"".join((_FRAME.pack(MAGIC, size, crc), *pieces))


def decode(payload: bytes) -> Exchange:
    """The exchange of a record's payload; its clock starts at ``t_start = 1.0`` (0.0 means "no such time")."""
    (xid, ts_us, status, req_json, resp_json, resp_bytes, cut, t_end, up_start, up_end) = _FIXED.unpack_from(payload, 0)
    pos = _FIXED.size + _LENGTHS.size
    parts: list[bytes | None] = []
    for n in _LENGTHS.unpack_from(payload, _FIXED.size):
        if n == _NO_MARKS:
            parts.append(None)
            continue
        parts.append(payload[pos : pos + n])
        pos += n
    if pos != len(payload):
        raise ValueError(f"the record's parts add up to {pos} bytes, not its {len(payload)}")
    texts_raw, extra, marks, request_body, response_body = parts
    values = texts_raw.decode("utf-8", "surrogateescape").split(_SEP)  # type: ignore[union-attr]
    if len(values) != len(_TEXTS):
        raise ValueError(f"the record has {len(values)} text fields, not {len(_TEXTS)}")
    texts = dict(zip(_TEXTS, values, strict=True))
    return Exchange(
        **texts,
        ts_us=ts_us,
        t_start=_T0,
        request_body=request_body or b"",
        request_json_length=req_json,
        response_json_length=resp_json,
        status=status,
        response_body=response_body or b"",
        response_cut=bool(cut),
        response_bytes=resp_bytes,
        chunk_marks=None if marks is None else [(_T0 + t, n) for t, n in _MARK.iter_unpack(marks)],
        t_upstream_start=_T0 + up_start if up_start >= 0 else 0.0,
        t_upstream_end=_T0 + up_end if up_end >= 0 else 0.0,
        t_end=_T0 + t_end,
        extra=json.loads(extra) if extra else {},
        exchange_id=uuid.UUID(bytes=xid),
    )


class Journal:
    """Append-only journal of answered exchanges in ``directory`` (see the module docstring)."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        fsync: FsyncPolicy = "interval",
        fsync_interval_ms: float = DEFAULT_FSYNC_INTERVAL_MS,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        if fsync not in ("off", "interval", "always"):
            raise ValueError(f"fsync must be off, interval or always, got {fsync!r}")
        self.directory = Path(directory)
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_ms / 1000.0
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(exc.errno, f"cannot use the journal directory {self.directory}: {exc.strerror}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise JournalError(
                errno.EBUSY, f"the journal directory {self.directory} is in use by another collector"
            ) from None
        self._checkpoint_fd = os.open(self.directory / "CHECKPOINT", os.O_RDWR | os.O_CREAT, 0o644)
        raw = os.pread(self._checkpoint_fd, 8, 0)
        self._checkpoint = struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0
        # Every segment on disk, by the seq of its first record; a segment holds [first, next segment's first).
        self._segments: dict[int, Path] = {}
        for path in self.directory.iterdir():
            match = _SEGMENT.match(path.name)
            if match:
                self._segments[int(match.group(1))] = path
        self._active_fd: int | None = None
        self._active_first = -1
        self._active_size = 0
        self._outstanding: collections.deque[int] = collections.deque()  # seqs not known released, in order
        self._released: set[int] = set()  # released seqs still behind an outstanding one
        self._recovered, self._next_seq = self._read_previous_run()
        self._outstanding.extend(ex.journal_seq for ex in self._recovered)
        self._written_seq = -1  # highest seq written to the page cache
        self._synced_seq = -1  # highest seq known fdatasync'd
        self._waiters: list[tuple[int, asyncio.Future, asyncio.AbstractEventLoop]] = []
        self._sync_wake = threading.Condition(self._lock)
        self._closed = False
        self._errors = 0
        self._last_error_log = 0.0
        with self._lock:
            self._advance()
        self._syncer: threading.Thread | None = None
        if fsync != "off":
            self._syncer = threading.Thread(target=self._sync_loop, name="dw-journal-fsync", daemon=True)
            self._syncer.start()

    # -- recovery ------------------------------------------------------------------------------

    def _read_previous_run(self) -> tuple[list[Exchange], int]:
        exchanges: list[Exchange] = []
        next_seq = self._checkpoint
        for first in sorted(self._segments):
            path = self._segments[first]
            seq = first
            for payload in _records(path):
                if seq >= self._checkpoint:
                    try:
                        ex = decode(payload)
                    except (struct.error, ValueError, UnicodeDecodeError) as exc:
                        log.warning("journal %s: record %d cannot be read, skipping it: %s", path, seq, exc)
                    else:
                        ex.journal_seq = seq
                        exchanges.append(ex)
                seq += 1
            next_seq = max(next_seq, seq)
        return exchanges, next_seq

    def recover(self) -> list[Exchange]:
        """The exchanges a previous run journaled but did not release, oldest first (once; later calls: []).

        Each keeps its sequence number (``journal_seq``) and is outstanding again: it is
        released like a new one once its events are acknowledged.
        """
        with self._lock:
            exchanges, self._recovered = self._recovered, []
        if exchanges:
            log.warning(
                "journal %s: %d answered exchange(s) of a previous run were not captured yet; capturing them now",
                self.directory,
                len(exchanges),
            )
        return exchanges

    # -- the response path ---------------------------------------------------------------------

    def append(self, ex: Exchange) -> int:
        """Write ``ex`` (one ``write(2)``); returns its sequence number, or -1 when the disk refused it.

        A refused append is logged (at most once a minute) and the response goes out anyway:
        the proxy never fails an inference for monitoring's sake. Sets ``ex.journal_seq``.
        """
        record = encode(ex)
        with self._lock:
            if self._closed:
                return -1
            seq = self._next_seq
            try:
                if self._active_fd is None or self._active_size + len(record) > self.segment_bytes:
                    self._rotate(seq)
                self._write(record)
            except OSError as exc:
                self._refused(exc)
                return -1
            self._next_seq = seq + 1
            self._outstanding.append(seq)
            self._written_seq = seq
            if self.fsync == "always":
                self._sync_wake.notify()
        ex.journal_seq = seq
        return seq

    async def synced(self, seq: int) -> None:
        """Wait until record ``seq`` is fdatasync'd (``fsync: always``; returns at once otherwise)."""
        if self.fsync != "always" or seq < 0:
            return
        loop = asyncio.get_running_loop()
        with self._lock:
            if seq <= self._synced_seq or self._closed:
                return
            future = loop.create_future()
            self._waiters.append((seq, future, loop))
        await future

    # -- acknowledgements ----------------------------------------------------------------------

    def release(self, seqs: Iterable[int]) -> None:
        """Mark exchanges whose events are all acknowledged; moves the checkpoint past released ones."""
        with self._lock:
            self._released.update(s for s in seqs if s >= 0)
            self._advance()

    @property
    def pending(self) -> int:
        """Exchanges journaled and not yet released."""
        with self._lock:
            return len(self._outstanding) - len(self._released)

    def close(self) -> None:
        """Stop the fsync thread and close the files; segments go when everything was released."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._sync_wake.notify()
            waiters, self._waiters = self._waiters, []
        for _, future, loop in waiters:
            loop.call_soon_threadsafe(_resolve, future)
        if self._syncer is not None:
            self._syncer.join(5)
        with self._lock:
            if self._active_fd is not None:
                if self.fsync != "off":
                    _quietly(os.fdatasync, self._active_fd)
                os.close(self._active_fd)
                self._active_fd = None
                self._active_first = -1
            self._advance()
            os.close(self._checkpoint_fd)
            os.close(self._lock_fd)

    # -- internals (called with the lock held) -------------------------------------------------

    def _write(self, record: bytes) -> None:
        fd = self._active_fd
        assert fd is not None
        try:
            written = os.write(fd, record)
            while written < len(record):
                written += os.write(fd, record[written:])
        except OSError:
            _quietly(os.ftruncate, fd, self._active_size)  # keep the segment a sequence of whole records
            raise
        self._active_size += len(record)

    def _rotate(self, first_seq: int) -> None:
        if self._active_fd is not None:
            if self.fsync != "off":
                os.fdatasync(self._active_fd)
            os.close(self._active_fd)
            self._active_fd = None
            self._active_first = -1
        path = self.directory / f"journal-{first_seq:012d}.log"
        self._active_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self._active_first = first_seq
        self._active_size = 0
        self._segments[first_seq] = path
        if self.fsync != "off":
            _fsync_directory(self.directory)
        self._advance()

    def _advance(self) -> None:
        """Move the checkpoint past released seqs; delete segments that lie wholly below it."""
        outstanding, released = self._outstanding, self._released
        while outstanding and outstanding[0] in released:
            released.discard(outstanding.popleft())
        checkpoint = outstanding[0] if outstanding else self._next_seq
        if checkpoint != self._checkpoint:
            self._checkpoint = checkpoint
            try:
                os.pwrite(self._checkpoint_fd, struct.pack("<Q", checkpoint), 0)
            except OSError as exc:
                self._refused(exc)
        firsts = sorted(self._segments)
        for i, first in enumerate(firsts):
            if first == self._active_first:
                continue
            end = firsts[i + 1] if i + 1 < len(firsts) else self._next_seq
            if end <= checkpoint:
                self._segments.pop(first).unlink(missing_ok=True)

    def _refused(self, exc: OSError) -> None:
        self._errors += 1
        now = time.monotonic()
        if now - self._last_error_log > 60 or self._errors == 1:
            self._last_error_log = now
            log.error(
                "the journal %s cannot be written (%s): answered exchanges are captured in memory only "
                "until it can (%d refused so far)",
                self.directory,
                exc.strerror or exc,
                self._errors,
            )

    def _sync_loop(self) -> None:
        while True:
            with self._lock:
                if self.fsync == "always":
                    while not self._closed and self._written_seq <= self._synced_seq:
                        self._sync_wake.wait()
                else:
                    self._sync_wake.wait(self.fsync_interval_s)
                if self._closed:
                    return
                target, fd = self._written_seq, self._active_fd
                if fd is None or target <= self._synced_seq:
                    continue
                fd = os.dup(fd)  # the active fd may be closed by a rotation while this one syncs
            try:
                os.fdatasync(fd)
            except OSError as exc:
                with self._lock:
                    self._refused(exc)
            finally:
                os.close(fd)
            with self._lock:
                self._synced_seq = max(self._synced_seq, target)
                done = [w for w in self._waiters if w[0] <= target]
                self._waiters = [w for w in self._waiters if w[0] > target]
            for _, future, loop in done:
                loop.call_soon_threadsafe(_resolve, future)


def _records(path: Path) -> Iterable[bytes]:
    """The whole records of a segment; stops at a torn or corrupt one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        log.error("journal segment %s cannot be read: %s", path, exc)
        return
    pos = 0
    while pos + _FRAME.size <= len(data):
        magic, length, crc = _FRAME.unpack_from(data, pos)
        payload = data[pos + _FRAME.size : pos + _FRAME.size + length]
        if magic != MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
            log.warning("journal segment %s: torn or corrupt record at byte %d, skipping the rest", path, pos)
            return
        pos += _FRAME.size + length
        yield payload
    if pos < len(data):
        log.warning("journal segment %s: torn record header at byte %d, skipping the rest", path, pos)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except OSError:
        pass


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
