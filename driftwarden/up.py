"""The whole platform in one process: collectors, ingest, detectors, reports API and one ``/metrics``.

``driftwarden up --config FILE`` (and ``driftwarden demo``) run a :class:`Platform`:

* the store: opened once. An embedded store (``chdb://``) can be held by one
  process only, so every component uses the one client opened here; a
  ClickHouse server gets one client per component, because a clickhouse-connect
  HTTP session refuses concurrent queries;
* one collector per ``collectors:`` entry (``collector.service.Collector``: the
  proxy in front of a model server), all on one event loop in a thread of their
  own, each with a batching writer that writes straight into the store (no hub:
  the store is in this process);
* the API (``collector.hub_app``: ``/healthz``, ``POST /v1/events``,
  ``POST /v1/ground-truth``; ``detectors.api``: the JSON API and report pages;
  plus ``/metrics`` and ``/readyz``) served by uvicorn in another thread;
* the detectors' scheduler (``detectors.scheduler.Scheduler.run_forever``) in a
  third thread, unless the caller drives it (the demo runs it on simulated time).

``/metrics`` is one exposition of two registries: the collectors'
(``driftwarden_collector_*``) and the detectors' (``driftwarden_*``). Their
names do not overlap, so the union is a valid exposition.

Shutdown (:meth:`Platform.stop`, on SIGTERM/SIGINT in ``up``): the collectors
stop accepting and finish in-flight requests and their captures, then every
writer flushes its events into the store, then the API finishes its requests
(ground truth it accepted is already inserted), then the scheduler ends its
pass. An inference that got an answer has its event in the store afterwards.

Configuration: the detectors' YAML (``detectors.config``), plus a
``collectors:`` list (each entry a ``collector.config.CollectorConfig`` without
``store``/``hub``), an ``api:`` section (``listen`` plus
``detectors.api.ApiSettings``) and a ``genai:`` section (``collector.genai_config``:
prices and limits of language-model calls, for ``POST /v1/traces`` and for every
collector that has none of its own). ``examples/up.yaml`` shows every section.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from driftwarden.collector.config import CollectorConfig, parse_host_port
from driftwarden.collector.genai_config import GenAIConfig
from driftwarden.collector.genai_config import parse_section as parse_genai
from driftwarden.detectors.api.settings import ApiSettings, with_environment
from driftwarden.detectors.config import Config as DetectorsConfig
from driftwarden.detectors.config import describe_error, load_mapping, read_file
from driftwarden.detectors.config import parse as parse_detectors
from driftwarden.errors import UserError
from driftwarden.listen import bind

log = logging.getLogger("driftwarden.up")

DEFAULT_API_LISTEN = "127.0.0.1:8000"
UP_SECTIONS = ("collectors", "api", "genai")


class ApiSection(BaseModel):
    """The ``api:`` section: where the API listens, and the reports API's own settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = DEFAULT_API_LISTEN
    settings: ApiSettings = ApiSettings()


@dataclass(frozen=True)
class UpConfig:
    """Everything ``driftwarden up`` runs: the detectors' configuration, the collectors, the API."""

    detectors: DetectorsConfig
    collectors: tuple[CollectorConfig, ...] = ()
    api: ApiSection = ApiSection()
    genai: GenAIConfig = GenAIConfig()  # prices and limits of LLM calls (OTLP spans and the collectors' captures)
    store: str | None = None  # the command line's --store, else the file's `store:`, else the default
    source: str = "configuration"

    @property
    def store_url(self) -> str | None:
        return self.store or self.detectors.store


def load(path: str | Path, *, store: str | None = None, env: dict[str, str] | None = None) -> UpConfig:
    """Read and validate an ``up`` configuration file; :class:`UserError` names every bad key."""
    return parse(read_file(path), source=str(path), store=store, env=env)


