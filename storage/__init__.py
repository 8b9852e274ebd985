"""The ClickHouse store: URLs, connections and the schema migrations."""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from driftwarden.storage.errors import StoreError
    from driftwarden.storage.migrate import DEFAULT_RETENTION_DAYS, latest_version, migrate
    from driftwarden.storage.ready import open_store
    from driftwarden.storage.store import connect, describe
    from driftwarden.storage.url import DEFAULT_STORE, STORE_ENV

# Each public name is imported from its module on first use: the command line reads the store URL's
# defaults (driftwarden.storage.url) to print its help without loading clickhouse-connect and urllib3.
_MODULES = {
    "StoreError": "errors",
    "DEFAULT_RETENTION_DAYS": "migrate",
    "latest_version": "migrate",
    "migrate": "migrate",
    "open_store": "ready",
    "connect": "store",
    "describe": "store",
    "DEFAULT_STORE": "url",
    "STORE_ENV": "url",
}


class _Package(types.ModuleType):
    """Keeps ``storage.migrate`` the function: importing the submodule of the same name binds the module
    on the package, which the eager imports used to overwrite with the function."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _MODULES.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'driftwarden.storage' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"driftwarden.storage.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "DEFAULT_STORE",
    "STORE_ENV",
    "StoreError",
    "connect",
    "describe",
    "latest_version",
    "migrate",
    "open_store",
]
