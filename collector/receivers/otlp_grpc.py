"""OTLP/gRPC receiver: ``TraceService/Export`` and ``LogsService/Export``, per the OpenTelemetry Protocol specification.

The transport of the OpenTelemetry Collector's ``otlp`` exporter and of the SDKs' gRPC exporters (port 4317 by
convention), beside ``POST /v1/traces`` (OTLP/HTTP, ``collector.receivers.otlp``) in the same process: the same
ingest token, decoder, GenAI mapping, journal or store, metrics and answers, through the one
``otlp.export`` (and ``otlp_logs.export_logs`` for the log records that carry GenAI message content, beside
``POST /v1/logs``). Started by ``driftwarden api`` and ``driftwarden up`` when ``genai.grpc_listen`` is set
(``driftwarden api --otlp-grpc-listen``); off by default. Plain TCP, like the HTTP port: terminate TLS in front of
it (a mesh, an ingress) when the network needs it.

Answers (gRPC status codes, as OTLP/gRPC asks):

* ``OK`` with an ``ExportTraceServiceResponse`` (``ExportLogsServiceResponse``); its ``partial_success`` gives the
  spans (log records) rejected and why;
* ``INVALID_ARGUMENT`` for a message that does not decode; nothing is stored;
* ``UNAUTHENTICATED`` without ``authorization: Bearer <ingest token>`` metadata, when the hub has a token;
* ``RESOURCE_EXHAUSTED`` for a message larger than ``genai.max_request_bytes`` (gRPC's own
  ``max_receive_message_length``, once decompressed);
* ``UNAVAILABLE`` when the store does not take the calls or the journal is full: the exporter retries.

Compression (gzip) is gRPC's. The request bytes reach :func:`otlp.export` undecoded (no deserializer), so the
message is decoded exactly as an OTLP/HTTP protobuf body is. ``driftwarden_otlp_requests_total`` counts gRPC answers
with ``transport="grpc"`` under the HTTP status of the same meaning (200, 400, 401, 503); messages over the size
limit are refused by gRPC before they reach the receiver and are not counted there.
"""

from __future__ import annotations

import hmac
import time
from concurrent import futures
from functools import partial
from typing import Any

import grpc
from fastapi import HTTPException
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from driftwarden.auth import bearer
from driftwarden.collector.receivers.otlp import OTLPError, export, request_duration, requests_received
from driftwarden.collector.receivers.otlp_logs import export_logs
from driftwarden.errors import UserError

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
WORKERS = 8
"""Export calls handled at once; more wait in gRPC's queue."""
_CODES = {code.value[0]: code for code in grpc.StatusCode}
_HTTP_EQUIVALENT = {
    grpc.StatusCode.OK: "200",
    grpc.StatusCode.INVALID_ARGUMENT: "400",
    grpc.StatusCode.UNAUTHENTICATED: "401",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "413",
    grpc.StatusCode.UNAVAILABLE: "503",
}


class OTLPGrpcServer:
    """The OTLP/gRPC ``TraceService`` of a hub app (``collector.hub_app.create_app``): its ingest token, GenAI
    configuration, store and journal (``app.state``). :meth:`start` binds ``listen``; :meth:`stop` lets calls in
    progress finish."""

    def __init__(self, app: Any, listen: str) -> None:
        state = app.state
        self.listen = listen
        self._ingest = state.genai
        self._store = state.store
        self._journal = state.otlp_journal
        token = state.ingest_token
        self._secret = token.encode() if token else None
        limit = self._ingest.config.max_request_bytes
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="dw-otlp-grpc"),
            options=[("grpc.max_receive_message_length", limit), ("grpc.so_reuseport", 0)],
        )
        services = (
            (SERVICE, "traces", export, ExportTraceServiceResponse),
            (LOGS_SERVICE, "logs", export_logs, ExportLogsServiceResponse),
        )
        self._server.add_generic_rpc_handlers(
            tuple(
                grpc.method_handlers_generic_handler(
                    service,
                    {
                        "Export": grpc.unary_unary_rpc_method_handler(
                            partial(self._export, signal=signal, exporter=exporter),
                            response_serializer=response.SerializeToString,
                        )
                    },
                )
                for service, signal, exporter, response in services
            )
        )
        self.port = 0

    def start(self) -> int:
        """Bind and serve; returns the port (``listen`` may ask for port 0). ``UserError`` when it cannot bind."""
        try:
            self.port = self._server.add_insecure_port(self.listen)
        except RuntimeError:  # gRPC says only "Failed to bind", and logs the cause (in use, no such address) itself
            raise UserError(
                f"cannot listen for OTLP/gRPC on {self.listen} (genai.grpc_listen, --otlp-grpc-listen): the port is "
                "in use or the host is not an address of this machine; choose another, e.g. 0.0.0.0:4317"
            ) from None
        self._server.start()
        return self.port

    def stop(self, grace_s: float = 10.0) -> None:
        """Refuse new calls, let those in progress finish (at most ``grace_s``)."""
        self._server.stop(grace_s).wait(grace_s + 1)

    def _export(self, body: bytes, context: grpc.ServicerContext, signal: str, exporter: Any) -> Any:
        started = time.perf_counter()
        code, message = grpc.StatusCode.OK, ""
        answer = None
        if self._secret is not None and not self._authorised(context):
            code = grpc.StatusCode.UNAUTHENTICATED
            message = "this service needs the ingest token: metadata authorization: Bearer TOKEN"
        else:
            try:
                answer = exporter(body, False, self._ingest, self._store, self._journal)
            except OTLPError as exc:
                code, message = _CODES.get(exc.rpc_code, grpc.StatusCode.INTERNAL), exc.message
            except HTTPException as exc:  # the store did not take the calls: retry later
                code, message = grpc.StatusCode.UNAVAILABLE, str(exc.detail)
        requests_received.labels(_HTTP_EQUIVALENT.get(code, "500"), "grpc", signal).inc()
        request_duration.labels(signal).observe(time.perf_counter() - started)
        if answer is None:
            context.abort(code, message)
        return answer

    def _authorised(self, context: grpc.ServicerContext) -> bool:
        assert self._secret is not None
        for key, value in context.invocation_metadata():
            if key == "authorization":
                presented = bearer(value if isinstance(value, str) else value.decode("latin-1"))
                return presented is not None and hmac.compare_digest(presented.encode(), self._secret)
        return False
