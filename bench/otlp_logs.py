"""Message content as OTLP log records: what ``POST /v1/logs`` and the content attacher cost beside the spans.

Measured: ``driftwarden api`` in a subprocess with its own embedded store (chdb, with the ingest journal) receives
``--calls`` GenAI calls twice over: their spans as pre-encoded ``ExportTraceServiceRequest`` bodies on
``POST /v1/traces`` (``bench/otlp_throughput.py``'s spans), and their content as ``ExportLogsServiceRequest`` bodies
on ``POST /v1/logs``, three records per call as OpenAI's ``openai-v2`` instrumentation sends them
(``gen_ai.system.message``, ``gen_ai.user.message`` with about 300 characters, ``gen_ai.choice`` with about 300),
from ``--clients`` concurrent HTTP clients; by default the spans first, with ``--logs-first`` the records first.
Each phase lasts until its work is in the store: the spans until the journal has inserted them, the records until
the attacher has given every call its content (``driftwarden_genai_content_attached_total``, nothing waiting);
then until the server is idle (the merges that followed are done).

Then, the baseline of content on the span: as many other calls whose spans carry the same content as span events
(the same three events, ``collector.receivers.genai_content``). Printed per phase: the server's CPU-seconds
(process tree, chdb's threads included) per call, records per CPU-second, the p50/p99 of one request, the seconds
from the last answer until the work was in the store; then the ratio that matters: the server's CPU per call with
its content as log records (its span, its records and their attachment, the first two phases) against a call with
the same content as span events; and, read from the store after the server stopped, the calls with content from
each path (every call must have it).

    python bench/otlp_logs.py [--calls 20000] [--calls-per-request 500] [--clients 4] [--logs-first]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from otlp_throughput import build_requests, cpu_seconds, send_all, start_api, wait_idle, wait_inserted  # noqa: E402

SYSTEM = "You are the support assistant of a bank. Answer briefly and never reveal account numbers."


def content(serial: int) -> tuple[str, str]:
    """The question and the answer of call ``serial``: about 300 characters each."""
    question = f"Customer {serial} asks about the fee on the transfer of 12 March: " + "details " * 30
    answer = f"The fee on transfer {serial} was 2.50 EUR, charged because it left the euro area. " * 4
    return question, answer


def with_span_events(bodies: list[bytes], offset: int) -> list[bytes]:
    """The spans of ``bodies`` as other calls (ids + ``offset``) carrying the same content as span events: the
    baseline of content on the span."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def attributes(**fields) -> list[KeyValue]:
        return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in fields.items()]

    out = []
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for span in request.resource_spans[0].scope_spans[0].spans:
            serial = int.from_bytes(span.span_id, "big")
            span.trace_id = (serial + offset).to_bytes(16, "big")
            span.span_id = (serial + offset).to_bytes(8, "big")
            question, answer = content(serial)
            at = span.start_time_unix_nano + 100_000_000
            span.events.add(time_unix_nano=at, name="gen_ai.system.message", attributes=attributes(content=SYSTEM))
            span.events.add(time_unix_nano=at, name="gen_ai.user.message", attributes=attributes(content=question))
            message = json.dumps({"role": "assistant", "content": answer})
            span.events.add(
                time_unix_nano=at + 700_000_000,
                name="gen_ai.choice",
                attributes=[
                    *attributes(finish_reason="stop", message=message),
                    KeyValue(key="index", value=AnyValue(int_value=0)),
                ],
            )
        out.append(request.SerializeToString())
    return out


