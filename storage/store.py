"""Opening a store: the embedded ClickHouse engine (chdb) or a ClickHouse server.

Both are reached through the same ``clickhouse-connect`` client, so every query
in driftwarden runs unchanged on either.

Thread safety: the returned client may be shared between threads; the embedded
engine serialises its own work. One process can hold one embedded directory at
a time (a ClickHouse restriction), and a directory can be held by one process.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import importlib
import logging
import os
import re
import sys
import threading
import time
import types
import weakref
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from driftwarden.errors import first_line
from driftwarden.storage.errors import StoreError
from driftwarden.storage.url import StoreURL, parse, resolve

log = logging.getLogger("driftwarden.storage")
# The driver logs a stack trace of its own before raising; the error it raises says it all.
logging.getLogger("clickhouse_connect.driver._backend.http_sync").setLevel(logging.CRITICAL)

_open_lock = threading.Lock()
_embedded_path: str | None = None  # the directory this process's engine is bound to
_embedded_clients: weakref.WeakSet[Client] = weakref.WeakSet()  # the clients opened on it, for the exit
EXIT_WAIT_S = 10.0
"""How long a process that is exiting waits for the embedded engine's calls in flight (see ``_quiesce_at_exit``)."""


def connect(url: str | None = None, *, create_database: bool = False, settings: dict[str, Any] | None = None) -> Client:
    """Return a ``clickhouse-connect`` client for the store at ``url``.

    ``url`` defaults to ``$DRIFTWARDEN_STORE`` and then ``chdb://driftwarden-data``.
    With ``create_database`` the URL's database is created when missing
    (``driftwarden migrate`` does this); otherwise a missing one is an error.
    """
    target = parse(resolve(url))
    if target.embedded:
        return _connect_embedded(target, create_database, settings or {})
    return _connect_server(target, create_database, settings or {})


def _connect_embedded(target: StoreURL, create_database: bool, settings: dict[str, Any]) -> Client:
    global _embedded_path
    path = os.path.realpath(target.path or "")
    with _open_lock:
        if _embedded_path is not None and _embedded_path != path:
            raise StoreError(
                f"this process already has the embedded store {_embedded_path} open and ClickHouse "
                f"binds one embedded store to a process; cannot also open {path}"
            )
        if _embedded_path is None:
            _make_directory(path)
            _refuse_if_held(path)
        _import_chdb_without_pyarrow()
        try:
            client = clickhouse_connect.get_client(interface="chdb", path=path, settings=settings)
        except Exception as exc:  # chdb reports a held directory as "Error initializing EmbeddedServer"
            _refuse_if_held(path)
            raise StoreError(f"cannot open the embedded store at {path}: {first_line(exc)}") from exc
        if _embedded_path is None:
            atexit.register(_quiesce_at_exit)  # registered after the driver's (weakref.finalize), so it runs first
        _embedded_path = path
        _embedded_clients.add(client)
    return _select_database(client, target, create_database, lambda: _reopen_embedded(path, target, settings))


class _PyarrowOnFirstUse(types.ModuleType):
    """Stands in for ``pyarrow`` where chdb binds it: the real module is imported at the first attribute
    read, through the ordinary (thread-safe) import, and answers from then on."""

    def __getattr__(self, name: str) -> Any:
        if sys.modules.get("pyarrow") is self:
            del sys.modules["pyarrow"]
        real = importlib.import_module("pyarrow")
        self.__dict__.update(real.__dict__)  # later reads find pyarrow's names without coming here
        return getattr(real, name)


def _import_chdb_without_pyarrow() -> None:
    """Import chdb's connection module without loading pyarrow.

    chdb imports pyarrow with its connection module, for Arrow results of its own that driftwarden never
    asks for (clickhouse-connect reads the engine's Native format). Loaded, pyarrow (with numpy) adds 20-35 MB
    to the resident memory of every command that opens the embedded store, e.g. ``driftwarden drift``. chdb
    is handed a stand-in that imports pyarrow at its first use instead; the processes that do use pyarrow
    (the collector, the OTLP receiver) import it as usual.
    """
    if "pyarrow" in sys.modules or "chdb.state" in sys.modules:
        return
    stand_in = _PyarrowOnFirstUse("pyarrow")
    sys.modules["pyarrow"] = stand_in
    try:
        importlib.import_module("chdb.state")
    finally:
        if sys.modules.get("pyarrow") is stand_in:
            del sys.modules["pyarrow"]


def _reopen_embedded(path: str, target: StoreURL, settings: dict[str, Any]) -> Client:
    client = clickhouse_connect.get_client(interface="chdb", path=path, database=target.database, settings=settings)
    _embedded_clients.add(client)
    return client


