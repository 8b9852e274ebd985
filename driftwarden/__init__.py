"""driftwarden: self-hosted monitoring and drift observability for models on your own infrastructure."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("driftwarden")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
