"""Modules imported at their first use rather than with the module that names them.

``from driftwarden.lazy import numpy as np`` reads like ``import numpy as np``; numpy (about 14 MB of a
process's resident memory, OpenBLAS included) is then imported at the first ``np.`` attribute read. The drift
modules use it so: a small ``driftwarden drift`` run scores every feature from the engine's aggregates in plain
Python and never loads it (``tests/test_lean_imports.py``), while the methods and paths that compute with
arrays (cells merged from the hour profiles, PSI, the p-values, text and embedding drift) load it as they run.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands in for the module ``name`` until an attribute is read: then the module is imported and its
    attributes copied in, so that later reads are plain attribute reads."""

    def __getattr__(self, attribute: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return getattr(module, attribute)


numpy = LazyModule("numpy")
