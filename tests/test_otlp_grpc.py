"""OTLP/gRPC trace receiver (``collector.receivers.otlp_grpc``): the OpenTelemetry SDK's gRPC exporter and raw gRPC
calls against a real gRPC server beside the hub's ``POST /v1/traces``, on the real embedded store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from driftwarden import storage
from driftwarden.collector.genai_config import GenAIConfig
from driftwarden.collector.hub_app import close_ingest, create_app, start_otlp_grpc
from driftwarden.collector.receivers.otlp_grpc import OTLPGrpcServer
from driftwarden.errors import UserError
from tests.collector_harness import module_store_url
from tests.hub_process import ROOT, free_port, query_store
from tests.test_otlp import Served, export_request, genai_span, hub_app, post, rows, samples

TOKEN = "grpc-ingest-token-0123456789"
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture(scope="module")
def store_client(engine_dir):
    return storage.connect(module_store_url(engine_dir, "otlp_grpc"))


@pytest.fixture(scope="module")
def hub(store_client):
    """The hub app with an ingest token, on HTTP (uvicorn) and OTLP/gRPC at once; ``hub.grpc`` is the gRPC address."""
    with pytest.MonkeyPatch.context() as patch:  # create_app reads the ingest token from the environment
        patch.setenv("DRIFTWARDEN_INGEST_TOKEN", TOKEN)
        app = hub_app(store_client, max_request_bytes=256 * 1024)
    served = Served(app)
    served.grpc = f"127.0.0.1:{start_otlp_grpc(app, '127.0.0.1:0')}"
    yield served
    served.close()


def call(address: str, body: bytes, token: str | None = TOKEN) -> ExportTraceServiceResponse:
    """One ``TraceService/Export`` with ``body`` as the request bytes (sent as they are), on a fresh channel."""
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(address) as channel:
        export = channel.unary_unary(EXPORT, response_deserializer=ExportTraceServiceResponse.FromString)
        return export(body, metadata=metadata, timeout=30)


def test_sdk_grpc_exporter_spans_are_stored_and_counted_as_over_http(hub, store_client):
    """The SDK's gRPC exporter (gzip, the ingest token as metadata) and its HTTP exporter send the same GenAI spans
    (models differing only by name): the stored calls have the same fields, and /metrics counts the same tokens."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    headers = {"authorization": f"Bearer {TOKEN}"}
    exporters = {
        "via-grpc": GrpcExporter(endpoint=hub.grpc, insecure=True, headers=headers, compression=grpc.Compression.Gzip),
        "via-http": HttpExporter(endpoint=hub.url + "/v1/traces", headers=headers),
    }
    t0 = time.time_ns() - 60_000_000_000
    for model, exporter in exporters.items():
        provider = TracerProvider(resource=Resource.create({"service.name": "grpc-agent"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("test.genai")
        for i, (tin, tout) in enumerate([(120, 40), (300, 85), (55, 9)]):
            span = tracer.start_span(
                f"chat {model}",
                start_time=t0 + i * 1_000_000_000,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "vllm",
                    "gen_ai.request.model": model,
                    "gen_ai.usage.input_tokens": tin,
                    "gen_ai.usage.output_tokens": tout,
                    "gen_ai.response.finish_reasons": ["stop"],
                    "gen_ai.request.temperature": 0.2,
                    "gen_ai.response.time_to_first_chunk": 0.05,
                },
            )
            span.end(end_time=t0 + i * 1_000_000_000 + 400_000_000)
        provider.shutdown()
    calls = {model: rows(store_client, f"model = '{model}'") for model in exporters}
    assert len(calls["via-grpc"]) == 3
    different = {"model", "request_model", "model_version", "endpoint", "cat_values"}  # the model's name
    different |= {"event_id", "trace_id", "span_id", "received_at"}  # each span's own, and when it was inserted
    for by_grpc, by_http in zip(calls["via-grpc"], calls["via-http"], strict=True):
        same = {k: v for k, v in by_grpc.items() if k not in different}
        assert same == {k: v for k, v in by_http.items() if k not in different}
    assert [c["prompt_tokens"] for c in calls["via-grpc"]] == [120, 300, 55]
    assert (
        calls["via-grpc"][0]["ttft_ms"] == pytest.approx(50.0) and calls["via-grpc"][0]["service_name"] == "grpc-agent"
    )
    for model in exporters:
        labels = {"gen_ai_request_model": model}
        assert samples(hub.url, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", **labels) == 475
        assert samples(hub.url, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **labels) == 134
    assert samples(hub.url, "driftwarden_otlp_requests_total", status="200", transport="grpc") >= 3


def test_rejected_spans_are_answered_in_partial_success_and_the_valid_ones_kept(hub, store_client):
    start = time.time_ns() - 10**10
    spans = [
        genai_span(7000, "grpc-mixed", start=start),
        genai_span(7001, "grpc-mixed", start=start, tokens=(10, 2**40)),  # absurd
        genai_span(7002, "grpc-mixed", start=start, duration_ns=-1_000_000),  # ends before it starts
        genai_span(7003, "grpc-mixed", start=start + 1),
    ]
    answer = call(hub.grpc, export_request(spans).SerializeToString())
    assert answer.partial_success.rejected_spans == 2
    assert "token count" in answer.partial_success.error_message
    assert "negative duration" in answer.partial_success.error_message
    assert [r["span_id"] for r in rows(store_client, "model = 'grpc-mixed'")] == [
        spans[0].span_id.hex(),
        spans[3].span_id.hex(),
    ]


def test_bad_calls_get_the_grpc_status_otlp_asks_for_and_store_nothing(hub, store_client):
    body = export_request([genai_span(7100 + i, "grpc-refused", start=time.time_ns()) for i in range(50)])
    encoded = body.SerializeToString()
    with pytest.raises(grpc.RpcError) as truncated:
        call(hub.grpc, encoded[:-7])
    assert truncated.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportTraceServiceRequest" in truncated.value.details()
    for token in (None, "not-the-token"):
        with pytest.raises(grpc.RpcError) as refused:
            call(hub.grpc, encoded, token=token)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED and "ingest token" in refused.value.details()
    big = export_request(
        [genai_span(7200 + i, "grpc-refused", start=time.time_ns(), pad="x" * 200) for i in range(1500)]
    ).SerializeToString()
    assert len(big) > 256 * 1024  # genai.max_request_bytes of this hub
    with pytest.raises(grpc.RpcError) as too_large:
        call(hub.grpc, big)
    assert too_large.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rows(store_client, "model = 'grpc-refused'") == []
    assert samples(hub.url, "driftwarden_otlp_requests_total", status="400", transport="grpc") >= 1
    assert samples(hub.url, "driftwarden_otlp_requests_total", status="401", transport="grpc") >= 2
    assert post(hub.url, encoded, authorization=f"Bearer {TOKEN}").status_code == 200, "HTTP on the same hub"


@pytest.mark.timeout(120)
def test_a_full_journal_answers_unavailable_so_the_exporter_retries_and_what_was_answered_is_stored(
    engine_dir, tmp_path
):
    """The store away (its table renamed), the journal (1 MiB) fills: gRPC answers UNAVAILABLE (OTLP's code to retry
    later); once the store is back, every call answered OK is stored."""
    client = storage.connect(module_store_url(engine_dir, "otlp_grpc_full"))
    app = create_app(client, genai=GenAIConfig(journal_max_bytes=1 << 20), journal_dir=tmp_path / "journal")
    address = f"127.0.0.1:{start_otlp_grpc(app, '127.0.0.1:0')}"
    client.command("RENAME TABLE inferences TO inferences_away")
    renamed = True
    try:
        answered, full = 0, None
        for n in range(40):
            spans = [
                genai_span(8000 + n * 1000 + i, "grpc-full", start=time.time_ns(), pad="y" * 64) for i in range(1000)
            ]
            try:
                call(address, export_request(spans).SerializeToString(), token=None)
            except grpc.RpcError as exc:
                full = exc
                break
            answered += 1
        assert full is not None and full.code() == grpc.StatusCode.UNAVAILABLE, "the journal never filled up"
        assert "retry later" in full.details() and answered >= 1
        client.command("RENAME TABLE inferences_away TO inferences")
        renamed = False
        assert app.state.otlp_journal.wait_empty(30)
    finally:
        if renamed:
            client.command("RENAME TABLE inferences_away TO inferences")
        close_ingest(app)
    assert len(rows(client, "model = 'grpc-full'")) == answered * 1000


def test_driftwarden_api_serves_otlp_grpc_with_the_flag_and_drains_its_journal_on_sigterm(tmp_path):
    """``driftwarden api --otlp-grpc-listen 127.0.0.1:0`` prints the port it bound; a span exported there is answered
    from the journal, and SIGTERM right after it (within the journal's linger) still stores it before the process
    ends (143, the signal's code): uvicorn re-raises the signal once shut down, and the api still closes its journal.
    A malformed address is a one-line error (a port in use: the test below)."""
    port = free_port()
    store = tmp_path / "store"
    process = subprocess.Popen(
        [sys.executable, "-m", "driftwarden", "api", "--listen", f"127.0.0.1:{port}", "--store", f"chdb://{store}",
         "--otlp-grpc-listen", "127.0.0.1:0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert "listening on" in process.stdout.readline()
        line = process.stdout.readline()
        assert line.startswith("driftwarden api: OTLP/gRPC traces on 127.0.0.1:"), line
        address = line.split(" on ")[1].strip()
        deadline = time.monotonic() + 60
        while httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline
        body = export_request([genai_span(7400, "grpc-cli", start=time.time_ns(), tokens=(3, 4))])
        assert not call(address, body.SerializeToString(), token=None).HasField("partial_success")
    finally:
        process.terminate()
        code = process.wait(60)
    assert code == 128 + signal.SIGTERM, process.stderr.read()
    assert not list((tmp_path / "store-spool" / "otlp").glob("segment-*")), "the journal was drained on the way out"
    stored = query_store(f"chdb://{store}", "SELECT model, prompt_tokens, completion_tokens FROM inferences")
    assert stored == [["grpc-cli", 3, 4]]
    wrong = subprocess.run(
        [sys.executable, "-m", "driftwarden", "api", "--store", f"chdb://{tmp_path / 'other'}",
         "--otlp-grpc-listen", "4317"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert wrong.returncode != 0 and "--otlp-grpc-listen" in wrong.stderr and "Traceback" not in wrong.stderr


def test_up_serves_otlp_grpc_when_genai_grpc_listen_is_set(engine_dir):
    from driftwarden import up

    store_url = module_store_url(engine_dir, "otlp_grpc_up")
    text = "models: [{name: up-grpc}]\napi: {listen: '127.0.0.1:0'}\ngenai: {grpc_listen: '127.0.0.1:0'}\n"
    said: list[str] = []
    platform = up.Platform(up.parse(text, source="up.yaml", store=store_url), run_scheduler=False, announce=said.append)
    platform.start()
    try:
        host, port = platform.addresses.otlp_grpc
        assert any(f"OTLP/gRPC traces: {host}:{port}" in line for line in said)
        body = export_request([genai_span(7500, "up-grpc", start=time.time_ns(), tokens=(5, 6))])
        assert not call(f"{host}:{port}", body.SerializeToString(), token=None).HasField("partial_success")
        assert platform.app.state.otlp_journal.wait_empty(30)
    finally:
        platform.stop()
    assert [
        (r["prompt_tokens"], r["completion_tokens"]) for r in rows(storage.connect(store_url), "model = 'up-grpc'")
    ] == [(5, 6)]


def test_a_port_in_use_is_a_user_error_naming_the_setting_not_a_second_listener(store_client):
    app = hub_app(store_client)
    try:
        with socket.socket() as taken:  # someone else listens there; gRPC's SO_REUSEPORT would share it silently
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            server = OTLPGrpcServer(app, f"127.0.0.1:{taken.getsockname()[1]}")
            with pytest.raises(UserError) as refused:
                server.start()
    finally:
        close_ingest(app)
    assert "cannot listen for OTLP/gRPC on 127.0.0.1:" in str(refused.value)
    assert "genai.grpc_listen" in str(refused.value) and "in use" in str(refused.value)
