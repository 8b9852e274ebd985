"""The collector: a sidecar proxy that captures every inference into the store.

``from driftwarden.collector import capture`` gives the in-process capture API (``collector.capture``);
it is imported on first use so that ``import collector`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name == "capture":
        return importlib.import_module("driftwarden.collector.capture")
    raise AttributeError(f"module 'driftwarden.collector' has no attribute {name!r}")
