"""Collector latency benchmark: what the sidecar adds to an inference, against nginx as reverse proxy.

One run measures three paths to the same upstream (a tiny uvloop/aiohttp
server answering a fixed Open Inference Protocol JSON):

* ``direct``: client -> upstream;
* ``collector``: client -> ``driftwarden collector`` (full capture: OIP
  parsing, hashes, payload sampling at 1.0, redaction, the batching writer
  inserting into an embedded ClickHouse store in the same process) -> upstream;
* ``collector-nginx``: client -> ``driftwarden collector --engine nginx`` (nginx with the njs capture hook,
  1 worker, answers; the collector process reads its capture log and runs the same full capture);
* ``nginx``: client -> Debian's nginx (1 worker, upstream keep-alive) -> upstream; one worker process
  because the collector is one process: the comparison is per process.

For each path: latency at fixed open-loop rates (requests are sent on a fixed
schedule whether or not earlier ones have finished, so a slow proxy meets a
queue; latency runs from the write of the request to the last byte of the response), then the added latency
(p50/p99 of the path minus the direct path's), and the maximum throughput with
64 concurrent keep-alive connections, with the requests served per CPU-second of the
proxy's processes (user + system time from /proc, nginx's workers included; for ``direct``
the upstream's): the cost per request, which a shared machine's load distorts less than
the rate. For the collectors, that CPU is read once every request sent so far is written to the
store (``events_written_total`` on the admin port), so capture that lags behind the answers is paid
for in the figure; the seconds it lagged after the end of the run are printed ("capture caught up").
The load generator is a minimal HTTP/1.1 client on uvloop (an asyncio protocol, no HTTP library) so that it costs less
than what it measures. Ratios are against nginx, measured in the same run.

    python bench/collector_latency.py [--rates 200,500] [--seconds 8] [--throughput-seconds 5] [--repeat 3]

nginx: /usr/sbin/nginx (``apt-get install -y --no-install-recommends nginx``);
without it the nginx rows are skipped and the command to install it is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NGINX = "/usr/sbin/nginx"
PATH = "/v2/models/bench/infer"
BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [[0.24, 0.2879, 0.81, 0.0]]}]}
).encode()
RESPONSE = json.dumps(
    {"model_name": "bench", "outputs": [{"name": "predict", "shape": [1, 1], "datatype": "FP64", "data": [16.0]}]}
).encode()


# -- the upstream (run in its own process: python bench/collector_latency.py --serve-upstream PORT) -----


def serve_upstream(port: int) -> None:
    import uvloop
    from aiohttp import web

    async def handle(request):
        await request.read()
        return web.Response(body=RESPONSE, content_type="application/json")

    async def main():
        server = web.Server(handle, access_log=None)
        loop = asyncio.get_running_loop()
        await loop.create_server(server, "127.0.0.1", port, backlog=4096)
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


# -- a minimal keep-alive HTTP/1.1 client --------------------------------------------------------------


class _Conn(asyncio.Protocol):
    """One keep-alive connection; ``send`` resolves when a whole Content-Length response has arrived."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.need = -1

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            m = re.search(rb"\r\ncontent-length: *(\d+)", head)
            self.need = end + 4 + (int(m.group(1)) if m else 0)
            self.status = int(head[9:12])
        if len(self.buffer) >= self.need:
            del self.buffer[: self.need]
            self.need = -1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(self.status)

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def send(self, request: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.sent_at = time.perf_counter()
        self.transport.write(request)  # type: ignore[union-attr]
        return self.waiter


def _request_bytes(port: int) -> bytes:
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


async def _pool(port: int, n: int) -> list[_Conn]:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(n):
        _, proto = await loop.create_connection(_Conn, "127.0.0.1", port)
        conns.append(proto)
    return conns


async def open_loop(port: int, rate: float, seconds: float, warmup: float = 1.0) -> list[float]:
    """Latencies (s) of requests sent at ``rate``/s for ``seconds`` (after ``warmup``).

    Sends follow a fixed schedule (open loop). A latency runs from the moment the request is written
    to the socket to the last byte of the response (perf_counter; uvloop's clock has 1 ms steps).
    With 32 connections for at most 500 req/s of ~1 ms requests, a send never waits for a connection.
    """
    loop = asyncio.get_running_loop()
    request = _request_bytes(port)
    idle = await _pool(port, 32)
    waiting: asyncio.Queue[_Conn] = asyncio.Queue()
    for conn in idle:
        waiting.put_nowait(conn)
    latencies: list[float] = []
    errors = 0
    tasks = set()

    async def fire(record: bool) -> None:
        nonlocal errors
        conn = await waiting.get()
        try:
            status = await conn.send(request)
            if status != 200:
                errors += 1
        except ConnectionError:
            errors += 1
            return
        done = time.perf_counter()
        waiting.put_nowait(conn)
        if record:
            latencies.append(done - conn.sent_at)

    total = int(rate * (seconds + warmup))
    start = loop.time() + 0.05
    for i in range(total):
        at = start + i / rate
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(fire(i >= rate * warmup))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.transport.close()  # type: ignore[union-attr]
    if errors:
        print(f"    ({errors} failed requests)")
    return latencies


async def closed_loop(port: int, seconds: float, concurrency: int = 64) -> tuple[float, int]:
    """(requests per second, requests served in all) with ``concurrency`` connections sending back to back.

    The rate counts the measured phase only; the total includes the warm-up's requests too, so that it
    matches the proxy's CPU time read around the whole call (requests per CPU-second)."""
    loop = asyncio.get_running_loop()
    request = _request_bytes(port)
    conns = await _pool(port, concurrency)
    count = 0
    stop_at = loop.time() + seconds

    async def worker(conn: _Conn) -> None:
        nonlocal count
        while loop.time() < stop_at:
            await conn.send(request)
            count += 1

    await asyncio.gather(*(worker(c) for c in conns[: concurrency // 8]))  # warm-up on a few connections
    warmup = count
    count = 0
    started = loop.time()
    stop_at = started + seconds
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = loop.time() - started
    for conn in conns:
        conn.transport.close()  # type: ignore[union-attr]
    return count / elapsed, warmup + count


# -- the three targets ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def start_upstream() -> tuple[subprocess.Popen, int]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-upstream", str(port)], stdout=subprocess.PIPE, text=True
    )
    proc.stdout.readline()  # type: ignore[union-attr]
    return proc, port


def start_collector(upstream_port: int, workdir: Path, engine: str = "python") -> tuple[subprocess.Popen, int, int]:
    port, admin = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "driftwarden",
            "collector",
            "--upstream",
            f"http://127.0.0.1:{upstream_port}",
            "--listen",
            f"127.0.0.1:{port}",
            "--model",
            "bench",
            "--store",
            f"chdb://{workdir / f'store-{engine}'}",
            "--spool-dir",  # the write-ahead journal lives here: every answered exchange is on disk first
            str(workdir / f"spool-{engine}"),
            "--admin-listen",
            f"127.0.0.1:{admin}",
            "--engine",
            engine,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DRIFTWARDEN_REDACTION_KEY": "bench"},
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if "listening" not in line:
        proc.kill()
        raise RuntimeError(f"the collector did not start: {line!r} {proc.stderr.read()}")  # type: ignore[union-attr]
    return proc, port, admin


def events_written(admin_port: int) -> float:
    """``driftwarden_collector_events_written_total`` of a collector, from its admin port."""
    with socket.create_connection(("127.0.0.1", admin_port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    m = re.search(rb'^driftwarden_collector_events_written_total\{model="bench"\} ([0-9.e+]+)', data, re.M)
    return float(m.group(1)) if m else 0.0


def wait_captured(admin_port: int, expected: int, timeout: float = 120.0) -> float:
    """Seconds until the collector has written ``expected`` events (the requests sent to it so far)."""
    start = time.monotonic()
    while events_written(admin_port) < expected and time.monotonic() - start < timeout:
        time.sleep(0.05)
    return time.monotonic() - start


NGINX_CONF = """
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
# keepalive_requests: nginx closes a keep-alive connection after 1000 requests by default.
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 10000000;
    upstream model {{ server 127.0.0.1:{upstream}; keepalive 64; keepalive_requests 10000000; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_nginx(upstream_port: int, workdir: Path) -> tuple[subprocess.Popen, int] | None:
    if not Path(NGINX).exists():
        print("nginx is not installed, skipping it; install with: apt-get install -y --no-install-recommends nginx")
        return None
    port = _free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, upstream=upstream_port, port=port))
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"])
    _wait_port(port)
    return proc, port


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its child processes (nginx's workers)."""
    total = 0.0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{p}/task").iterdir():
                pids.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, IndexError, ValueError):
            continue
    return total


# -- reporting ---------------------------------------------------------------------------------------


def _q(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1] if len(values) > 1 else 0.0


def _m(runs: list[list[float]], q: float) -> float:
    """The median over rounds of the q-quantile of each round."""
    return statistics.median(_q(run, q) for run in runs)


def _added(runs: list[list[float]], direct: list[list[float]], q: float) -> float:
    """Added latency: the median over rounds of (q-quantile of the path - q-quantile of direct) in that round."""
    return statistics.median(_q(run, q) - _q(base, q) for run, base in zip(runs, direct, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,2000", help="open-loop request rates per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per rate and target")
    parser.add_argument("--throughput-seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3, help="rounds over all targets; medians are reported")
    parser.add_argument(
        "--engines",
        default="python,nginx",
        help="collector engines to measure, comma-separated (python: the built-in proxy; nginx: nginx + njs hook)",
    )
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    import uvloop

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers it started (finally below)
    rates = [float(r) for r in args.rates.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="dw-bench-collector-"))
    upstream, up_port = start_upstream()
    targets: dict[str, tuple[subprocess.Popen | None, int]] = {"direct": (None, up_port)}
    try:
        admins: dict[str, int] = {}  # the collectors' admin ports
        engines = [e.strip() for e in args.engines.split(",") if e.strip()]
        for engine in engines:
            name = "collector" if engine == "python" else f"collector-{engine}"
            proc, port, admins[name] = start_collector(up_port, workdir, engine)
            targets[name] = (proc, port)
        sent: dict[str, int] = {name: 0 for name in admins}  # requests sent to each collector so far
        lag: dict[str, list[float]] = {name: [] for name in admins}
        nginx = start_nginx(up_port, workdir)
        if nginx is not None:
            targets["nginx"] = nginx
        print(
            f"date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.platform()}, "
            f"{os.cpu_count()} cpus; python {platform.python_version()}; "
            f"load average before: {os.getloadavg()[0]:.2f}"
        )
        results: dict[str, dict] = {name: {} for name in targets}
        # Rounds interleave the targets, so that a burst of load from elsewhere hits all of them alike;
        # each reported figure is the median over the rounds.
        rounds: dict[str, list[float]] = {name: [] for name in targets}
        # Requests per CPU-second of the proxy's processes during the throughput runs: the cost per request,
        # which survives the load of a shared machine better than the rate does (direct: the upstream's).
        per_cpu: dict[str, list[float]] = {name: [] for name in targets}
        pids = {name: (proc.pid if proc is not None else upstream.pid) for name, (proc, _) in targets.items()}
        for round_no in range(args.repeat):
            for rate in rates:
                for name, (_, port) in targets.items():
                    lat = uvloop.run(open_loop(port, rate, args.seconds))
                    if name in sent:
                        sent[name] += int(rate * (args.seconds + 1.0))
                    results[name].setdefault(rate, []).append(lat)
                    print(
                        f"  round {round_no + 1}: {name:>15} @ {rate:>4.0f}/s: n={len(lat)} "
                        f"p50={_q(lat, 0.5) * 1e3:.3f} ms p99={_q(lat, 0.99) * 1e3:.3f} ms"
                    )
            for name, (_, port) in targets.items():
                cpu_before = _cpu_seconds(pids[name])
                rate, done = uvloop.run(closed_loop(port, args.throughput_seconds))
                caught_up = ""
                if name in admins:
                    sent[name] += done
                    lag[name].append(wait_captured(admins[name], sent[name]))
                    caught_up = f"; capture caught up {lag[name][-1]:.1f} s after the run"
                cpu = _cpu_seconds(pids[name]) - cpu_before
                rounds[name].append(rate)
                per_cpu[name].append(done / cpu if cpu > 0 else float("nan"))
                print(
                    f"  round {round_no + 1}: {name:>15} max throughput: {rate:,.0f} req/s, "
                    f"{per_cpu[name][-1]:,.0f} requests per CPU-second of the proxy{caught_up}; "
                    f"load {os.getloadavg()[0]:.2f}"
                )
        throughput = {name: statistics.median(values) for name, values in rounds.items()}
        efficiency = {name: statistics.median(values) for name, values in per_cpu.items()}

        print()
        print("| path | rate req/s | p50 ms | p99 ms | added p50 ms | added p99 ms |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for rate in rates:
            direct = results["direct"][rate]
            for name in targets:
                p50, p99 = _m(results[name][rate], 0.5), _m(results[name][rate], 0.99)
                a50, a99 = _added(results[name][rate], direct, 0.5), _added(results[name][rate], direct, 0.99)
                added = "" if name == "direct" else f"{a50 * 1e3:.3f} | {a99 * 1e3:.3f}"
                print(f"| {name} | {rate:.0f} | {p50 * 1e3:.3f} | {p99 * 1e3:.3f} | {added or '- | -'} |")
        print()
        print("| path | max throughput req/s | × nginx | requests per CPU-second | × nginx |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name in targets:
            ratio = f"{throughput[name] / throughput['nginx']:.2f}" if "nginx" in throughput else "n/a"
            cpu_ratio = f"{efficiency[name] / efficiency['nginx']:.2f}" if "nginx" in efficiency else "n/a"
            print(f"| {name} | {throughput[name]:,.0f} | {ratio} | {efficiency[name]:,.0f} | {cpu_ratio} |")
        if "nginx" in targets:
            print()
            for rate in rates:
                direct = results["direct"][rate]
                n50 = _added(results["nginx"][rate], direct, 0.5)
                n99 = _added(results["nginx"][rate], direct, 0.99)
                for name in admins:
                    c50 = _added(results[name][rate], direct, 0.5)
                    c99 = _added(results[name][rate], direct, 0.99)
                    print(
                        f"added latency at {rate:.0f}/s, {name} vs nginx: p50 {c50 * 1e3:.3f} vs {n50 * 1e3:.3f} ms, "
                        f"p99 {c99 * 1e3:.3f} vs {n99 * 1e3:.3f} ms"
                    )
        for name in admins:
            print(f"{name}: capture caught up {', '.join(f'{x:.1f}' for x in lag[name])} s after the throughput runs")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        for proc, _ in targets.values():
            if proc is not None:
                _stop(proc)
        _stop(upstream)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
