"""deploy/kubernetes: rendered by kustomize, checked by real validators, offline.

What checks what:

* Rendering: kustomize's own Go library (``sigs.k8s.io/kustomize/api`` v0.21.3, the ``pykustomize``
  wheel), for each overlay and for the KServe example; ``kubectl kustomize`` (kustomize v5.5, the
  one ``kubectl apply -k`` uses) must render the same objects where it is installed.
* Kubernetes objects: ``kubernetes-validate`` 1.37.0, strict (no unknown field anywhere), against
  the schemas of Kubernetes 1.37, including the native-sidecar ``restartPolicy`` of init containers.
* ServiceMonitor, PodMonitor, PrometheusRule: the prometheus-operator v0.80.1 API as published in
  ``cloudcoil-models-prometheus-operator`` (pydantic models generated from the CRDs' OpenAPI
  schemas): the object must validate, and validating must keep every field and value as written
  (a field the CRD does not know, or a value of the wrong type, changes the round trip).
* InferenceService: the structure of KServe 0.21's ``serving.kserve.io/v1beta1`` API as KServe's
  own SDK declares it (``openapi_types``/``attribute_map`` of ``kserve.models``, read from the
  files): every field known, every value of its declared type; the Kubernetes types inside it
  (Container, ResourceRequirements, SecurityContext, ...) against the strict 1.37 schemas.
* The rules in the PrometheusRule: equal to ``alerts/rules/``, ``promtool check rules``, and the
  promtool unit tests of ``alerts/tests/`` pass against them.
* The dashboard ConfigMaps: the same text as ``dashboards/json/``, labelled for Grafana's sidecar.
* Policy checks written here (resource limits, probes, non-root read-only containers, no secret
  value in a manifest, a monitor for every /metrics), each with a negative test showing it fails.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import functools
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("embedded", "clickhouse")
KUBERNETES_VERSION = "1.37.0"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}
PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|API_?KEY|PRIVATE_?KEY)", re.I)
URL_PASSWORD = re.compile(r"://[^/\s:@]+:([^@\s]+)@")
CONFIG_SECRET = re.compile(r"^\s*[\"']?(\w*(?:password|token|secret)\w*)[\"']?\s*[:=]\s*(.+?)\s*$", re.I | re.M)
REFERENCE = re.compile(r"^(\$\([A-Za-z_]\w*\)|\$\{?[A-Za-z_]\w*\}?|\"?\$\{?[A-Za-z_]\w*\}?\"?)$")


def _load_generator():
    spec = importlib.util.spec_from_file_location("k8s_generate", K8S / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


# -- rendering -------------------------------------------------------------------------------------


@functools.cache
def _rendered_text(path: str) -> str:
    import pykustomize

    return asyncio.run(pykustomize.build(path)).yaml


def render(path: Path) -> list[dict]:
    """The objects of a kustomization, rendered by kustomize's Go library (a fresh copy each call)."""
    return [doc for doc in yaml.safe_load_all(_rendered_text(str(path))) if doc]


def overlay(name: str) -> list[dict]:
    return render(K8S / "overlays" / name)


def find(docs: list[dict], kind: str, name: str) -> dict:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in the rendered objects")


