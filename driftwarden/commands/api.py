"""``driftwarden api``: serve the hub (ingest endpoints, health) over a store this process owns."""

from __future__ import annotations

import argparse

from driftwarden.commands import add_store_argument
from driftwarden.errors import UserError

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


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a tuple; UserError naming the expected form."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UserError(f"--listen {text!r} is not HOST:PORT, e.g. 127.0.0.1:8000 or 0.0.0.0:8000")
    return host, int(port)


def run(args: argparse.Namespace) -> int:
    import socket
    import sys

    import uvicorn

    import storage
    from collector.hub_app import create_app
    from detectors.api import create_router, load_settings
    from storage.migrate import applied

    host, port = parse_listen(args.listen)
    api_settings = load_settings()  # before opening anything: a bad token list is a one-line error
    client = storage.connect(args.store, create_database=True)
    if not applied(client):
        storage.migrate(client)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(1024)  # connections queue until uvicorn serves, so a client may connect right away
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
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
