"""The hub: the FastAPI application of the process that owns the store (``driftwarden api``).

Collectors that cannot open the store themselves (an embedded store admits one
process) send their batches here. Other routers (drift reports) are added to the
same app by :func:`create_app`'s callers.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import Depends, FastAPI

from driftwarden.auth import bearer_guard
from driftwarden.collector.genai_config import GenAIConfig
from driftwarden.collector.ingest import router as ingest_router
from driftwarden.collector.ingest import store_lock
from driftwarden.collector.receivers.cloudevents import router as cloudevents_router
from driftwarden.collector.receivers.otlp import GenAIIngest
from driftwarden.collector.receivers.otlp import router as otlp_router
from driftwarden.collector.receivers.otlp_logs import router as otlp_logs_router
from driftwarden.collector.sinks.hub import INGEST_TOKEN_ENV


def create_app(
    client, *, ingest_token: str | None = None, genai: GenAIConfig | None = None, journal_dir: Path | None = None
) -> FastAPI:
    """An app serving ``/healthz`` and the ingest endpoints over the store ``client`` (clickhouse-connect).

    The ingest endpoints require ``Authorization: Bearer <ingest_token>`` (default
    ``$DRIFTWARDEN_INGEST_TOKEN``) when a token is set; collectors and ``driftwarden ingest``
    send it from the same variable. Without one they are open, for a hub on loopback.
    ``POST /v1/traces`` (OTLP, ``collector.receivers.otlp``), ``POST /v1/logs`` (the message content of GenAI
    calls sent as log records, ``collector.receivers.otlp_logs``, attached to the calls by a thread started here,
    ``collector.content_attacher``) and ``POST /v1/cloudevents`` (KServe's
    payload logger, ``collector.receivers.cloudevents``) are guarded the same way, with ``genai``
    (prices, service-to-model mapping, limits, redaction of content) configuring them; with
    ``genai.cloudevents_require_token`` false, ``/v1/cloudevents`` is open (KServe's logger sends no token).
    With ``journal_dir`` (``collector.ingest_journal.journal_directory``), ``/v1/traces`` answers once its calls are
    in that write-ahead journal and a thread inserts them (``app.state.otlp_journal``; :func:`close_ingest` closes
    it once the server stopped). Without it, each request waits for its insert.
    FastAPI's ``/docs`` and ``/redoc`` are off: they load their scripts from a CDN.
    """
    app = FastAPI(
        title="driftwarden",
        summary="Ingest and reports over the driftwarden store",
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = client
    token = ingest_token or os.environ.get(INGEST_TOKEN_ENV) or None
    app.state.ingest_token = token
    app.state.ingest_protected = token is not None
    app.include_router(ingest_router, dependencies=[Depends(bearer_guard(token))])
    app.state.genai = GenAIIngest(genai)
    app.state.otlp_journal = None
    if journal_dir is not None:
        from driftwarden.collector.ingest_journal import IngestJournal

        max_bytes = (genai or GenAIConfig()).journal_max_bytes
        app.state.otlp_journal = IngestJournal(
            journal_dir, client, "inferences", max_bytes=max_bytes, on_inserted=app.state.genai.spans_stored
        )
    app.include_router(otlp_router, dependencies=[Depends(bearer_guard(token))])
    app.include_router(otlp_logs_router, dependencies=[Depends(bearer_guard(token))])
    app.state.genai.content_attacher(client)  # content of log records left by a previous run is attached
    # KServe's logger sends no Authorization header: `genai.cloudevents_require_token: false` opens this one route.
    open_cloudevents = genai is not None and not genai.cloudevents_require_token
    app.include_router(cloudevents_router, dependencies=[] if open_cloudevents else [Depends(bearer_guard(token))])

    @app.get("/healthz", summary="Liveness: the store answers a query")
    def healthz() -> dict[str, str]:
        with store_lock:
            client.query("SELECT 1")
        return {"status": "ok"}

    return app


def start_otlp_grpc(app: FastAPI, listen: str) -> int:
    """Serve OTLP/gRPC (``collector.receivers.otlp_grpc``) on ``listen`` beside the app's ``POST /v1/traces``, with
    its token, configuration, store and journal; returns the port bound. :func:`close_ingest` stops it."""
    from driftwarden.collector.receivers.otlp_grpc import OTLPGrpcServer

    server = OTLPGrpcServer(app, listen)
    port = server.start()
    app.state.otlp_grpc = server
    return port


def close_ingest(app: FastAPI, timeout: float = 10.0) -> None:
    """Once the server stopped: stop the OTLP/gRPC receiver (calls in progress finish, within ``timeout``), insert
    what the OTLP journal holds (within ``timeout``; the rest is inserted at the next start) and release its
    directory; a last pass of the content attacher."""
    grpc_server = getattr(app.state, "otlp_grpc", None)
    if grpc_server is not None:
        grpc_server.stop(timeout)
        app.state.otlp_grpc = None
    if app.state.otlp_journal is not None:
        app.state.otlp_journal.close(timeout)
    app.state.genai.close(timeout)


def freeze_heap() -> None:
    """Move every object alive now (the modules, the app, the store client) out of the cyclic garbage collector's
    reach, once a serving process has started (``gc.freeze``).

    A full collection walks every tracked object: with FastAPI, pyarrow, pydantic and ClickHouse's client
    loaded, that is about 100,000 objects and 40-120 ms during which no Python thread runs, one request in a
    few hundred at OTLP rates (BENCHMARKS.md, OTLP fourth pass). These objects live as long as the process, so
    there is nothing to collect among them; what requests allocate afterwards is collected as before."""
    import gc

    gc.collect()
    gc.freeze()