def _quiesce_at_exit(timeout: float = EXIT_WAIT_S) -> None:
    """At the interpreter's exit: let no thread be inside the embedded engine when its C++ state is destroyed.

    By then only daemon threads are left (the interpreter joined the others), and one of them may be in a query:
    a store client kept by a thread that is never stopped (an app's content attacher, a writer left open) calls
    the engine whenever it wakes. The engine's static destructors then ran under its worker threads, and the
    process died of a segmentation fault after its work was done (``tests/test_storage.py``). So each client's
    connection is taken away, then the call in flight, if any, is waited for (within ``timeout`` for all of them:
    ``clickhouse-connect`` runs the calls on a connection one at a time, under a lock of its own) and the connection
    closed. The lock is kept: a later call waits for the end of the process. (A call that takes the lock between
    the two steps finds the client closed and raises; the lock is not fair, so taking it first could wait behind a
    thread that queries in a loop.) The driver's own exit hook runs after this one and leaves these connections
    alone."""
    deadline = time.monotonic() + timeout
    for client in list(_embedded_clients):
        handle = getattr(getattr(client, "_backend", None), "_handle", None)
        lock = getattr(handle, "lock", None)
        conn = getattr(handle, "conn", None)
        if lock is None or conn is None or getattr(handle, "stream_owner", None) == threading.get_ident():
            continue  # another driver version; a closed client; or a stream this thread left open holds the lock
        handle.conn = None
        if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            log.warning("the embedded store still answered a query %.0f s into the process's exit", timeout)
            continue
        try:  # the lock stays taken: a later call waits, without a word, for the end of the process
            conn.close()
        except Exception as exc:  # the process is exiting: say so, and go on with the other connections
            log.warning("closing the embedded store at exit: %s", first_line(exc))


def _make_directory(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the embedded store directory {path}: {exc.strerror}") from exc
    if not os.access(path, os.W_OK):
        raise StoreError(f"the embedded store directory {path} is not writable by this user")


def _refuse_if_held(path: str) -> None:
    """Raise a plain message when another process holds the directory's ClickHouse lock."""
    status = os.path.join(path, "status")
    try:
        fd = os.open(status, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        holder = _holder_pid(status)
        raise StoreError(
            f"the embedded store {path} is in use by another process{holder}: ClickHouse lets one "
            "process open an embedded store at a time. Stop that process, send data to it through "
            "its ingest endpoint (--hub URL), or use a ClickHouse server (--store http://...)"
        ) from None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder_pid(status: str) -> str:
    try:
        with open(status, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("PID:"):
                    return f" (pid {line.split(':', 1)[1].strip()})"
    except OSError:
        pass
    return ""


def _connect_server(target: StoreURL, create_database: bool, settings: dict[str, Any]) -> Client:
    def open_client(database: str) -> Client:
        try:
            return clickhouse_connect.get_client(
                host=target.host,
                port=target.port,
                username=target.username,
                password=target.password,
                database=database,
                secure=target.scheme == "https",
                connect_timeout=5,
                send_receive_timeout=300,
                settings=settings,
            )
        except ClickHouseError as exc:
            raise StoreError(_server_message(target, exc)) from exc

    client = open_client("default")
    return _select_database(client, target, create_database, lambda: open_client(target.database))


def _select_database(client: Client, target: StoreURL, create_database: bool, reopen) -> Client:
    if target.database == "default":
        return client
    if create_database:
        client.command(f"CREATE DATABASE IF NOT EXISTS `{target.database}`")
    elif not client.query(
        "SELECT count() FROM system.databases WHERE name = {db:String}", parameters={"db": target.database}
    ).result_rows[0][0]:
        raise StoreError(
            f"database {target.database!r} does not exist in the store {target.redacted()}; "
            "run `driftwarden migrate` to create it"
        )
    return reopen()


_REASON = re.compile(r"\[Errno -?\d+\] ([^'\")]+)|Failed to resolve '([^']+)'|(timed out)")


def _server_message(target: StoreURL, exc: Exception) -> str:
    text = str(exc)
    where = f"{target.host}:{target.port}"
    if "AUTHENTICATION_FAILED" in text or "Authentication failed" in text or "(516)" in text:
        return (
            f"ClickHouse server at {where} refused user {target.username!r}: "
            "check the user and password in the store URL"
        )
    reason = _REASON.search(text)
    if reason and reason.group(2):
        because = f"cannot resolve host {reason.group(2)!r}"
    elif reason:
        because = (reason.group(1) or reason.group(3)).strip()
    else:
        because = first_line(exc)
    return (
        f"cannot reach a ClickHouse server at {target.scheme}://{where} ({because}); "
        "check the host and port in the store URL and that the server is running"
    )


def describe(url: str | None = None) -> str:
    """The store URL that ``connect(url)`` would open, safe to print."""
    return parse(resolve(url)).redacted()
