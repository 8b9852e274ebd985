"""Every sub-command, given a user's mistake, says what is wrong on one line of stderr and exits non-zero.

A table: each row is a command line with a mistake in it (bad arguments, missing files, files that
cannot be read, wrong store or service URLs) and a piece of the one line it must print. The rows
run in this process through ``driftwarden.cli.main`` (fast), a few through the installed
``driftwarden`` script (the real entry point). A last table runs the commands that read or write
a store on an embedded store that was never migrated: they migrate it first and go on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from driftwarden import cli, storage
from driftwarden.storage.migrate import applied

pytestmark = pytest.mark.timeout(120)

# the console script installed beside this interpreter (a virtualenv's bin/), else the one on PATH
SCRIPT = Path(sys.executable).with_name("driftwarden")
SCRIPT = SCRIPT if SCRIPT.exists() else Path(shutil.which("driftwarden") or SCRIPT)
REFUSED = "http://127.0.0.1:1/"  # nothing listens on port 1: connection refused at once
WINDOWS = ["--reference", "2011-01-01..2011-02-01", "--current", "2011-02-01..2011-02-08"]
UPSTREAM = "http://127.0.0.1:1"


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]  # {tmp} is replaced by the test's directory, {engine} by the session engine's
    says: str  # a piece of the one line on stderr
    env: dict[str, str] = field(default_factory=dict)


def _prepare(tmp: Path) -> None:
    """The files the rows refer to."""
    (tmp / "dir.csv").mkdir()
    (tmp / "dir.yaml").mkdir()
    (tmp / "garbage.csv").write_bytes(b'\x00\xff"\n\x00"\x01,"unterminated\n')
    (tmp / "garbage.parquet").write_bytes(b"PAR1 not really parquet")
    (tmp / "ok.csv").write_text("ts,temp,pred\n2011-01-01T00:00:00Z,1.5,3\n", encoding="utf-8")
    (tmp / "empty.csv").write_text("ts,temp\n", encoding="utf-8")
    (tmp / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage: [\n")
    (tmp / "broken.yaml").write_text("models: [\n  - name: a\n", encoding="utf-8")
    (tmp / "list.yaml").write_text("- a\n- b\n", encoding="utf-8")
    (tmp / "bad-name.yaml").write_text('window: 1h\nmodels:\n  - name: "bad\\u0007bell"\n', encoding="utf-8")
    (tmp / "bad-key.yaml").write_text("window: 1h\nmodels: [{name: m}]\nwindwo: 2h\n", encoding="utf-8")
    (tmp / "ok-detectors.yaml").write_text(
        "window: 1h\nmodels:\n  - name: m\n    features: {numeric: [temp]}\n", encoding="utf-8"
    )
    (tmp / "collector-bad.yaml").write_text("redaction: {mode: scramble}\n", encoding="utf-8")
    (tmp / "up-bad.yaml").write_text(
        "window: 1h\nmodels: [{name: m}]\ncollectors:\n  - {model: m, upstream: ftp://x, listen: 127.0.0.1:0}\n",
        encoding="utf-8",
    )
    (tmp / "a-file").write_text("not a directory\n", encoding="utf-8")
    unreadable = tmp / "unreadable.csv"
    unreadable_yaml = tmp / "unreadable.yaml"
    if os.geteuid() == 0:  # root reads any mode; the kernel refuses to read this file to everyone
        unreadable.symlink_to("/proc/self/mem")
        unreadable_yaml.symlink_to("/proc/self/mem")
    else:
        for path in (unreadable, unreadable_yaml):
            path.write_text("ts\n", encoding="utf-8")
            path.chmod(0)


CASES = [
    # -- the command line itself
    Case("no-command", [], "the following arguments are required: COMMAND"),
    Case("unknown-command", ["frobnicate"], "invalid choice: 'frobnicate'"),
    Case("unknown-option", ["migrate", "--colour"], "unrecognized arguments: --colour"),
    # -- migrate
    Case("migrate-retention-zero", ["migrate", "--retention-days", "0"], "expected at least 1 day"),
    Case("migrate-retention-past-2106", ["migrate", "--retention-days", "36500"], "ClickHouse dates end in 2106"),
    Case("migrate-retention-text", ["migrate", "--retention-days", "ten"], "expected a whole number of days"),
    Case("migrate-ftp-url", ["migrate", "--store", "ftp://host/db"], "scheme 'ftp' is not supported"),
    Case("migrate-no-scheme", ["migrate", "--store", "/var/lib/x"], "has no scheme"),
    Case("migrate-refused", ["migrate", "--store", REFUSED], "cannot reach a ClickHouse server at http://127.0.0.1:1"),
    Case("migrate-bad-port", ["migrate", "--store", "http://h:99999/db"], "has an invalid port"),
    Case("migrate-bad-database", ["migrate", "--store", "chdb://{engine}?database=no-dash"], "is not valid"),
    Case("migrate-store-is-a-file", ["migrate", "--store", "chdb://{tmp}/a-file"], "embedded store"),
    Case("migrate-env-url", ["migrate"], "scheme 'ftp' is not supported", env={"DRIFTWARDEN_STORE": "ftp://x"}),
    # -- drift
    Case("drift-missing-args", ["drift", "--model", "m"], "required: --reference, --current"),
    Case("drift-bad-window", ["drift", "--model", "m", "--reference", "2011", "--current", "x..y"], "START..END"),
    Case("drift-bad-model", ["drift", "--model", "a\tb", *WINDOWS], "control character (U+0009"),
    Case("drift-refused", ["drift", "--store", REFUSED, "--model", "m", *WINDOWS], "cannot reach a ClickHouse"),
    Case("drift-ftp", ["drift", "--store", "ftp://x", "--model", "m", *WINDOWS], "not supported"),
    Case("drift-bad-feature", ["drift", "--model", "m", *WINDOWS, "--feature", "a:b:c:d:e"], "NAME[:KIND"),
    Case("drift-bad-exact", ["drift", "--model", "m", *WINDOWS, "--exact-max-values", "many"], "invalid int value"),
    # -- estimate
    Case("estimate-missing-args", ["estimate", "--model", "m"], "required: --reference, --current"),
    Case("estimate-bad-window", ["estimate", "--model", "m", "--reference", "x", "--current", "y"], "START..END"),
    Case("estimate-bad-metric", ["estimate", "--model", "m", *WINDOWS, "--metric", "vibes"], "invalid choice"),
    Case("estimate-bad-model", ["estimate", "--model", "m\x1b[2J", *WINDOWS], "control character (U+001B"),
    Case("estimate-refused", ["estimate", "--store", REFUSED, "--model", "m", *WINDOWS], "cannot reach a ClickHouse"),
    Case("estimate-ftp", ["estimate", "--store", "ftp://x", "--model", "m", *WINDOWS], "not supported"),
    # -- ingest
    Case("ingest-missing-file", ["ingest", "--model", "m", "--file", "{tmp}/nope.csv"], "no such file"),
    Case("ingest-unknown-type", ["ingest", "--model", "m", "--file", "{tmp}/a-file"], "unknown file type"),
    Case("ingest-directory", ["ingest", "--model", "m", "--file", "{tmp}/dir.csv"], "no such file"),
    Case("ingest-unreadable", ["ingest", "--model", "m", "--file", "{tmp}/unreadable.csv"], "cannot read"),
    Case("ingest-garbage-csv", ["ingest", "--model", "m", "--file", "{tmp}/garbage.csv"], "cannot read it as CSV"),
    Case("ingest-garbage-parquet", ["ingest", "--model", "m", "--file", "{tmp}/garbage.parquet"], "as Parquet"),
    Case(
        "ingest-empty", ["ingest", "--model", "m", "--file", "{tmp}/empty.csv", "--timestamp-column", "ts"], "no rows"
    ),
    Case("ingest-no-column", ["ingest", "--model", "m", "--file", "{tmp}/ok.csv", "--timestamp-column", "t"], "'t'"),
    Case("ingest-bad-model", ["ingest", "--model", "x" * 300, "--file", "{tmp}/ok.csv"], "at most 256 characters"),
    Case(
        "ingest-hub-refused",
        ["ingest", "--model", "m", "--file", "{tmp}/ok.csv", "--timestamp-column", "ts", "--hub", REFUSED],
        "cannot reach the hub at http://127.0.0.1:1",
    ),
    Case(
        "ingest-hub-ftp",
        ["ingest", "--model", "m", "--file", "{tmp}/ok.csv", "--timestamp-column", "ts", "--hub", "ftp://x"],
        "must start with http:// or https://",
    ),
    Case(
        "ingest-store-refused",
        ["ingest", "--model", "m", "--file", "{tmp}/ok.csv", "--timestamp-column", "ts", "--store", REFUSED],
        "cannot reach a ClickHouse server",
    ),
    # -- collector (mistakes are found before it listens)
    Case("collector-no-upstream", ["collector", "--model", "m"], "upstream is required"),
    Case("collector-ftp-upstream", ["collector", "--model", "m", "--upstream", "ftp://x"], "http:// or https://"),
    Case("collector-bad-model", ["collector", "--model", "a\nb", "--upstream", UPSTREAM], "control character"),
    Case("collector-bad-listen", ["collector", "--model", "m", "--upstream", UPSTREAM, "--listen", "x"], "HOST:PORT"),
    Case(
        "collector-missing-config",
        ["collector", "--model", "m", "--upstream", UPSTREAM, "--config", "{tmp}/nope.yaml"],
        "cannot read the collector config",
    ),
    Case(
        "collector-unreadable-config",
        ["collector", "--model", "m", "--upstream", UPSTREAM, "--config", "{tmp}/unreadable.yaml"],
        "cannot read the collector config",
    ),
    Case(
        "collector-directory-config",
        ["collector", "--model", "m", "--upstream", UPSTREAM, "--config", "{tmp}/dir.yaml"],
        "cannot read the collector config",
    ),
    Case(
        "collector-binary-config",
        ["collector", "--model", "m", "--upstream", UPSTREAM, "--config", "{tmp}/binary.yaml"],
        "binary.yaml",
    ),
    Case(
        "collector-bad-value",
        ["collector", "--model", "m", "--upstream", UPSTREAM, "--config", "{tmp}/collector-bad.yaml"],
        "redaction.mode",
    ),
    Case(
        "collector-store-and-hub",
        ["collector", "--model", "m", "--upstream", UPSTREAM, "--store", "chdb://x", "--hub", "http://h"],
        "not both",
    ),
    Case(
        "collector-ftp-store",
        ["collector", "--model", "m", "--upstream", UPSTREAM, "--store", "ftp://x", "--listen", "127.0.0.1:0"],
        "not supported",
    ),
    Case(
        "collector-bad-rate",
        ["collector", "--model", "m", "--upstream", UPSTREAM, "--payload-sample-rate", "2"],
        "less than or equal to 1",
    ),
    # -- dashboards
    Case("dashboards-no-action", ["dashboards"], "required: ACTION"),
    Case("dashboards-out-is-a-file", ["dashboards", "export", "--out", "{tmp}/a-file"], "is not a directory"),
    Case("dashboards-push-no-scheme", ["dashboards", "push", "--grafana-url", "grafana:3000"], "not an http(s) URL"),
    Case("dashboards-push-ftp", ["dashboards", "push", "--grafana-url", "ftp://grafana"], "not an http(s) URL"),
    Case("dashboards-push-refused", ["dashboards", "push", "--grafana-url", REFUSED], "cannot reach Grafana"),
    # -- detectors
    Case("detectors-no-config", ["detectors", "--once"], "required: --config"),
    Case("detectors-missing-config", ["detectors", "--once", "--config", "{tmp}/nope.yaml"], "nope.yaml"),
    Case("detectors-unreadable-config", ["detectors", "--once", "--config", "{tmp}/unreadable.yaml"], "unreadable"),
    Case("detectors-directory-config", ["detectors", "--once", "--config", "{tmp}/dir.yaml"], "dir.yaml"),
    Case("detectors-binary-config", ["detectors", "--once", "--config", "{tmp}/binary.yaml"], "binary.yaml"),
    Case("detectors-broken-yaml", ["detectors", "--once", "--config", "{tmp}/broken.yaml"], "not valid YAML"),
    Case("detectors-list-yaml", ["detectors", "--once", "--config", "{tmp}/list.yaml"], "expected a mapping"),
    Case("detectors-unknown-key", ["detectors", "--once", "--config", "{tmp}/bad-key.yaml"], "windwo"),
    Case("detectors-bad-model", ["detectors", "--once", "--config", "{tmp}/bad-name.yaml"], "control character"),
    Case("detectors-bad-now", ["detectors", "--once", "--config", "x", "--now", "yesterday"], "ISO-8601"),
    Case("detectors-bad-listen", ["detectors", "--config", "x", "--listen", "nowhere"], "HOST:PORT"),
    Case(
        "detectors-refused",
        ["detectors", "--once", "--config", "{tmp}/ok-detectors.yaml", "--store", REFUSED],
        "cannot reach a ClickHouse server",
    ),
    Case(
        "detectors-ftp",
        ["detectors", "--once", "--config", "{tmp}/ok-detectors.yaml", "--store", "ftp://x"],
        "not supported",
    ),
    # -- report
    Case("report-missing-out", ["report", "--model", "m", *WINDOWS], "required: --out"),
    Case("report-bad-window", ["report", "--model", "m", "--reference", "a..b", "--current", "c", "--out", "r"], "--"),
    Case("report-bad-sample", ["report", "--model", "m", *WINDOWS, "--out", "r", "--sample-size", "3"], "at least 10"),
    Case("report-bad-model", ["report", "--model", "", *WINDOWS, "--out", "r"], "must not be empty"),
    Case("report-refused", ["report", "--store", REFUSED, "--model", "m", *WINDOWS, "--out", "r"], "cannot reach"),
    Case(
        "report-directory-api-config",
        ["report", "--model", "m", *WINDOWS, "--out", "r", "--api-config", "{tmp}/dir.yaml"],
        "Is a directory",
    ),
    Case(
        "report-unreadable-api-config",
        ["report", "--model", "m", *WINDOWS, "--out", "r", "--api-config", "{tmp}/unreadable.yaml"],
        "cannot read the API configuration file",
    ),
    Case(
        "report-missing-api-config",
        ["report", "--model", "m", *WINDOWS, "--out", "r", "--api-config", "{tmp}/nope.yaml"],
        "nope.yaml",
    ),
    # -- api (mistakes are found before it listens)
    Case("api-bad-listen", ["api", "--listen", "localhost"], "HOST:PORT"),
    Case("api-bad-port", ["api", "--listen", "127.0.0.1:70000"], "--listen"),
    Case("api-ftp", ["api", "--store", "ftp://x", "--listen", "127.0.0.1:0"], "not supported"),
    Case("api-refused", ["api", "--store", REFUSED, "--listen", "127.0.0.1:0"], "cannot reach a ClickHouse"),
    Case(
        "api-bad-tokens",
        ["api", "--listen", "127.0.0.1:0"],
        "DRIFTWARDEN_API_TOKENS",
        env={"DRIFTWARDEN_API_TOKENS": "not json ["},
    ),
    Case(
        "api-binary-config",
        ["api", "--listen", "127.0.0.1:0"],
        "not UTF-8 text",
        env={"DRIFTWARDEN_API_CONFIG": "{tmp}/binary.yaml"},
    ),
    # -- up
    Case("up-binary-config", ["up", "--config", "{tmp}/binary.yaml"], "not UTF-8 text"),
    Case("up-no-config", ["up"], "required: --config"),
    Case("up-missing-config", ["up", "--config", "{tmp}/nope.yaml"], "nope.yaml"),
    Case("up-unreadable-config", ["up", "--config", "{tmp}/unreadable.yaml"], "unreadable"),
    Case("up-broken-yaml", ["up", "--config", "{tmp}/broken.yaml"], "not valid YAML"),
    Case("up-bad-collector", ["up", "--config", "{tmp}/up-bad.yaml"], "collectors[0].upstream"),
    Case("up-ftp", ["up", "--config", "{tmp}/ok-detectors.yaml", "--store", "ftp://x"], "not supported"),
    Case("up-refused", ["up", "--config", "{tmp}/ok-detectors.yaml", "--store", REFUSED], "cannot reach"),
    # -- demo (mistakes are found before it trains anything)
    Case("demo-bad-duration", ["demo", "--duration", "-1"], "expected a number above 0"),
    Case("demo-bad-speed", ["demo", "--speed", "fast"], "expected a number"),
    Case("demo-bad-server", ["demo", "--model-server", "triton"], "invalid choice"),
    Case("demo-ftp", ["demo", "--store", "ftp://x"], "not supported"),
    Case("demo-bad-listen", ["demo", "--listen", "here"], "HOST:PORT"),
]

# The rows run through the installed script as well: the real entry point, its own interpreter.
THROUGH_THE_SCRIPT = {"unknown-command", "migrate-refused", "ingest-missing-file", "collector-bad-model", "up-ftp"}


def _argv(case: Case, tmp: Path, engine: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)).replace("{engine}", str(engine)) for a in case.argv]


def _assert_one_line(status: int, err: str, case: Case) -> None:
    assert status != 0, f"{case.id}: exit status 0, stderr {err!r}"
    assert "Traceback" not in err, f"{case.id}: a traceback on stderr:\n{err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"{case.id}: {len(lines)} lines on stderr:\n{err}"
    assert lines[0].startswith("driftwarden"), f"{case.id}: {lines[0]!r}"
    assert case.says in lines[0], f"{case.id}: {case.says!r} not in {lines[0]!r}"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("cli-errors")
    _prepare(tmp)
    return tmp


@pytest.fixture
def isolated(monkeypatch, engine_dir, files):
    """Environment of one row: no store, token or config from the caller's environment; run in ``files``."""
    for name in list(os.environ):
        if name.startswith(("DRIFTWARDEN_", "GRAFANA_")):
            monkeypatch.delenv(name)
    # a row that reaches the default store must not create ./driftwarden-data: a database of the session engine
    monkeypatch.setenv("DRIFTWARDEN_STORE", f"chdb://{engine_dir}?database=cli_errors_default")
    monkeypatch.chdir(files)


