"""The hub: the FastAPI application of the process that owns the store (``driftwarden api``).

Collectors that cannot open the store themselves (an embedded store admits one
process) send their batches here. Other routers (drift reports) are added to the
same app by :func:`create_app`'s callers.
"""

from __future__ import annotations

from fastapi import FastAPI

from collector.ingest import router as ingest_router
from collector.ingest import store_lock


def create_app(client) -> FastAPI:
    """An app serving ``/healthz`` and the ingest endpoints over the store ``client`` (clickhouse-connect)."""
    app = FastAPI(title="driftwarden", summary="Ingest and reports over the driftwarden store")
    app.state.store = client
    app.include_router(ingest_router)

    @app.get("/healthz", summary="Liveness: the store answers a query")
    def healthz() -> dict[str, str]:
        with store_lock:
            client.query("SELECT 1")
        return {"status": "ok"}

    return app
