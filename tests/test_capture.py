"""In-process capture (``from driftwarden.collector import capture``) through the writer into the real store."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from driftwarden.collector import capture
from driftwarden.collector.writer import open_writer
from tests.hub_process import ROOT


@pytest.fixture
def captured(store, store_url):
    """Captures go to the test's store; returns a function that flushes and reads them back."""
    capture.configure(model="bikes", writer=open_writer(model="bikes", store=store_url, flush_interval_ms=20))

    def rows(sql: str) -> list[tuple]:
        capture.shutdown()
        return store.query(sql).result_rows

    yield rows
    capture.shutdown()


def test_a_with_block_records_features_prediction_and_latency(captured):
    with capture(features={"temp": 0.24, "season": "winter", "holiday": False, "missing": None}) as ev:
        ev.features["hum"] = 0.81
        ev.prediction = 42.0
        ev.outputs = {"p_low": 0.25, "p_high": 0.75}
        event_id = ev.event_id
    rows = captured(
        "SELECT toString(event_id), model, protocol, num_names, num_values, cat_names, cat_values, prediction, "
        "output_names, output_values, latency_ms > 0, error_class FROM inferences FINAL"
    )
    assert rows == [
        (
            str(event_id),
            "bikes",
            "python",
            ["temp", "holiday", "hum"],
            [0.24, 0.0, 0.81],
            ["season"],
            ["winter"],
            42.0,
            ["p_low", "p_high"],
            [0.25, 0.75],
            True,
            "",
        )
    ]


def test_a_decorated_function_records_each_call_and_its_return_value(captured):
    @capture(model="rides")
    def predict(row: dict) -> str:
        return "busy" if row["temp"] > 0.5 else "quiet"

    assert [predict({"temp": t}) for t in (0.2, 0.7, 0.9)] == ["quiet", "busy", "busy"]
    assert predict.__name__ == "predict"
    rows = captured("SELECT model, num_values[1], prediction_label FROM inferences FINAL ORDER BY num_values[1]")
    assert rows == [("rides", 0.2, "quiet"), ("rides", 0.7, "busy"), ("rides", 0.9, "busy")]


def test_features_of_a_decorated_call_can_come_from_a_function_of_its_arguments(captured):
    @capture(features=lambda temp, hour: {"temp": temp, "hour": hour})
    async def predict(temp: float, hour: int) -> float:
        await asyncio.sleep(0.001)
        return temp * 100

    assert asyncio.run(predict(0.3, 8)) == pytest.approx(30.0)
    rows = captured("SELECT num_names, num_values, prediction, latency_ms >= 1 FROM inferences FINAL")
    assert rows == [(["temp", "hour"], [0.3, 8.0], pytest.approx(30.0), True)]


def test_an_exception_is_recorded_as_error_class_and_still_raised(captured):
    with pytest.raises(ZeroDivisionError):
        with capture(features={"x": 1}):
            _ = 1 / 0

    @capture()
    def broken(row: dict) -> float:
        raise KeyError("temp")

    with pytest.raises(KeyError):
        broken({"x": 2})
    rows = captured("SELECT num_values[1], error_class FROM inferences FINAL ORDER BY num_values[1]")
    assert rows == [(1.0, "ZeroDivisionError"), (2.0, "KeyError")]


def test_the_event_of_a_block_can_set_any_column_and_keeps_its_id(captured):
    with capture(features={"temp": 0.5, "season": "summer"}) as ev:
        first_id = ev.event_id
        ev.event.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        ev.prediction = 7.0
    rows = captured("SELECT toString(event_id), trace_id, num_names, cat_values, prediction FROM inferences FINAL")
    assert rows == [(str(first_id), "4bf92f3577b34da6a3ce929d0e0e4736", ["temp"], ["summer"], 7.0)]


def test_features_of_one_name_layout_are_split_by_the_types_of_each_call(captured):
    import numpy as np

    layouts = [
        {"a": 1.5, "b": "x", "c": None},  # the split of this layout is cached...
        {"a": 2.5, "b": "y", "c": None},  # ...and reused here
        {"a": "high", "b": 3, "c": 4.0},  # same names, other types: its own split
        {"a": np.float64(5.0), "b": "z", "c": True},  # a type outside the cache: the general path
    ]
    for i, features in enumerate(layouts):
        with capture(features=features) as ev:
            ev.prediction = float(i)
    rows = captured("SELECT num_names, num_values, cat_names, cat_values FROM inferences FINAL ORDER BY prediction")
    assert rows == [
        (["a"], [1.5], ["b"], ["x"]),
        (["a"], [2.5], ["b"], ["y"]),
        (["b", "c"], [3.0, 4.0], ["a"], ["high"]),
        (["a", "c"], [5.0, 1.0], ["b"], ["z"]),
    ]


def test_captured_events_become_the_same_arrow_rows_as_full_events():
    """capture()'s light events (17 columns filled, the other 41 and the id's packing taken from their class by
    ``to_table``) give the table the full ``Event`` of the same capture gives, alone and in a mixed batch."""
    from driftwarden.collector.arrow import to_table
    from driftwarden.collector.event import Event

    spec = capture(model="bikes", model_version="v2", tenant="acme", endpoint="/predict")
    light, full = [], []
    for i in range(3):
        block = spec._open({"temp": 0.1 * i, "season": "winter", "busy": i % 2 == 0})
        block.prediction = float(i)
        block.outputs = {"p": 0.5}
        event = block._finish(None)
        assert type(event) is not Event, "the light event of the fast path"
        light.append(event)
        full.append(block._fill(block.event, None, event.latency_ms))
    assert to_table(light).equals(to_table(full))
    assert to_table([light[0], full[1], light[2]]).equals(to_table(full))
    assert to_table(light).column("event_id").to_pylist() == [e.event_id.bytes for e in full]


def test_a_capture_without_a_model_name_says_how_to_give_one():
    capture.shutdown()
    with pytest.raises(ValueError, match=r"capture\(model=...\) or capture.configure\(model=...\)"):
        with capture():
            pass


def test_a_model_name_the_store_refuses_is_refused_where_it_is_given():
    """The names a hub refuses (``driftwarden.names``) fail at once with the reason, not later at the hub."""
    with pytest.raises(ValueError, match=r"model name 'a/../b' is refused: .*'\.\.' between slashes"):
        capture(model="a/../b")
    with pytest.raises(ValueError, match=r"model name ' ' is refused: a model name must not be empty"):
        capture.configure(model=" ", writer=object())
    capture(model="org/bikes:v2")  # a valid name


def test_importing_collector_does_not_import_the_capture_machinery():
    code = (
        "import sys, collector\n"
        "assert 'driftwarden.collector.capture' not in sys.modules and 'pyarrow' not in sys.modules\n"
        "from collector import capture\n"
        "assert callable(capture) and callable(capture.configure)\n"
        "assert 'pyarrow' not in sys.modules, 'the writer is imported on first use'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr
