"""``driftwarden api``: serve the hub (ingest endpoints, health) over a store this process owns."""

from __future__ import annotations

import argparse

from driftwarden.commands import add_store_argument

DEFAULT_LISTEN = "127.0.0.1:8000"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "api",
        help="serve the ingest endpoints and the JSON API over the store",
        description="Serve POST /v1/events (Arrow batches from collectors started with --hub), "
        "POST /v1/ground-truth, POST /v1/traces (OTLP/HTTP; GenAI spans become LLM calls), /metrics and /healthz; "
        "OTLP/gRPC too with --otlp-grpc-listen. "
        "An embedded store is migrated first when its schema is behind (a server's: `driftwarden migrate`). "
        "Prices and limits of LLM calls: the genai: section of $DRIFTWARDEN_API_CONFIG.",
    )
    add_store_argument(parser)
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=DEFAULT_LISTEN,
        help=f"address to listen on (default {DEFAULT_LISTEN}; port 0 picks a free port and prints it)",
    )
    parser.add_argument(
        "--otlp-grpc-listen",
        metavar="HOST:PORT",
        default=None,
        help="also receive OTLP/gRPC traces (TraceService/Export, the OpenTelemetry Collector's `otlp` exporter) on "
        "this address, e.g. 0.0.0.0:4317; default: genai.grpc_listen of $DRIFTWARDEN_API_CONFIG, else none",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os
    import signal
    import socket
    import sys

    import uvicorn

    from driftwarden import malformed_http, storage
    from driftwarden.collector.genai_config import load_file_section
    from driftwarden.collector.hub_app import close_ingest, create_app, freeze_heap, start_otlp_grpc
    from driftwarden.collector.ingest_journal import journal_directory
    from driftwarden.detectors.api import create_router, load_settings
    from driftwarden.detectors.api.settings import CONFIG_ENV
    from driftwarden.listen import bind

    api_settings = load_settings()  # before opening anything: a bad token list is a one-line error
    genai = load_file_section(os.environ.get(CONFIG_ENV))  # prices and limits of POST /v1/traces
    if args.otlp_grpc_listen:
        genai = genai.model_copy(update={"grpc_listen": _checked_listen(args.otlp_grpc_listen)})
    sock = bind(args.listen, "--listen")
    client = storage.open_store(args.store)
    host, bound = sock.getsockname()[:2]
    shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
    print(f"driftwarden api: store {storage.describe(args.store)}, listening on http://{shown}:{bound}", flush=True)
    app = create_app(client, genai=genai, journal_dir=journal_directory(genai, args.store))
    app.include_router(create_router(api_settings))  # drift reports and JSON API for model owners (detectors/api)
    _serve_metrics(app)
    if not app.state.ingest_protected:
        print(
            "driftwarden api: the ingest endpoints are open to anyone who can reach this address; "
            "set DRIFTWARDEN_INGEST_TOKEN to require a token",
            file=sys.stderr,
            flush=True,
        )
    config = uvicorn.Config(app, log_level="warning", access_log=False, http=malformed_http.protocol_class())
    freeze_heap()  # objects of start-up, out of the collector's way (see freeze_heap)
    # uvicorn shuts down on SIGTERM, then raises the signal again with the handler it found: SIG_DFL would end the
    # process there, before close_ingest. This handler ends it by SystemExit (still 143), through the finally.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        if genai.grpc_listen:
            grpc_port = start_otlp_grpc(app, genai.grpc_listen)
            grpc_host = genai.grpc_listen.rpartition(":")[0]
            print(f"driftwarden api: OTLP/gRPC traces on {grpc_host}:{grpc_port}", flush=True)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        # gRPC calls in progress finish; what is journaled and not inserted within 10 s: at the next start
        close_ingest(app)
    return 0


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _checked_listen(listen: str) -> str:
    """``--otlp-grpc-listen`` as given, once it parses as HOST:PORT (``UserError`` else)."""
    from driftwarden.collector.config import parse_host_port
    from driftwarden.errors import UserError

    try:
        parse_host_port(listen)
    except ValueError as exc:
        raise UserError(f"--otlp-grpc-listen: {exc}") from None
    return listen


def _serve_metrics(app) -> None:
    """``GET /metrics``: the ingest side's metrics (GenAI calls received on /v1/traces, OTLP counts)."""
    from fastapi import Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from driftwarden.collector.metrics import REGISTRY

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
