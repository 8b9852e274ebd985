"""Access to the reports API: bearer tokens, scopes enforced in SQL, the login cookie, token configuration."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from driftwarden.auth import COOKIE, Authenticator, Principal, TokenConfig, parse_tokens_env
from driftwarden.collector.hub_app import close_ingest, create_app
from driftwarden.detectors.api import ApiSettings, create_router, load_settings, queries
from driftwarden.errors import UserError
from tests.api_data import CURRENT, REFERENCE, populated_store

OPS = "ops-token-0123456789abcdef"
BIKES_ONLY = "bikes-team-0123456789abcdef"
GLOBEX = "globex-tenant-0123456789abc"
INJECTION = "injection-0123456789abcdef"

pytestmark = pytest.mark.timeout(240)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def http(engine_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    client, _, _ = populated_store(engine_dir)
    app = create_app(client)
    settings = ApiSettings(
        tokens=[
            TokenConfig(name="ops", token=OPS),
            TokenConfig(name="bikes-team", token=BIKES_ONLY, models=["bikes"]),
            TokenConfig(name="globex", token=GLOBEX, tenants=["globex"]),
            TokenConfig(name="quoted", token=INJECTION, models=["bikes' OR 1=1 OR model = '"]),
        ],
        report_cache_dir=str(tmp_path_factory.mktemp("auth-reports")),
        report_sample_size=200,
    )
    app.include_router(create_router(settings))
    yield TestClient(app)
    close_ingest(app)


JSON_ROUTES = [
    "/api/v1/models",
    "/api/v1/status",
    "/api/v1/models/bikes/drift",
    "/api/v1/models/bikes/drift/history",
    "/api/v1/models/bikes/performance",
    "/api/v1/models/bikes/latency",
    "/api/v1/models/bikes/reproducibility",
    "/api/v1/models/bikes/runs",
    f"/api/v1/models/bikes/report?reference={REFERENCE}&current={CURRENT}",
    f"/models/bikes/report.json?reference={REFERENCE}&current={CURRENT}",
]
PAGES = ["/", "/models", "/models/bikes", f"/models/bikes/report?reference={REFERENCE}&current={CURRENT}"]


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_every_json_route_is_401_without_a_token_or_with_a_wrong_one(http, path):
    for headers in ({}, _auth("not-a-token-at-all-000000"), {"Authorization": f"Basic {OPS}"}):
        response = http.get(path, headers=headers)
        assert response.status_code == 401, (path, headers.keys())
        assert response.headers["www-authenticate"] == "Bearer"
        assert "bikes" not in response.text  # says nothing about the data


@pytest.mark.parametrize("path", PAGES)
def test_every_page_is_401_with_the_login_form_without_a_token(http, path):
    response = http.get(path)
    assert response.status_code == 401
    assert 'name="token"' in response.text and "temp" not in response.text


def test_healthz_needs_no_token(http):
    assert http.get("/healthz").status_code == 200


def test_a_model_scoped_token_sees_only_its_models(http):
    models = http.get("/api/v1/models", headers=_auth(BIKES_ONLY)).json()
    assert {m["model"] for m in models} == {"bikes"}
    assert {s["model"] for s in http.get("/api/v1/status", headers=_auth(BIKES_ONLY)).json()} == {"bikes"}
    overview = http.get("/", headers=_auth(BIKES_ONLY)).text
    assert "/models/bikes" in overview and "scooters" not in overview


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/models/scooters/drift",
        "/api/v1/models/scooters/drift/history",
        "/api/v1/models/scooters/latency",
        "/api/v1/models/scooters/runs",
        "/models/scooters",
        f"/models/scooters/report?reference={REFERENCE}&current={CURRENT}",
        f"/models/scooters/report.html?reference={REFERENCE}&current={CURRENT}",
        f"/models/scooters/report.json?reference={REFERENCE}&current={CURRENT}",
        f"/api/v1/models/scooters/report?reference={REFERENCE}&current={CURRENT}",
    ],
)
def test_a_model_outside_the_scope_is_404_like_a_model_that_does_not_exist(http, path):
    hidden = http.get(path, headers=_auth(BIKES_ONLY))
    missing = http.get(path.replace("scooters", "no-such-model"), headers=_auth(BIKES_ONLY))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text.replace("scooters", "X") == missing.text.replace("no-such-model", "X")
    assert http.get(path, headers=_auth(OPS)).status_code == 200  # it exists: the scope hid it


def test_a_tenant_scoped_token_sees_the_models_that_served_the_tenant(http):
    models = http.get("/api/v1/models", headers=_auth(GLOBEX)).json()
    assert {m["model"] for m in models} == {"scooters"}
    assert http.get("/api/v1/models/bikes/drift", headers=_auth(GLOBEX)).status_code == 404
    assert http.get("/api/v1/models/scooters/drift", headers=_auth(GLOBEX)).json()["features"]


def test_a_scope_is_a_query_parameter_not_sql_text(http):
    # A model name built to break out of a string literal must match nothing, not everything.
    assert http.get("/api/v1/models", headers=_auth(INJECTION)).json() == []
    assert http.get("/api/v1/models/bikes/drift", headers=_auth(INJECTION)).status_code == 404


def test_scope_predicate_binds_models_and_tenants_as_parameters():
    sql, params = queries.scope(Principal("p", models=("a'b",), tenants=("t",)))
    assert "a'b" not in sql and params == {"allowed_models": ["a'b"], "allowed_tenants": ["t"]}
    assert queries.scope(Principal("all")) == ("1", {})


def test_login_form_sets_an_httponly_cookie_that_opens_the_pages(http):
    http.cookies.clear()
    wrong = http.post("/login", data={"token": "wrong-token-000000000000", "next": "/models/bikes"})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    response = http.post("/login", data={"token": OPS, "next": "/models/bikes"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/models/bikes"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = http.get("/models/bikes")
    assert page.status_code == 200 and "signed in as ops" in page.text
    http.post("/logout")
    assert http.get("/models/bikes").status_code == 401
    http.cookies.clear()


def test_login_never_redirects_to_another_host(http):
    response = http.post("/login", data={"token": OPS, "next": "//evil.example/x"}, follow_redirects=False)
    assert response.headers["location"] == "/"
    http.cookies.clear()


def test_tokens_are_never_logged(http, caplog):
    with caplog.at_level(logging.DEBUG):
        http.get("/api/v1/models", headers=_auth(OPS))
        http.get("/api/v1/models", headers=_auth("wrong-token-but-long-enough"))
        http.post("/login", data={"token": OPS})
    http.cookies.clear()
    assert OPS not in caplog.text and "wrong-token-but-long-enough" not in caplog.text


def test_tokens_from_the_environment_in_both_forms():
    plain = parse_tokens_env("ops:aaaaaaaaaaaaaaaa, team:bbbbbbbbbbbbbbbb:models=bikes|cars;tenants=acme")
    assert [(t.name, t.models, t.tenants) for t in plain] == [
        ("ops", None, None),
        ("team", ["bikes", "cars"], ["acme"]),
    ]
    listed = parse_tokens_env('[{"name": "ops", "token": "cccccccccccccccc", "tenants": ["x"]}]')
    assert listed[0].tenants == ["x"]
    principal = Authenticator(plain).authenticate("bbbbbbbbbbbbbbbb")
    assert principal == Principal("team", models=("bikes", "cars"), tenants=("acme",))


@pytest.mark.parametrize(
    ("text", "says", "secret"),
    [
        ("ops", "is not name:token[:scope]", None),
        ("ops:tooshort", "at least 16 characters", "tooshort"),
        ("ops:dddddddddddddddd:owners=x", "scope 'owners=x' is not", "dddddddddddddddd"),
        ('[{"name": "x", "token": "has space in it 0123"}]', "cannot contain spaces", "has space"),
        ("[{", "not valid JSON", None),
    ],
)
def test_a_bad_token_entry_is_named_without_revealing_the_secret(text, says, secret):
    with pytest.raises(ValueError) as info:
        parse_tokens_env(text)
    assert says in str(info.value)
    if secret:
        assert secret not in str(info.value)


def test_settings_read_the_api_section_and_add_environment_tokens(tmp_path):
    config = tmp_path / "driftwarden.yaml"
    config.write_text("api:\n  report_sample_size: 1234\n  tokens:\n    - {name: a, token: eeeeeeeeeeeeeeee}\n")
    settings = load_settings(config, env={"DRIFTWARDEN_API_TOKENS": "b:ffffffffffffffff"})
    assert settings.report_sample_size == 1234 and [t.name for t in settings.tokens] == ["a", "b"]
    config.write_text("api:\n  report_sample_size: 3\n")
    with pytest.raises(UserError, match="api.report_sample_size: value 3 is not accepted"):
        load_settings(config, env={})


def test_duplicate_token_names_are_refused():
    with pytest.raises(ValueError, match="repeated: a"):
        Authenticator([TokenConfig(name="a", token="g" * 16), TokenConfig(name="a", token="h" * 16)])


def test_without_any_configured_token_everything_is_closed_and_says_why(engine_dir, tmp_path, make_app):
    client, _, _ = populated_store(engine_dir)
    app = make_app(client)
    app.include_router(create_router(ApiSettings(report_cache_dir=str(tmp_path))))
    closed = TestClient(app)
    response = closed.get("/api/v1/models", headers=_auth(OPS))
    assert response.status_code == 401 and "no API tokens configured" in response.json()["detail"]
    assert closed.get("/", headers=_auth(OPS)).status_code == 401
    assert closed.get("/healthz").status_code == 200


def test_bearer_guard_protects_ingest_with_its_own_token(engine_dir, make_app):
    from fastapi import Depends

    from driftwarden.auth import bearer_guard
    from driftwarden.collector.ingest import router as ingest_router

    client, _, _ = populated_store(engine_dir)
    app = make_app(client)  # the ingest router is already in; mount it guarded under a prefix to check
    app.include_router(
        ingest_router, prefix="/guarded", dependencies=[Depends(bearer_guard("ingest-0123456789abcdef"))]
    )
    http = TestClient(app)
    body = b'{"event_id": "00000000-0000-0000-0000-000000000001", "model": "ingest-guard-check", "value": 1.0}\n'
    headers = {"Content-Type": "application/x-ndjson"}
    assert http.post("/guarded/v1/ground-truth", content=body, headers=headers).status_code == 401
    assert http.post("/guarded/v1/ground-truth", content=body, headers={**headers, **_auth(OPS)}).status_code == 401
    accepted = http.post(
        "/guarded/v1/ground-truth", content=body, headers={**headers, **_auth("ingest-0123456789abcdef")}
    )
    assert accepted.status_code == 200, accepted.text
