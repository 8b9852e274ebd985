"""The installed distribution's version, for provenance and ``--version``."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("driftwarden")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