def parse(text: str, *, source: str = "configuration", store: str | None = None, env=None) -> UpConfig:
    """Validate an ``up`` YAML document: the detectors' keys, ``collectors:`` and ``api:``."""
    data = load_mapping(text, source=source, keys="store, models, collectors, api, genai")
    collectors_data = data.pop("collectors", None) or []
    api_data = data.pop("api", None) or {}
    genai = parse_genai(data.pop("genai", None), source)
    detectors = parse_detectors(yaml.safe_dump(data, sort_keys=False), source=source)
    problems: list[str] = []
    collectors = _collectors(collectors_data, problems)
    api = _api(api_data, problems, os.environ if env is None else env)
    if problems:
        head = f"{source}: " if len(problems) == 1 else f"{source}: {len(problems)} problems:\n  "
        raise UserError(head + "\n  ".join(problems))
    # A collector without a genai: section of its own prices its calls with the platform's.
    collectors = [c if "genai" in c.model_fields_set else c.model_copy(update={"genai": genai}) for c in collectors]
    return UpConfig(detectors=detectors, collectors=tuple(collectors), api=api, genai=genai, store=store, source=source)


def _collectors(data: Any, problems: list[str]) -> list[CollectorConfig]:
    if not isinstance(data, list):
        problems.append("collectors: expected a list of collectors (model, upstream, listen, protocol, ...)")
        return []
    out: list[tuple[int, CollectorConfig]] = []
    accepted = ", ".join(k for k in CollectorConfig.model_fields if k not in ("store", "hub"))
    for i, entry in enumerate(data):
        where = f"collectors[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a mapping (model, upstream, listen, protocol, ...)")
            continue
        entry = {str(k).replace("-", "_"): v for k, v in entry.items()}
        for key in ("store", "hub"):
            if key in entry:
                problems.append(
                    f"{where}.{key}: not accepted here: the collectors of `driftwarden up` write into the "
                    "process's own store (top-level `store:` or --store); remove this key"
                )
                entry.pop(key)
        if entry.get("engine", "python") != "python":
            problems.append(
                f"{where}.engine: `driftwarden up` runs the Python proxy only; run `driftwarden collector "
                "--engine nginx` as its own process (with --hub) for the nginx data plane, or remove this key"
            )
            entry.pop("engine")
        try:
            out.append((i, CollectorConfig(**entry)))
        except ValidationError as exc:
            for err in exc.errors():
                line = describe_error({**err, "loc": ("collectors", i, *err["loc"])})
                if err.get("type") == "extra_forbidden" and len(err["loc"]) == 1:
                    line += f"; accepted keys here: {accepted}"
                problems.append(line)
    seen: dict[tuple[str, int], int] = {}
    for i, config in out:
        address = config.listen_address
        if address[1] and address in seen:
            problems.append(
                f"collectors[{i}].listen: value {config.listen!r} is not accepted: collectors[{seen[address]}] "
                "listens there already; give each collector its own port"
            )
        seen[address] = i
    return [config for _, config in out]


def _api(data: Any, problems: list[str], env) -> ApiSection:
    from driftwarden.auth import TOKENS_ENV, parse_tokens_env

    if not isinstance(data, dict):
        problems.append("api: expected a mapping (listen, tokens, report_sample_size, ...)")
        return ApiSection()
    data = dict(data)
    listen = str(data.pop("listen", DEFAULT_API_LISTEN))
    try:
        parse_host_port(listen)
    except ValueError as exc:
        problems.append(f"api.listen: value {listen!r} is not accepted: {exc}")
    try:
        settings = ApiSettings.model_validate(with_environment(data, env))
    except ValidationError as exc:
        for err in exc.errors():
            key = "api." + ".".join(map(str, err["loc"]))
            # never quote a token: the message names the key only
            shown = "" if "token" in key else f"value {err.get('input')!r} is not accepted: "
            hint = f"; accepted keys here: listen, {', '.join(ApiSettings.model_fields)}"
            problems.append(f"{key}: {shown}{err['msg']}" + (hint if err["type"] == "extra_forbidden" else ""))
        return ApiSection(listen=listen)
    try:
        extra = parse_tokens_env(env.get(TOKENS_ENV, ""))
    except ValueError as exc:
        problems.append(str(exc))
        extra = []
    if extra:
        settings = settings.model_copy(update={"tokens": [*settings.tokens, *extra]})
    return ApiSection(listen=listen, settings=settings)


