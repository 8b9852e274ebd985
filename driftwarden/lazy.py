"""Modules imported at their first use rather than with the module that names them.

``from driftwarden.lazy import numpy as np`` reads like ``import numpy as np``; numpy (about 14 MB of a
process's resident memory, OpenBLAS included) is then imported at the first ``np.`` attribute read, and each
read costs about half a microsecond more than on the module. The drift modules use it so: a small
``driftwarden drift`` run scores every feature from the engine's aggregates in plain Python and never loads it
(``tests/test_lean_imports.py``), while the methods and paths that compute with arrays (cells merged from the
hour profiles, PSI, the p-values, text and embedding drift) load it as they run.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule:
    """Stands in for the module ``name``: an attribute read imports it (once) and reads the attribute from it.

    It keeps a reference to the module, as ``import numpy as np`` does, and no copy of its attributes. (The crashes
    at the end of test runs once put down to a copy were most likely a query in flight at exit:
    ``storage.store._quiesce_at_exit``.) A plain class with slots, not a ``ModuleType``: a module builds an
    ``AttributeError`` before ``__getattr__`` is called, which tripled the cost of a read."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: types.ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{'' if self._module is None else ', imported'}>"


numpy = LazyModule("numpy")
