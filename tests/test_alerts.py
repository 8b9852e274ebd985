"""The alerting configuration in ``alerts/``, checked by the real Prometheus and Alertmanager tools.

``promtool`` checks and unit-tests the rules and the Prometheus configuration, ``amtool`` checks the
Alertmanager configuration and its routing tree. The runbooks' SQL runs against a migrated store.
The binaries come from Debian's ``prometheus`` and ``prometheus-alertmanager`` packages
(``scripts/install-test-deps.sh``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "alerts"
RULE_FILES = sorted((ALERTS / "rules").glob("*.rules.yml"))
TEST_FILES = sorted((ALERTS / "tests").glob("*.test.yml"))
RUNBOOKS = ALERTS / "runbooks"
SEVERITIES = {"critical", "warning", "info"}
TEAMS = {"sre", "ml"}


def tool(name: str) -> str:
    """Absolute path of a Debian tool, or a failure that says how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: run `bash scripts/install-test-deps.sh` (Debian prometheus packages)")
    return path


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd)


def alerting_rules() -> list[dict]:
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def alert_names() -> set[str]:
    return {rule["alert"] for rule in alerting_rules()}


def test_rule_files_exist() -> None:
    assert RULE_FILES, "no alerts/rules/*.rules.yml"
    assert TEST_FILES, "no alerts/tests/*.test.yml"


