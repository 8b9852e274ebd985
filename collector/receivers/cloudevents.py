"""KServe's payload logger: ``POST /v1/cloudevents``, CloudEvents paired into inferences.

A KServe ``InferenceService`` with ``spec.predictor.logger.url`` pointing here posts one
CloudEvent per request and one per response (HTTP binding, binary mode): the body is the
payload, the attributes are headers — ``ce-specversion``, ``ce-id`` (the same for a request
and its response), ``ce-type`` (``org.kubeflow.serving.inference.request`` or ``.response``),
``ce-source``, ``ce-time``, and KServe's extensions ``ce-inferenceservicename``,
``ce-namespace``, ``ce-component``, ``ce-endpoint``, ``ce-traceparent``. Structured mode
(``application/cloudevents+json``, attributes and ``data`` in one JSON document) is read too.

* The model is ``ce-inferenceservicename``, else the last path segment of ``ce-source``
  (else the whole source), checked by ``driftwarden.names``; ``ce-namespace`` is the tenant,
  ``ce-component``/``ce-endpoint`` the model version (``predictor``, ``canary``, ...).
* The payload is read by the collector's own pipeline (``collector.pipeline``): Open Inference
  Protocol (v2) bodies by its OIP receiver, OpenAI-compatible bodies by its OpenAI receiver,
  with the same redaction, sampling and size caps as the sidecar; KServe v1 bodies
  (``{"instances": [...]}`` / ``{"predictions": [...]}``) give one event per instance, with
  numeric features ``x0, x1, ...`` (or the keys of object instances) and the prediction.
* Pairing by ``ce-id``: each half is stored when it arrives (so nothing answered is lost),
  under event ids derived from the model and ``ce-id``; when the other half arrives, the
  paired event (features, prediction, latency = response time - request time) is stored
  under the same ids and time (that of the first half) and replaces the half (the table
  deduplicates by its sorting key, which ends with the event id). The first
  half is held in memory for ``PAIR_TTL_S``; a half whose partner is no longer in memory
  (the process restarted in between) is paired with what the store holds of it.

Answers: 200 ``{"stored": N, "paired": bool}``; 400 for missing or wrong attributes or a
refused model name; 413 above ``genai.max_request_bytes``; 503 when the store does not take
the events. Same ingest token as ``/v1/events`` (``collector.hub_app``).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import Counter

from driftwarden.collector import arrow
from driftwarden.collector.config import CollectorConfig
from driftwarden.collector.event import Event
from driftwarden.collector.exchange import Exchange
from driftwarden.collector.ingest import persist, store_lock
from driftwarden.collector.metrics import REGISTRY
from driftwarden.collector.pipeline import Pipeline
from driftwarden.collector.receivers.base import as_float, parse_json
from driftwarden.collector.receivers.otlp import OTLPError, genai_ingest, read_body
from driftwarden.names import model_name_problem

log = logging.getLogger("driftwarden.cloudevents")

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
STRUCTURED = "application/cloudevents+json"
PAIR_TTL_S = 300.0
MAX_PENDING = 100_000

router = APIRouter(tags=["kserve"])

cloudevents_received = Counter(
    "driftwarden_cloudevents",
    "KServe payload-logger CloudEvents received, by type (request | response) and outcome (stored | paired | refused)",
    ["type", "outcome"],
    registry=REGISTRY,
)


@dataclasses.dataclass(slots=True)
class Half:
    """One CloudEvent: a request or a response of one inference."""

    model: str
    ce_id: str
    kind: str  # request | response
    body: bytes
    content_type: str
    time_us: int
    tenant: str
    version: str
    trace_id: str
    received: float = dataclasses.field(default_factory=time.monotonic)


class Pairing:
    """Halves waiting for their partner, and the pipelines that read pairs; thread-safe."""

    def __init__(self, genai_redaction: dict) -> None:
        self._pending: OrderedDict[tuple[str, str], Half] = OrderedDict()
        self._pipelines: dict[str, Pipeline] = {}
        self._lock = threading.Lock()
        self._redaction = genai_redaction
        self.started = time.monotonic()

    def take_partner(self, half: Half) -> Half | None:
        """The other half of ``half`` if it is waiting here (removed), else None; expired halves are dropped."""
        now = time.monotonic()
        with self._lock:
            while self._pending:
                _, oldest = next(iter(self._pending.items()))
                if now - oldest.received < PAIR_TTL_S and len(self._pending) < MAX_PENDING:
                    break
                self._pending.popitem(last=False)
            other = self._pending.get((half.model, half.ce_id))
            if other is not None and other.kind != half.kind:
                del self._pending[(half.model, half.ce_id)]
                return other
            return None

    def wait(self, half: Half) -> None:
        with self._lock:
            self._pending[(half.model, half.ce_id)] = half

    def recently_started(self) -> bool:
        return time.monotonic() - self.started < PAIR_TTL_S

    def pipeline(self, model: str) -> Pipeline:
        with self._lock:
            found = self._pipelines.get(model)
            if found is None:
                config = CollectorConfig(upstream="http://kserve.invalid", model=model, redaction=self._redaction)
                found = self._pipelines[model] = Pipeline(config, sink=None)  # only .events() is used
            return found


def pairing_of(request: Request) -> Pairing:
    state = request.app.state
    pairing = getattr(state, "cloudevents_pairing", None)
    if pairing is None:
        pairing = state.cloudevents_pairing = Pairing(genai_ingest(request).config.redaction)
    return pairing


@router.post(
    "/v1/cloudevents",
    summary="KServe payload logger: CloudEvents (binary or structured mode)",
    responses={
        400: {"description": "a CloudEvents attribute is missing or wrong, or the model name is refused"},
        401: {"description": "the ingest token is required"},
        413: {"description": "the body is larger than genai.max_request_bytes"},
        422: {"description": "the payload could not be read as an inference; nothing was stored"},
        503: {"description": "the store did not take the events; retry later"},
    },
)
async def post_cloudevent(request: Request) -> dict[str, Any]:
    ingest = genai_ingest(request)
    try:
        body = await read_body(request, ingest.config.max_request_bytes)
    except OTLPError as exc:
        raise HTTPException(exc.http_status, exc.message) from None
    half = read_event(request.headers, body)
    pairing = pairing_of(request)
    partner = pairing.take_partner(half)
    if partner is None and pairing.recently_started():
        partner = await run_in_threadpool(_stored_partner, request.app.state.store, half)
    request_half, response_half = (half, partner) if half.kind == "request" else (partner, half)
    # The row's ts is the first half's: the table deduplicates by (model, ts, event_id), so the pair must keep it.
    ts_us = partner.time_us if partner is not None else half.time_us
    try:
        events = await run_in_threadpool(to_events, pairing.pipeline(half.model), request_half, response_half, ts_us)
    except Exception as exc:  # a payload a receiver cannot read: say so, nothing is stored
        log.exception("reading the CloudEvent %s of model %s failed", half.ce_id, half.model)
        raise HTTPException(422, f"the payload could not be read as an inference ({exc}); nothing was stored") from None
    await persist(request, "inferences", arrow.to_table(events))
    if partner is None:
        pairing.wait(half)
    cloudevents_received.labels(half.kind, "paired" if partner else "stored").inc()
    return {"stored": len(events), "paired": partner is not None}


def read_event(headers: Any, body: bytes) -> Half:
    """The CloudEvent of a request (binary or structured mode); HTTP 400 naming what is wrong."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == STRUCTURED:
        document, ok = parse_json(body)
        if not ok or not isinstance(document, dict):
            raise _refuse("", "a structured CloudEvent must be one JSON object")
        attributes = {str(k).lower(): v for k, v in document.items() if k not in ("data", "data_base64")}
        if "data_base64" in document:
            try:
                body = base64.b64decode(str(document["data_base64"]), validate=True)
            except ValueError:
                raise _refuse("", "data_base64 is not valid base64") from None
        else:
            data = document.get("data")
            body = data.encode() if isinstance(data, str) else json.dumps(data).encode()
        content_type = str(attributes.get("datacontenttype", "application/json"))
    else:
        attributes = {k[3:].lower(): v for k, v in headers.items() if k.lower().startswith("ce-")}
    missing = [name for name in ("specversion", "id", "type", "source") if not attributes.get(name)]
    if missing:
        raise _refuse("", "missing CloudEvents attribute(s) " + ", ".join(f"ce-{m}" for m in missing))
    kind = {REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}.get(str(attributes["type"]))
    if kind is None:
        raise _refuse("", f"ce-type {attributes['type']!r} is not accepted; send {REQUEST_TYPE} or {RESPONSE_TYPE}")
    model = str(attributes.get("inferenceservicename") or "") or _model_from_source(str(attributes["source"]))
    problem = model_name_problem(model)
    if problem:
        raise _refuse(kind, f"the model named by the event ({model[:80]!r}) is refused: {problem}")
    traceparent = str(attributes.get("traceparent") or "")
    parts = traceparent.split("-")
    return Half(
        model=model,
        ce_id=str(attributes["id"]),
        kind=kind,
        body=body,
        content_type=content_type,
        time_us=_time_us(str(attributes.get("time") or "")),
        tenant=str(attributes.get("namespace") or ""),
        version=str(attributes.get("endpoint") or attributes.get("component") or ""),
        trace_id=parts[1] if len(parts) == 4 and len(parts[1]) == 32 else "",
    )


