"""Health at a glance: a model's state is the worst of its signals, with the reason in words."""

from __future__ import annotations

import datetime as dt

from driftwarden.detectors.health import model_health, models_health, reference_name

UTC = dt.UTC
JAN = dt.datetime(2011, 1, 1, tzinfo=UTC)
FEB = dt.datetime(2011, 2, 1, tzinfo=UTC)
WEEK = dt.timedelta(days=7)


def _performance(store, model: str, start: dt.datetime, value: float, metric: str = "mae") -> None:
    store.insert(
        "performance_results",
        [[model, "v1", "regression", metric, value, start, start + WEEK, 100, 100]],
        column_names=[
            "model",
            "model_version",
            "task",
            "metric",
            "value",
            "current_start",
            "current_end",
            "predictions",
            "labelled",
        ],
    )


def _drift(store, model: str, start: dt.datetime, drifted: dict[str, tuple[bool, bool]]) -> None:
    rows = [
        [model, "v1", "feature", f, "numeric", "wasserstein", 1.0, 1.0, d, p, JAN, FEB, start, start + WEEK]
        for f, (d, p) in drifted.items()
    ]
    rows.append([model, "v1", "dataset", "", "", "share", 0.2, 0.5, False, False, JAN, FEB, start, start + WEEK])
    store.insert(
        "drift_results",
        rows,
        column_names=[
            "model",
            "model_version",
            "target",
            "feature",
            "feature_type",
            "method",
            "statistic",
            "threshold",
            "drifted",
            "persistent",
            "reference_start",
            "reference_end",
            "current_start",
            "current_end",
        ],
    )


def _latency(store, model: str, start: dt.datetime, attainment: float) -> None:
    store.insert(
        "latency_results",
        [[model, "v1", start, start + WEEK, 1000, attainment, 0.99]],
        column_names=[
            "model",
            "model_version",
            "current_start",
            "current_end",
            "requests",
            "slo_attainment",
            "slo_percentile",
        ],
    )


def test_bikes_after_the_demo_is_red_with_the_error_ratio_and_the_persistently_drifting_features(store):
    for week in range(4):  # January: the reference, MAE about 20
        _performance(store, "bikes", JAN + week * WEEK, 20.0)
        _drift(
            store, "bikes", JAN + week * WEEK, {"temp": (False, False), "atemp": (False, False), "hr": (False, False)}
        )
    late_feb = FEB + 2 * WEEK
    _performance(store, "bikes", FEB + WEEK, 60.0)
    _performance(store, "bikes", late_feb, 120.0)
    _drift(store, "bikes", FEB + WEEK, {"temp": (True, False), "atemp": (True, False), "hr": (False, False)})
    _drift(store, "bikes", late_feb, {"temp": (True, True), "atemp": (True, True), "hr": (False, False)})
    _latency(store, "bikes", late_feb, 1.0)

    health = model_health(store, "bikes")
    assert health.state == "bad"  # never green while a signal is red, although the dataset share is low
    assert health.reason == "MAE 6.0x January's; atemp and temp drifting for 2 windows"
    signals = {s.name: s for s in health.signals}
    mae = signals["realized MAE"]
    assert (mae.value, mae.reference, round(mae.ratio, 2), mae.state) == (120.0, 20.0, 6.0, "bad")
    assert signals["latency SLO"].state == "ok" and signals["feature drift"].state == "bad"
    assert health.as_dict()["signals"][0]["ratio"] is not None


def test_a_model_within_its_reference_is_green_a_warning_is_yellow_and_no_results_is_unknown(store):
    for week in range(4):
        _performance(store, "fine", JAN + week * WEEK, 0.9, "accuracy")
        _drift(store, "fine", JAN + week * WEEK, {"x": (False, False)})
    _performance(store, "fine", FEB, 0.89, "accuracy")
    _drift(store, "fine", FEB, {"x": (False, False)})
    _latency(store, "fine", FEB, 0.995)
    _performance(store, "slow", FEB, 0.9, "accuracy")
    _latency(store, "slow", FEB, 0.97)
    _drift(store, "once", FEB, {"x": (True, False), "y": (False, False)})

    health = models_health(store, ["fine", "slow", "once", "new"])
    assert (health["fine"].state, health["fine"].reason) == ("ok", "every signal within its reference")
    assert health["slow"].state == "bad" and health["slow"].reason == "latency SLO 97.00% under the objective 99.00%"
    assert (health["once"].state, health["once"].reason) == ("warn", "x drifted in the latest window")
    assert (health["new"].state, health["new"].reason) == ("unknown", "no detector results yet")
    # a token limited to other models sees nothing of these
    scoped = models_health(store, ["slow"], where="model IN {allowed:Array(String)}", params={"allowed": ["fine"]})
    assert scoped["slow"].state == "unknown"


def test_a_calendar_month_reference_is_named_by_its_month():
    assert reference_name(JAN, FEB) == "January's"
    assert reference_name(JAN, JAN + WEEK) == "the reference's"


def test_the_models_list_and_the_top_of_the_model_page_show_the_state_and_the_reason(store, make_app):
    from fastapi.testclient import TestClient

    from driftwarden.auth import TokenConfig
    from driftwarden.detectors.api import ApiSettings, create_router
    from tests.inference_rows import event, insert_events

    insert_events(store, [event("bikes", FEB + 2 * WEEK, prediction=1.0)])
    for week in range(4):
        _performance(store, "bikes", JAN + week * WEEK, 20.0)
    _performance(store, "bikes", FEB + 2 * WEEK, 120.0)
    _drift(store, "bikes", FEB + WEEK, {"temp": (True, False)})
    _drift(store, "bikes", FEB + 2 * WEEK, {"temp": (True, True)})
    app = make_app(store)
    app.include_router(create_router(ApiSettings(tokens=[TokenConfig(name="ops", token="t" * 24)])))
    http = TestClient(app)
    auth = {"Authorization": f"Bearer {'t' * 24}"}

    overview = http.get("/", headers=auth).text
    row = next(r for r in overview.split("<tr>") if "/models/bikes" in r)
    assert '<span class="badge bad">needs attention</span>' in row
    assert "MAE 6.0x January&#x27;s; temp drifting for 2 windows" in row
    page = http.get("/models/bikes", headers=auth).text
    top = page[page.index("<h1>bikes</h1>") : page.index("<h2>")]
    assert "needs attention" in top and "MAE 6.0x January" in top
    mae = next(r for r in top.split("<tr>") if "realized MAE" in r)
    assert all(cell in mae for cell in (">120<", ">20<", "6.00×", "bad ≥ 1.5x", "badge bad"))