# -- the merged /metrics --------------------------------------------------------------------------


class MergedRegistry:
    """Collects from several prometheus-client registries, for one ``generate_latest`` exposition."""

    def __init__(self, *registries) -> None:
        self.registries = registries

    def collect(self) -> Iterator[Any]:
        for registry in self.registries:
            yield from registry.collect()


# -- the platform ---------------------------------------------------------------------------------


@dataclass
class Addresses:
    """Where the started platform listens (ports resolved when 0 was asked for)."""

    api: tuple[str, int] | None = None
    collectors: dict[int, tuple[str, int]] = field(default_factory=dict)  # index in config.collectors
    otlp_grpc: tuple[str, int] | None = None  # genai.grpc_listen, when set

    def api_url(self) -> str:
        assert self.api is not None
        return f"http://{_hostport(*self.api)}"

    def collector_url(self, index: int) -> str:
        return f"http://{_hostport(*self.collectors[index])}"


class Platform:
    """Collectors, ingest, detectors, the API and ``/metrics`` over one store, in this process.

    ``start`` returns once every listener is bound (raising :class:`UserError` when the
    store or an address cannot be had); ``stop`` shuts down in the order described in
    the module docstring. Both are called from one thread (the owner's).
    """

    def __init__(
        self,
        config: UpConfig,
        *,
        run_scheduler: bool = True,
        announce: Callable[[str], None] | None = None,
        grace_s: float = 10.0,
    ) -> None:
        self.config = config
        self.run_scheduler = run_scheduler
        self.announce = announce or _print
        self.grace_s = grace_s
        self.api_listen_key = "api.listen"  # how the user spells the API address, for error messages
        self.addresses = Addresses()
        self.client = None  # the store client of the scheduler (and of everything, for an embedded store)
        self.embedded = False
        self.scheduler = None
        self.exporter = None
        self.writers: list = []
        self.collector_configs: list = []  # config.collectors, each with its spool directory
        self.collectors: list = []
        self.app = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._server = None
        self._server_thread: threading.Thread | None = None
        self._scheduler_stop = threading.Event()
        self._scheduler_thread: threading.Thread | None = None
        self._ready = False
        self._stopped = False

    # -- store --------------------------------------------------------------------------------

    def _open_store(self) -> None:
        from driftwarden import storage
        from driftwarden.storage.migrate import (
            DEFAULT_RETENTION_DAYS,
            applied,
            apply_retention,
            latest_version,
            retention,
        )
        from driftwarden.storage.url import parse, resolve

        url = self.config.store_url
        self.embedded = parse(resolve(url)).embedded
        client = storage.connect(url, create_database=self.embedded)
        days = self.config.detectors.retention_days
        if self.embedded:  # the process owns this store: bring its schema up to date
            storage.migrate(client, retention_days=days or retention(client, "inferences") or DEFAULT_RETENTION_DAYS)
        else:  # a server's schema is the operator's (`driftwarden migrate`)
            if latest_version() not in applied(client):
                raise UserError(
                    f"the store {storage.describe(url)} is not at schema version {latest_version()}: "
                    f"run `driftwarden migrate --store {storage.describe(url)}` first"
                )
            if days:
                apply_retention(client, days)
        self.client = client

    def store_client(self):
        """A client for one more component: the shared one when embedded, a new connection otherwise."""
        if self.embedded:
            return self.client
        from driftwarden import storage

        return storage.connect(self.config.store_url)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the store, bind every listener, start the writers, the collectors, the API, the scheduler."""
        from driftwarden import storage

        self._open_store()
        api_socket = bind(self.config.api.listen, self.api_listen_key)
        self._start_detectors()
        self._start_writers()
        try:
            self._start_collectors()
            self._start_api(api_socket)
        except BaseException:
            self.stop()
            raise
        if self.run_scheduler:
            self._scheduler_thread = threading.Thread(
                target=self.scheduler.run_forever, args=(self._scheduler_stop,), name="dw-scheduler", daemon=True
            )
            self._scheduler_thread.start()
        self._ready = True
        models = ", ".join(m.name for m in self.config.detectors.models)
        every = self.config.detectors.schedule.every
        self.announce(f"driftwarden up: store {storage.describe(self.config.store_url)}")
        for i, config in enumerate(self.config.collectors):
            self.announce(
                f"  collector {config.model}: {self.addresses.collector_url(i)} -> {config.upstream} "
                f"({config.protocol})"
            )
        api = self.addresses.api_url()
        self.announce(f"  api: {api}/  reports: {api}/models  metrics: {api}/metrics")
        self.announce(
            f"  ingest: POST {api}/v1/events (collectors' batches), POST {api}/v1/ground-truth (labels), "
            f"POST {api}/v1/traces (OTLP spans)"
        )
        if self.addresses.otlp_grpc is not None:
            self.announce(f"  OTLP/gRPC traces: {_hostport(*self.addresses.otlp_grpc)} (TraceService/Export)")
        when = f"every {int(every.total_seconds())} s" if self.run_scheduler else "driven by the caller"
        self.announce(f"  detectors: models {models}; {when}")

    def _start_detectors(self) -> None:
        from driftwarden.detectors.exporter import Exporter
        from driftwarden.detectors.scheduler import Scheduler

        self.exporter = Exporter()
        names = [m.name for m in self.config.detectors.models]
        try:
            self.exporter.restore(self.client, names)
        except Exception as exc:  # the gauges fill again as windows are computed
            log.error("restoring the detectors' gauges failed: %s", exc)
        self.scheduler = Scheduler(self.store_client(), self.config.detectors, self.exporter)

    def _start_writers(self) -> None:
        from driftwarden.collector.sinks.store import StoreSink
        from driftwarden.collector.spool import Spool
        from driftwarden.collector.writer import Writer

        self.collector_configs = [self._with_spool_dir(i, c) for i, c in enumerate(self.config.collectors)]
        for config in self.collector_configs:
            # Embedded: the writer gets this process's client. Server: the sink opens (and reopens) its own.
            sink = StoreSink(self.config.store_url, client=self.client if self.embedded else None)
            spool = Spool(config.spool_dir) if config.spool_dir else None
            writer = Writer(
                config.model,
                sink,
                spool,
                batch_events=config.batch_events,
                flush_interval_ms=config.flush_interval_ms,
            )
            self.writers.append(writer.start())

    def _with_spool_dir(self, index: int, config):
        """``config`` with a spool directory: its own, else (embedded store) one beside the store.

        The spool directory holds the collector's write-ahead journal, which is what makes a SIGKILL of
        ``up`` lose no answered inference; a server store has no local directory to default to.
        """
        if config.spool_dir or not self.embedded:
            return config
        from driftwarden.storage.url import local_state_dir

        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", config.model)[:100]
        spool_dir = local_state_dir(self.config.store_url) / f"{index}-{safe}"
        return config.model_copy(update={"spool_dir": str(spool_dir)})

    def _start_collectors(self) -> None:
        if not self.config.collectors:
            return
        from driftwarden.collector.service import Collector, _new_loop, open_journal

        loop = _new_loop()
        self._loop = loop
        started = threading.Event()
        failure: list[BaseException] = []

        async def bring_up() -> None:
            for i, (config, writer) in enumerate(zip(self.collector_configs, self.writers, strict=True)):
                # The journal (in spool_dir) holds each answered exchange until its events are stored.
                collector = Collector(config, writer, journal=open_journal(config))
                self.collectors.append(collector)
                try:
                    await collector.start()
                except OSError as exc:
                    raise UserError(
                        f"collector of model {config.model}: cannot listen on {config.listen}: {exc.strerror or exc}"
                    ) from None
                assert collector.address is not None
                self.addresses.collectors[i] = collector.address

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(bring_up())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()

        self._loop_thread = threading.Thread(target=serve, name="dw-collectors", daemon=True)
        self._loop_thread.start()
        started.wait()
        if failure:
            raise failure[0]

    def _start_api(self, sock: socket.socket) -> None:
        import uvicorn
        from fastapi import Response
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from driftwarden.collector.hub_app import create_app
        from driftwarden.collector.ingest_journal import journal_directory
        from driftwarden.collector.metrics import REGISTRY as COLLECTOR_REGISTRY
        from driftwarden.detectors.api import create_router

        journal_dir = journal_directory(self.config.genai, self.config.store_url)  # POST /v1/traces answers from it
        app = create_app(self.store_client(), genai=self.config.genai, journal_dir=journal_dir)
        app.include_router(create_router(self.config.api.settings))
        listen = self.config.genai.grpc_listen
        if listen:  # OTLP/gRPC beside POST /v1/traces; close_ingest stops it
            from driftwarden.collector.config import parse_host_port
            from driftwarden.collector.hub_app import start_otlp_grpc

            self.app = app
            self.addresses.otlp_grpc = (parse_host_port(listen)[0], start_otlp_grpc(app, listen))
        merged = MergedRegistry(COLLECTOR_REGISTRY, self.exporter.registry)

        @app.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            return Response(generate_latest(merged), media_type=CONTENT_TYPE_LATEST)

        @app.get("/readyz", include_in_schema=False)
        def readyz() -> Response:
            ready = self._ready and not self._stopped
            return Response(
                '{"ready": true}' if ready else '{"ready": false}',
                status_code=200 if ready else 503,
                media_type="application/json",
            )

        self.app = app
        from driftwarden.malformed_http import protocol_class  # malformed HTTP: one line per request, rate-limited

        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", http=protocol_class())
        server = uvicorn.Server(config)
        self._server = server
        self.addresses.api = sock.getsockname()[:2]
        self._server_thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="dw-api")
        self._server_thread.daemon = True
        self._server_thread.start()
        deadline = time.monotonic() + 30
        while not server.started and self._server_thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            raise UserError(f"the API on {self.config.api.listen} did not start")

    def stop(self) -> list:
        """Stop everything, flushing every accepted event into the store; returns the writers' stats."""
        if self._stopped:
            return []
        self._stopped = True
        if self._loop is not None and self._loop_thread is not None and self._loop_thread.is_alive():

            async def wind_down() -> None:
                await asyncio.gather(*(c.stop(self.grace_s) for c in self.collectors if c.address is not None))

            try:
                asyncio.run_coroutine_threadsafe(wind_down(), self._loop).result(self.grace_s + 5)
            except Exception as exc:
                log.error("stopping the collectors failed: %s", exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(5)
        stats = [writer.close(timeout=self.grace_s) for writer in self.writers]
        for collector in self.collectors:  # after the writers: what they acknowledged is released
            if collector.journal is not None:
                collector.journal.close()
        if self._server is not None:
            self._server.should_exit = True
            if self._server_thread is not None:
                self._server_thread.join(self.grace_s)
        if self.app is not None:  # what the OTLP journal holds and is not inserted within grace_s: at the next start
            from driftwarden.collector.hub_app import close_ingest

            close_ingest(self.app, self.grace_s)
        self._scheduler_stop.set()
        if self._scheduler_thread is not None:
            self._scheduler_thread.join(60)  # a pass in progress finishes its window
        if self._loop is not None and not self._loop.is_running():
            self._loop.close()
        return stats


def run(config: UpConfig) -> int:
    """``driftwarden up``: start the platform, serve until SIGTERM/SIGINT, stop cleanly."""
    import signal

    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, _frame) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    platform = Platform(config)
    try:
        platform.start()
        from driftwarden.collector.hub_app import freeze_heap

        freeze_heap()  # objects of start-up, out of the collector's way (see freeze_heap)
        print("driftwarden up: ready; SIGTERM or Ctrl-C stops it after flushing every event", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        stats = platform.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for config_, s in zip(config.collectors, stats, strict=False):
        print(
            f"driftwarden up: collector {config_.model}: events submitted {s.submitted}, written {s.written}, "
            f"spooled {s.spooled}, dropped {sum(s.dropped.values())}",
            file=sys.stderr,
            flush=True,
        )
    print("driftwarden up: stopped", file=sys.stderr, flush=True)
    return 0


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _print(line: str) -> None:
    print(line, flush=True)