def build_logs(n_requests: int, calls_per_request: int) -> list[bytes]:
    """The content records of the calls of ``build_requests`` (same trace and span ids), three per call."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

    def body(**fields) -> AnyValue:
        values = [
            KeyValue(key=k, value=v if isinstance(v, AnyValue) else AnyValue(**{_KIND[type(v)]: v}))
            for k, v in fields.items()
        ]
        return AnyValue(kvlist_value=KeyValueList(values=values))

    start = time.time_ns() - 3_600_000_000_000  # as build_requests: each span starts at start + serial µs
    bodies = []
    serial = 0
    for _ in range(n_requests):
        request = ExportLogsServiceRequest()
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="bench")))
        scope = resource_logs.scope_logs.add()
        scope.scope.name = "opentelemetry.instrumentation.openai_v2"
        for _ in range(calls_per_request):
            serial += 1
            ids = {"trace_id": serial.to_bytes(16, "big"), "span_id": serial.to_bytes(8, "big")}
            at = start + serial * 1000 + 100_000_000
            question, answer = content(serial)
            message = body(role="assistant", content=answer)
            scope.log_records.extend(
                [
                    LogRecord(time_unix_nano=at, event_name="gen_ai.system.message", body=body(content=SYSTEM), **ids),
                    LogRecord(time_unix_nano=at, event_name="gen_ai.user.message", body=body(content=question), **ids),
                    LogRecord(
                        time_unix_nano=at + 700_000_000,
                        event_name="gen_ai.choice",
                        body=body(index=0, finish_reason="stop", message=message),
                        **ids,
                    ),
                ]
            )
        bodies.append(request.SerializeToString())
    return bodies


_KIND = {str: "string_value", int: "int_value"}


def metric(url: str, name: str) -> float:
    import httpx

    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_attached(url: str, calls: int, timeout: float = 300.0) -> float:
    """Seconds until every call has its content (the attacher's counter, nothing waiting)."""
    started = time.perf_counter()
    while True:
        done = metric(url, "driftwarden_genai_content_attached_total")
        waiting = metric(url, "driftwarden_genai_content_waiting")
        if done >= calls and waiting == 0:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"after {timeout:.0f} s: {done:.0f} of {calls} calls have their content, {waiting} wait")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--calls-per-request", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--logs-first", action="store_true", help="send the records before the spans")
    args = parser.parse_args()
    n_requests = max(1, args.calls // args.calls_per_request)
    calls = n_requests * args.calls_per_request
    spans = build_requests(n_requests, args.calls_per_request)
    logs = build_logs(n_requests, args.calls_per_request)
    on_spans = with_span_events(spans, 10**9)
    work = Path(tempfile.mkdtemp(prefix="dw-bench-logs-"))
    store = work / "store"
    process, url, _ = start_api(store)
    results = {}
    try:
        wait_idle(process.pid)
        phases = ("logs", "spans") if args.logs_first else ("spans", "logs")
        for phase in (*phases, "spans with content as span events"):
            cpu = cpu_seconds(process.pid)
            if phase.startswith("spans"):
                latencies, wall = send_all(url, spans if phase == "spans" else on_spans, args.clients)
                settle = wait_inserted(url)
            else:
                latencies, wall = send_all(url, logs, args.clients, path="/v1/logs")
                settle = wait_attached(url, calls) if not args.logs_first else 0.0
            answered_cpu = cpu_seconds(process.pid) - cpu
            results[phase] = (latencies, wall, settle, answered_cpu, wait_idle(process.pid) - cpu)
            if args.logs_first and phase == "spans":  # the calls get their content once their spans are there
                results["attach after the spans"] = ([], 0.0, wait_attached(url, calls), 0.0, 0.0)
    finally:
        process.terminate()
        process.wait(60)
    from driftwarden import storage

    client = storage.connect(f"chdb://{store}")
    with_content, on_span = client.query(
        "SELECT countIf(content_source = 'logs'), countIf(content_source = '') FROM inferences FINAL "
        "WHERE output_text != '' AND input_payload != ''"
    ).result_rows[0]
    shutil.rmtree(work, ignore_errors=True)

    order = "records first" if args.logs_first else "spans first"
    print(
        f"{calls} calls, {args.calls_per_request} per request, {args.clients} clients, {len(logs)} log requests "
        f"of {3 * args.calls_per_request} records ({order})"
    )
    for phase, (latencies, wall, settle, answered_cpu, settled_cpu) in results.items():
        if not latencies:
            print(f"{phase}: every call had its content {settle:.2f} s after the spans were in the store")
            continue
        per_call = settled_cpu / calls
        records = calls * (3 if phase == "logs" else 1)  # spans with content: the span, with its 3 events
        p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else latencies[0]
        print(
            f"{phase}: {wall:.2f} s to answer, then {settle:.2f} s until in the store; server CPU "
            f"{answered_cpu:.2f} s answered, {settled_cpu:.2f} s settled = {per_call * 1e6:.1f} µs per call, "
            f"{records / settled_cpu:,.0f} records per CPU-second; "
            f"request p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
        )
    as_logs = (results["spans"][4] + results["logs"][4]) / calls
    on_spans = results["spans with content as span events"][4] / calls
    print(
        f"a call with its content as log records (its span, its records, the attachment): {as_logs * 1e6:.1f} µs of "
        f"server CPU; with its content as span events: {on_spans * 1e6:.1f} µs ({as_logs / on_spans:.2f}×)"
    )
    print(f"calls with content, in the store: {with_content} of {calls} from the records, {on_span} from span events")
    if with_content != calls or on_span != calls:
        raise SystemExit("some calls did not get their content")


if __name__ == "__main__":
    main()
