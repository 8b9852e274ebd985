"""OTLP ingest throughput: GenAI spans per second per core, end to end into the embedded store.

Measured: ``driftwarden api`` in a subprocess with its own embedded store (chdb) receives
pre-encoded ``ExportTraceServiceRequest`` protobuf bodies on ``POST /v1/traces`` from
``--clients`` concurrent HTTP clients (httpx, keep-alive), or with ``--transport grpc`` as OTLP/gRPC
``TraceService/Export`` calls (one gRPC channel per client) on ``--otlp-grpc-listen`` — decoding, mapping spans to LLM
calls, Arrow, the GenAI metrics, and the write-ahead of the calls into the ingest journal that an
embedded store's ``api`` keeps (``collector.ingest_journal``), until the 200 answer; the journal's
thread inserts them into ``inferences``, and the server's CPU is counted until the last answered span
is in the store (its journal gauge at 0) — the insert's CPU is in the figure either way. Each span
carries the attributes an instrumented chat call has (operation, provider, request and response
model, tokens, finish reasons, temperature, max_tokens, server address, time to first chunk), no
message content.

Printed: spans/s of wall clock; spans per CPU-second of the server's process tree (utime +
stime from /proc, chdb's threads included: "per core busy", the figure to compare on a
machine shared with other jobs), and that CPU by thread name ("python": HTTP, decoding,
mapping, and the insert statements without a journal; "dw-journal": the journal's inserts;
ClickHouse's "MergeMutate": background merges of the parts the inserts write; "ThreadPool":
insert pipelines); the p50/p99 of one request; "settled": the CPU once the merges that followed
are done; the rows found in the store
afterwards (every span must be there); the load average before and after. With ``--rate``
the clients together offer that many spans per second (paced), to read the p99 at a given load.

Baseline in the same run and store: ``insert_arrow`` of the same calls, already built as
Arrow tables of one request each (the receiver's tables: the columns the spans set), one
synchronous insert per request with the default insert settings, from this process (what
ClickHouse alone costs per row at that batch size, without the receiver's group commit);
and the receiver's own Python work per span (decode, map to columns and Arrow, metrics),
timed in this process on the same bodies. Anchor (published, not measured
here): the OpenTelemetry Collector's ClickHouse exporter at about 40,000 records/s per core.

    python bench/otlp_throughput.py [--requests 200] [--spans-per-request 500] [--clients 4] [--rate 0] [--no-journal]
                                    [--transport http|grpc]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ANCHOR_RECORDS_PER_CORE = 40_000  # OTel Collector ClickHouse exporter, published figure


def build_requests(n_requests: int, spans_per_request: int) -> list[bytes]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    def kv(key: str, value) -> KeyValue:
        if isinstance(value, list):
            return KeyValue(
                key=key, value=AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=v) for v in value]))
            )
        if isinstance(value, int):
            return KeyValue(key=key, value=AnyValue(int_value=value))
        if isinstance(value, float):
            return KeyValue(key=key, value=AnyValue(double_value=value))
        return KeyValue(key=key, value=AnyValue(string_value=value))

    start = time.time_ns() - 3_600_000_000_000
    bodies = []
    serial = 0
    for _ in range(n_requests):
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.append(kv("service.name", "bench-agent"))
        scope = resource_spans.scope_spans.add()
        for _ in range(spans_per_request):
            serial += 1
            scope.spans.append(
                Span(
                    trace_id=serial.to_bytes(16, "big"),
                    span_id=serial.to_bytes(8, "big"),
                    parent_span_id=(serial + 7).to_bytes(8, "big"),
                    name="chat llama-3.1-8b",
                    kind=3,
                    start_time_unix_nano=start + serial * 1000,
                    end_time_unix_nano=start + serial * 1000 + 800_000_000,
                    attributes=[
                        kv("gen_ai.operation.name", "chat"),
                        kv("gen_ai.provider.name", "vllm"),
                        kv("gen_ai.request.model", "llama-3.1-8b"),
                        kv("gen_ai.response.model", "llama-3.1-8b-instruct"),
                        kv("gen_ai.usage.input_tokens", 100 + serial % 900),
                        kv("gen_ai.usage.output_tokens", 10 + serial % 300),
                        kv("gen_ai.response.finish_reasons", ["stop"]),
                        kv("gen_ai.request.temperature", 0.7),
                        kv("gen_ai.request.max_tokens", 512),
                        kv("server.address", "vllm.internal"),
                        kv("gen_ai.response.time_to_first_chunk", 0.12),
                    ],
                )
            )
        bodies.append(request.SerializeToString())
    return bodies


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (any process the server starts: its CPU is the server's too)."""
    pids = [pid]
    for parent in pids:
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                pids.extend(int(child) for child in task.read_text().split())
            except (FileNotFoundError, ProcessLookupError):
                continue
    return pids


def cpu_seconds(pid: int) -> float:
    """utime + stime of the server's process tree."""
    return sum(cpu_by_thread(pid).values())


