"""Sub-commands of the ``driftwarden`` command line, one module each (see ``driftwarden.cli``)."""

from __future__ import annotations

import argparse

from driftwarden.storage.url import DEFAULT_STORE, STORE_ENV


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--store URL`` option that every sub-command takes."""
    parser.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help=f"store URL: chdb:///path (embedded) or http(s)://user:pass@host:port/db; "
        f"default ${STORE_ENV}, else {DEFAULT_STORE}",
    )
