"""Reading a store that another process left on disk, from a subprocess of its own.

The test process's embedded engine is bound to the session's directory (see
conftest), so a store written by a ``driftwarden demo``/``up`` subprocess is read
by a short-lived interpreter: several queries per call, rows returned as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_SCRIPT = """
import json, sys
from driftwarden import storage
client = storage.connect(sys.argv[1])
queries = json.loads(sys.argv[2])
print(json.dumps({name: client.query(sql).result_rows for name, sql in queries.items()}, default=str))
"""


def query(store_url: str, queries: dict[str, str], timeout: float = 120) -> dict[str, list[list]]:
    """Run each named SQL query on ``store_url``; returns name -> rows (values as JSON, timestamps as text)."""
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, store_url, json.dumps(queries)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise AssertionError(f"querying {store_url} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
