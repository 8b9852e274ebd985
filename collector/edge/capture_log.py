"""Reading nginx's capture log durably: lines become exchanges; the position moves only past captured rows.

nginx appends one JSON line per answered exchange to ``capture.log`` in the state directory
(``edge.nginx_conf``). The collector reads it in order; each line gets a sequence number
that the pipeline hands to the writer as its journal ticket, and the writer calls
:meth:`CaptureLog.release` once the line's rows are acknowledged (in the sink, or fsync'd in
the spool). The *checkpoint* (the file's inode and the byte offset after the last line
released with all lines before it) is rewritten in place in ``CHECKPOINT`` as it moves; a
collector restarted after a crash resumes there and captures again what was read but not
acknowledged. Event ids derive from nginx's ``$request_id`` (``decode_line``), so a line
captured twice gives the same rows, which ``inferences`` (a ReplacingMergeTree on
``event_id``) keeps once.

Rotation is the collector's own (use no external logrotate on this directory): once the
active file exceeds ``rotate_bytes`` and has been read to its end, it is renamed to
``capture-<12-digit number>.log`` and nginx is told to reopen its logs (``SIGUSR1``); the
renamed file is read to its end (after a quiet second: every worker has switched) before the
new ``capture.log``, and deleted once the checkpoint has passed its last line. A file found
shorter than the position already read (truncated by something else) is logged and read
again from its start.
"""

from __future__ import annotations

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from driftwarden.collector.edge.nginx_conf import CAPTURE_LOG
from driftwarden.collector.exchange import Exchange

log = logging.getLogger("driftwarden.collector")

DEFAULT_ROTATE_BYTES = 64 << 20
_SEALED = re.compile(r"^capture-(\d{12})\.log$")
_CHECKPOINT = struct.Struct("<QQ")  # inode, offset
_READ = 1 << 20
_QUIET_S = 1.0  # after SIGUSR1, the renamed file is finished once it has not grown for this long
_T0 = 1.0  # as collector.journal: an exchange's clock starts at 1.0 (0.0 means "no such time")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE = "0" * 32


class CaptureLogError(OSError):
    """The state directory cannot be used."""


@dataclass
class _File:
    path: Path
    inode: int
    fd: int
    pos: int = 0
    last_seq: int = -1  # last line read from it
    finished: bool = False  # read to its end and nginx writes no more into it
    partial: bytearray = field(default_factory=bytearray)


