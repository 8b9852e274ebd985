"""Shared fixtures: a real embedded ClickHouse engine for the whole session.

ClickHouse binds one embedded store directory to a process, so every test in
this process shares one engine directory and gets a database of its own,
migrated from empty. Tests that need a store of their own run a subprocess.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from driftwarden import storage

ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count()
ATTACHER = "dw-content-attacher"  # collector.content_attacher's thread: create_app starts it, close_ingest ends it


@pytest.fixture(scope="session")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine")


@pytest.fixture
def store_url(engine_dir: Path, request: pytest.FixtureRequest) -> str:
    """URL of a fresh, migrated database in the session's embedded engine."""
    name = f"t{next(_counter)}_{request.node.name}"
    name = "".join(ch if ch.isalnum() else "_" for ch in name)[:60]
    url = f"chdb://{engine_dir}?database={name}"
    storage.migrate(storage.connect(url, create_database=True), retention_days=30)
    return url


@pytest.fixture
def store(store_url: str):
    """A clickhouse-connect client on a fresh, migrated database."""
    return storage.connect(store_url)


@pytest.fixture
def make_app():
    """``create_app(...)`` for one test: every app it made is closed (``close_ingest``) at the test's teardown."""
    from driftwarden.collector.hub_app import close_ingest, create_app

    apps = []

    def make(*args, **kwargs):
        apps.append(create_app(*args, **kwargs))
        return apps[-1]

    yield make
    for app in apps:
        close_ingest(app)


_leaked: set[threading.Thread] = set()  # reported once, by the narrowest scope that left them


def _attachers() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == ATTACHER}


def _no_attacher_left(what: str):
    """Fail if a content attacher started within the yield is still running after it (given 2 s to end)."""
    before = _attachers()
    yield
    left = _attachers() - before - _leaked
    deadline = time.monotonic() + 2
    for thread in left:
        thread.join(max(0.0, deadline - time.monotonic()))
    if running := [thread for thread in left if thread.is_alive()]:
        _leaked.update(running)
        pytest.fail(
            f"{what} left {len(running)} {ATTACHER!r} thread(s) running: close every app made with create_app by "
            "close_ingest(app) (collector.hub_app) at the end of the test or of its fixture's scope",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _test_closes_its_apps(request: pytest.FixtureRequest):
    yield from _no_attacher_left(request.node.nodeid)


@pytest.fixture(scope="module", autouse=True)
def _module_closes_its_apps(request: pytest.FixtureRequest):
    yield from _no_attacher_left(f"a module-scoped fixture of {request.node.nodeid}")


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``driftwarden ARGS`` in a subprocess with this interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "driftwarden", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
