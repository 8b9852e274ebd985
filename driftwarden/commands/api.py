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
        "POST /v1/ground-truth and /healthz. The store is migrated first when it has no schema yet.",
    )
    add_store_argument(parser)
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=DEFAULT_LISTEN,
        help=f"address to listen on (default {DEFAULT_LISTEN}; port 0 picks a free port and prints it)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import socket
    import sys

    import uvicorn

    from driftwarden import storage
    from driftwarden.collector.hub_app import create_app
    from driftwarden.detectors.api import create_router, load_settings
    from driftwarden.listen import bind
    from driftwarden.storage.migrate import applied

    api_settings = load_settings()  # before opening anything: a bad token list is a one-line error
    sock = bind(args.listen, "--listen")
    client = storage.connect(args.store, create_database=True)
    if not applied(client):
        storage.migrate(client)
    host, bound = sock.getsockname()[:2]
    shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
    print(f"driftwarden api: store {storage.describe(args.store)}, listening on http://{shown}:{bound}", flush=True)
    app = create_app(client)
    app.include_router(create_router(api_settings))  # drift reports and JSON API for model owners (detectors/api)
    if not app.state.ingest_protected:
        print(
            "driftwarden api: the ingest endpoints are open to anyone who can reach this address; "
            "set DRIFTWARDEN_INGEST_TOKEN to require a token",
            file=sys.stderr,
            flush=True,
        )
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