def cpu_by_thread(pid: int) -> dict[str, float]:
    """CPU-seconds of the live threads of the process tree by thread name (Python's threads are "python"; the
    others are ClickHouse's: MergeMutate for background merges, ThreadPool for query pipelines, ...)."""
    found: dict[tuple[str, str], float] = {}
    for process in process_tree(pid):
        for task in Path(f"/proc/{process}/task").iterdir():
            try:
                name = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            found[(f"{process}/{task.name}", name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def thread_cpu_delta(before: dict, after: dict) -> dict[str, float]:
    by_name: dict[str, float] = {}
    for key, seconds in after.items():
        by_name[key[1]] = by_name.get(key[1], 0.0) + seconds - before.get(key, 0.0)
    return by_name


def start_api(store_dir: Path, journal: bool = True, grpc: bool = False) -> tuple[subprocess.Popen, str, str]:
    """``driftwarden api`` on a free port: the process, its URL and, with ``grpc``, its OTLP/gRPC address."""
    config = store_dir.with_name("api.yaml")
    config.write_text(f"genai: {{journal: {'true' if journal else 'false'}}}\n")
    command = [sys.executable, "-m", "driftwarden", "api", "--listen", "127.0.0.1:0", "--store", f"chdb://{store_dir}"]
    process = subprocess.Popen(
        command + (["--otlp-grpc-listen", "127.0.0.1:0"] if grpc else []),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "DRIFTWARDEN_API_CONFIG": str(config)},
    )
    line = process.stdout.readline()
    match = re.search(r"listening on (http://[\d.]+:\d+)", line)
    grpc_address = ""
    if match and grpc:
        found = re.search(r"OTLP/gRPC traces on ([\d.]+:\d+)", process.stdout.readline())
        grpc_address = found.group(1) if found else ""
    if not match or (grpc and not grpc_address):
        process.kill()
        raise SystemExit(f"driftwarden api did not start: {line!r}")
    return process, match.group(1), grpc_address


def send_all(
    url: str, bodies: list[bytes], clients: int, interval: float = 0.0, grpc_address: str = "", path: str = "/v1/traces"
) -> tuple[list[float], float]:
    """Every body sent by ``clients`` threads, each with its own connection: posted to ``url`` + ``path``, or with
    ``grpc_address`` as the request of OTLP/gRPC's ``TraceService/Export``; with ``interval``, each sends at most
    one every ``interval`` s, the clients ``interval / clients`` apart."""
    latencies: list[float] = []
    lock = threading.Lock()
    queue = list(reversed(bodies))
    errors: list[str] = []

    def worker(phase: float) -> None:
        next_send = time.perf_counter() + phase
        with _sender(url + path, grpc_address) as send:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                if interval:
                    time.sleep(max(0.0, next_send - time.perf_counter()))
                    next_send += interval
                started = time.perf_counter()
                error = send(body)
                took = time.perf_counter() - started
                with lock:
                    latencies.append(took)
                    if error:
                        errors.append(error)

    # paced clients start a fraction of the interval apart: requests arrive evenly spaced, not in bursts of `clients`
    threads = [threading.Thread(target=worker, args=(i * interval / clients,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return latencies, time.perf_counter() - started


@contextlib.contextmanager
def _sender(url: str, grpc_address: str):
    """A function sending one body and returning an error message, or "" once it was answered OK."""
    if grpc_address:
        import grpc

        with grpc.insecure_channel(grpc_address) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")

            def send_grpc(body: bytes) -> str:
                try:
                    export(body, timeout=120)
                except grpc.RpcError as exc:
                    return f"{exc.code().name} {exc.details()[:200]}"
                return ""

            yield send_grpc
        return
    import httpx

    with httpx.Client(timeout=120) as client:

        def send_http(body: bytes) -> str:
            answer = client.post(url, content=body, headers={"content-type": "application/x-protobuf"})
            return "" if answer.status_code == 200 else f"{answer.status_code} {answer.text[:200]}"

        yield send_http


def wait_inserted(url: str, timeout: float = 120.0) -> float:
    """Seconds until the server's ingest journal has inserted every answered span (0 without a journal)."""
    import httpx

    started = time.perf_counter()
    while True:
        text = httpx.get(url + "/metrics", timeout=10).text
        waiting = [line for line in text.splitlines() if line.startswith("driftwarden_ingest_journal_rows{")]
        if not waiting or all(float(line.rsplit(" ", 1)[1]) == 0 for line in waiting):
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"the journal still holds rows after {timeout:.0f} s: {waiting}")
        time.sleep(0.01)


def wait_idle(pid: int, timeout: float = 60.0) -> float:
    """The server's CPU-seconds once it is idle (less than 2% of a core over half a second: the background merges
    of the parts the run wrote are done)."""
    deadline = time.perf_counter() + timeout
    before = cpu_seconds(pid)
    while True:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - before < 0.01 or time.perf_counter() > deadline:
            return now
        before = now


def baseline(store_dir: Path, bodies: list[bytes]) -> tuple[float, float, int, float]:
    """insert_arrow of the same calls (mapped here, Arrow built before timing) into a fresh table; and the
    receiver's Python CPU per span (decode, map, Arrow, metrics) on the same bodies."""
    from driftwarden import storage
    from driftwarden.collector.receivers.otlp import GenAIIngest, _decode_and_map

    client = storage.connect(f"chdb://{store_dir}")
    stored = client.query("SELECT count() FROM inferences FINAL").result_rows[0][0]
    client.command("CREATE TABLE baseline_inferences AS inferences")
    ingest = GenAIIngest()
    cpu = time.process_time()
    batches = [_decode_and_map(body, False, ingest) for body in bodies]
    for batch in batches:
        ingest.recorder.observe_calls(batch.calls)
    python_cpu = (time.process_time() - cpu) / sum(batch.stored for batch in batches)
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        client.insert_arrow("baseline_inferences", batch.table, settings={"async_insert": 0})
    return time.perf_counter() - wall, time.process_time() - cpu, stored, python_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--spans-per-request", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0, help="offered spans/s of all clients together (0: no pacing)")
    parser.add_argument(
        "--no-journal", action="store_true", help="genai.journal: false (each request waits for its insert)"
    )
    parser.add_argument(
        "--transport",
        choices=("http", "grpc"),
        default="http",
        help="OTLP/HTTP (POST /v1/traces) or OTLP/gRPC (TraceService/Export, --otlp-grpc-listen)",
    )
    args = parser.parse_args()
    interval = args.clients * args.spans_per_request / args.rate if args.rate else 0.0
    spans = args.requests * args.spans_per_request
    print(f"building {args.requests} requests of {args.spans_per_request} GenAI spans ...", flush=True)
    bodies = build_requests(args.requests, args.spans_per_request)
    print(f"  {sum(map(len, bodies)) / spans:.0f} bytes per span (protobuf)")
    work = Path(tempfile.mkdtemp(prefix="dw-bench-otlp-"))
    try:
        process, url, grpc_address = start_api(
            work / "store", journal=not args.no_journal, grpc=args.transport == "grpc"
        )
        try:
            send_all(url, bodies[:2], 1, grpc_address=grpc_address)  # warm-up: first insert, imports, connections
            load_before = os.getloadavg()
            cpu0, threads0 = cpu_seconds(process.pid), cpu_by_thread(process.pid)
            client0 = time.process_time()
            latencies, wall = send_all(url, bodies[2:], args.clients, interval, grpc_address)
            client_cpu = time.process_time() - client0  # this process's: the clients, on the same cores
            behind = wait_inserted(url)  # the server's CPU counts until the last answered span is in the store
            cpu = cpu_seconds(process.pid) - cpu0
            settled = wait_idle(process.pid) - cpu0  # and, settled, until the merges of its parts are done
            threads = thread_cpu_delta(threads0, cpu_by_thread(process.pid))
            load_after = os.getloadavg()
        finally:
            process.terminate()
            process.wait(60)
        measured = spans - 2 * args.spans_per_request
        base_wall, base_cpu, stored, python_cpu = baseline(work / "store", bodies[2:])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    per_core = measured / cpu
    base_per_core = measured / base_cpu
    offered = f"offered {args.rate:,.0f} spans/s" if args.rate else "as fast as answered"
    offered += "; answered after the insert (no journal)" if args.no_journal else "; answered once journaled"
    offered += f"; OTLP/{args.transport.upper()}"
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (2 cores); {offered}")
    print(f"end to end: {measured:,} spans in {wall:.2f} s wall = {measured / wall:,.0f} spans/s")
    print(f"  server CPU {cpu:.2f} s = {per_core:,.0f} spans per CPU-second (per core busy)")
    print(
        f"  settled (with the merges that followed): {settled:.2f} s = {measured / settled:,.0f} spans per CPU-second"
    )
    if not args.no_journal:
        print(f"  the last answered span was in the store {behind * 1000:.0f} ms after the last answer (journal)")
    print(f"  the clients' own CPU (this process, same cores): {client_cpu:.2f} s")
    print(f"  request of {args.spans_per_request} spans: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    shown = sorted(((v, k) for k, v in threads.items() if v >= 0.005), reverse=True)
    print("  server CPU by thread: " + ", ".join(f"{k} {v / measured * 1e6:.1f}" for v, k in shown) + " µs per span")
    print(f"  rows in the store afterwards: {stored:,} (sent {spans:,})")
    print(f"baseline insert_arrow, same rows and batch size: {measured / base_wall:,.0f} rows/s wall, ")
    print(f"  {base_per_core:,.0f} rows per CPU-second of this process")
    print(f"receiver's Python work (decode, map, Arrow, metrics), this process: {python_cpu * 1e6:.1f} µs CPU per span")
    print(f"ratio end to end / baseline (per core): {per_core / base_per_core:.2f}")
    print(
        f"ratio end to end / anchor (OTel Collector ClickHouse exporter, ~{ANCHOR_RECORDS_PER_CORE:,} records/s/core, "
        f"published figure): {per_core / ANCHOR_RECORDS_PER_CORE:.2f}"
    )


if __name__ == "__main__":
    main()
