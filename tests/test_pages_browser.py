"""The model owners' pages in a real browser (Debian's Chromium driven by Playwright).

The service (the hub app with the reports router) runs in-process under uvicorn on a free
loopback port, over the session's populated store. Each page must load without console
errors, show the drifted features, and make no request to any origin but the service's own.
A screenshot of each page goes to ``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import uvicorn

from driftwarden.auth import TokenConfig
from driftwarden.collector.hub_app import close_ingest, create_app
from driftwarden.detectors.api import ApiSettings, create_router
from tests.api_data import CURRENT, REFERENCE, populated_store

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TOKEN = "browser-token-0123456789abcdef"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed (scripts/install-test-deps.sh)"
    ),
]


@pytest.fixture(scope="module")
def service(engine_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Base URL of the service, served by uvicorn in a thread on a free loopback port."""
    client, _, _ = populated_store(engine_dir)
    app = create_app(client)
    settings = ApiSettings(
        tokens=[TokenConfig(name="browser", token=TOKEN)],
        report_cache_dir=str(tmp_path_factory.mktemp("browser-reports")),
        report_sample_size=500,
    )
    app.include_router(create_router(settings))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()
    close_ingest(app)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


class Visit:
    """A page opened with the token header, recording every request and console error."""

    def __init__(self, browser, base: str, *, with_token: bool = True) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"} if with_token else {}
        self.context = browser.new_context(extra_http_headers=headers, viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.base = base

    def open(self, path: str, *, wait: str = "load"):
        return self.page.goto(self.base + path, wait_until=wait)

    def foreign(self) -> list[str]:
        """Requests to any origin other than the service (data: URLs stay inside the page)."""
        own = urlsplit(self.base).netloc
        return [u for u in self.requests if not u.startswith("data:") and urlsplit(u).netloc != own]

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser, service):
    opened: list[Visit] = []

    def make(**kwargs) -> Visit:
        opened.append(Visit(browser, service, **kwargs))
        return opened[-1]

    yield make
    for v in opened:
        v.close()


def test_overview_page_shows_each_model_version_with_its_status(visit):
    v = visit()
    response = v.open("/")
    assert response.status == 200
    rows = v.page.locator("table.overview tbody tr")
    assert rows.count() == 3
    assert "drift" in rows.first.inner_text()
    assert v.page.get_by_role("link", name="scooters").count() == 1
    v.screenshot("overview")
    assert v.errors == []
    assert v.foreign() == []


def test_model_page_shows_the_drifted_features_first_with_sparklines(visit):
    v = visit()
    response = v.open("/models/bikes?" + urlencode({"window": "2011-02-03..2011-02-10"}))
    assert response.status == 200
    drifted = v.page.locator("table.drift tr.drifted")
    names = [drifted.nth(i).get_attribute("data-feature") for i in range(drifted.count())]
    assert {"temp", "atemp", "hum"} <= set(names)
    features = v.page.locator("table.drift tbody tr").first.get_attribute("data-feature")
    assert features in names  # the first row is a drifted one
    assert v.page.locator("svg.spark").count() >= 8
    assert v.page.locator("h2", has_text="Latency and errors").count() == 1
    v.screenshot("model-bikes")
    assert v.errors == []
    assert v.foreign() == []


def test_report_page_renders_evidently_from_the_service_alone(visit):
    v = visit()
    query = urlencode({"reference": REFERENCE, "current": CURRENT})
    response = v.open(f"/models/bikes/report?{query}", wait="networkidle")
    assert response.status == 200
    assert v.page.locator("table.provenance").inner_text().count("input hash") == 1
    frame = v.page.frame_locator("iframe.report")
    frame.locator("#provenance").wait_for(timeout=60_000)
    # Evidently's bundle drew the dashboard: it names the drifted columns in its widgets.
    frame.get_by_text("temp").first.wait_for(timeout=60_000)
    v.page.wait_for_timeout(500)
    v.screenshot("report-bikes")
    assert v.errors == []
    assert v.foreign() == []
    assert any("/models/bikes/report.html" in u for u in v.requests)


def test_without_a_token_the_browser_gets_the_login_form_and_can_sign_in(visit):
    v = visit(with_token=False)
    response = v.open("/models/bikes")
    assert response.status == 401
    v.page.fill("#token", TOKEN)
    v.page.click("button[type=submit]")
    v.page.wait_for_url("**/models/bikes")
    assert v.page.locator("h1").inner_text() == "bikes"
    assert v.page.locator("table.drift tr.drifted").count() > 0
    v.screenshot("login-then-model")
    v.page.click("form.logout button")
    v.page.wait_for_url("**/login")
    assert v.open("/models/bikes").status == 401  # the cookie is gone
    assert v.foreign() == []
    assert all("401" in e for e in v.errors)  # the only console error allowed: the first 401 load


def test_the_foreign_request_check_catches_a_request_to_another_host(visit):
    # The control for the assertions above: a page that reaches out is caught.
    v = visit()
    v.open("/static/driftwarden.css")
    v.page.set_content('<img src="http://192.0.2.1/pixel.png">')
    v.page.wait_for_timeout(300)
    assert v.foreign() == ["http://192.0.2.1/pixel.png"]
