"""The on-disk spool: batches that could not reach the sink, kept until they can.

Layout: a directory of append-only segment files ``segment-<seq>.spool``, replayed
oldest first. Each record is one batch, framed so that a torn write is detectable::

    magic b"DWS1" | payload length (uint32 LE) | CRC-32 of payload (uint32 LE) | payload

The payload is a self-contained Arrow IPC stream (``collector.arrow.to_ipc``), so a
record can be read without its neighbours. Every append is ``fsync``'d before it is
acknowledged: once :meth:`Spool.append` returns True the batch survives ``kill -9``
and a power cut. A record cut short by a crash during an append (or one whose CRC
does not match) ends the readable part of its segment: :meth:`Spool.read` stops
there, reports it, and the segment is deleted once the records before it are written.

Bounded: appends beyond ``max_bytes`` (or failing with ENOSPC / any OSError) are
refused and return False; the caller counts the batch as dropped. Never blocks on
anything but the disk.

Thread safety: every public method takes the spool's lock; appends (the flusher)
and reads/removals (the replayer) may run on different threads. One process per
directory: a second one is refused through an ``flock`` on ``LOCK``.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from driftwarden.errors import UserError, first_line

log = logging.getLogger(__name__)

MAGIC = b"DWS1"
_HEADER = struct.Struct("<4sII")
_SEGMENT = re.compile(r"^segment-(\d{12})\.spool$")
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
SET_ASIDE = "set-aside"
"""The spool, inside a spool's (or the ingest journal's) directory, of the rows the store refused for what they hold
(``sinks.store.refused_for_its_data``) ``SET_ASIDE_AFTER`` times in a row, so that the others go on; they are moved
back (:func:`move_records`) at the next start, and while running once the oldest of them is taken
(:class:`RetryClock`)."""
SET_ASIDE_AFTER = 3
SET_ASIDE_RETRY_S = 600.0
"""Set-aside rows are tried again (their oldest record first) this long after they were set aside, then twice as long
after each try the store refuses again, up to ``SET_ASIDE_RETRY_MAX_S``."""
SET_ASIDE_RETRY_MAX_S = 6 * 3600.0


class RetryClock:
    """When a running writer or journal tries its set-aside rows again: :meth:`due` ``first_s`` after :meth:`start`,
    then, after each :meth:`refused`, twice as long as the time before, up to ``max_s``; :meth:`stop` once nothing is
    set aside. Not thread-safe: used by the one thread that writes."""

    def __init__(self, first_s: float = SET_ASIDE_RETRY_S, max_s: float = SET_ASIDE_RETRY_MAX_S) -> None:
        self.first_s, self.max_s = first_s, max(first_s, max_s)
        self._interval = first_s
        self._at: float | None = None

    def start(self) -> None:
        """Rows were set aside: try them ``first_s`` from now, unless a try is scheduled already."""
        if self._at is None:
            self._at = time.monotonic() + self._interval

    def remaining(self) -> float | None:
        """Seconds until the next try (0 or less: due), None when none is scheduled."""
        return None if self._at is None else self._at - time.monotonic()

    def due(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= 0

    def refused(self) -> None:
        """The try failed: the next one after twice the interval."""
        self._interval = min(self._interval * 2, self.max_s)
        self._at = time.monotonic() + self._interval

    def stop(self) -> None:
        """Nothing is set aside any more: no try, and the next rows set aside wait ``first_s`` again."""
        self._interval, self._at = self.first_s, None


def first_record(spool: Spool) -> bytes | None:
    """The payload of the oldest readable record of ``spool``, None when it has none."""
    for segment in spool.with_data():
        for record in spool.read(segment):
            return record.payload
    return None


def try_oldest(set_aside: Spool | None, clock: RetryClock, write: Callable[[bytes], object], what: str) -> bool:
    """A due try of set-aside records: ``write`` the payload of the oldest. True when it was taken (the caller then
    moves every record back); False when there is none (the clock stops), or when it was refused again (the clock
    waits twice as long; logged, naming ``what``)."""
    payload = first_record(set_aside) if set_aside is not None else None
    if payload is None:
        clock.stop()
        return False
    try:
        write(payload)
    except Exception as exc:
        clock.refused()
        log.info("%s are still refused (%s)", what, first_line(exc))
        return False
    clock.stop()
    return True


@dataclass(frozen=True)
class Record:
    """One readable record of a segment: its payload and the offset just after it."""

    payload: bytes
    end: int


class SpoolError(UserError):
    """The spool directory cannot be used; the message says why."""


class Spool:
    """Append-only, size-rotated, fsync'd segment files in ``directory``."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpoolError(f"cannot use the spool directory {self.directory}: {exc.strerror}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise SpoolError(
                f"the spool directory {self.directory} is in use by another collector; give each collector "
                "a spool directory of its own"
            ) from None
        self._sizes: dict[Path, int] = {p: p.stat().st_size for p in self._segments_on_disk()}
        self._next_seq = max((self._seq(p) for p in self._sizes), default=0) + 1
        self._active: Path | None = None  # the segment appends go to; existing segments are all sealed
        self._active_fd: int | None = None
        self.sync_seconds = 0.0
        """How long an append's ``fsync`` took lately: a mean weighted to the last ten or so."""

    # -- state ---------------------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        """Bytes on disk in segment files."""
        with self._lock:
            return sum(self._sizes.values())

    @property
    def segments(self) -> int:
        """Segment files on disk (including the one being appended to)."""
        with self._lock:
            return len(self._sizes)

    @property
    def active(self) -> Path | None:
        """The segment appends go to (None before the first append of this process, or once it is sealed)."""
        with self._lock:
            return self._active

    def with_data(self) -> list[Path]:
        """Segments that hold data, oldest first (the active one included)."""
        with self._lock:
            return [p for p in sorted(self._sizes, key=self._seq) if self._sizes[p]]

    def empty(self) -> bool:
        """True when no segment holds data."""
        with self._lock:
            return not any(self._sizes.values())

    # -- appending -----------------------------------------------------------------------------

    def append(self, payload: bytes) -> bool:
        """Append one record and fsync it; False (and nothing written) when the spool is full or the disk fails."""
        record = _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            if sum(self._sizes.values()) + len(record) > self.max_bytes:
                return False
            try:
                if self._active is None or self._sizes[self._active] + len(record) > self.segment_bytes:
                    self._rotate()
                self._write(record)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    log.warning("spool append to %s failed: %s", self.directory, exc)
                return False
            return True

    def _write(self, record: bytes) -> None:
        assert self._active is not None and self._active_fd is not None
        start = self._sizes[self._active]
        try:
            written = 0
            while written < len(record):
                written += os.write(self._active_fd, record[written:])
            started = time.perf_counter()
            os.fsync(self._active_fd)
            self.sync_seconds += (time.perf_counter() - started - self.sync_seconds) * 0.1
        except OSError:
            # Cut the partial record off so the segment stays a sequence of whole records.
            try:
                os.ftruncate(self._active_fd, start)
            except OSError:
                pass
            raise
        self._sizes[self._active] = start + len(record)

    def _rotate(self) -> None:
        self._seal()
        path = self.directory / f"segment-{self._next_seq:012d}.spool"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._next_seq += 1
        self._active, self._active_fd = path, fd
        self._sizes[path] = 0
        _fsync_directory(self.directory)

    def _seal(self) -> None:
        if self._active_fd is not None:
            os.close(self._active_fd)
        self._active = self._active_fd = None

    # -- replaying -----------------------------------------------------------------------------

    def oldest(self) -> Path | None:
        """The oldest segment with data, sealed first if appends were going to it; None when empty."""
        with self._lock:
            for path in sorted(self._sizes, key=self._seq):
                if self._sizes[path] == 0 and path == self._active:
                    continue
                if path == self._active:
                    self._seal()
                return path
            return None

    def read(self, path: Path, offset: int = 0) -> Iterator[Record]:
        """The whole records of a sealed segment from ``offset``; stops at a torn or corrupt record."""
        with open(path, "rb") as fh:
            data = fh.read()
        pos = offset
        while pos < len(data):
            header = data[pos : pos + _HEADER.size]
            if len(header) < _HEADER.size:
                log.warning("spool segment %s: torn record header at byte %d, skipping the rest", path, pos)
                return
            magic, length, crc = _HEADER.unpack(header)
            payload = data[pos + _HEADER.size : pos + _HEADER.size + length]
            if magic != MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
                log.warning("spool segment %s: torn or corrupt record at byte %d, skipping the rest", path, pos)
                return
            pos += _HEADER.size + length
            yield Record(payload, pos)

    def remove(self, path: Path) -> None:
        """Delete a segment whose records have all been written (or skipped)."""
        with self._lock:
            if path == self._active:
                self._seal()
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            self._sizes.pop(path, None)

    def close(self) -> None:
        """Seal the active segment, drop empty ones and release the directory."""
        with self._lock:
            self._seal()
            for path, size in list(self._sizes.items()):
                if size == 0:
                    path.unlink(missing_ok=True)
                    del self._sizes[path]
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    # -- helpers -------------------------------------------------------------------------------

    def _segments_on_disk(self) -> list[Path]:
        return sorted((p for p in self.directory.iterdir() if _SEGMENT.match(p.name)), key=self._seq)

    @staticmethod
    def _seq(path: Path) -> int:
        match = _SEGMENT.match(path.name)
        return int(match.group(1)) if match else 0


def move_records(source: Spool, target: Spool) -> Iterator[bytes]:
    """Append every record of ``source`` to ``target`` (each ``fsync``'d), oldest first, yielding each payload once it
    is appended; a segment of ``source`` is deleted once all its records are. Stops when ``target`` refuses one (full,
    or its disk fails): the rest stays in ``source``, and records of that segment already moved are in both."""
    for segment in source.with_data():
        for record in source.read(segment):
            if not target.append(record.payload):
                log.error("no room in %s for the records of %s now; they stay there", target.directory, segment)
                return
            yield record.payload
        source.remove(segment)


def _fsync_directory(directory: Path) -> None:
    """Make a new segment's directory entry durable, so a crash cannot lose the whole file."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
