"""The ClickHouse schema and the store, on the real embedded engine."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import pyarrow as pa
import pytest

from driftwarden import storage
from driftwarden.storage.migrate import available, render_all, retention
from tests.conftest import ROOT, run_cli

UTC = dt.UTC


def test_migrations_apply_to_an_empty_store_and_reapply_as_a_no_op(engine_dir):
    client = storage.connect(f"chdb://{engine_dir}?database=fresh_migrate", create_database=True)
    applied = storage.migrate(client, retention_days=30)
    assert [m.version for m in applied] == [m.version for m in available()]
    tables = {r[0] for r in client.query("SHOW TABLES").result_rows}
    expected = {
        "inferences",
        "ground_truth",
        "drift_results",
        "detector_runs",
        "latency_results",
        "reproducibility_results",
        "reference_profiles",
        "performance_results",
        "schema_migrations",
    }
    assert expected <= tables
    assert storage.migrate(client, retention_days=30) == []
    versions = client.query("SELECT version FROM schema_migrations FINAL ORDER BY version").result_rows
    assert [v for (v,) in versions] == [m.version for m in available()]


def _full_row() -> dict:
    return {
        "event_id": uuid.uuid4(),
        "ts": dt.datetime(2026, 3, 1, 12, 0, 0, 123457, tzinfo=UTC),
        # recent, or the retention TTL rightly deletes the row at once
        "received_at": dt.datetime.now(UTC).replace(microsecond=0),
        "model": "bikes",
        "model_version": "v3",
        "model_digest": "sha256:abc",
        "protocol": "oip",
        "endpoint": "/v2/models/bikes/infer",
        "tenant": "acme",
        "status": 200,
        "latency_ms": 1.25,
        "upstream_latency_ms": 1.0,
        "ttft_ms": 0.5,
        "request_bytes": 321,
        "response_bytes": 123,
        "num_names": ["temp", "hum"],
        "num_values": [0.24, 0.81],
        "cat_names": ["season", "weather"],
        "cat_values": ["winter", "clear"],
        "text_names": ["prompt"],
        "text_values": ["How many bikes on a cold Monday?"],
        "emb_names": ["prompt.minilm"],
        "emb_values": [[0.25, -0.5, 0.125]],
        "prediction": 42.5,
        "prediction_label": "high",
        "output_names": ["p_low", "p_high"],
        "output_values": [0.1, 0.9],
        "output_text": "forty-two",
        "input_payload": '{"inputs": []}',
        "output_payload": '{"outputs": []}',
        "payload_sampled": True,
        "payload_truncated": True,
        "input_hash": 2**64 - 1,
        "output_hash": 12345,
        "params_hash": 0,
        "deterministic": True,
        "prompt_tokens": 17,
        "completion_tokens": 5,
        "finish_reason": "stop",
        "error_class": "upstream_timeout",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "is_replay": True,
        "replay_of": uuid.uuid4(),
        "redactions": 3,
        # 0006: language-model calls (GenAI conventions)
        "operation_name": "chat",
        "provider_name": "vllm",
        "request_model": "llama-3.1-8b",
        "response_model": "llama-3.1-8b-instruct",
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 256,
        "seed": -42,
        "server_address": "vllm.internal",
        "service_name": "support-bot",
        "span_id": "00f067aa0ba902b7",
        "parent_span_id": "00f067aa0ba902b6",
        "span_status": "error",
        "cost": 0.000125,
        "content_source": "logs",
    }


def test_every_inferences_column_round_trips(store):
    row = _full_row()
    columns = [
        r[0]
        for r in store.query(
            "SELECT name FROM system.columns WHERE table = 'inferences' "
            "AND database = currentDatabase() AND default_kind != 'ALIAS' ORDER BY position"
        ).result_rows
    ]
    assert set(columns) == set(row), "the test must cover every column of inferences"
    store.insert("inferences", [[row[c] for c in columns]], column_names=columns)
    back = store.query(f"SELECT {', '.join(columns)} FROM inferences").result_rows
    assert len(back) == 1
    for name, value in zip(columns, back[0], strict=True):
        expected = row[name]
        if isinstance(expected, dt.datetime):
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value
        assert value == expected, name


def test_sub_millisecond_timestamps_survive_an_arrow_insert(store):
    ts = [1_700_000_000_000_001, 1_700_000_000_000_999]
    batch = pa.table(
        {
            "event_id": pa.array([str(uuid.uuid4()) for _ in ts]),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "model": pa.array(["m", "m"]),
        }
    )
    store.insert_arrow("inferences", batch)
    got = store.query("SELECT toUnixTimestamp64Micro(ts) FROM inferences ORDER BY ts").result_rows
    assert [g for (g,) in got] == ts


def test_an_insert_of_fewer_than_100k_rows_writes_a_compact_part_and_a_larger_one_a_wide_part(store):
    # Migration 0022: rows of a 30,000-row insert weigh more than the 10 MiB from which ClickHouse writes a part
    # wide (one file per column stream: ~80 ms of CPU per insert); below 100,000 rows they go in one compact part.
    store.command("SYSTEM STOP MERGES inferences")
    for rows in (30_000, 150_000):
        store.command(
            "INSERT INTO inferences (event_id, ts, model, num_names, num_values, output_payload) "
            f"SELECT generateUUIDv4(), now64(6), 'm', ['a', 'b'], [number, number * 2], repeat('x', 400) "
            f"FROM numbers({rows})"
        )
    parts = store.query(
        "SELECT rows, part_type, data_uncompressed_bytes FROM system.parts "
        "WHERE database = currentDatabase() AND table = 'inferences' AND active ORDER BY rows"
    ).result_rows
    assert [(rows, kind) for rows, kind, _ in parts] == [(30_000, "Compact"), (150_000, "Wide")]
    assert parts[0][2] > 10 << 20  # wide without the migration (min_bytes_for_wide_part)


def _batch(n: int, start: int = 0) -> list[list]:
    base = dt.datetime(2026, 3, 1, tzinfo=UTC)
    return [[uuid.UUID(int=start + i + 1), base + dt.timedelta(seconds=start + i), "m", [float(i)]] for i in range(n)]


def test_a_retried_batch_does_not_double_counts(store):
    cols = ["event_id", "ts", "model", "num_values"]
    store.insert("inferences", _batch(500), column_names=cols)
    store.insert("inferences", _batch(500), column_names=cols)  # the same batch, retried
    store.insert("inferences", _batch(250, start=250), column_names=cols)  # a replay split differently
    store.insert("inferences", _batch(100, start=500), column_names=cols)
    assert store.query("SELECT count() FROM inferences FINAL").result_rows[0][0] == 600
    assert store.query("SELECT count() FROM inferences", settings={"final": 1}).result_rows[0][0] == 600
    store.command("OPTIMIZE TABLE inferences FINAL")
    assert store.query("SELECT count(), uniqExact(event_id) FROM inferences").result_rows[0] == (600, 600)


def test_a_retention_past_the_end_of_clickhouse_dates_is_refused(store):
    with pytest.raises(storage.StoreError, match="between 1 and 25000"):
        storage.migrate(store, retention_days=36500)  # would wrap the DateTime TTL and expire every row
    assert retention(store, "ground_truth") == 30


def test_retention_ttl_uses_the_configured_days(store):
    assert retention(store, "inferences") == 30
    assert retention(store, "ground_truth") == 30
    storage.migrate(store, retention_days=7)
    assert retention(store, "inferences") == 7
    assert retention(store, "ground_truth") == 7
    ddl = store.query(
        "SELECT create_table_query FROM system.tables WHERE name = 'inferences' AND database = currentDatabase()"
    ).result_rows[0][0]
    assert "TTL received_at + toIntervalDay(7)" in ddl


def test_the_cluster_rendering_parses(store):
    statements = render_all(retention_days=30, cluster="prod")
    creates = [s for s in statements if "CREATE TABLE" in s]
    assert all("ON CLUSTER `prod`" in s for s in statements)
    assert any(
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/inferences_local'" in s for s in creates
    )
    assert any("Distributed(`prod`, currentDatabase(), inferences_local, cityHash64(event_id))" in s for s in creates)
    for statement in statements:
        formatted = store.query("SELECT formatQuery({q:String})", parameters={"q": statement}).result_rows[0][0]
        assert "ON CLUSTER prod" in formatted


def test_a_migration_changed_after_it_was_applied_is_refused(store):
    store.command(
        "ALTER TABLE schema_migrations UPDATE checksum = 'edited' WHERE version = 1 SETTINGS mutations_sync = 1"
    )
    with pytest.raises(storage.StoreError, match="changed after it was applied"):
        storage.migrate(store, retention_days=30)


def test_an_unknown_url_scheme_names_the_accepted_forms():
    with pytest.raises(storage.StoreError, match="scheme 'ftp' is not supported.*chdb:///"):
        storage.connect("ftp://host/db")


def test_an_unreachable_server_is_reported_plainly():
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(storage.StoreError, match=rf"cannot reach a ClickHouse server at http://127.0.0.1:{port}"):
        storage.connect(f"http://default:@127.0.0.1:{port}/default")


def test_a_second_embedded_store_in_one_process_is_refused(store, tmp_path):
    with pytest.raises(storage.StoreError, match="already has the embedded store"):
        storage.connect(f"chdb://{tmp_path}/other")


def test_an_embedded_store_held_by_another_process_names_the_directory_and_pid(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom driftwarden import storage\nclient = storage.connect(sys.argv[1])\n"
            "print('ready', flush=True)\nsys.stdin.read()",
            f"chdb://{tmp_path}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        result = run_cli("migrate", "--store", f"chdb://{tmp_path}")
        assert result.returncode == 2
        assert f"the embedded store {tmp_path} is in use by another process (pid {holder.pid})" in result.stderr
        assert "EmbeddedServer" not in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        holder.communicate("", timeout=30)


def test_a_process_exiting_while_a_daemon_thread_queries_the_embedded_store_waits_for_the_query_and_exits_0(
    tmp_path,
):
    # A thread that is never stopped (an app's content attacher, say) may be inside the engine when the process
    # exits; the engine's C++ state was then destroyed under the query, and the process died of SIGSEGV (10 of 10
    # runs of this script without storage.store._quiesce_at_exit). The call in flight now finishes, no later one
    # reaches the engine, and the process exits 0.
    code = textwrap.dedent(
        """
        import sys, threading, time
        from driftwarden import storage
        client = storage.connect(sys.argv[1])
        started = threading.Event()
        def work():
            while True:
                started.set()
                rows = client.query("SELECT count() FROM numbers(60000000) WHERE sipHash64(number) % 7 = 1")
                print("counted", rows.result_rows[0][0], flush=True)
        threading.Thread(target=work, daemon=True).start()
        started.wait()
        time.sleep(0.3)
        print("exiting", flush=True)
        """
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code, f"chdb://{tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:2] == ["exiting", "counted 8572973"]
    assert time.monotonic() - started < 60


def test_cli_migrate_creates_the_tables(tmp_path):
    result = run_cli("migrate", "--store", f"chdb://{tmp_path}/store", "--retention-days", "14")
    assert result.returncode == 0, result.stderr
    assert "applied 0001_initial" in result.stdout
    assert "retention of raw data: 14 days" in result.stdout
    for table in ("inferences", "ground_truth", "drift_results", "detector_runs", "reference_profiles"):
        assert table in result.stdout
    again = run_cli("migrate", "--store", f"chdb://{tmp_path}/store", "--retention-days", "14")
    assert "nothing to apply" in again.stdout


def test_the_store_url_comes_from_the_environment(tmp_path):
    result = run_cli("migrate", env={"DRIFTWARDEN_STORE": f"chdb://{tmp_path}/from-env"})
    assert result.returncode == 0, result.stderr
    assert f"chdb://{tmp_path}/from-env: applied" in result.stdout


def test_cli_version_and_help():
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("driftwarden ")
    help_text = run_cli("--help")
    assert "migrate" in help_text.stdout


def test_a_user_mistake_is_one_line_on_stderr_not_a_traceback():
    result = run_cli("migrate", "--store", "mysql://x/y")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_retention_deletes_raw_data_received_before_the_configured_days(store):
    now = dt.datetime.now(UTC).replace(microsecond=0)
    cols = ["event_id", "ts", "model", "received_at"]
    old = [uuid.uuid4(), now - dt.timedelta(days=40), "m", now - dt.timedelta(days=31)]
    recent = [uuid.uuid4(), now - dt.timedelta(days=40), "m", now - dt.timedelta(days=29)]
    store.insert("inferences", [old, recent], column_names=cols)
    store.command("OPTIMIZE TABLE inferences FINAL")
    kept = store.query("SELECT event_id FROM inferences").result_rows
    assert kept == [(recent[0],)]