def test_the_table_has_rows_for_every_sub_command():
    parser = cli.build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # noqa: SLF001 (argparse has no public accessor)
    covered = {case.argv[0] for case in CASES if case.argv}
    assert commands <= covered, f"sub-commands without rows in the table: {sorted(commands - covered)}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_mistake_is_one_line_on_stderr_and_a_nonzero_exit(case, isolated, files, engine_dir, monkeypatch, capsys):
    for name, value in case.env.items():
        monkeypatch.setenv(name, value.replace("{tmp}", str(files)))
    try:
        status = cli.main(_argv(case, files, engine_dir))
    except SystemExit as exc:  # argparse exits on its own
        status = exc.code if isinstance(exc.code, int) else 1
    _assert_one_line(status, capsys.readouterr().err, case)


@pytest.mark.parametrize("case", [c for c in CASES if c.id in THROUGH_THE_SCRIPT], ids=sorted(THROUGH_THE_SCRIPT))
def test_the_installed_script_prints_the_same_one_line(case, files, engine_dir, tmp_path):
    assert SCRIPT.exists(), f"the console script driftwarden is not installed beside {sys.executable} nor on PATH"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")}
    env.update(case.env)
    env["DRIFTWARDEN_STORE"] = f"chdb://{tmp_path}/store"  # a process of its own may open its own engine
    result = subprocess.run(
        [str(SCRIPT), *_argv(case, files, engine_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=files,
        env=env,
    )
    _assert_one_line(result.returncode, result.stderr, case)


# -- un-migrated embedded stores: migrated first ---------------------------------------------------------


UNMIGRATED = [
    # (id, argv after the store, expected exit status, a piece of the one stderr line or "" for none)
    ("drift", ["drift", "--model", "m", *WINDOWS], 2, "unknown model 'm'"),
    ("estimate", ["estimate", "--model", "m", *WINDOWS], 2, "of model m has no labels"),
    ("report", ["report", "--model", "m", *WINDOWS, "--out", "{tmp}/r.html"], 2, "model 'm' has no events"),
    ("ingest", ["ingest", "--model", "org/m:1", "--file", "{tmp}/ok.csv", "--timestamp-column", "ts"], 0, ""),
    (
        "detectors",
        ["detectors", "--once", "--config", "{tmp}/ok-detectors.yaml", "--now", "2011-01-01T00:00:00Z"],
        0,
        "",
    ),
]


@pytest.mark.parametrize(("name", "argv", "status", "says"), UNMIGRATED, ids=[u[0] for u in UNMIGRATED])
def test_a_command_on_an_unmigrated_embedded_store_migrates_it_first(
    name, argv, status, says, isolated, files, engine_dir, capsys
):
    url = f"chdb://{engine_dir}?database=cli_unmigrated_{name}"
    client = storage.connect(url, create_database=True)
    assert not applied(client)
    argv = [a.replace("{tmp}", str(files)) for a in argv]
    assert cli.main([*argv, "--store", url]) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if says:
        _assert_one_line(status, err, Case(name, argv, says))
    assert storage.latest_version() in applied(client)


def test_open_store_migrates_a_new_embedded_store_with_the_retention_given_and_keeps_it_after(engine_dir):
    from driftwarden.storage.migrate import retention

    url = f"chdb://{engine_dir}?database=cli_open_store_retention"
    client = storage.open_store(url, retention_days=30)
    assert storage.latest_version() in applied(client)
    assert retention(client, "inferences") == 30
    again = storage.open_store(url)  # up to date: nothing applied, the retention it has is kept
    assert retention(again, "inferences") == 30 and applied(again) == applied(client)
