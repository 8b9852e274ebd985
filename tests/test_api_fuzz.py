"""The JSON API fuzzed from its own OpenAPI document with schemathesis.

Every operation under ``/api/v1`` gets generated requests, valid and invalid (schemathesis'
positive and negative modes), against the hub's app over the populated store of the API tests.
The checks are schemathesis' own: no 5xx, every status, content type, header and body as the
document says, invalid input refused, valid input accepted, and the token enforced (the same
request without it must be refused). Bounded and reproducible: a fixed seed, derandomized
generation and a fixed number of examples per operation.

Beside the fuzzing, every route of the whole app (ingest included, when an ingest token is
set) and every page is asked without a token: only the documented public ones answer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from driftwarden.auth import TokenConfig
from driftwarden.collector.hub_app import close_ingest, create_app
from driftwarden.detectors.api import ApiSettings, create_router
from tests.api_data import CURRENT, EMPTY, REFERENCE, populated_store

TOKEN = "fuzz-token-0123456789abcdef"
INGEST_TOKEN = "fuzz-ingest-0123456789abcdef"
EXAMPLES_PER_OPERATION = 15
SEED = 20261202
# Routes that answer without a token, and why: liveness probes, the API's own description,
# the login form and its stylesheet.
PUBLIC = {"/healthz", "/openapi.json", "/login", "/logout", "/static/{name}"}

pytestmark = pytest.mark.timeout(300)


def _app(populated, cache_dir: Path):
    client, _, _ = populated
    app = create_app(client, ingest_token=INGEST_TOKEN)
    settings = ApiSettings(
        tokens=[TokenConfig(name="fuzz", token=TOKEN)], report_cache_dir=str(cache_dir), report_sample_size=100
    )
    app.include_router(create_router(settings))
    return app


@pytest.fixture(scope="module")
def app(engine_dir, tmp_path_factory):
    app = _app(populated_store(engine_dir), tmp_path_factory.mktemp("fuzz-reports"))
    yield app
    close_ingest(app)


@pytest.fixture(scope="module")
def http(app):
    return TestClient(app, raise_server_exceptions=False)  # a bug is a 500 that the checks report


def _described():
    """The app without a store: describing it needs none, so its document is read at collection."""
    app = create_app(None, ingest_token=INGEST_TOKEN)
    app.include_router(create_router(ApiSettings()))
    close_ingest(app)  # its document needs no ingest running
    return app


CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {
            "max-examples": EXAMPLES_PER_OPERATION,
            "deterministic": True,
            "database": "none",
            "with-security-parameters": False,  # every case carries the token; its absence is probed below
        },
        # Half the cases name models and windows that hold data, so the fuzzing reaches the queries.
        "dictionaries": {
            "models": {"values": ["bikes", "scooters", "org/model-name:tag"]},
            "windows": {"values": [REFERENCE, CURRENT, EMPTY, "2011-02-01..2011-03-01", "2011-02-10..2011-02-03"]},
        },
        "parameters": {
            "path.model": {"dictionary": "models", "probability": 0.5},
            "query.window": {"dictionary": "windows", "probability": 0.5},
        },
    }
)
# schemathesis' fixture-loaded schemas do not work with pytest 9 (a private attribute it reads is gone):
# the schema is the document of an app without a store, and each case is sent to the real app.
schema = schemathesis.openapi.from_dict(_described().openapi(), config=CONFIG).include(path_regex="^/api/v1/")


def _send(http: TestClient, request: dict):
    """Send schemathesis' request (requests-style keyword arguments) through the app's test client.

    schemathesis' own sender walks urllib3's connection pools, which urllib3-future (installed with
    grafana-client's niquests, over urllib3) lays out differently; httpx does not use urllib3.
    """
    body = {"json": request["json"]} if "json" in request else {"content": request.get("data")}
    return http.request(
        request["method"],
        request["url"],
        params=request.get("params"),
        headers=request.get("headers"),
        cookies=request.get("cookies") or None,
        **body,
    )


@schema.parametrize()
def test_the_json_api_answers_as_its_openapi_document_says(case, http):
    request = case.as_transport_kwargs(base_url="http://testserver", headers={"Authorization": f"Bearer {TOKEN}"})
    response = _send(http, request)
    # schemathesis' checks, but two: its auth probe re-sends through its own sender (the token is checked
    # below), and a window must be real instants with START before END, which a JSON schema cannot state
    # (the 422 says so), so not every schema-valid window is accepted.
    case.validate_response(
        response, excluded_checks=[ignored_auth, positive_data_acceptance], headers=request["headers"]
    )
    if request["method"].upper() != case.operation.method.upper():
        return  # another method: routing answers 405 before any route runs
    for authorization in (None, "Bearer not-the-token-0123456789", f"Basic {TOKEN}"):
        headers = {k: v for k, v in request["headers"].items() if k.lower() != "authorization"}
        if authorization:
            headers["Authorization"] = authorization
        refused = _send(http, {**request, "headers": headers})
        if _unrouted(response) and _unrouted(refused):
            continue  # a path no route matches (e.g. a control character in it): routing answers 404 first
        assert refused.status_code == 401, (request["method"], request["url"], authorization, refused.text[:200])


def _unrouted(response) -> bool:
    return response.status_code == 404 and response.text == '{"detail":"Not Found"}'


def test_the_fuzzed_document_is_the_served_one(app):
    assert TestClient(app).get("/openapi.json").json() == _described().openapi()


def test_the_fuzzing_covers_every_operation_of_the_json_api(app):
    documented = {(op.method.upper(), op.path) for op in (r.ok() for r in schema.get_all_operations())}
    routed = {
        (method, route.path.replace(":path", ""))
        for route in app.routes
        if isinstance(route, APIRoute) and route.path.startswith("/api/v1/")
        for method in route.methods
    }
    assert routed and routed == documented


def test_no_route_answers_without_a_token_except_the_public_ones(app):
    http = TestClient(app)
    answered = []
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.path in PUBLIC:
            continue
        path = route.path.replace("{model:path}", "bikes").replace("{name}", "x")
        for method in route.methods:
            for headers in ({}, {"Authorization": "Bearer not-a-valid-token-at-all"}):
                response = http.request(method, path, headers=headers)
                if response.status_code != 401:
                    answered.append(f"{method} {path} {headers}: {response.status_code}")
    assert not answered, "answered without a valid token:\n" + "\n".join(answered)


def test_a_misspelt_query_parameter_is_refused_not_ignored(http):
    response = http.get(
        "/api/v1/models/bikes/drift", params={"windwo": CURRENT}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 422
    assert response.json()["detail"] == "unknown query parameter(s) 'windwo'; this route takes: window"
