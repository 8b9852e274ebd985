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
from typing import NoReturn

from driftwarden.errors import UserError

COMMANDS = [
    "driftwarden.commands.migrate",
    "driftwarden.commands.drift",
    "driftwarden.commands.estimate",
    "driftwarden.commands.api",
    "driftwarden.commands.ingest",
    "driftwarden.commands.collector",
    "driftwarden.commands.dashboards",
    "driftwarden.commands.detectors",
    "driftwarden.commands.report",
    "driftwarden.commands.up",
    "driftwarden.commands.demo",
]


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr, like every other user mistake (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """``--version``: the installed version, read only when asked (importlib.metadata costs start-up time)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from driftwarden.version import __version__

        print(f"driftwarden {__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="driftwarden",
        description="Self-hosted monitoring and drift observability for models on your own infrastructure.",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
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
