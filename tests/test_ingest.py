"""Batch ingest: ``driftwarden ingest`` of Bikeshare files, and the hub's ingest endpoints."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import uuid
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from driftwarden.cli import main
from driftwarden.collector.arrow import to_ipc, to_table
from driftwarden.collector.event import Event
from tests.conftest import run_cli
from tests.hub_process import BodyLimitProxy, Hub, query_store

ARROW = {"content-type": "application/vnd.apache.arrow.stream"}


def _bikeshare() -> pa.Table:
    """Bikeshare 2011 hourly with an ISO-8601 time (from day-of-year and hour) and a row id."""
    (folder,) = importlib.util.find_spec("ISLP").submodule_search_locations
    table = pacsv.read_csv(Path(folder) / "data" / "Bikeshare.csv")
    start = dt.datetime(2011, 1, 1, tzinfo=dt.UTC)
    times = [
        (start + dt.timedelta(days=d - 1, hours=h)).isoformat()
        for d, h in zip(table.column("day").to_pylist(), table.column("hr").to_pylist(), strict=True)
    ]
    return table.append_column("when", pa.array(times)).append_column("row", pa.array(range(table.num_rows)))


@pytest.fixture(scope="module")
def bikes() -> pa.Table:
    return _bikeshare()


def _csv(table: pa.Table, path: Path) -> Path:
    pacsv.write_csv(table, path)
    return path


def _ingest(store_url: str, *args: str) -> int:
    return main(["ingest", "--store", store_url, "--model", "bikes", *args])


def test_a_csv_of_predictions_becomes_one_row_per_line_with_its_features(bikes, tmp_path, store, store_url):
    path = _csv(bikes.drop_columns(["row"]), tmp_path / "bikes.csv")
    assert _ingest(store_url, "--file", str(path), "--timestamp-column", "when", "--prediction-column", "bikers") == 0
    rows, protocols, first, last, total, temp, seasons = store.query(
        "SELECT count(), groupUniqArray(protocol), min(ts), max(ts), sum(prediction), "
        "avg(num_values[indexOf(num_names, 'temp')]), uniqExact(cat_values[indexOf(cat_names, 'mnth')]) "
        "FROM inferences FINAL WHERE model = 'bikes'"
    ).result_rows[0]
    assert rows == bikes.num_rows == 8645
    assert protocols == ["ingest"]
    assert (first.replace(tzinfo=None), last.replace(tzinfo=None)) == (
        dt.datetime(2011, 1, 1, 0),
        dt.datetime(2011, 12, 31, 23),
    )
    assert total == pc.sum(bikes.column("bikers")).as_py()
    assert temp == pytest.approx(pc.mean(bikes.column("temp")).as_py())
    assert seasons == 12
    names = store.query("SELECT num_names, cat_names FROM inferences LIMIT 1").result_rows[0]
    assert "bikers" not in names[0] and "when" not in names[0]
    assert names[1] == ["mnth", "weathersit"]


def test_re_ingesting_a_file_or_its_parquet_twin_does_not_count_twice(bikes, tmp_path, store, store_url):
    part = bikes.slice(0, 2000)
    csv = _csv(part, tmp_path / "part.csv")
    parquet = tmp_path / "part.parquet"
    pq.write_table(part, parquet)
    args = ("--timestamp-column", "when", "--prediction-column", "bikers", "--id-column", "row")
    assert _ingest(store_url, "--file", str(csv), *args) == 0
    assert _ingest(store_url, "--file", str(csv), *args) == 0
    assert _ingest(store_url, "--file", str(parquet), *args) == 0
    assert store.query("SELECT count(), uniqExact(event_id) FROM inferences FINAL").result_rows == [(2000, 2000)]
    # without an id column the ids hash each row, so the same file still lands once
    no_id = _csv(part.drop_columns(["row"]), tmp_path / "no-id.csv")
    for _ in range(2):
        assert (
            main(
                ["ingest", "--store", store_url, "--model", "other", "--file", str(no_id), "--timestamp-column", "when"]
            )
            == 0
        )
    assert store.query("SELECT count() FROM inferences FINAL WHERE model = 'other'").result_rows == [(2000,)]


def test_a_ground_truth_file_joins_its_predictions_by_event_id(bikes, tmp_path, store, store_url):
    predictions = _csv(bikes.drop_columns(["bikers"]), tmp_path / "predictions.csv")
    args = ("--timestamp-column", "when", "--prediction-column", "registered", "--id-column", "row")
    assert _ingest(store_url, "--file", str(predictions), *args) == 0
    labels = _csv(bikes.select(["row", "bikers", "when"]), tmp_path / "labels.csv")
    assert _ingest(store_url, "--file", str(labels), "--timestamp-column", "when", "--id-column", "row",
                   "--label-column", "bikers") == 0  # fmt: skip
    late = _csv(bikes.slice(0, 10).select(["row", "casual"]), tmp_path / "late.csv")  # no time: observed now
    assert main(["ingest", "--store", store_url, "--model", "casual", "--file", str(late), "--id-column", "row",
                 "--label-column", "casual"]) == 0  # fmt: skip
    assert store.query(
        "SELECT count(), max(ts) > now() - 600 FROM ground_truth WHERE model = 'casual'"
    ).result_rows == [(10, True)]
    joined, total = store.query(
        "SELECT count(), sum(g.value) FROM inferences AS i FINAL "
        "INNER JOIN ground_truth AS g FINAL ON i.event_id = g.event_id WHERE i.model = 'bikes'"
    ).result_rows[0]
    assert joined == 8645
    assert total == pc.sum(bikes.column("bikers")).as_py()
    assert store.query("SELECT count() FROM inferences FINAL").result_rows == [(8645,)], "labels add no predictions"


@pytest.mark.timeout(120)
def test_ingest_through_a_hub_reaches_the_store_the_hub_owns(bikes, tmp_path):
    predictions = _csv(bikes.slice(0, 3000).drop_columns(["bikers"]), tmp_path / "predictions.csv")
    labels = _csv(bikes.slice(0, 3000).select(["row", "bikers"]), tmp_path / "labels.csv")
    hub = Hub(tmp_path / "hub-store").start()
    try:
        first = run_cli("ingest", "--hub", hub.url, "--model", "bikes", "--file", str(predictions),
                        "--timestamp-column", "when", "--id-column", "row")  # fmt: skip
        assert first.returncode == 0, first.stderr
        assert "3,000 predictions of model bikes" in first.stdout
        second = run_cli("ingest", "--hub", hub.url, "--model", "bikes", "--file", str(labels), "--ground-truth",
                         "--timestamp-column", "row", "--id-column", "row", "--label-column", "bikers")  # fmt: skip
        assert second.returncode == 2 and "column 'row' holds int64 values, not times" in second.stderr
        labelled = _csv(bikes.slice(0, 3000).select(["row", "bikers", "when"]), tmp_path / "labelled.csv")
        third = run_cli("ingest", "--hub", hub.url, "--model", "bikes", "--file", str(labelled),
                        "--timestamp-column", "when", "--id-column", "row", "--label-column", "bikers")  # fmt: skip
        assert third.returncode == 0, third.stderr
    finally:
        hub.stop()
    rows = query_store(
        hub.store_url,
        "SELECT count(), countIf(g.value IS NOT NULL) FROM inferences AS i FINAL "
        "LEFT JOIN ground_truth AS g FINAL ON i.event_id = g.event_id",
    )
    assert rows == [[3000, 3000]]


def test_ingest_through_a_proxy_with_a_body_limit_sends_its_chunks_in_pieces_under_it(bikes, tmp_path):
    """A real nginx with ``client_max_body_size 64k`` before the hub refuses the 3,000-row chunks: they go again in
    pieces under the limit, predictions and labels alike, and every row arrives."""
    labelled = _csv(bikes.slice(0, 3000).select(["row", "bikers", "when", "temp", "hum"]), tmp_path / "labelled.csv")
    hub = Hub(tmp_path / "hub-store").start()
    proxy = BodyLimitProxy(hub.url, tmp_path / "proxy", "64k")
    try:
        proxy.start()
        result = run_cli("ingest", "--hub", proxy.url, "--model", "bikes", "--file", str(labelled),
                         "--timestamp-column", "when", "--id-column", "row", "--label-column", "bikers")  # fmt: skip
        assert result.returncode == 0, result.stderr
    finally:
        proxy.stop()
        hub.stop()
    statuses = proxy.statuses()
    assert statuses.count("413") >= 2 and statuses[-1] == "200", "each endpoint refused a chunk, then took pieces"
    rows = query_store(
        hub.store_url,
        "SELECT count(), countIf(g.value IS NOT NULL) FROM inferences AS i FINAL "
        "LEFT JOIN ground_truth AS g FINAL ON i.event_id = g.event_id",
    )
    assert rows == [[3000, 3000]]


def test_a_missing_column_exits_2_naming_it_and_listing_the_files_columns(bikes, tmp_path):
    path = _csv(bikes.slice(0, 10), tmp_path / "bikes.csv")
    result = run_cli("ingest", "--model", "bikes", "--file", str(path), "--timestamp-column", "time",
                     "--store", f"chdb://{tmp_path}/unused")  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "column 'time' (--timestamp-column) is not in bikes.csv" in result.stderr
    assert "its columns are: season, mnth, day, hr," in result.stderr


def test_bad_timestamps_and_unreadable_files_are_one_line_errors(bikes, tmp_path, store_url, capsys):
    bad = bikes.slice(0, 5).set_column(
        bikes.schema.get_field_index("when"), "when", pa.array(["2011-01-01T00:00"] * 4 + ["yesterday"])
    )
    path = _csv(bad, tmp_path / "bad.csv")
    assert _ingest(store_url, "--file", str(path), "--timestamp-column", "when") == 2
    assert "column 'when' row 5: 'yesterday' is not a time" in capsys.readouterr().err
    assert _ingest(store_url, "--file", str(path), "--timestamp-column", "temp") == 2
    assert "column 'temp' holds double values, not times" in capsys.readouterr().err
    assert main(["ingest", "--store", store_url, "--model", "bikes", "--file", str(path)]) == 2
    assert "--timestamp-column is required for predictions" in capsys.readouterr().err
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet")
    assert _ingest(store_url, "--file", str(garbage), "--timestamp-column", "when") == 2
    assert "cannot read it as Parquet" in capsys.readouterr().err
    assert _ingest(store_url, "--file", str(tmp_path / "none.csv"), "--timestamp-column", "when") == 2
    assert "no such file" in capsys.readouterr().err


# -- the hub's endpoints -------------------------------------------------------------------------


@pytest.fixture
def hub(store, make_app) -> TestClient:
    return TestClient(make_app(store))


def _count(store, table: str = "inferences") -> int:
    return store.query(f"SELECT count() FROM {table}").result_rows[0][0]


def _ipc(table: pa.Table) -> bytes:
    return to_ipc(table)


def test_the_hub_inserts_an_arrow_batch_from_a_writer(hub, store):
    events = [Event(model="hub", prediction=float(i)) for i in range(100)]
    response = hub.post("/v1/events", content=_ipc(to_table(events)), headers=ARROW)
    assert response.status_code == 200 and response.json() == {"inserted": 100}
    assert store.query("SELECT count(), sum(prediction) FROM inferences FINAL").result_rows == [(100, 4950.0)]
    assert hub.get("/healthz").json() == {"status": "ok"}


def test_the_hub_accepts_a_subset_of_columns_with_castable_types(hub, store):
    table = pa.table(
        {
            "event_id": pa.array([str(uuid.uuid4()) for _ in range(3)]).dictionary_encode(),
            "ts": pa.array([1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_002], pa.timestamp("ms")),
            "model": ["m", "m", "m"],
            "status": pa.array([200, 500, 200], pa.int64()),
        }
    )
    response = hub.post("/v1/events", content=_ipc(table), headers=ARROW)
    assert response.status_code == 200, response.text
    assert store.query("SELECT groupArray(status) FROM (SELECT status FROM inferences ORDER BY ts)").result_rows == [
        ([200, 500, 200],)
    ]


def _bad_batches() -> list[tuple[str, bytes, dict, int, str]]:
    good = to_table([Event(model="x")])
    return [
        ("json content type", b"{}", {"content-type": "application/json"}, 415, "content-type 'application/json'"),
        ("no content type", _ipc(good), {}, 415, "send one of: application/vnd.apache.arrow.stream"),
        ("empty body", b"", ARROW, 400, "the body is empty"),
        ("not arrow", b"\x00" * 64, ARROW, 400, "not a valid Arrow IPC stream"),
        ("truncated arrow", _ipc(good)[:-40], ARROW, 400, "not a valid Arrow IPC stream"),
        (
            "unknown column",
            _ipc(good.append_column("colour", pa.array(["red"]))),
            ARROW,
            422,
            "unknown column(s) colour",
        ),
        ("missing ts", _ipc(good.drop_columns(["ts"])), ARROW, 422, "missing required column(s) ts"),
        (
            "text where numbers go",
            _ipc(good.set_column(good.schema.get_field_index("latency_ms"), "latency_ms", pa.array(["fast"]))),
            ARROW,
            422,
            "column latency_ms has type string, expected double",
        ),
        (
            "not a uuid",
            _ipc(good.set_column(0, "event_id", pa.array(["row-1"]))),
            ARROW,
            422,
            "column event_id has 1 value(s) that are not UUIDs, e.g. 'row-1'",
        ),
        (
            "numbers as ids",
            _ipc(good.set_column(0, "event_id", pa.array([7]))),
            ARROW,
            422,
            "column event_id has type int64; send UUIDs as fixed_size_binary(16) or as UUID text",
        ),
        (
            "null model",
            _ipc(good.set_column(2, "model", pa.array([None], pa.string()))),
            ARROW,
            422,
            "model has 1 null",
        ),
    ]


@pytest.mark.parametrize("name,body,headers,status,message", _bad_batches(), ids=[b[0] for b in _bad_batches()])
def test_the_hub_refuses_a_bad_batch_with_a_clear_message_and_inserts_nothing(
    hub, store, name, body, headers, status, message
):
    response = hub.post("/v1/events", content=body, headers=headers)
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert _count(store) == 0


def test_the_hub_refuses_a_body_over_its_limit_with_413_and_inserts_nothing(hub, store, monkeypatch):
    """Declared (content-length) or streamed (chunked), events or ground truth: 413 naming the limit."""
    from driftwarden.collector import ingest

    monkeypatch.setattr(ingest, "MAX_BATCH_BYTES", 16384)
    events = [Event(model="m", event_id=uuid.UUID(int=i + 1), input_payload="x" * 100) for i in range(100)]
    body = _ipc(to_table(events))
    truth = "\n".join(json.dumps({"event_id": str(uuid.UUID(int=i + 1)), "model": "m", "value": i}) for i in range(400))
    for path, content, headers in (
        ("/v1/events", body, ARROW),
        ("/v1/events", iter([body[:30000], body[30000:]]), ARROW),  # no content-length: counted as it comes
        ("/v1/ground-truth", truth, {"content-type": "application/x-ndjson"}),
    ):
        response = hub.post(path, content=content, headers=headers)
        assert response.status_code == 413, response.text
        assert "larger than 16384 bytes" in response.json()["detail"]
    assert _count(store) == 0 and _count(store, "ground_truth") == 0
    assert hub.post("/v1/events", content=_ipc(to_table(events[:5])), headers=ARROW).status_code == 200


def test_the_hub_takes_ground_truth_as_json_lines_or_arrow(hub, store):
    ids = [str(uuid.uuid4()) for _ in range(3)]
    lines = "\n".join(
        [
            json.dumps({"event_id": ids[0], "model": "m", "ts": "2026-03-01T12:00:00Z", "label": "high"}),
            json.dumps({"event_id": ids[1], "model": "m", "ts": 1772366400, "value": 4.5}),
        ]
    )
    response = hub.post("/v1/ground-truth", content=lines, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 200, response.text
    arrow = pa.table({"event_id": [ids[2]], "model": ["m"], "value": [1.0]})
    assert hub.post("/v1/ground-truth", content=_ipc(arrow), headers=ARROW).status_code == 200
    rows = store.query("SELECT toString(event_id), label, value FROM ground_truth FINAL ORDER BY value").result_rows
    assert sorted(rows, key=str) == sorted([(ids[0], "high", None), (ids[1], "", 4.5), (ids[2], "", 1.0)], key=str)


@pytest.mark.parametrize(
    "body,status,message",
    [
        ('{"event_id": "x", "model": "m", "label": "a"}', 422, "not UUIDs"),
        (f'{{"event_id": "{uuid.UUID(int=1)}", "model": "m"}}', 422, "needs a label or a value"),
        (f'{{"event_id": "{uuid.UUID(int=1)}", "model": "m", "value": 1, "ts": "soon"}}', 422, "'soon' is not an ISO"),
        (f'{{"event_id": "{uuid.UUID(int=1)}", "model": "m", "value": "high"}}', 422, "field value must be double"),
        ("{not json", 400, "line 1 is not valid JSON"),
    ],
)
def test_the_hub_refuses_bad_ground_truth_and_inserts_nothing(hub, store, body, status, message):
    response = hub.post("/v1/ground-truth", content=body, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert _count(store, "ground_truth") == 0


@pytest.mark.timeout(120)
def test_a_hub_with_an_ingest_token_refuses_anonymous_batches_and_takes_its_collectors(tmp_path, monkeypatch):
    from driftwarden.collector.writer import open_writer

    monkeypatch.setenv("DRIFTWARDEN_INGEST_TOKEN", "ingest-s3cret-token")
    hub = Hub(tmp_path / "hub-store").start()  # inherits the token from the environment
    try:
        body = _ipc(to_table([Event(model="anonymous", prediction=1.0)]))
        for path in ("/v1/events", "/v1/ground-truth"):
            refused = httpx.post(hub.url + path, content=body, headers=ARROW)
            assert refused.status_code == 401 and "ingest token" in refused.json()["detail"]
        wrong = httpx.post(hub.url + "/v1/events", content=body, headers={**ARROW, "authorization": "Bearer nope"})
        assert wrong.status_code == 401
        writer = open_writer(model="tokened", hub=hub.url, spool_dir=str(tmp_path / "spool"), flush_interval_ms=20)
        writer.start()
        for i in range(50):
            writer.submit(Event(model="tokened", prediction=float(i)))
        stats = writer.close(timeout=10.0)
        assert stats.written == 50 and not stats.dropped
    finally:
        hub.stop()
    rows = query_store(hub.store_url, "SELECT model, count() FROM inferences FINAL GROUP BY model")
    assert rows == [["tokened", 50]]


def test_the_hub_serves_no_page_that_loads_scripts_from_a_cdn(hub):
    assert hub.get("/docs").status_code == 404 and hub.get("/redoc").status_code == 404
