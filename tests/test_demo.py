"""``driftwarden demo`` end to end: real data, MLServer, the collector, the detectors, the report pages.

One demo run (module fixture) at the highest speed, in a network namespace with
only loopback when this machine allows one (``unshare -n``; we are root in CI),
into a store of its own; the tests read that store afterwards from a subprocess
and open its pages in Chromium through ``driftwarden up``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from driftwarden.demo.model import load_hours
from tests.store_probe import query

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "demo-test-token-0123456789abcdef"
TEMPERATURE = {"temp", "atemp"}


@dataclass
class DemoRun:
    store: str
    done: subprocess.CompletedProcess
    isolated: bool  # ran in a network namespace with only loopback
    links: str  # `ip -o link` inside that namespace


def _netns_available() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    base = tmp_path_factory.mktemp("demo")
    store = f"chdb://{base}/store"
    command = [
        sys.executable,
        "-m",
        "driftwarden",
        "demo",
        "--store",
        store,
        "--speed",
        "1e7",
        "--listen",
        "127.0.0.1:0",
    ]
    links = base / "links.txt"
    isolated = _netns_available()
    if isolated:
        script = 'ip link set lo up && ip -o link show > "$0" && exec "$@"'
        command = ["unshare", "-n", "sh", "-c", script, str(links), *command]
    env = {k: v for k, v in os.environ.items() if k != "DRIFTWARDEN_API_TOKENS"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    assert done.returncode == 0, f"demo failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return DemoRun(store, done, isolated, links.read_text() if isolated else "")


@pytest.mark.timeout(300)
def test_demo_runs_with_only_loopback_and_a_real_mlserver(demo: DemoRun) -> None:
    if not demo.isolated:
        pytest.skip("`unshare -n` is not permitted on this machine (needs root or user namespaces)")
    names = [line.split(":")[1].strip() for line in demo.links.splitlines() if line.strip()]
    assert names == ["lo"], f"the namespace had other interfaces: {demo.links}"
    assert "MLServer 1.7.1 ready" in demo.done.stdout, demo.done.stdout[-2000:]
    assert "replay finished" in demo.done.stdout


@pytest.mark.timeout(300)
def test_demo_stores_an_event_and_its_ground_truth_for_every_replayed_hour(demo: DemoRun) -> None:
    # every hour once, and the noon hour a second time: the client's daily retry (driftwarden/demo/replay.py)
    expected = sorted(
        ts.strftime("%Y-%m-%d %H:%M:%S") for ts in load_hours()["ts"] for _ in range(2 if ts.hour == 12 else 1)
    )
    rows = query(
        demo.store,
        {
            "ts": "SELECT toString(toDateTime(ts)) FROM inferences FINAL WHERE model = 'bikes' AND NOT is_replay "
            "ORDER BY ts",
            "labelled": "SELECT count() FROM inferences AS i FINAL INNER JOIN (SELECT event_id, value FROM "
            "ground_truth FINAL WHERE model = 'bikes') AS g ON i.event_id = g.event_id WHERE i.model = 'bikes'",
        },
    )
    assert [r[0] for r in rows["ts"]] == expected
    assert rows["labelled"] == [[len(load_hours())]]  # a retry has no label of its own


@pytest.mark.timeout(300)
def test_demo_checks_reproducibility_and_estimates_performance_and_says_what_it_found(demo: DemoRun) -> None:
    rows = query(
        demo.store,
        {
            "repro": "SELECT kind, count(), sum(checked), sum(mismatches) FROM reproducibility_results FINAL "
            "WHERE model = 'bikes' GROUP BY kind ORDER BY kind",
            "replays": "SELECT count() FROM inferences FINAL WHERE model = 'bikes' AND is_replay",
            "estimated": "SELECT metric, count(), countIf(estimated IS NOT NULL), countIf(realized IS NOT NULL) "
            "FROM estimated_performance_results FINAL WHERE model = 'bikes' GROUP BY metric ORDER BY metric",
        },
    )
    kinds = {kind: (windows, checked, mismatches) for kind, windows, checked, mismatches in rows["repro"]}
    assert set(kinds) == {"consistency", "replay"}
    consistency, replay = kinds["consistency"], kinds["replay"]
    assert consistency[1] >= 50 and consistency[2] == 0  # one retry a day for two months, answered alike
    assert replay[0] >= 8 and replay[1] >= 8 * 12 and replay[2] == 0  # the model is deterministic
    assert rows["replays"][0][0] == replay[1]  # replays are stored as replays, not as traffic
    estimated = {metric: counts for metric, *counts in rows["estimated"]}
    assert set(estimated) == {"mae", "rmse"} and estimated["mae"][1] >= 4 and estimated["mae"][2] >= 4
    out = demo.done.stdout
    assert "reproducibility (consistency): 100.0% of" in out and "reproducibility (replay): 100.0% of" in out
    assert "MAE estimated without labels (DLE) for the week from" in out


@pytest.mark.timeout(300)
def test_demo_flags_temperature_in_february_and_not_in_the_last_weeks_of_january(demo: DemoRun) -> None:
    rows = query(
        demo.store,
        {
            "results": "SELECT toString(toDate(current_start)), feature, drifted FROM drift_results FINAL "
            "WHERE model = 'bikes' AND target = 'feature' ORDER BY current_start, feature"
        },
    )["results"]
    drifted = {(start, feature) for start, feature, flag in rows if flag}
    analysed = {start for start, _, _ in rows}
    # Weekly windows are aligned to the Unix epoch (Thursdays): 20-27 Jan is the last week inside January,
    # 27 Jan - 3 Feb the one that ends it.
    for last_january in ("2011-01-20", "2011-01-27"):
        assert last_january in analysed
        assert not {f for s, f in drifted if s == last_january} & TEMPERATURE, f"drift flagged in {last_january}"
    february = {f for s, f in drifted if s >= "2011-02-01"}
    assert TEMPERATURE <= february, f"February drift: {sorted(drifted)}"
    assert "Drift detected in the week 17 Feb – 24 Feb 2011: temp" in demo.done.stdout


@pytest.mark.timeout(300)
def test_demo_mae_over_february_exceeds_january(demo: DemoRun) -> None:
    rows = query(
        demo.store,
        {
            "by_month": "SELECT toMonth(i.ts), avg(abs(i.prediction - g.value)) FROM inferences AS i FINAL "
            "INNER JOIN (SELECT event_id, value FROM ground_truth FINAL WHERE model = 'bikes') AS g "
            "ON i.event_id = g.event_id WHERE i.model = 'bikes' GROUP BY 1 ORDER BY 1",
            "detector": "SELECT toString(toDate(current_start)), value FROM performance_results FINAL "
            "WHERE model = 'bikes' AND metric = 'mae' ORDER BY current_start",
        },
    )
    (jan, mae_jan), (feb, mae_feb) = rows["by_month"]
    assert (jan, feb) == (1, 2)
    assert mae_feb > mae_jan
    weekly = dict(rows["detector"])
    inside_january = [v for s, v in weekly.items() if s < "2011-01-27"]
    inside_february = [v for s, v in weekly.items() if s >= "2011-02-03"]
    assert inside_january and inside_february
    assert min(inside_february) > max(inside_january)


@pytest.mark.timeout(300)
def test_february_report_page_of_the_demo_store_renders_in_chromium(demo: DemoRun, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    config = tmp_path / "api.yaml"
    config.write_text(
        "models:\n  - name: bikes\n    features: {numeric: [temp]}\napi:\n  listen: 127.0.0.1:0\n"
        f"  report_cache_dir: {tmp_path / 'reports'}\n",
        encoding="utf-8",
    )
    env = {**os.environ, "DRIFTWARDEN_API_TOKENS": f"tester:{TOKEN}"}
    server = subprocess.Popen(
        [sys.executable, "-m", "driftwarden", "up", "--config", str(config), "--store", demo.store],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        api = _api_url(server)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {TOKEN}"})
            page = context.new_page()
            elsewhere: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(api) else elsewhere.append(r.url))
            answer = page.goto(f"{api}/models/bikes?window=2011-02-17..2011-02-24")
            assert answer is not None and answer.status == 200
            text = page.inner_text("body")
            assert "temp" in text and "atemp" in text
            answer = page.goto(
                f"{api}/models/bikes/report?reference=2011-01-01..2011-02-01&current=2011-02-01..2011-03-01",
                timeout=120_000,
            )
            assert answer is not None and answer.status == 200
            page.wait_for_load_state("networkidle", timeout=120_000)
            report_text = " ".join(frame.inner_text("body") for frame in page.frames)
            assert "temp" in report_text and "2011-02-01" in report_text
            assert not [u for u in elsewhere if not u.startswith(("data:", "blob:", "about:"))]
            browser.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


def _api_url(process: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"driftwarden up exited: {process.stderr.read() if process.stderr else ''}")
        found = re.search(r"api: (http://\S+?)/ ", line)
        if found:
            return found.group(1)
    raise AssertionError("driftwarden up did not print its API address")
