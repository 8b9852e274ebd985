"""Drift reports and a JSON API for model owners: a FastAPI router added to the hub's app.

    from driftwarden.detectors.api import create_router, load_settings
    app.include_router(create_router(load_settings()))

See ``detectors/api/README.md`` for the routes, tokens and reports.
"""

from __future__ import annotations

from driftwarden.detectors.api.routes import create_router
from driftwarden.detectors.api.settings import ApiSettings, load_settings

__all__ = ["ApiSettings", "create_router", "load_settings"]
