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
from pathlib import Path

import pytest

from driftwarden import storage

ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count()


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
