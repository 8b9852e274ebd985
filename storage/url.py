"""Parsing of store URLs: ``chdb://`` for the embedded engine, ``http(s)://`` for a server."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from driftwarden.storage.errors import StoreError

DEFAULT_STORE = "chdb://driftwarden-data"
STORE_ENV = "DRIFTWARDEN_STORE"
DEFAULT_DATABASE = "default"
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

ACCEPTED = (
    "chdb:///absolute/path, chdb://relative/path, "
    "http://user:password@host:8123/database or https://user:password@host:8443/database"
)


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL. ``path`` is set for the embedded engine, ``host`` for a server."""

    scheme: str
    database: str
    path: str | None = None
    host: str | None = None
    port: int | None = None
    username: str = "default"
    password: str = ""

    @property
    def embedded(self) -> bool:
        return self.scheme == "chdb"

    def redacted(self) -> str:
        """The URL as it is safe to print: no password."""
        if self.embedded:
            suffix = "" if self.database == DEFAULT_DATABASE else f"?database={self.database}"
            return f"chdb://{self.path}{suffix}"
        user = f"{self.username}@" if self.username else ""
        return f"{self.scheme}://{user}{self.host}:{self.port}/{self.database}"


def resolve(url: str | None) -> str:
    """The store URL to use: the argument, else ``$DRIFTWARDEN_STORE``, else the default."""
    return url or os.environ.get(STORE_ENV) or DEFAULT_STORE


def parse(url: str) -> StoreURL:
    """Parse a store URL, or raise :class:`StoreError` naming the accepted forms."""
    if "://" not in url:
        raise StoreError(f"store URL {url!r} has no scheme; accepted forms: {ACCEPTED}")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "chdb":
        return _parse_chdb(url)
    if scheme in ("http", "https"):
        return _parse_http(url, scheme)
    raise StoreError(f"store URL scheme {scheme!r} is not supported; accepted forms: {ACCEPTED}")


def local_state_dir(url: str | None) -> Path | None:
    """The directory beside an embedded store for its process's local state (spools, journals):
    ``<store directory>-spool``; None for a server, which has no local directory to default to."""
    parsed = parse(resolve(url))
    if not parsed.embedded:
        return None
    store_dir = Path(parsed.path or "driftwarden-data")
    return store_dir.with_name(store_dir.name + "-spool")


def _database(name: str, url: str) -> str:
    if not _DB_NAME.match(name):
        raise StoreError(
            f"database name {name!r} in store URL {url!r} is not valid: "
            "use letters, digits and underscores, starting with a letter or underscore"
        )
    return name


def _parse_chdb(url: str) -> StoreURL:
    rest = url[len("chdb://") :]
    rest, _, query = rest.partition("?")
    if not rest:
        raise StoreError(f"store URL {url!r} names no directory; accepted forms: {ACCEPTED}")
    path = os.path.abspath(unquote(rest))
    params = parse_qs(query)
    database = params.get("database", [DEFAULT_DATABASE])[0]
    return StoreURL(scheme="chdb", path=path, database=_database(database, url))


def _parse_http(url: str, scheme: str) -> StoreURL:
    parts = urlsplit(url)
    if not parts.hostname:
        raise StoreError(f"store URL {url!r} names no host; accepted forms: {ACCEPTED}")
    try:
        port = parts.port or (8443 if scheme == "https" else 8123)
    except ValueError:
        raise StoreError(f"store URL {url!r} has an invalid port; accepted forms: {ACCEPTED}") from None
    database = parts.path.strip("/") or DEFAULT_DATABASE
    return StoreURL(
        scheme=scheme,
        host=parts.hostname,
        port=port,
        username=unquote(parts.username or "default"),
        password=unquote(parts.password or ""),
        database=_database(database, url),
    )