def _refuse(kind: str, message: str) -> HTTPException:
    cloudevents_received.labels(kind or "unknown", "refused").inc()
    return HTTPException(400, message)


def _model_from_source(source: str) -> str:
    try:
        parts = urlsplit(source)
    except ValueError:  # e.g. an unclosed IPv6 bracket: not a URL, the source names the model as it is
        return source
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme and parts.netloc:
        return segments[-1] if segments else ""
    return source


def _time_us(text: str) -> int:
    if text:
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            return int(moment.timestamp() * 1_000_000)
    return time.time_ns() // 1000


def _event_base(model: str, ce_id: str) -> uuid.UUID:
    digest = hashlib.blake2b(f"{model}\0{ce_id}".encode(), digest_size=16).digest()
    return uuid.UUID(bytes=digest, version=4)


def _stored_partner(client: Any, half: Half) -> Half | None:
    """The other half, read back from the store (its payload as stored), when this process restarted in between."""
    column = "output_payload" if half.kind == "request" else "input_payload"
    with store_lock:
        found = client.query(
            f"SELECT {column}, toUnixTimestamp64Micro(ts), tenant, model_version, trace_id FROM inferences FINAL "
            "WHERE model = {m:String} AND event_id = {id:UUID} LIMIT 1",
            parameters={"m": half.model, "id": str(_event_base(half.model, half.ce_id))},
        ).result_rows
    if not found or not found[0][0]:
        return None
    payload, time_us, tenant, version, trace_id = found[0]
    kind = "response" if half.kind == "request" else "request"
    return Half(half.model, half.ce_id, kind, payload.encode(), "application/json", time_us, tenant, version, trace_id)