class CaptureLog:
    """The capture log of one nginx in ``directory``; ``read`` and ``release`` may run on different threads."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        reopen: Callable[[], None] | None = None,
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.reopen = reopen
        self.rotate_bytes = rotate_bytes
        self._lock = threading.Lock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CaptureLogError(
                exc.errno, f"cannot use the state directory {self.directory}: {exc.strerror}"
            ) from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise CaptureLogError(
                errno.EBUSY, f"the state directory {self.directory} is in use by another collector"
            ) from None
        self._checkpoint_fd = os.open(self.directory / "CHECKPOINT", os.O_RDWR | os.O_CREAT, 0o644)
        raw = os.pread(self._checkpoint_fd, _CHECKPOINT.size, 0)
        self._checkpoint = _CHECKPOINT.unpack(raw) if len(raw) == _CHECKPOINT.size else (0, 0)
        self._files: list[_File] = []  # oldest first
        self._at = 0  # index of the file being read; the ones before it are read to their end
        self._next_seq = 0
        self._outstanding: collections.deque[tuple[int, int, int]] = collections.deque()  # (seq, inode, end offset)
        self._released: set[int] = set()
        self._rotated_at = 0.0
        self._closed = False
        self._open_existing()

    # -- files ---------------------------------------------------------------------------------

    def _sealed_paths(self) -> list[Path]:
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _SEALED.match(p.name))]
        return [p for _, p in sorted(found)]

    def _open(self, path: Path) -> _File | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        return _File(path=path, inode=os.fstat(fd).st_ino, fd=fd)

    def _open_existing(self) -> None:
        """Resume at the checkpoint: files before the checkpoint's are deleted, later ones read from their start."""
        inode, offset = self._checkpoint
        files = [f for f in (self._open(p) for p in self._sealed_paths()) if f is not None]
        active = self._open(self.directory / CAPTURE_LOG)
        if active is not None:
            files.append(active)
        at = next((i for i, f in enumerate(files) if f.inode == inode), None)
        if at is not None:
            for f in files[:at]:
                os.close(f.fd)
                f.path.unlink(missing_ok=True)
            files = files[at:]
            files[0].pos = offset
        elif inode and files:
            log.warning(
                "capture log: the checkpoint's file is gone; reading %d file(s) of %s from their start",
                len(files),
                self.directory,
            )
        for f in files[:-1]:
            f.finished = True  # sealed by an earlier run: nginx has reopened since
        self._files = files

    def _current(self) -> _File | None:
        """The file to read; opens the active log when none is open yet."""
        if not self._files:
            f = self._open(self.directory / CAPTURE_LOG)
            if f is None:
                return None
            self._files.append(f)
            self._at = 0
        return self._files[self._at]

    # -- reading -------------------------------------------------------------------------------

    def read(self, max_lines: int = 1000) -> list[tuple[int, bytes]]:
        """Up to ``max_lines`` whole new lines, each with its sequence number (outstanding until released)."""
        out: list[tuple[int, bytes]] = []
        while len(out) < max_lines:
            f = self._current()
            if f is None:
                return out
            got = self._read_file(f, max_lines - len(out), out)
            if got:
                continue
            if not self._next_file(f):
                return out
        return out

    def _read_file(self, f: _File, room: int, out: list[tuple[int, bytes]]) -> int:
        size = os.fstat(f.fd).st_size
        if size < f.pos:
            log.error(
                "capture log %s was truncated by something else (size %d < position %d): lines written before the "
                "truncation and not read yet are lost; use no external log rotation on %s",
                f.path,
                size,
                f.pos,
                self.directory,
            )
            f.pos = 0
            f.partial.clear()
        got = 0
        while got < room and f.pos < size:
            chunk = os.pread(f.fd, min(_READ, size - f.pos), f.pos)
            if not chunk:
                break
            start = f.pos - len(f.partial)
            data = bytes(f.partial) + chunk if f.partial else chunk
            f.pos += len(chunk)
            f.partial.clear()
            lines = data.split(b"\n")
            tail = lines.pop()
            offset = start
            with self._lock:
                for i, line in enumerate(lines):
                    offset += len(line) + 1
                    if got >= room:
                        # Not taken this time: rewind to the end of the last line taken.
                        f.pos = offset - len(line) - 1
                        tail = b""
                        break
                    if not line:
                        continue
                    seq = self._next_seq
                    self._next_seq += 1
                    self._outstanding.append((seq, f.inode, offset))
                    f.last_seq = seq
                    out.append((seq, line))
                    got += 1
                    _ = i
            if tail:
                f.partial += tail
        return got

    def _next_file(self, f: _File) -> bool:
        """At the end of ``f``: rotate it or move on to the next file; False when there is nothing more now."""
        active = self.directory / CAPTURE_LOG
        if not f.finished:
            try:
                active_inode = os.stat(active).st_ino
            except FileNotFoundError:
                active_inode = -1
            if active_inode == f.inode:
                if f.pos >= self.rotate_bytes and not f.partial:
                    self._rotate(f)
                return False
            # f was renamed (by us, or an earlier run): finished once nginx has written nothing for a while.
            if not self._rotated_at:
                self._rotated_at = time.monotonic()
            if active_inode < 0 or time.monotonic() - self._rotated_at < _QUIET_S:
                return False
            if os.fstat(f.fd).st_size > f.pos:
                return True  # more arrived: read it first
            f.finished = True
            if f.partial:
                log.error("capture log %s ends with a torn line (%d bytes): skipped", f.path, len(f.partial))
                f.partial.clear()
            self._rotated_at = 0.0
        elif f.partial:
            log.error("capture log %s ends with a torn line (%d bytes): skipped", f.path, len(f.partial))
            f.partial.clear()
        if self._at + 1 < len(self._files):  # files of an earlier run, still to read
            with self._lock:
                self._at += 1
                self._advance()
            return True
        nxt = self._open(active)
        if nxt is None or nxt.inode == f.inode:
            if nxt is not None:
                os.close(nxt.fd)
            return False
        with self._lock:
            self._files.append(nxt)
            self._at += 1
            self._advance()
        return True

    def _rotate(self, f: _File) -> None:
        sealed = self._sealed_paths()
        number = int(_SEALED.match(sealed[-1].name).group(1)) + 1 if sealed else 1  # type: ignore[union-attr]
        target = self.directory / f"capture-{number:012d}.log"
        os.rename(self.directory / CAPTURE_LOG, target)
        f.path = target
        self._rotated_at = time.monotonic()
        if self.reopen is not None:
            self.reopen()

    # -- acknowledgements ----------------------------------------------------------------------

    def release(self, seqs) -> None:
        """Lines whose rows are acknowledged; moves the checkpoint past released lines."""
        with self._lock:
            self._released.update(s for s in seqs if s >= 0)
            self._advance()

    @property
    def pending(self) -> int:
        """Lines read and not yet released."""
        with self._lock:
            return len(self._outstanding) - len(self._released)

    def backlog_bytes(self) -> int:
        """Bytes nginx has written that were not read yet (all files)."""
        total = 0
        for f in list(self._files):
            try:
                total += max(0, os.fstat(f.fd).st_size - f.pos)
            except OSError:
                pass
        return total

    def _advance(self) -> None:
        outstanding, released = self._outstanding, self._released
        moved = None
        while outstanding and outstanding[0][0] in released:
            seq, inode, end = outstanding.popleft()
            released.discard(seq)
            moved = (inode, end)
        if moved is None and not outstanding and self._files and self._at == len(self._files) - 1:
            last = self._files[-1]
            if not last.partial and (last.inode, last.pos) != self._checkpoint:
                moved = (last.inode, last.pos)
        if moved is not None and moved != self._checkpoint:
            self._checkpoint = moved
            try:
                os.pwrite(self._checkpoint_fd, _CHECKPOINT.pack(*moved), 0)
            except OSError as exc:
                log.error("capture log checkpoint %s cannot be written: %s", self.directory, exc.strerror)
        # Finished files wholly below the checkpoint go.
        lowest = outstanding[0][0] if outstanding else self._next_seq
        while self._at > 0 and self._files[0].finished and self._files[0].last_seq < lowest:
            self._at -= 1
            done = self._files.pop(0)
            os.close(done.fd)
            done.path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._advance()
            for f in self._files:
                os.close(f.fd)
            self._files = []
            os.close(self._checkpoint_fd)
            os.close(self._lock_fd)


