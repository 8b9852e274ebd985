"""Listening sockets bound before a server starts, so a busy port fails at once and port 0 is resolved."""

from __future__ import annotations

import socket

from driftwarden.collector.config import parse_host_port
from driftwarden.errors import UserError


def bind(listen: str, what: str) -> socket.socket:
    """A listening socket on ``listen`` (``HOST:PORT``, ``[::1]:PORT`` for IPv6); ``what`` names the setting."""
    try:
        host, port = parse_host_port(listen)
    except ValueError as exc:
        raise UserError(f"{what}: {exc}") from None
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {listen} ({what}): {exc.strerror}; choose another address") from None
    sock.listen(1024)  # connections queue until the server serves, so a client may connect right away
    return sock
