"""The Grafana dashboards: generated deterministically, typed against @grafana/schema, and
every query runs for real (SQL against a populated ClickHouse, PromQL against Prometheus).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from driftwarden import storage
from driftwarden.dashboards import render
from driftwarden.dashboards.datasources import CLICKHOUSE_UID, PROMETHEUS_UID
from tests.grafana_sql import TimeRange, expand
from tests.monitoring_data import populate

ROOT = Path(__file__).resolve().parent.parent
TYPECHECK = ROOT / "dashboards" / "typecheck"
PROVISIONING = ROOT / "dashboards" / "provisioning"


def _targets(uid: str) -> list[tuple[str, str, str]]:
    """(dashboard, panel title, query text) of every target and variable query on datasource ``uid``.

    The title carries the panel's series label (``label=X`` from a ``${__field.labels.X}``
    display name) so that the query test can check the query returns that column.
    """
    found = []
    for name in render.names():
        board = render.model(name)

        def walk(panels: list[dict], board_name: str = name) -> None:
            for panel in panels:
                panel_uid = (panel.get("datasource") or {}).get("uid")
                display = panel.get("fieldConfig", {}).get("defaults", {}).get("displayName", "")
                label = re.fullmatch(r"\$\{__field\.labels\.(\w+)\}", display)
                suffix = f" label={label.group(1)}" if label else ""
                for target in panel.get("targets", []):
                    if (target.get("datasource") or {}).get("uid", panel_uid) == uid:
                        found.append((board_name, f"{panel['title']} [{target['refId']}]{suffix}", _text(target)))
                walk(panel.get("panels", []))

        walk(board.get("panels", []))
        for variable in board.get("templating", {}).get("list", []):
            if (variable.get("datasource") or {}).get("uid") == uid:
                found.append((name, f"variable ${variable['name']}", _text(variable)))
    return found


def _text(target: dict) -> str:
    query = target.get("rawSql", target.get("expr", target.get("query")))
    return query["query"] if isinstance(query, dict) else query


CLICKHOUSE_QUERIES = _targets(CLICKHOUSE_UID)
PROMQL_QUERIES = _targets(PROMETHEUS_UID)


def test_committed_dashboards_are_what_the_code_generates():
    stale = [
        str(path.relative_to(ROOT))
        for path, text in render.outputs().items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]
    assert not stale, f"regenerate with `driftwarden dashboards export`: {stale} differ from the code"


def test_generation_is_deterministic():
    assert render.outputs() == render.outputs()
    for name in render.names():
        board = render.model(name)
        assert board["uid"].startswith("driftwarden-")
        ids = []

        def walk(panels: list[dict], into: list[int] = ids) -> None:
            for panel in panels:
                into.append(panel["id"])
                walk(panel.get("panels", []))

        walk(board["panels"])
        assert ids == list(range(1, len(ids) + 1)), f"{name}: panel ids must be 1..n"


def _tsc() -> Path:
    tsc = TYPECHECK / "node_modules" / ".bin" / "tsc"
    assert tsc.exists(), (
        f"{tsc} is missing: run the install step of `make test` "
        "(`npm ci --prefix dashboards/typecheck`, it installs @grafana/schema and typescript)"
    )
    return tsc


def test_every_dashboard_type_checks_against_grafana_schema(tmp_path):
    project = render.write_typecheck(tmp_path / "typecheck")
    assert {p.stem for p in project.glob("*.ts")} >= set(render.names())
    result = subprocess.run(
        [str(_tsc()), "--noEmit", "-p", str(project)], capture_output=True, text=True, timeout=120, cwd=project
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_type_check_rejects_a_dashboard_that_grafana_would_not_load(tmp_path):
    """The check can fail: a panel with a misspelt key is an error."""
    project = render.write_typecheck(tmp_path / "typecheck")
    board = render.model("drift")
    board["panels"][1]["gridPoss"] = {}
    header = render.to_typescript("drift").split("const dashboard = ")[0]
    (project / "broken.ts").write_text(
        header
        + f"const dashboard = {json.dumps(board, indent=2)} satisfies DashboardJson;\nexport default dashboard;\n"
    )
    result = subprocess.run(
        [str(_tsc()), "--noEmit", "-p", str(project)], capture_output=True, text=True, timeout=120, cwd=project
    )
    assert result.returncode != 0
    assert "gridPoss" in result.stdout


def test_panels_reference_only_the_provisioned_datasources():
    import yaml

    provisioned = set()
    for path in (PROVISIONING / "datasources").glob("*.yml"):
        provisioned |= {ds["uid"] for ds in yaml.safe_load(path.read_text())["datasources"]}
    assert provisioned == {CLICKHOUSE_UID, PROMETHEUS_UID}
    for name in render.names():
        text = render.to_json(name)
        uids = {ref["uid"] for ref in _datasource_refs(json.loads(text))}
        assert uids <= provisioned, f"{name} references {uids - provisioned}"
    assert len(CLICKHOUSE_QUERIES) > 15 and len(PROMQL_QUERIES) > 10


def _datasource_refs(node) -> list[dict]:
    refs = []
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            refs.append(node["datasource"])
        for value in node.values():
            refs += _datasource_refs(value)
    elif isinstance(node, list):
        for value in node:
            refs += _datasource_refs(value)
    return refs


def test_dashboard_provider_loads_the_generated_json():
    import yaml

    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "driftwarden.yml").read_text())["providers"]
    assert provider["type"] == "file"
    mounted = provider["options"]["path"]
    assert mounted == "/var/lib/grafana/dashboards/driftwarden"


@pytest.fixture(scope="module")
def populated(engine_dir):
    url = f"chdb://{engine_dir}?database=dashboards_populated"
    client = storage.connect(url, create_database=True)
    storage.migrate(client, retention_days=3650)
    return client, populate(client)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("dashboard", "panel", "sql"), CLICKHOUSE_QUERIES, ids=[f"{d}:{p}" for d, p, _ in CLICKHOUSE_QUERIES]
)
def test_clickhouse_panel_query_returns_rows(populated, dashboard, panel, sql):
    client, data = populated
    time_range = TimeRange(data.start, data.end, interval_s=3600)
    # Both branches of the version filter, and a numeric and a categorical $feature.
    for version, feature in (("__all", "temp"), ("v2", "weathersit")):
        expanded = expand(sql, time_range, {**data.variables, "version": version, "feature": feature})
        assert "$" not in expanded.replace("'$'", ""), expanded
        result = client.query(expanded)
        where = f"{dashboard} / {panel} (version {version}, feature {feature})"
        assert result.result_rows, f"{where} returned no rows:\n{expanded}"
        if " label=" in panel:  # the series are named by this column of the long frame
            assert panel.rsplit(" label=", 1)[1] in result.column_names, result.column_names


# Names come from model servers and spans as they are: quotes, backslashes, percent signs.
AWKWARD_MODEL = 'o\'brien\\bikes "v2" 100%'


def test_panel_queries_find_a_model_whose_name_holds_quotes_and_backslashes(engine_dir):
    client = storage.connect(f"chdb://{engine_dir}?database=dashboards_awkward_name", create_database=True)
    storage.migrate(client, retention_days=3650)
    data = populate(client, model=AWKWARD_MODEL)
    time_range = TimeRange(data.start, data.end, interval_s=3600)
    for dashboard, panel, sql in CLICKHOUSE_QUERIES:
        for version, feature in (("__all", "temp"), ("v2", "weathersit")):
            expanded = expand(sql, time_range, {**data.variables, "version": version, "feature": feature})
            rows = client.query(expanded).result_rows
            assert rows, f"{dashboard} / {panel} (version {version}) found nothing for {AWKWARD_MODEL!r}:\n{expanded}"
    # The value pasted into a quoted literal, as the panels did before, is not even valid SQL.
    naive = expand("SELECT count() FROM inferences WHERE model = '${model}'", time_range, data.variables)
    with pytest.raises(Exception, match="Syntax error"):
        client.query(naive)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """A real Prometheus scraping the stand-in exporter every second."""
    import shutil
    import time

    import httpx

    from tests import stand_in_exporter

    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    assert Path(binary).exists(), "prometheus is missing: run the install step of `make test` (Debian prometheus)"
    exporter_port, exporter = stand_in_exporter.serve()
    work = tmp_path_factory.mktemp("prometheus")
    (work / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: stand-in\n    honor_labels: true\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n"
    )
    log = work / "prometheus.log"
    process, base = None, ""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process is None or process.poll() is not None:
                # (Re)start on a fresh port: another process may have taken the one we picked.
                port = _free_port()
                base = f"http://127.0.0.1:{port}"
                process = subprocess.Popen(
                    [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                     f"--web.listen-address=127.0.0.1:{port}"],
                    stdout=subprocess.DEVNULL, stderr=log.open("a"),
                )  # fmt: skip
            try:
                # Three scrapes: enough samples for rate() over the 15s $__rate_interval used below.
                got = httpx.get(f"{base}/api/v1/query", params={"query": "count_over_time(up[15s])"}, timeout=2).json()
                if got["data"]["result"] and float(got["data"]["result"][0]["value"][1]) >= 3:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass  # not up yet (or another server took the port: the next round restarts)
            time.sleep(0.3)
        else:
            pytest.fail(f"Prometheus did not scrape the exporter within 60 s: {log.read_text()[-2000:]}")
        yield base
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)
        exporter.shutdown()


def _promql(expr: str, model: str, version: str) -> str:
    """The PromQL Prometheus receives: Grafana's interval variables and the pickers' values."""
    return (
        expr.replace("$__rate_interval", "15s")
        .replace("$__interval", "5s")
        .replace("$model", model)
        .replace("$version", version)
    )


@pytest.mark.timeout(120)
def test_every_promql_expression_returns_series_from_prometheus(prometheus):
    import itertools

    import httpx

    from tests import stand_in_exporter

    failures = []
    # "All" (a regex that also matches a missing label) and one model and version (which would
    # match nothing if a selector named a label the metric does not have).
    for (dashboard, panel, expr), (model, version) in itertools.product(
        PROMQL_QUERIES, [(".*", ".*"), (stand_in_exporter.MODEL, "v1")]
    ):
        query = _promql(expr, model, version)
        if query.startswith("label_values("):
            metric = query[len("label_values(") : query.rindex(",")]
            label = query[query.rindex(",") + 1 : -1].strip()
            got = httpx.get(f"{prometheus}/api/v1/series", params={"match[]": metric}, timeout=10).json()
            values = {series.get(label) for series in got.get("data", [])} - {None}
            if got["status"] != "success" or not values:
                failures.append(f"{dashboard} / {panel}: {query} -> {got}")
            continue
        got = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=10).json()
        if got["status"] != "success" or not got["data"]["result"]:
            failures.append(f"{dashboard} / {panel}: {query} -> {got}")
    assert not failures, "\n".join(failures)


@pytest.mark.timeout(120)
def test_a_misspelt_metric_returns_no_series(prometheus):
    """The check above can fail: Prometheus answers an unknown metric with an empty result."""
    import httpx

    got = httpx.get(f"{prometheus}/api/v1/query", params={"query": "driftwarden_no_such_metric_total"}).json()
    assert got["status"] == "success" and got["data"]["result"] == []


def test_export_command_writes_the_committed_json(tmp_path):
    from tests.conftest import run_cli

    result = run_cli("dashboards", "export", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    for name in render.names():
        written = (tmp_path / "out" / f"{name}.json").read_text(encoding="utf-8")
        assert written == (ROOT / "dashboards" / "json" / f"{name}.json").read_text(encoding="utf-8")


def test_push_to_an_unreachable_grafana_is_one_clear_error():
    from tests.conftest import run_cli

    port = _free_port()  # nothing listens there
    result = run_cli("dashboards", "push", "--grafana-url", f"http://127.0.0.1:{port}", "--token", "t")
    assert result.returncode == 2
    assert result.stderr.startswith("driftwarden dashboards: error: cannot reach Grafana at")
    assert "Traceback" not in result.stderr
    bad = run_cli("dashboards", "push", "--grafana-url", "grafana:3000")
    assert bad.returncode == 2 and "is not an http(s) URL" in bad.stderr