# -- lines -> exchanges ----------------------------------------------------------------------------


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _seconds(text: str) -> float:
    """nginx's time lists ("0.003", "0.001, 0.002", "-", ""): their sum in seconds."""
    total = 0.0
    for part in text.replace(":", ",").split(","):
        part = part.strip()
        if part and part != "-":
            try:
                total += float(part)
            except ValueError:
                pass
    return total


def _int(text: str, default: int = -1) -> int:
    return int(text) if text.isdigit() else default


def decode_line(line: bytes, *, default_tenant: str = "", trust_event_headers: bool = False) -> Exchange:
    """The exchange of one capture-log line (see ``edge.nginx_conf.LOG_FIELDS``).

    nginx's ``escape=json`` escapes quotes, backslashes and control bytes and leaves other bytes
    as they are, so the line is read as UTF-8 with ``surrogateescape`` and bodies are encoded
    back the same way: byte for byte what passed through nginx, valid UTF-8 or not. A line of valid UTF-8 (the
    usual one) is parsed by orjson, to the same values, at a third of the cost.
    """
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        row = json.loads(line.decode("utf-8", "surrogateescape"))
    rt = _seconds(row["rt"])
    urt = _seconds(row["urt"])
    status = _int(row["status"], 0)
    request_body = _bytes(row["req"])
    content_length = _int(row["cl"])
    error = row["err"]
    if status == 499:  # the client closed the connection before nginx could answer
        status, error = 0, error or "client_disconnected"
    elif row["done"] != "OK" and not error:
        error = "client_disconnected"
    marks = None
    if row["marks"]:
        marks = []
        for mark in row["marks"].split(" "):
            t, _, n = mark.partition(":")
            marks.append((_T0 + _seconds(t), _int(n, 0)))
    ts_us = round((float(row["msec"]) - rt) * 1e6)
    ex = Exchange(
        method=row["m"],
        path=row["path"],
        query=row["q"],
        ts_us=ts_us,
        t_start=_T0,
        request_body=request_body,
        request_content_type=row["ct"],
        request_json_length=_int(row["rlen"]),
        response_json_length=_int(row["rjl"]),
        tenant=row.get("tenant") or default_tenant,
        replay_of=row["replay"],
        status=status,
        response_body=_bytes(row["resp"]),
        response_cut=row["cut"] == "1",
        response_bytes=_int(row["bytes"], 0) if row["bytes"] else _int(row["sent"], 0),
        response_content_type=row["rct"],
        response_content_encoding=row["rce"],
        chunk_marks=marks,
        t_upstream_start=_T0 + max(rt - urt, 0.0) if row["urt"] not in ("", "-") else 0.0,
        t_upstream_end=_T0 + rt if row["urt"] not in ("", "-") else 0.0,
        t_end=_T0 + rt,
        error_class=error,
        exchange_id=uuid.UUID(hex=row["id"], version=4),
    )
    if content_length > len(request_body):
        ex.request_cut = True
        ex.request_bytes = content_length
    traceparent = row["tp"]
    if traceparent:
        m = _TRACEPARENT.match(traceparent)
        if m and m.group(1) != _ZERO_TRACE:
            ex.trace_id = m.group(1)
    if trust_event_headers:
        if row.get("ts"):
            ex.extra["timestamp"] = row["ts"]
        if row.get("eid"):
            ex.extra["event_id"] = row["eid"]
    return ex