def pod_spec(doc: dict) -> dict | None:
    if doc["kind"] == "Pod":
        return doc["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if doc["kind"] in WORKLOAD_KINDS:
        return doc["spec"]["template"]["spec"]
    return None


def pod_labels(doc: dict) -> dict:
    return doc["spec"]["template"]["metadata"].get("labels", {})


def containers(doc: dict) -> list[tuple[str, dict]]:
    """(role, container) of a workload: role is main, sidecar (native) or init (runs to completion)."""
    spec = pod_spec(doc)
    if spec is None:
        return []
    out = [("sidecar" if c.get("restartPolicy") == "Always" else "init", c) for c in spec.get("initContainers", [])]
    return out + [("main", c) for c in spec["containers"]]


def workloads(docs: list[dict]) -> list[dict]:
    return [doc for doc in docs if doc["kind"] in WORKLOAD_KINDS]


# -- the policy checks (each returns the problems it finds) --------------------------------------------


def hardening_problems(docs: list[dict]) -> list[str]:
    """Containers without requests and limits, without probes, or not non-root and read-only."""
    problems = []
    for doc in workloads(docs):
        spec = pod_spec(doc)
        pod_security = spec.get("securityContext", {})
        for role, c in containers(doc):
            where = f"{doc['kind']} {doc['metadata']['name']} container {c['name']}"
            resources = c.get("resources", {})
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(section, {}):
                        problems.append(f"{where}: no {resource} in resources.{section}")
            if role != "init":  # Kubernetes allows no probe on a run-to-completion init container
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in c:
                        problems.append(f"{where}: no {probe}")
            security = c.get("securityContext", {})
            if not security.get("runAsNonRoot", pod_security.get("runAsNonRoot")):
                problems.append(f"{where}: runAsNonRoot is not true")
            if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
                problems.append(f"{where}: runs as uid 0")
            if security.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in security.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: capabilities are not all dropped")
        seccomp = pod_security.get("seccompProfile", {}).get("type")
        if seccomp != "RuntimeDefault":
            problems.append(f"{doc['kind']} {doc['metadata']['name']}: seccompProfile is not RuntimeDefault")
    return problems


def _is_reference(value: str) -> bool:
    return bool(REFERENCE.match(value.strip()))


def inlined_secret_problems(docs: list[dict]) -> list[str]:
    """Secret values written into the manifests instead of referenced from a Secret."""
    problems = []
    for doc in docs:
        name = f"{doc['kind']} {doc['metadata']['name']}"
        if doc["kind"] == "Secret" and (doc.get("data") or doc.get("stringData")):
            problems.append(f"{name}: a Secret with values is part of the manifests")
        if doc["kind"] == "ConfigMap":
            for key, text in (doc.get("data") or {}).items():
                if key.endswith(".json"):
                    continue  # dashboards: their text is checked against dashboards/json
                for field, value in CONFIG_SECRET.findall(text):
                    if value and not _is_reference(value):
                        problems.append(f"{name}: {key} sets {field} to a value instead of a reference")
                if URL_PASSWORD.search(text) and not _is_reference(URL_PASSWORD.search(text).group(1)):
                    problems.append(f"{name}: {key} holds a URL with a password")
        for _, c in containers(doc):
            where = f"{name} container {c['name']}"
            from_secret = {e["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
            for env in c.get("env", []):
                value = env.get("value")
                if value is None:
                    continue
                if SECRET_NAME.search(env["name"]) and value and not _is_reference(value):
                    problems.append(f"{where}: {env['name']} is set to a literal value, not a secretKeyRef")
                problems += _url_password_problems(f"{where}: {env['name']}", value, from_secret)
            for arg in [*c.get("command", []), *c.get("args", [])]:
                problems += _url_password_problems(f"{where}: argument", arg, from_secret)
    return problems


def _url_password_problems(where: str, text: str, from_secret: set[str]) -> list[str]:
    match = URL_PASSWORD.search(text)
    if not match:
        return []
    password = match.group(1)
    ref = re.fullmatch(r"\$\(([A-Za-z_]\w*)\)", password)
    if ref and ref.group(1) in from_secret:
        return []
    return [f"{where}: a URL with a password that does not come from a Secret"]


def _selects(selector: dict, labels: dict) -> bool:
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
    return True


def _port_named(container: dict, number: int) -> str | None:
    for port in container.get("ports", []):
        if port["containerPort"] == number:
            return port.get("name")
    return None


def metrics_endpoints(docs: list[dict]) -> list[tuple[dict, str]]:
    """(workload, port name) of every driftwarden /metrics: collectors, detectors, api, `up`."""
    found = []
    for doc in workloads(docs):
        for role, c in containers(doc):
            args = [*c.get("command", []), *c.get("args", [])]
            if len(args) < 2 or args[0] != "driftwarden":
                continue
            address = None
            if args[1] == "collector" and "--admin-listen" in args:
                address = args[args.index("--admin-listen") + 1]
            elif args[1] in ("detectors", "api") and "--listen" in args:
                address = args[args.index("--listen") + 1]
            elif args[1] == "up":  # /metrics on the API's address (`api.listen` of its configuration)
                address = "0.0.0.0:8000"
            if address and role != "init":
                name = _port_named(c, int(address.rsplit(":", 1)[1]))
                assert name, f"{doc['metadata']['name']}/{c['name']}: the metrics port {address} is not declared"
                found.append((doc, name))
    return found


def scrape_jobs(docs: list[dict], workload: dict, port: str) -> set[str]:
    """The `job` label Prometheus gives the targets of this workload's port, per monitor scraping it."""
    labels, jobs = pod_labels(workload), set()
    pod_ports = {p.get("name") for _, c in containers(workload) for p in c.get("ports", [])}
    for doc in docs:
        if doc["kind"] == "PodMonitor" and _selects(doc["spec"]["selector"], labels):
            for endpoint in doc["spec"]["podMetricsEndpoints"]:
                if endpoint.get("port") == port and port in pod_ports:
                    jobs.add(_job(endpoint, f"{doc['metadata']['namespace']}/{doc['metadata']['name']}"))
        if doc["kind"] == "ServiceMonitor":
            for service in docs:
                if service["kind"] != "Service" or not _selects(doc["spec"]["selector"], service["metadata"]["labels"]):
                    continue
                if not _selects({"matchLabels": service["spec"].get("selector", {})}, labels):
                    continue
                for endpoint in doc["spec"]["endpoints"]:
                    for service_port in service["spec"]["ports"]:
                        if service_port.get("name") == endpoint.get("port") and service_port["targetPort"] == port:
                            jobs.add(_job(endpoint, service["metadata"]["name"]))
    return jobs


def _job(endpoint: dict, default: str) -> str:
    for relabel in endpoint.get("relabelings", []):
        if relabel.get("targetLabel") == "job" and not relabel.get("sourceLabels"):
            return relabel["replacement"]
    return default


def unmonitored(docs: list[dict]) -> list[str]:
    return [
        f"{w['kind']} {w['metadata']['name']} port {port}"
        for w, port in metrics_endpoints(docs)
        if not scrape_jobs(docs, w, port)
    ]


# -- the CRD validators -----------------------------------------------------------------------------


@functools.cache
def _prometheus_operator():
    from cloudcoil.models.prometheus_operator import v1

    return v1


def prometheus_operator_problems(doc: dict) -> list[str]:
    """Validate with the prometheus-operator models; the round trip must give back the object unchanged."""
    import pydantic

    model = getattr(_prometheus_operator(), doc["kind"])
    try:
        parsed = model.model_validate(doc)
    except pydantic.ValidationError as exc:
        return [f"{doc['kind']} {doc['metadata']['name']}: {exc}"]
    back = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    if back != doc:
        return [
            f"{doc['kind']} {doc['metadata']['name']}: changed by the CRD's schema (unknown field or wrong type): "
            + _diff(doc, back)
        ]
    return []


def _diff(a, b, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a.keys() | b.keys():
            if a.get(key) != b.get(key):
                return _diff(a.get(key), b.get(key), f"{path}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _diff(x, y, f"{path}[{i}]")
    return f"{path or '.'}: {a!r} became {b!r}"


@functools.cache
def _kserve_types() -> dict[str, tuple[dict, dict]]:
    """KServe SDK model classes: name -> (openapi_types, attribute_map), read from kserve/models/*.py."""
    spec = importlib.util.find_spec("kserve")
    assert spec and spec.submodule_search_locations, "kserve is not installed: `make test` installs it (--no-deps)"
    out = {}
    for path in (Path(spec.submodule_search_locations[0]) / "models").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.ClassDef):
                continue
            tables = {}
            for item in node.body:
                if isinstance(item, ast.Assign) and isinstance(item.targets[0], ast.Name):
                    if item.targets[0].id in ("openapi_types", "attribute_map"):
                        tables[item.targets[0].id] = ast.literal_eval(item.value)
            if len(tables) == 2:
                out[node.name] = (tables["openapi_types"], tables["attribute_map"])
    return out


@functools.cache
def _kubernetes_definitions():
    from referencing import Registry, Resource

    folder = (
        Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"
    )
    definitions = json.loads((folder / "_definitions.json").read_text())
    return definitions, Resource.from_contents(definitions) @ Registry()


def _kubernetes_type_problems(type_name: str, value, where: str) -> list[str]:
    import jsonschema

    definitions, registry = _kubernetes_definitions()
    # V1Container -> ...core.v1.Container; K8sIoApiAppsV1DeploymentStrategy -> ...apps.v1.DeploymentStrategy
    short = re.sub(r"^(K8sIoApi\w+?V1|V1)", "", type_name)
    candidates = sorted(k for k in definitions["$defs"] if k.endswith(f".v1.{short}"))
    candidates.sort(key=lambda k: (".core.v1." not in k, ".meta.v1." not in k, k))
    if not candidates:
        return [f"{where}: no Kubernetes schema for {type_name}"]
    schema = {"$ref": f"{definitions['$id']}#/$defs/{candidates[0]}"}
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [f"{where}.{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(value)]


def kserve_problems(value, type_name: str = "V1beta1InferenceService", where: str = "") -> list[str]:
    """Check a value against a KServe SDK type: known fields only, each of its declared type."""
    scalar = {"str": str, "bool": bool, "int": int, "float": (int, float), "datetime": str}
    if type_name in scalar:
        ok = isinstance(value, scalar[type_name]) and not (type_name in ("int", "float") and isinstance(value, bool))
        return [] if ok else [f"{where}: expected {type_name}, got {value!r}"]
    if type_name in ("object", "ResourceQuantity"):
        return [] if type_name == "object" or isinstance(value, str | int | float) else [f"{where}: not a quantity"]
    if match := re.fullmatch(r"list\[(.+)\]", type_name):
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [p for i, item in enumerate(value) for p in kserve_problems(item, match.group(1), f"{where}[{i}]")]
    if match := re.fullmatch(r"dict\(str, (.+)\)", type_name):
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping"]
        return [p for k, item in value.items() for p in kserve_problems(item, match.group(1), f"{where}.{k}")]
    types = _kserve_types()
    if type_name in types:
        if not isinstance(value, dict):
            return [f"{where}: expected a {type_name} mapping"]
        openapi_types, attribute_map = types[type_name]
        by_json = {json_name: openapi_types[py_name] for py_name, json_name in attribute_map.items()}
        problems = [f"{where}.{key}: not a field of {type_name}" for key in value if key not in by_json]
        for key, item in value.items():
            if key in by_json:
                problems += kserve_problems(item, by_json[key], f"{where}.{key}")
        return problems
    return _kubernetes_type_problems(type_name, value, where)


def validation_problems(doc: dict) -> list[str]:
    """Every object through the validator of its kind; a kind without a validator is a problem."""
    if doc["kind"] in PROMETHEUS_OPERATOR_KINDS:
        return prometheus_operator_problems(doc)
    if doc["kind"] == "InferenceService":
        return kserve_problems(doc)
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{doc['kind']} {doc['metadata']['name']}: no validator for {doc['apiVersion']} {doc['kind']}"]
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(map(str, exc.absolute_path))
        return [f"{doc['kind']} {doc['metadata']['name']}: {path}: {exc.message}"]
    return []


# -- generated files -------------------------------------------------------------------------------


def test_generated_files_are_up_to_date() -> None:
    stale = [str(p.relative_to(ROOT)) for p in generate.stale()]
    assert not stale, f"out of date: {stale}; run `python deploy/kubernetes/generate.py`"


def test_generator_picks_up_every_rule_file_and_dashboard(tmp_path: Path, monkeypatch) -> None:
    rules, dashboards = tmp_path / "rules", tmp_path / "json"
    rules.mkdir()
    dashboards.mkdir()
    for path in generate.rule_files():
        shutil.copy(path, rules)
    for path in generate.dashboard_files():
        shutil.copy(path, dashboards)
    extra_group = {"name": "zz-extra", "rules": [{"alert": "Extra", "expr": "vector(1) > 2"}]}
    (rules / "zz-extra.rules.yaml").write_text(yaml.safe_dump({"groups": [extra_group]}))
    (dashboards / "New Board.json").write_text(json.dumps({"title": "new", "panels": []}, indent=2) + "\n")
    monkeypatch.setattr(generate, "RULES_DIR", rules)
    monkeypatch.setattr(generate, "DASHBOARDS_DIR", dashboards)

    outputs = generate.outputs()
    groups = yaml.safe_load(outputs[generate.RULE_FILE])["spec"]["groups"]
    copied = sorted((p for p in rules.iterdir() if p.name != "zz-extra.rules.yaml"), key=lambda p: p.name)
    expected = [g for p in copied for g in yaml.safe_load(p.read_text())["groups"]]
    assert groups == [*expected, extra_group]
    prometheus_maps = list(yaml.safe_load_all(outputs[generate.PROMETHEUS_DASHBOARDS]))
    assert {"driftwarden-dashboard-new-board"} <= {m["metadata"]["name"] for m in prometheus_maps if m}
    new = next(m for m in prometheus_maps if m and m["metadata"]["name"] == "driftwarden-dashboard-new-board")
    assert new["data"]["New Board.json"] == (dashboards / "New Board.json").read_text()


def test_generator_check_fails_on_a_stale_file_and_writing_fixes_it(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "prometheusrule.yaml"
    target.write_text("# an old version\n")
    monkeypatch.setattr(generate, "RULE_FILE", target)
    monkeypatch.setattr(generate, "PROMETHEUS_DASHBOARDS", tmp_path / "dashboards.yaml")
    monkeypatch.setattr(generate, "CLICKHOUSE_DASHBOARDS", tmp_path / "dashboards-clickhouse.yaml")
    assert generate.main(["--check"]) == 1
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
    assert yaml.safe_load(target.read_text())["kind"] == "PrometheusRule"


def test_a_rule_group_name_used_twice_is_refused(tmp_path: Path, monkeypatch) -> None:
    group = {"name": "same", "rules": [{"alert": "A", "expr": "vector(1)"}]}
    for name in ("a.rules.yml", "b.rules.yml"):
        (tmp_path / name).write_text(yaml.safe_dump({"groups": [group]}))
    monkeypatch.setattr(generate, "RULES_DIR", tmp_path)
    with pytest.raises(SystemExit, match="group 'same' is also in a.rules.yml"):
        generate.rule_groups()


# -- schemas ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_rendered_object_validates(name: str) -> None:
    docs = overlay(name)
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "NetworkPolicy", "PodMonitor", "PrometheusRule"}
    problems = [p for doc in docs for p in validation_problems(doc)]
    assert not problems, "\n".join(problems)


def test_the_kserve_example_validates_against_kserves_api() -> None:
    docs = render(K8S / "examples" / "kserve")
    assert [d["kind"] for d in docs] == ["InferenceService"]
    assert [p for doc in docs for p in validation_problems(doc)] == []


def test_strict_validation_rejects_a_misspelled_field_of_the_native_sidecar() -> None:
    deployment = find(overlay("embedded"), "Deployment", "bikeshare")
    assert validation_problems(deployment) == []
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["initContainers"][0]["restartPolicyy"] = "Always"
    assert any("restartPolicyy" in p for p in validation_problems(broken))
    definitions, _ = _kubernetes_definitions()
    assert "restartPolicy" in definitions["$defs"]["io.k8s.api.core.v1.Container"]["properties"]


def test_crd_validators_reject_unknown_fields_and_wrong_types() -> None:
    docs = overlay("clickhouse")
    monitor = find(docs, "ServiceMonitor", "driftwarden-detectors")
    unknown = copy.deepcopy(monitor)
    unknown["spec"]["endpoints"][0]["intervall"] = "30s"
    assert any("intervall" in p for p in prometheus_operator_problems(unknown))
    rule = find(docs, "PrometheusRule", "driftwarden")
    wrong = copy.deepcopy(rule)
    wrong["spec"]["groups"][0]["rules"][0]["labels"] = ["severity", "critical"]
    assert prometheus_operator_problems(wrong)

    service = render(K8S / "examples" / "kserve")[0]
    misspelled = copy.deepcopy(service)
    misspelled["spec"]["predictor"]["logger"]["urll"] = misspelled["spec"]["predictor"]["logger"].pop("url")
    assert any("urll" in p for p in kserve_problems(misspelled))
    bad_container = copy.deepcopy(service)
    bad_container["spec"]["predictor"]["model"]["securityContext"]["runAsNonRoot"] = "yes"
    assert any("runAsNonRoot" in p for p in kserve_problems(bad_container))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed on this machine")
@pytest.mark.parametrize("path", ["overlays/embedded", "overlays/clickhouse", "examples/kserve"])
def test_kubectl_kustomize_renders_the_same_objects(path: str) -> None:
    result = subprocess.run(["kubectl", "kustomize", str(K8S / path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [d for d in yaml.safe_load_all(result.stdout) if d] == render(K8S / path)


# -- the sidecar and the store ---------------------------------------------------------------------


def _arg(container: dict, flag: str) -> str:
    args = container["args"]
    assert flag in args, f"{container['name']}: no {flag} in {args}"
    return args[args.index(flag) + 1]


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_collector_is_a_native_sidecar_of_the_model_server(name: str) -> None:
    docs = overlay(name)
    deployment = find(docs, "Deployment", "bikeshare")
    spec = pod_spec(deployment)
    (collector,) = [c for c in spec["initContainers"] if c["name"] == "collector"]
    (model,) = spec["containers"]
    assert collector["restartPolicy"] == "Always"  # native sidecar: starts before, stops after the model
    assert model["name"] == "model" and model["image"].startswith("driftwarden-bikeshare-model")
    env = {e["name"]: e.get("value") for e in model["env"]}
    assert _arg(collector, "--upstream") == f"http://127.0.0.1:{env['MLSERVER_HTTP_PORT']}"
    assert _port_named(model, int(env["MLSERVER_HTTP_PORT"])) == "model-http"
    # nginx answers (the engine that meets the sidecar's latency targets); the spool, where nginx's state and
    # capture log also live, is on a writable volume (the root filesystem is read-only)
    assert _arg(collector, "--engine") == "nginx"
    spool = _arg(collector, "--spool-dir")
    (mount,) = [m for m in collector["volumeMounts"] if m["mountPath"] == spool]
    assert mount["name"] in {v["name"] for v in spec["volumes"]} and not mount.get("readOnly")
    assert collector["securityContext"]["readOnlyRootFilesystem"] is True
    # the admin port: probes and /metrics
    admin = _port_named(collector, int(_arg(collector, "--admin-listen").rsplit(":", 1)[1]))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert collector[probe]["httpGet"]["port"] == admin
    assert scrape_jobs(docs, deployment, admin) == {"driftwarden-collector"}
    # clients reach the collector, not the model server
    service = find(docs, "Service", "bikeshare")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [_port_named(collector, 8080)]


def test_embedded_store_has_exactly_one_owner_and_collectors_send_to_it() -> None:
    docs = overlay("embedded")
    owners = []
    for doc in workloads(docs):
        for _, c in containers(doc):
            values = [*c.get("args", []), *(e.get("value") or "" for e in c.get("env", []))]
            if any(v.startswith("chdb://") for v in values):
                owners.append((doc, c))
    assert len(owners) == 1, [d["metadata"]["name"] for d, _ in owners]
    owner, container = owners[0]
    assert owner["kind"] == "StatefulSet" and owner["spec"]["replicas"] == 1
    store = _arg(container, "--store").removeprefix("chdb://")
    claims = {t["metadata"]["name"] for t in owner["spec"]["volumeClaimTemplates"]}
    assert any(store.startswith(m["mountPath"]) and m["name"] in claims for m in container["volumeMounts"])

    collector = pod_spec(find(docs, "Deployment", "bikeshare"))["initContainers"][0]
    hub = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", _arg(collector, "--hub"))
    service = find(docs, "Service", hub.group(1))
    assert _selects({"matchLabels": service["spec"]["selector"]}, pod_labels(owner))
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == int(hub.group(2))]
    assert _port_named(container, 8000) == port["targetPort"]
    assert "DRIFTWARDEN_INGEST_TOKEN" in {e["name"] for e in collector["env"]}
    assert "DRIFTWARDEN_INGEST_TOKEN" in {e["name"] for e in container["env"]}


def test_clickhouse_overlay_connects_each_part_as_its_own_user() -> None:
    docs = overlay("clickhouse")
    users = {}
    for doc in workloads(docs):
        for _, c in containers(doc):
            env = {e["name"]: e for e in c.get("env", [])}
            if "DRIFTWARDEN_STORE" in env:
                url = env["DRIFTWARDEN_STORE"]["value"]
                users[c["name"]] = (re.match(r"\$\(CLICKHOUSE_SCHEME\)://(\w+):", url).group(1), env)
    assert {name: user for name, (user, _) in users.items()} == {
        "collector": "collector",
        "migrate": "migrator",
        "detectors": "detectors",
        "api": "api",
    }
    for user, env in users.values():
        assert env["CLICKHOUSE_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == f"{user}-password"
    text = _rendered_text(str(K8S / "overlays" / "clickhouse"))
    assert "chdb://" not in text


def dangling_references(docs: list[dict]) -> list[str]:
    """Names that point at nothing: Service and NetworkPolicy ports, probe ports, ConfigMaps and their keys."""
    problems = []
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    for doc in workloads(docs):
        spec, where = pod_spec(doc), f"{doc['kind']} {doc['metadata']['name']}"
        for volume in spec.get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] not in config_maps:
                problems.append(f"{where}: volume {volume['name']} uses a missing ConfigMap")
        volumes = {v["name"] for v in spec.get("volumes", [])}
        volumes |= {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        for _, c in containers(doc):
            ports = {p.get("name") for p in c.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                handler = c.get(probe, {}).get("httpGet") or c.get(probe, {}).get("tcpSocket") or {}
                if isinstance(handler.get("port"), str) and handler["port"] not in ports:
                    problems.append(f"{where}/{c['name']}: {probe} uses the undeclared port {handler['port']}")
            for mount in c.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    problems.append(f"{where}/{c['name']}: mounts the missing volume {mount['name']}")
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if ref and ref["key"] not in config_maps.get(ref["name"], {}):
                    problems.append(f"{where}/{c['name']}: {env['name']} reads a missing ConfigMap key {ref}")
    for doc in docs:
        if doc["kind"] not in ("Service", "NetworkPolicy"):
            continue
        selector = doc["spec"].get("selector") if doc["kind"] == "Service" else doc["spec"]["podSelector"]
        selector = {"matchLabels": selector} if doc["kind"] == "Service" else selector
        pods = [w for w in workloads(docs) if _selects(selector, pod_labels(w))]
        if not pods and selector != {}:
            problems.append(f"{doc['kind']} {doc['metadata']['name']} selects no pod")
        named = {p.get("name") for w in pods for _, c in containers(w) for p in c.get("ports", [])}
        if doc["kind"] == "Service":
            wanted = [p["targetPort"] for p in doc["spec"]["ports"]]
        else:
            wanted = [p["port"] for rule in doc["spec"].get("ingress", []) for p in rule.get("ports", [])]
        problems += [
            f"{doc['kind']} {doc['metadata']['name']}: port {port} is no named port of its pods"
            for port in wanted
            if isinstance(port, str) and port not in named
        ]
    return problems


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_name_points_at_something(name: str) -> None:
    assert dangling_references(overlay(name)) == []


def test_dangling_reference_check_fails_on_a_renamed_port_or_key() -> None:
    docs = overlay("clickhouse")
    renamed = copy.deepcopy(docs)
    pod_spec(find(renamed, "Deployment", "driftwarden-detectors"))["containers"][0]["ports"][0]["name"] = "metricz"
    problems = dangling_references(renamed)
    assert any("Service driftwarden-detectors: port metrics" in p for p in problems)
    assert any("NetworkPolicy driftwarden-detectors: port metrics" in p for p in problems)
    assert any("readinessProbe uses the undeclared port metrics" in p for p in problems)
    missing_key = copy.deepcopy(docs)
    next(d for d in missing_key if d["metadata"]["name"].startswith("driftwarden-clickhouse-"))["data"].pop("address")
    assert any("missing ConfigMap key" in p for p in dangling_references(missing_key))


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_driftwarden_command_line_is_accepted_by_the_cli(name: str) -> None:
    from driftwarden.cli import build_parser

    parser = build_parser()
    seen = set()
    for doc in workloads(overlay(name)):
        for _, c in containers(doc):
            args = c.get("args", [])
            if args[:1] == ["driftwarden"]:
                parsed = parser.parse_args(args[1:])  # a flag the command does not know exits here
                assert callable(parsed.run)
                seen.add(args[1])
    assert seen == ({"collector", "up"} if name == "embedded" else {"collector", "api", "detectors", "migrate"})


def test_the_configuration_files_of_the_overlays_load() -> None:
    from driftwarden import up
    from driftwarden.detectors import config as detectors_config

    embedded = up.load(K8S / "overlays" / "embedded" / "up.yaml", env={})
    assert embedded.collectors == () and embedded.api.listen == "0.0.0.0:8000"
    hub = find(overlay("embedded"), "StatefulSet", "driftwarden-hub")
    port = next(p for _, c in containers(hub) for p in c["ports"] if p["name"] == "http")
    assert port["containerPort"] == int(embedded.api.listen.rsplit(":", 1)[1])
    detectors = detectors_config.load(K8S / "overlays" / "clickhouse" / "detectors-config.yaml")
    assert [m.name for m in detectors.models] == [m.name for m in embedded.detectors.models] == ["bikeshare"]
    assert detectors.retention_days in (None, 0), "the detectors' ClickHouse user may not ALTER the raw tables"


# -- hardening and secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_container_has_limits_probes_and_runs_non_root_read_only(name: str) -> None:
    docs = overlay(name)
    assert len([c for d in workloads(docs) for c in containers(d)]) >= 3
    assert hardening_problems(docs) == []


@pytest.mark.parametrize("name", OVERLAYS)
def test_containers_run_as_the_user_their_image_creates(name: str) -> None:
    """runAsUser is the image's own user, so the volumes and the image's files are theirs."""
    driftwarden_uid = re.search(r"useradd [^\n]*--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1)
    model_uid = re.search(r"^USER (\d+)\s*$", (ROOT / "deploy" / "model" / "Dockerfile").read_text(), re.M).group(1)
    expected = {"driftwarden": int(driftwarden_uid), "driftwarden-bikeshare-model": int(model_uid)}
    for doc in workloads(overlay(name)):
        for _, c in containers(doc):
            image = c["image"].rsplit(":", 1)[0].rsplit("/", 1)[-1]
            assert c["securityContext"]["runAsUser"] == expected[image], f"{doc['metadata']['name']}/{c['name']}"


def test_hardening_check_fails_without_limits_probes_or_non_root() -> None:
    docs = overlay("clickhouse")

    def broken(change) -> list[str]:
        copy_ = copy.deepcopy(docs)
        change(find(copy_, "Deployment", "bikeshare"))
        return hardening_problems(copy_)

    def collector(d):
        return pod_spec(d)["initContainers"][0]

    def model(d):
        return pod_spec(d)["containers"][0]

    assert any("no memory in resources.limits" in p for p in broken(lambda d: collector(d)["resources"].pop("limits")))
    assert any("no readinessProbe" in p for p in broken(lambda d: collector(d).pop("readinessProbe")))
    assert any("no livenessProbe" in p for p in broken(lambda d: model(d).pop("livenessProbe")))
    assert any(
        "runAsNonRoot" in p
        for p in broken(
            lambda d: (
                model(d)["securityContext"].pop("runAsNonRoot"),
                pod_spec(d)["securityContext"].pop("runAsNonRoot"),
            )
        )
    )
    assert any("uid 0" in p for p in broken(lambda d: model(d)["securityContext"].update(runAsUser=0)))
    assert any(
        "readOnlyRootFilesystem" in p
        for p in broken(lambda d: collector(d)["securityContext"].update(readOnlyRootFilesystem=False))
    )


@pytest.mark.parametrize("name", OVERLAYS)
def test_no_secret_value_is_inlined(name: str) -> None:
    docs = overlay(name)
    assert not [d for d in docs if d["kind"] == "Secret"]
    assert inlined_secret_problems(docs) == []
    referenced = {
        e["name"]
        for d in workloads(docs)
        for _, c in containers(d)
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert referenced, "the tokens and passwords are referenced from Secrets"


def test_inlined_secret_check_fails_on_each_kind_of_inlining() -> None:
    docs = overlay("clickhouse")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"token": "abc"}}
    assert inlined_secret_problems([*docs, secret])

    def api_env(d):
        return pod_spec(find(d, "Deployment", "driftwarden-api"))["containers"][0]["env"]

    literal_token = copy.deepcopy(docs)
    (token,) = [e for e in api_env(literal_token) if e["name"] == "DRIFTWARDEN_INGEST_TOKEN"]
    token.pop("valueFrom")
    token["value"] = "0123456789abcdef0123"
    assert any("DRIFTWARDEN_INGEST_TOKEN" in p for p in inlined_secret_problems(literal_token))

    literal_url = copy.deepcopy(docs)
    (store,) = [e for e in api_env(literal_url) if e["name"] == "DRIFTWARDEN_STORE"]
    store["value"] = "http://api:hunter2hunter2@clickhouse:8123/driftwarden"
    assert any("password" in p for p in inlined_secret_problems(literal_url))

    literal_arg = copy.deepcopy(docs)
    pod_spec(find(literal_arg, "Deployment", "bikeshare"))["initContainers"][0]["args"] += [
        "--store",
        "http://collector:hunter2@clickhouse:8123/driftwarden",
    ]
    assert any("argument" in p for p in inlined_secret_problems(literal_arg))

    literal_datasource = copy.deepcopy(docs)
    config = find(literal_datasource, "ConfigMap", "driftwarden-grafana-datasource-clickhouse")
    key = next(iter(config["data"]))
    config["data"][key] = config["data"][key].replace("$DRIFTWARDEN_GRAFANA_CLICKHOUSE_PASSWORD", "hunter2")
    assert any("password" in p for p in inlined_secret_problems(literal_datasource))


def _documented_secrets() -> dict[str, set[str]]:
    """Secret name -> keys, from the `kubectl create secret generic` commands of the README."""
    text = (K8S / "README.md").read_text()
    out: dict[str, set[str]] = {}
    for name, body in re.findall(r"create secret generic ([a-z0-9-]+)((?:[^\n]*\\\n)*[^\n]*)", text):
        out.setdefault(name, set()).update(re.findall(r"--from-literal=([\w.-]+)=", body))
    return out


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_referenced_secret_is_documented_with_its_keys(name: str) -> None:
    documented = _documented_secrets()
    for doc in workloads(overlay(name)):
        for _, c in containers(doc):
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in documented.get(ref["name"], set()), f"{ref} is not in the README's commands"


# -- monitoring: monitors, rules, dashboards ----------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_metrics_endpoint_is_scraped_with_the_job_the_rules_expect(name: str) -> None:
    docs = overlay(name)
    endpoints = metrics_endpoints(docs)
    assert len(endpoints) >= 2
    assert unmonitored(docs) == []
    jobs = {job for w, port in endpoints for job in scrape_jobs(docs, w, port)}
    rule = find(docs, "PrometheusRule", "driftwarden")
    wanted = set(re.findall(r'job="([^"]+)"', json.dumps(rule["spec"]).replace('\\"', '"')))
    assert wanted and wanted <= jobs, f"the rules use jobs {wanted}, the monitors give {jobs}"


def test_monitor_check_fails_when_a_metrics_endpoint_has_no_monitor() -> None:
    docs = [d for d in overlay("clickhouse") if d["kind"] != "ServiceMonitor"]
    assert unmonitored(docs) == [
        "Deployment driftwarden-api port http",
        "Deployment driftwarden-detectors port metrics",
    ]


def _rule_groups_of_the_repository() -> list[dict]:
    rules = ROOT / "alerts" / "rules"
    files = sorted([*rules.glob("*.yml"), *rules.glob("*.yaml")], key=lambda p: p.name)
    return [group for path in files for group in yaml.safe_load(path.read_text())["groups"]]


@pytest.mark.parametrize("name", OVERLAYS)
def test_prometheusrule_holds_exactly_the_rules_of_alerts_rules(name: str) -> None:
    rule = find(overlay(name), "PrometheusRule", "driftwarden")
    assert rule["spec"]["groups"] == _rule_groups_of_the_repository()


def test_prometheusrule_rules_pass_promtool_check_and_the_alert_unit_tests(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: run `bash scripts/install-test-deps.sh`"
    rule = find(overlay("clickhouse"), "PrometheusRule", "driftwarden")
    rules_file = tmp_path / "from-prometheusrule.yml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    check = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    # The unit tests of alerts/tests/, pointed at the rules taken out of the PrometheusRule.
    tests = []
    for path in sorted((ROOT / "alerts" / "tests").glob("*.test.yml")):
        test = yaml.safe_load(path.read_text())
        test["rule_files"] = [rules_file.name]
        (tmp_path / path.name).write_text(yaml.safe_dump(test, sort_keys=False))
        tests.append(path.name)
    assert tests
    result = subprocess.run(
        [promtool, "test", "rules", *tests], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_configmaps_hold_the_dashboards_json() -> None:
    files = {p.name: p.read_text() for p in (ROOT / "dashboards" / "json").glob("*.json")}
    assert files
    seen: dict[str, str] = {}
    for doc in overlay("clickhouse"):
        if doc["kind"] == "ConfigMap" and doc["metadata"].get("labels", {}).get("grafana_dashboard") == "1":
            assert doc["metadata"]["labels"]["grafana_dashboard"] == "1"
            ((key, text),) = doc["data"].items()
            assert key not in seen
            seen[key] = text
    assert seen.keys() == files.keys()
    for key, text in seen.items():
        assert text == files[key]
        assert json.loads(text) == json.loads(files[key])


def test_embedded_overlay_ships_only_the_dashboards_that_do_not_read_clickhouse() -> None:
    shipped = {
        key
        for doc in overlay("embedded")
        if doc["kind"] == "ConfigMap" and doc["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
        for key in doc["data"]
    }
    files = {p.name: p.read_text() for p in (ROOT / "dashboards" / "json").glob("*.json")}
    assert shipped == {name for name, text in files.items() if generate.CLICKHOUSE_UID not in text}
    assert shipped, "the Prometheus dashboards are installed with the embedded store too"


def test_datasource_uids_the_dashboards_use_are_provisioned() -> None:
    docs = overlay("clickhouse")
    provisioned = set()
    for doc in docs:
        if doc["kind"] == "ConfigMap" and doc["metadata"].get("labels", {}).get("grafana_datasource") == "1":
            for text in doc["data"].values():
                provisioned |= {d["uid"] for d in yaml.safe_load(text)["datasources"]}
    used = set()
    for path in (ROOT / "dashboards" / "json").glob("*.json"):
        used |= set(re.findall(r'"uid":\s*"(driftwarden-(?:clickhouse|prometheus))"', path.read_text()))
    assert used and used <= provisioned
    # Grafana reads the ClickHouse the services use
    (clickhouse,) = [d for d in docs if d["metadata"]["name"].startswith("driftwarden-clickhouse-")]
    datasource = find(docs, "ConfigMap", "driftwarden-grafana-datasource-clickhouse")
    (source,) = yaml.safe_load(next(iter(datasource["data"].values())))["datasources"]
    host, port = clickhouse["data"]["address"].rsplit(":", 1)
    assert (source["jsonData"]["host"], source["jsonData"]["port"]) == (host, int(port))
    assert source["jsonData"]["defaultDatabase"] == clickhouse["data"]["database"]
    assert source["jsonData"]["protocol"] == clickhouse["data"]["scheme"]


# -- network policies --------------------------------------------------------------------------------


def _policies_for(docs: list[dict], labels: dict) -> list[dict]:
    return [d for d in docs if d["kind"] == "NetworkPolicy" and _selects(d["spec"]["podSelector"], labels)]


@pytest.mark.parametrize("name", OVERLAYS)
def test_network_policies_deny_by_default_and_never_admit_the_model_port(name: str) -> None:
    docs = overlay(name)
    deny = find(docs, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and not deny.get("ingress")
    for workload in workloads(docs):
        policies = _policies_for(docs, pod_labels(workload))
        assert len(policies) >= 2, f"{workload['metadata']['name']} has no policy of its own"
        for policy in policies:
            for rule in policy["spec"].get("ingress", []):
                assert rule.get("ports"), f"{policy['metadata']['name']}: a rule admits every port"
                assert "model-http" not in {p["port"] for p in rule["ports"]}


@pytest.mark.parametrize("name", OVERLAYS)
def test_metrics_ports_admit_prometheus_only(name: str) -> None:
    docs = overlay(name)
    for workload, port in metrics_endpoints(docs):
        for policy in _policies_for(docs, pod_labels(workload)):
            for rule in policy["spec"].get("ingress", []):
                if port in {p["port"] for p in rule["ports"]} and port != "http":
                    for peer in rule["from"]:
                        assert peer["namespaceSelector"] == {
                            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                        }
                        assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}


# -- the KServe logger ---------------------------------------------------------------------------------


def test_kserve_logger_sends_cloudevents_to_the_api_service_of_both_overlays() -> None:
    (service,) = render(K8S / "examples" / "kserve")
    logger = service["spec"]["predictor"]["logger"]
    assert logger["mode"] == "all"
    match = re.fullmatch(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)(/\S*)", logger["url"])
    assert match, logger["url"]
    name, namespace, port, path = match.groups()
    assert path == "/v1/cloudevents"
    for overlay_name in OVERLAYS:
        docs = overlay(overlay_name)
        api = find(docs, "Service", name)
        assert api["metadata"]["namespace"] == namespace
        assert int(port) in {p["port"] for p in api["spec"]["ports"]}
        # the API's NetworkPolicy admits KServe predictor pods
        kserve_pod = {"serving.kserve.io/inferenceservice": "bikeshare"}
        admitted = [
            peer
            for workload in workloads(docs)
            if _selects({"matchLabels": api["spec"]["selector"]}, pod_labels(workload))
            for policy in _policies_for(docs, pod_labels(workload))
            for rule in policy["spec"].get("ingress", [])
            for peer in rule.get("from", [])
            if "podSelector" in peer and _selects(peer["podSelector"], kserve_pod)
        ]
        assert admitted, f"{overlay_name}: the API does not admit KServe predictors"


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_api_service_receives_otlp_grpc_from_pods_labelled_for_ingest(name: str) -> None:
    """Port 4317 of the Service driftwarden-api reaches a container port that the process listens on (``api
    --otlp-grpc-listen`` or ``up``'s genai.grpc_listen), and the NetworkPolicy admits it from pods labelled
    driftwarden.io/ingest=true (applications, OpenTelemetry Collectors) only."""
    from driftwarden.collector.config import parse_host_port
    from driftwarden.collector.genai_config import parse_section

    docs = overlay(name)
    api = find(docs, "Service", "driftwarden-api")
    (grpc_port,) = [p for p in api["spec"]["ports"] if p["port"] == 4317]
    (workload,) = [w for w in workloads(docs) if _selects({"matchLabels": api["spec"]["selector"]}, pod_labels(w))]
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    target = ports[grpc_port["targetPort"]]
    args = container["args"]
    if "--otlp-grpc-listen" in args:
        listen = args[args.index("--otlp-grpc-listen") + 1]
    else:  # `up --config`: the genai section of the ConfigMap
        volumes = workload["spec"]["template"]["spec"]["volumes"]
        (mapped,) = [v["configMap"]["name"] for v in volumes if "configMap" in v]
        config = find(docs, "ConfigMap", mapped)["data"]["up.yaml"]
        listen = parse_section(yaml.safe_load(config)["genai"], "up.yaml").grpc_listen
    assert parse_host_port(listen) == ("0.0.0.0", target)
    rules = [
        rule
        for policy in _policies_for(docs, pod_labels(workload))
        for rule in policy["spec"].get("ingress", [])
        if grpc_port["targetPort"] in {p["port"] for p in rule["ports"]}
    ]
    peers = [peer for rule in rules for peer in rule["from"]]
    assert peers and all(peer["podSelector"] == {"matchLabels": {"driftwarden.io/ingest": "true"}} for peer in peers)