def to_events(pipeline: Pipeline, request_half: Half | None, response_half: Half | None, ts_us: int) -> list[Event]:
    """The events of a pair (or of one half) at ``ts_us``, read by the collector's pipeline; ids from ``ce-id``."""
    first = request_half or response_half
    assert first is not None
    request_body = request_half.body if request_half else b""
    response_body = response_half.body if response_half else b""
    request_json, _ = parse_json(request_body)
    response_json, _ = parse_json(response_body)
    path = _path(first.model, request_json, response_json)
    latency_s = 0.0
    if request_half and response_half:
        latency_s = max(0.0, (response_half.time_us - request_half.time_us) / 1e6)
    ex = Exchange(
        method="POST",
        path=path,
        query="",
        ts_us=ts_us,
        t_start=0.0,
        request_body=request_body,
        request_content_type=request_half.content_type if request_half else "",
        trace_id=first.trace_id,
        tenant=first.tenant,
        status=200 if response_half else 0,
        response_body=response_body,
        response_bytes=len(response_body),
        response_content_type=response_half.content_type if response_half else "",
        t_end=latency_s,
    )
    ex.exchange_id = _event_base(first.model, first.ce_id)
    events = pipeline.events(ex)
    if path.startswith("/v1/models/") and events:
        events = _v1_rows(events[0], request_json, response_json)
    for event in events:
        event.protocol = "cloudevents"
        event.model_version = event.model_version or first.version
        if not response_half:
            event.error_class = ""  # a request whose response has not arrived yet is not a failure
    return events


def _path(model: str, request_json: Any, response_json: Any) -> str:
    """Which of the collector's receivers reads the pair, by the payload's shape."""
    if isinstance(request_json, dict):
        if isinstance(request_json.get("messages"), list):
            return "/openai/v1/chat/completions"
        if "prompt" in request_json and "model" in request_json:
            return "/openai/v1/completions"
        inputs = request_json.get("inputs")
        if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) and "datatype" in inputs[0]:
            return f"/v2/models/{model}/infer"
    if isinstance(response_json, dict) and isinstance(response_json.get("outputs"), list) and request_json is None:
        return f"/v2/models/{model}/infer"
    return f"/v1/models/{model}:predict"


def _v1_rows(base: Event, request_json: Any, response_json: Any) -> list[Event]:
    """KServe v1: one event per instance, with its features and its prediction."""
    instances = request_json.get("instances") if isinstance(request_json, dict) else None
    predictions = response_json.get("predictions") if isinstance(response_json, dict) else None
    rows = max(
        len(instances) if isinstance(instances, list) else 0, len(predictions) if isinstance(predictions, list) else 0
    )
    if rows == 0:
        return [base]
    out = []
    for i in range(rows):
        event = dataclasses.replace(base, num_names=[], num_values=[], cat_names=[], cat_values=[])
        if i:
            event.event_id = uuid.UUID(int=base.event_id.int ^ i)
        if isinstance(instances, list) and i < len(instances):
            _features(event, instances[i])
        if isinstance(predictions, list) and i < len(predictions):
            _prediction(event, predictions[i])
        out.append(event)
    return out


def _features(event: Event, row: Any) -> None:
    items = row.items() if isinstance(row, dict) else enumerate(row if isinstance(row, list) else [row])
    for key, value in items:
        name = str(key) if isinstance(row, dict) else f"x{key}"
        number = as_float(value)
        if number is not None and not isinstance(value, (list, dict)):
            event.num_names.append(name)
            event.num_values.append(number)
        elif isinstance(value, str):
            event.cat_names.append(name)
            event.cat_values.append(value)


def _prediction(event: Event, value: Any) -> None:
    if isinstance(value, str):
        event.prediction_label = value
        return
    number = as_float(value)
    if number is not None and not isinstance(value, (list, dict)):
        event.prediction = number
        return
    values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    names = list(value) if isinstance(value, dict) else [f"y{j}" for j in range(len(values))]
    for name, item in zip(names, values, strict=False):
        number = as_float(item)
        if number is not None and not isinstance(item, (list, dict, str)):
            event.output_names.append(str(name))
            event.output_values.append(number)
