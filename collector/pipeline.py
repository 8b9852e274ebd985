"""The capture pipeline: exchange -> receiver -> processors -> writer.

Runs after the response has been sent, never on the inference path. Any
exception in it is counted as ``events_dropped{reason="capture_error"}`` and
swallowed: capture must never break the proxy.

Order of processing, per event:

1. the receiver chosen by path reads features, predictions and hashes;
2. the error class: transport errors (``upstream_unreachable``,
   ``upstream_timeout``, ``client_disconnected``, ...) win, then
   ``upstream_5xx``, then the receiver's ``malformed_request`` /
   ``unparsed_response``, then ``upstream_4xx``;
3. payload sampling (per request) decides whether the bodies are kept;
4. redaction of everything textual that is stored;
5. the size cap on payloads and generated text (``payload_truncated``).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
import zlib
from collections import Counter
from typing import Any, Protocol

from driftwarden.collector import metrics
from driftwarden.collector.config import CollectorConfig
from driftwarden.collector.event import Event
from driftwarden.collector.exchange import Exchange
from driftwarden.collector.processors.redaction import Redactor
from driftwarden.collector.processors.sampling import PayloadSampler
from driftwarden.collector.processors.truncation import cap_text, decode_capped
from driftwarden.collector.receivers import Captured, Selector, select
from driftwarden.collector.receivers.unknown import UnknownReceiver

log = logging.getLogger("driftwarden.collector")

REDACTION_KEY_ENV = "DRIFTWARDEN_REDACTION_KEY"
_UNKNOWN = UnknownReceiver()


class EventSink(Protocol):
    """What the pipeline hands events to: ``collector.writer.Writer`` (never blocks, never raises)."""

    def submit(self, event: Event) -> None: ...

    def submit_many(self, events: list[Event], ticket: int) -> None: ...


def _derive_event_ids(ex: Exchange, events: list[Event]) -> None:
    """Event ids from the exchange's id: row ``i`` gets ``exchange_id XOR i`` (the version bits stay).

    Capturing the same exchange twice (from the journal after a crash) gives the same ids, so the
    store keeps its rows once. A trusted client's ``X-Driftwarden-Event-Id`` stays on the first row.
    """
    base = ex.exchange_id.int
    client_id = bool(ex.extra.get("event_id"))
    for i, event in enumerate(events):
        if i == 0:
            if not client_id or event.event_id == ex.exchange_id:
                event.event_id = ex.exchange_id
        else:
            event.event_id = uuid.UUID(int=base ^ i)


def build_redactor(config: CollectorConfig) -> Redactor:
    """The redactor for ``config.redaction``; the HMAC key comes from the config, else the environment."""
    rc = config.redaction
    key = rc.key or os.environ.get(REDACTION_KEY_ENV) or None
    redactor = Redactor(mode=rc.mode, key=key, fields=rc.fields, rules=rc.rules, patterns=rc.patterns)
    if rc.mode == "hash" and redactor.key_is_ephemeral:
        log.warning(
            "redaction.key is not set (nor $%s): pseudonyms of redacted values are keyed with a random key "
            "and change when the collector restarts",
            REDACTION_KEY_ENV,
        )
    return redactor


class Pipeline:
    """Turns exchanges into redacted, capped events and submits them.

    Thread safety: ``process`` runs on the event loop and, for large exchanges,
    on the proxy's capture thread at the same time. It keeps no state between
    calls except read-only configuration and metric children resolved at
    construction (prometheus-client metrics are thread-safe).
    """

    def __init__(self, config: CollectorConfig, sink: EventSink, selector: Selector | None = None) -> None:
        self.config = config
        self.sink = sink
        self.selector = selector or select(config)
        self.sampler = PayloadSampler(config.payload.sample_rate, config.payload.sample_rates)
        self.redactor = build_redactor(config)
        self._max_bytes = config.payload.max_bytes
        self._max_parse = config.payload.max_parse_bytes
        self._capture_errors = metrics.events_dropped.labels(config.model, "capture_error")
        rules = {"field", *config.redaction.rules, *config.redaction.patterns}
        self._redaction_counters: dict[str, Any] = {r: metrics.redactions.labels(config.model, r) for r in rules}

    def wants(self, method: str, path: str) -> bool:
        """Whether a request is an inference that will be recorded (so its bodies must be kept)."""
        return self.selector.pick(method, path) is not None

    def process(self, ex: Exchange) -> int:
        """Capture one exchange; returns the number of events submitted (0 on a capture error).

        A journaled exchange (``journal_seq >= 0``) goes to the writer with its sequence number, which
        the writer releases from the journal once every event of it is acknowledged (or dropped).
        """
        try:
            events = self.events(ex)
        except Exception:
            self._capture_errors.inc()
            log.exception("capture of %s %s failed; the event is dropped", ex.method, ex.path)
            events = []
        if ex.journal_seq >= 0:
            self.sink.submit_many(events, ex.journal_seq)
        else:
            for event in events:
                self.sink.submit(event)
        return len(events)

    def events(self, ex: Exchange) -> list[Event]:
        """The processed events of one exchange (empty when the request is not an inference)."""
        receiver = self.selector.pick(ex.method, ex.path)
        if receiver is None:
            return []
        cfg = self.config
        if ex.response_content_encoding and not ex.response_cut:
            ex.response_body = self._decoded(ex.response_body, ex.response_content_encoding)
        too_large = ex.request_cut or len(ex.request_body) > self._max_parse or len(ex.response_body) > self._max_parse
        if too_large:
            # Parsing a body this size would stall the event loop: record what the proxy knows.
            captured = _UNKNOWN.capture(
                ex, model=cfg.model, model_version=cfg.model_version, model_digest=cfg.model_digest
            )
            captured.events[0].protocol = receiver.name
        else:
            captured = receiver.capture(
                ex, model=cfg.model, model_version=cfg.model_version, model_digest=cfg.model_digest
            )
        _derive_event_ids(ex, captured.events)
        self._error_class(ex, captured.events)
        sampled = self.sampler.keep(cfg.model)
        self._payloads(ex, captured, sampled, parsed_ok=not too_large)
        for event in captured.events:
            self._redact_fields(event)
        return captured.events

    @staticmethod
    def _error_class(ex: Exchange, events: list[Event]) -> None:
        if ex.error_class:
            cls = ex.error_class
        elif ex.status >= 500:
            cls = "upstream_5xx"
        else:
            cls = ""
        for event in events:
            if cls:
                event.error_class = cls
            elif not event.error_class and ex.status >= 400:
                event.error_class = "upstream_4xx"

    def _payloads(self, ex: Exchange, captured: Captured, sampled: bool, *, parsed_ok: bool) -> None:
        if not sampled:
            return
        counts: Counter[str] = Counter()
        shared: tuple[str, str, bool] | None = None
        for i, event in enumerate(captured.events):
            counts.clear()
            if captured.row_payload is not None:
                request_obj, response_obj = captured.row_payload(i)
                text_in, cut_in = self._object_payload(request_obj, counts)
                text_out, cut_out = (
                    self._object_payload(response_obj, counts) if response_obj is not None else ("", False)
                )
                event.input_payload, event.output_payload = text_in, text_out
                event.payload_truncated = cut_in or cut_out
            else:
                if shared is None:
                    text_in, cut_in = self._body_payload(ex.request_body, captured.request_json, counts, parsed_ok)
                    text_out, cut_out = self._body_payload(
                        ex.response_body, captured.response_json, counts, parsed_ok and not ex.response_cut
                    )
                    shared = (text_in, text_out, cut_in or cut_out or ex.response_cut or ex.request_cut)
                    self._count(event, counts)
                    counts.clear()
                event.input_payload, event.output_payload, event.payload_truncated = shared
            event.payload_sampled = True
            self._count(event, counts)

    def _body_payload(self, body: bytes, parsed: Any, counts: Counter[str], parsed_ok: bool) -> tuple[str, bool]:
        text, cut = decode_capped(body, self._max_bytes)
        if cut and parsed_ok and isinstance(parsed, (dict, list)):
            # Redact fields in the whole parsed body first, so a cut never exposes a field's value.
            full = self.redactor.payload(body.decode("utf-8", "replace"), parsed, counts)
            capped, _ = cap_text(full, self._max_bytes)
            return capped, True
        redacted = self.redactor.payload(text, parsed if not cut else None, counts)
        capped, recut = cap_text(redacted, self._max_bytes)
        return capped, cut or recut

    def _object_payload(self, value: Any, counts: Counter[str]) -> tuple[str, bool]:
        value, _ = self.redactor.json_fields(value, counts)
        text = self.redactor.text(json.dumps(value, ensure_ascii=False, separators=(",", ":")), counts)
        return cap_text(text, self._max_bytes)

    def _redact_fields(self, event: Event) -> None:
        """Patterns in generated text, labels, categorical values and text features; whole values of redacted
        feature names."""
        counts: Counter[str] = Counter()
        redactor = self.redactor
        generated = event.output_text
        if event.output_text:
            event.output_text = redactor.text(event.output_text, counts)
            event.output_text, cut = cap_text(event.output_text, max(self._max_bytes, 1))
            event.payload_truncated = event.payload_truncated or cut
        if event.text_values:  # text features: redacted like categorical values, cut like payloads
            texts = event.text_values
            for j, name in enumerate(event.text_names):
                if generated and texts[j] == generated:  # the completion: already redacted and counted above
                    texts[j] = event.output_text
                    continue
                if redactor.is_field(name):
                    counts["field"] += 1
                    texts[j] = redactor.token("field", texts[j])
                    continue
                texts[j], cut = cap_text(redactor.text(texts[j], counts), max(self._max_bytes, 1))
                event.payload_truncated = event.payload_truncated or cut
        if event.prediction_label:
            event.prediction_label = redactor.text(event.prediction_label, counts)
        if event.cat_values:
            values = event.cat_values
            for j, name in enumerate(event.cat_names):
                if redactor.is_field(name):
                    counts["field"] += 1
                    values[j] = redactor.token("field", values[j])
                else:
                    values[j] = redactor.text(values[j], counts)
        self._count(event, counts)

    def _count(self, event: Event, counts: Counter[str]) -> None:
        if not counts:
            return
        total = 0
        for rule, n in counts.items():
            child = self._redaction_counters.get(rule) or metrics.redactions.labels(self.config.model, rule)
            child.inc(n)
            total += n
        event.redactions = min(event.redactions + total, 0xFFFF)

    def _decoded(self, body: bytes, encoding: str) -> bytes:
        """A gzip/deflate response body decompressed for reading (at most max_parse_bytes), else as is."""
        encoding = encoding.strip().lower()
        if encoding not in ("gzip", "deflate", "x-gzip"):
            return body
        try:
            inflater = zlib.decompressobj(47 if encoding != "deflate" else zlib.MAX_WBITS)
            return inflater.decompress(body, self._max_parse + 1)
        except zlib.error:
            return body
