"""Lean processes: a command imports only what it needs.

Each command runs in a subprocess of its own (a fresh interpreter, so ``sys.modules`` shows what
that command pulled in) and reports the heavy packages it imported. Durations and memory are
measured in ``bench/process_footprint.py``, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

# Never needed by `--help`, `migrate` or `drift`: the reporting stack, the dataframe and the web stack.
HEAVY = ("evidently", "pandas", "fastapi", "starlette", "uvicorn", "jinja2", "sklearn", "polars")

RUN = textwrap.dedent(
    """
    import json, sys
    from driftwarden.cli import main
    try:
        status = main(sys.argv[1:])
    except SystemExit as exc:  # --help exits through argparse
        status = exc.code
    loaded = {name.split(".")[0] for name in sys.modules}
    loaded |= {".".join(name.split(".")[:2]) for name in sys.modules if name.startswith("scipy.")}
    loaded = sorted(loaded)
    print("MODULES " + json.dumps({"status": status, "modules": loaded}))
    """
)

LOAD = textwrap.dedent(
    """
    import datetime as dt, sys
    from driftwarden import storage
    from tests.drift_data import insert_synthetic
    client = storage.connect(sys.argv[1], create_database=True)
    storage.migrate(client, retention_days=20000)
    start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    insert_synthetic(client, "lean", start, 2000, 4, 2, step_us=1_000_000)
    insert_synthetic(client, "lean", start + dt.timedelta(days=1), 2000, 4, 2, shift=0.5, salt=1, step_us=1_000_000)
    """
)


def modules_of(*args: str) -> tuple[int, set[str], str]:
    """Run ``driftwarden ARGS`` in a fresh interpreter: its exit status, the top-level packages it imported,
    and its output."""
    result = subprocess.run(
        [sys.executable, "-c", RUN, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("MODULES ")), None)
    assert line is not None, result.stderr[-2000:]
    found = json.loads(line.removeprefix("MODULES "))
    return found["status"], set(found["modules"]), result.stdout


@pytest.fixture(scope="module")
def store_url(tmp_path_factory) -> str:
    url = f"chdb://{tmp_path_factory.mktemp('lean')}/store"
    subprocess.run([sys.executable, "-c", LOAD, url], check=True, cwd=ROOT, timeout=300)
    return url


def test_help_imports_neither_the_store_client_nor_numeric_or_web_packages():
    status, modules, out = modules_of("--help")
    assert status == 0
    assert "drift" in out
    assert not modules & {*HEAVY, "clickhouse_connect", "chdb", "numpy", "scipy", "pyarrow", "urllib3"}


def test_version_is_printed_without_importing_the_store():
    result = subprocess.run(
        [sys.executable, "-m", "driftwarden.cli", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.startswith("driftwarden ")


@pytest.mark.timeout(600)
def test_drift_computes_without_evidently_pandas_or_the_web_stack(store_url):
    reference, current = "2026-01-05..2026-01-06", "2026-01-06..2026-01-07"
    status, modules, out = modules_of(
        "drift", "--store", store_url, "--model", "lean", "--reference", reference, "--current", current,
        "--multivariate", "none",
    )  # fmt: skip
    assert status == 0, out
    assert "dataset: DRIFT" in out  # every numeric feature is shifted by half a standard deviation
    assert "chdb" in modules  # the embedded store was really opened and queried
    assert not modules & set(HEAVY)
    # 2,000 rows a window: Wasserstein and Jensen-Shannon, scored in plain Python from the engine's aggregates.
    # numpy (about 14 MB) loads only where arrays are computed (driftwarden.lazy); scipy.stats (about 35 MB) only
    # for the tests that need it (KS, chi-square, Z), at their first p-value; scipy.spatial (with scipy.sparse,
    # .linalg and .special, about 30 MB) not at all
    assert " wasserstein " in out and " jensenshannon " in out
    assert "numpy" not in modules
    assert not {name for name in modules if name.startswith("scipy")}
    # chdb imports pyarrow with its connection module; the drift reads the engine's Native format and never loads it
    assert "pyarrow" not in modules


def test_pyarrow_loads_at_its_first_use_after_the_embedded_store_opens(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        from driftwarden import storage
        client = storage.connect(sys.argv[1], create_database=True)
        opened = "pyarrow" in sys.modules
        import chdb
        # chdb's own Arrow result, through its connection module, which bound pyarrow before it was loaded
        table = chdb.connect(sys.argv[2]).query("SELECT 41 + 1 AS x", "ArrowTable")
        import pyarrow
        print(opened, type(table) is pyarrow.Table, table.column("x").to_pylist(),
              client.query_arrow("SELECT 7 AS y").column("y").to_pylist())
        """
    )
    store = tmp_path / "store"
    result = subprocess.run(
        [sys.executable, "-c", code, f"chdb://{store}", str(store)], cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert result.stdout.split() == ["False", "True", "[42]", "[7]"], result.stderr[-2000:]


def test_storage_names_resolve_on_first_use():
    code = (
        "import sys; from driftwarden import storage; before = 'clickhouse_connect' in sys.modules; "
        "url = storage.DEFAULT_STORE; light = 'clickhouse_connect' in sys.modules; "
        "storage.connect; print(before, light, 'clickhouse_connect' in sys.modules, url)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "False", "True", "chdb://driftwarden-data"], result.stderr


def test_a_lazy_numpy_is_imported_at_its_first_attribute_read_and_then_is_numpy():
    code = textwrap.dedent(
        """
        import sys
        from driftwarden.lazy import numpy as np
        before = "numpy" in sys.modules
        total = int(np.arange(4).sum())
        print(before, "numpy" in sys.modules, total, np.ndarray is sys.modules["numpy"].ndarray, np.linalg.norm([3, 4]))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "True", "6", "True", "5.0"], result.stderr[-2000:]
