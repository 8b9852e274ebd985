"""The ``driftwarden`` command line: one console script, one module per sub-command.

Each module in ``COMMANDS`` has ``register(subparsers)``, which adds its parser
and sets ``run=`` to a function of the parsed arguments returning an exit
status. Modules import their heavy dependencies inside ``run`` so that
``driftwarden --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from driftwarden.errors import UserError
from driftwarden.version import __version__

COMMANDS = [
    "driftwarden.commands.migrate",
    "driftwarden.commands.drift",
    "driftwarden.commands.api",
    "driftwarden.commands.ingest",
    "driftwarden.commands.collector",
    "driftwarden.commands.dashboards",
    "driftwarden.commands.detectors",
    "driftwarden.commands.report",
    "driftwarden.commands.up",
    "driftwarden.commands.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftwarden",
        description="Self-hosted monitoring and drift observability for models on your own infrastructure.",
    )
    parser.add_argument("--version", action="version", version=f"driftwarden {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UserError as exc:
        print(f"driftwarden {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