def test_rules_pass_promtool_check() -> None:
    result = run(tool("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    result = run(tool("promtool"), "test", "rules", *map(str, TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES), result.stdout


def test_rule_unit_tests_fail_when_a_rule_is_broken(tmp_path: Path) -> None:
    """The unit tests are not vacuous: raising the FeatureDrift condition out of reach makes them fail."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    for path in RULE_FILES:
        text = path.read_text()
        (tmp_path / "rules" / path.name).write_text(
            text.replace("driftwarden_feature_drift_persistent == 1", "driftwarden_feature_drift_persistent == 2")
        )
    for path in TEST_FILES:
        shutil.copy(path, tmp_path / "tests" / path.name)
    result = run(tool("promtool"), "test", "rules", "tests/drift.test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "FeatureDrift" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_not_firing_unit_test() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = alert_names()
    assert names - firing == set(), "alerts without a firing test case"
    assert names - silent == set(), "alerts without a not-firing test case (exp_alerts: [])"
    assert (firing | silent) - names == set(), "test cases for alerts that do not exist"


def test_every_alert_has_severity_team_summary_description_and_an_existing_runbook() -> None:
    rules = alerting_rules()
    assert len(rules) >= 15
    for rule in rules:
        name = rule["alert"]
        labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
        assert labels.get("severity") in SEVERITIES, f"{name}: severity {labels.get('severity')!r}"
        assert labels.get("team") in TEAMS, f"{name}: team {labels.get('team')!r}"
        assert annotations.get("summary", "").strip(), f"{name}: no summary"
        assert "{{" in annotations.get("description", ""), f"{name}: description without templated values"
        url = annotations.get("runbook_url", "")
        assert url.startswith("alerts/runbooks/") and url.endswith(".md"), f"{name}: runbook_url {url!r}"
        runbook = ROOT / url
        assert runbook.is_file(), f"{name}: {url} does not exist"
        assert name in runbook.read_text().splitlines()[0], f"{name}: {url} is not its runbook (title)"


def test_readme_lists_every_alert() -> None:
    readme = (ALERTS / "README.md").read_text()
    assert {name for name in alert_names() if f"| {name} |" not in readme} == set()


def test_every_runbook_belongs_to_an_alert() -> None:
    used = {Path(rule["annotations"]["runbook_url"]).name for rule in alerting_rules()}
    assert {path.name for path in RUNBOOKS.glob("*.md")} == used


@pytest.mark.parametrize("section", ["## What it means", "## How to confirm", "## What to do"])
def test_every_runbook_says_what_it_means_how_to_confirm_and_what_to_do(section: str) -> None:
    for path in RUNBOOKS.glob("*.md"):
        assert section in path.read_text(), f"{path.name}: missing {section!r}"


def test_prometheus_config_passes_promtool_check_and_loads_the_rules() -> None:
    result = run(tool("promtool"), "check", "config", "prometheus.yml", cwd=ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    # One line per rule file: the counts add up to every alerting rule.
    found = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", result.stdout))
    assert found == len(alerting_rules()), result.stdout


def test_prometheus_config_gives_every_collector_target_a_model_label() -> None:
    config = yaml.safe_load((ALERTS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) >= {"driftwarden-collector", "driftwarden-detectors"}
    collector = jobs["driftwarden-collector"]
    assert collector.get("honor_labels") is True
    for static in collector["static_configs"]:
        assert static["labels"]["model"]


def test_alertmanager_config_passes_amtool_check() -> None:
    result = run(tool("amtool"), "check-config", "alertmanager.yml", cwd=ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alertmanager_commented_examples_are_valid_when_uncommented(tmp_path: Path) -> None:
    """The e-mail, PagerDuty and Opsgenie examples work once a user uncomments them."""
    text = (ALERTS / "alertmanager.yml").read_text()
    # Indented comments that hold YAML (a lower-case key or a list item), not prose.
    uncommented = re.sub(r"(?m)^(\s+)# ?(\s*(?:[a-z_]+:|- ).*)$", r"\1\2", text)
    config = yaml.safe_load(uncommented)
    kinds = {key for receiver in config["receivers"] for key in receiver}
    assert {"email_configs", "pagerduty_configs", "opsgenie_configs"} <= kinds
    path = tmp_path / "alertmanager.yml"
    path.write_text(uncommented)
    result = run(tool("amtool"), "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_groups_by_alertname_and_model() -> None:
    config = yaml.safe_load((ALERTS / "alertmanager.yml").read_text())
    assert config["route"]["group_by"] == ["alertname", "model"]


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["alertname=CollectorDown", "severity=critical", "team=sre"], "page,sre"),
        (["alertname=ModelPerformanceDrop", "severity=critical", "team=ml"], "page,ml"),
        (["alertname=CollectorEventsDropped", "severity=warning", "team=sre"], "sre"),
        (["alertname=FeatureDrift", "severity=warning", "team=ml"], "ml"),
        (["alertname=DetectorErrors", "severity=info", "team=sre"], "default"),
        (["alertname=SomethingElse"], "default"),
    ],
)
def test_alertmanager_routes_by_severity_and_team(labels: list[str], receivers: str) -> None:
    result = run(tool("amtool"), "config", "routes", "test", "--config.file=alertmanager.yml", *labels, cwd=ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receivers


def test_every_rule_routes_to_its_team() -> None:
    for rule in alerting_rules():
        labels = [f"alertname={rule['alert']}"] + [f"{key}={value}" for key, value in rule["labels"].items()]
        result = run(tool("amtool"), "config", "routes", "test", "--config.file=alertmanager.yml", *labels, cwd=ALERTS)
        got = result.stdout.strip().split(",")
        expected = "default" if rule["labels"]["severity"] == "info" else rule["labels"]["team"]
        assert expected in got, f"{rule['alert']} goes to {got}"
        assert ("page" in got) == (rule["labels"]["severity"] == "critical"), f"{rule['alert']} goes to {got}"


def test_inhibition_rules_name_existing_alerts_and_compare_the_model() -> None:
    config = yaml.safe_load((ALERTS / "alertmanager.yml").read_text())
    names = alert_names()
    inhibit = config["inhibit_rules"]
    collector = next(rule for rule in inhibit if rule["source_matchers"] == ['alertname="CollectorDown"'])
    assert collector["equal"] == ["model"]
    for rule in inhibit:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            match = re.fullmatch(r'alertname=~?"([^"]+)"', matcher)
            assert match, matcher
            assert set(match.group(1).split("|")) <= names, matcher
    targets = re.fullmatch(r'alertname=~"([^"]+)"', collector["target_matchers"][0]).group(1).split("|")
    assert {"FeatureDrift", "LatencySLOFastBurn", "LatencySLOSlowBurn"} <= set(targets)


PLACEHOLDERS = {"MODEL": "bikeshare", "FEATURE": "temp", "METRIC": "f1", "DETECTOR": "drift"}


def runbook_sql() -> list[tuple[str, str]]:
    blocks = []
    for path in sorted(RUNBOOKS.glob("*.md")):
        for block in re.findall(r"```sql\n(.*?)```", path.read_text(), flags=re.S):
            for placeholder, value in PLACEHOLDERS.items():
                block = block.replace(f"'{placeholder}'", f"'{value}'")
            blocks.append((path.name, block.strip().rstrip(";")))
    return blocks


def test_runbook_sql_runs_against_the_schema(store) -> None:
    blocks = runbook_sql()
    assert len(blocks) >= 15
    for name, sql in blocks:
        try:
            store.query(sql)
        except Exception as exc:  # the message names the runbook and the query
            pytest.fail(f"{name}: {sql}\n{exc}")


def runbook_promql() -> list[tuple[str, str]]:
    """Every query in the runbooks' ```promql blocks; a query's continuation lines are indented."""
    queries = []
    for path in sorted(RUNBOOKS.glob("*.md")):
        for block in re.findall(r"```promql\n(.*?)```", path.read_text(), flags=re.S):
            current: list[str] = []
            for line in block.splitlines() + [""]:
                if line[:1] not in (" ", "") or not line:
                    query = "\n".join(current).strip()
                    if query and not all(row.strip().startswith("#") for row in current if row.strip()):
                        queries.append((path.name, query))
                    current = []
                current.append(line)
    return queries


def test_runbook_promql_parses(tmp_path: Path) -> None:
    """promtool parses each runbook query as the expression of a recording rule."""
    queries = runbook_promql()
    assert len(queries) >= 30
    groups = [
        {"name": f"q{i}", "rules": [{"record": "runbook:query", "expr": query}]} for i, (_, query) in enumerate(queries)
    ]
    path = tmp_path / "runbook-queries.yml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    result = run(tool("promtool"), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_and_runbooks_use_only_metrics_the_collector_and_detectors_export() -> None:
    """The contract with collector/metrics.py and detectors/exporter.py: no alert on a misspelt name."""
    # genai_metrics, the content attacher and the OTLP receivers register their metrics in REGISTRY when imported
    from driftwarden.collector import content_attacher, genai_metrics, metrics  # noqa: F401
    from driftwarden.collector.receivers import otlp, otlp_logs  # noqa: F401
    from driftwarden.detectors.exporter import Exporter

    families = {family.name for registry in (metrics.REGISTRY, Exporter().registry) for family in registry.collect()}
    text = "\n".join(path.read_text() for path in RULE_FILES)
    text += "\n".join(query for _, query in runbook_promql())
    unknown = set()
    for name in set(re.findall(r"\bdriftwarden_[a-z0-9_]+", text)):
        # Exposed sample names: counters end in _total, histograms in _bucket/_sum/_count.
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        if name not in families and base not in families:
            unknown.add(name)
    assert unknown == set()
