"""Replay: re-send recorded inputs to the model through the collector and compare the answers.

A bounded sample of the window's recorded requests is drawn in ClickHouse
(successful, non-replay events whose ``input_payload`` was kept whole,
ordered by ``cityHash64(event_id)``: the same window gives the same sample).
Each is POSTed again to ``collector_url + endpoint`` with the header
``X-Driftwarden-Replay: <event_id>``: the collector forwards it to the model
and records the replay with ``is_replay = 1, replay_of = <event_id>``, so it is
never counted as traffic. The model's answer to the re-sent request is
compared with what was recorded:

* with the recorded ``output_payload``: the outputs of the protocol (OIP
  ``outputs`` by tensor name, OpenAI ``choices``, else the whole document
  without volatile keys such as ``id`` or ``created``) are compared leaf by
  leaf;
* without it: the first OIP output against ``prediction`` /
  ``prediction_label``, numeric outputs against ``output_values``, OpenAI text
  against ``output_text``.

Leaves compare as: numbers equal within ``tolerance`` relative to
``max(1, |a|, |b|)``; categorical strings (no whitespace, at most 64 characters)
exactly; free text by ``difflib.SequenceMatcher.ratio() >= text_similarity``;
anything else exactly. A replay whose request failed (network error or status
>= 400) is not a mismatch: it is counted under ``failed`` in ``details``; if
every replay failed the detector fails.

    rate = 1 - mismatches / checked, per model version and digest, kind = 'replay'
"""

from __future__ import annotations

import difflib
import json
import math
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx
from clickhouse_connect.driver.client import Client

from driftwarden.detectors.config import ReplayConfig
from driftwarden.detectors.provenance import content_hash
from driftwarden.detectors.reproducibility.consistency import ReproducibilityResult
from driftwarden.detectors.window import Window

REPLAY_HEADER = "X-Driftwarden-Replay"
MAX_DETAILS = 20
VOLATILE_KEYS = frozenset({"id", "created", "system_fingerprint", "usage", "request_id", "timestamp", "parameters"})


class ReplayError(RuntimeError):
    """No recorded request could be replayed (the collector or the model did not answer)."""


@dataclass(frozen=True)
class Recorded:
    """A recorded event as the replay needs it."""

    event_id: uuid.UUID
    model_version: str
    model_digest: str
    protocol: str
    endpoint: str
    input_payload: str
    output_payload: str
    prediction: float | None
    prediction_label: str
    output_values: tuple[float, ...]
    output_text: str


def sample(client: Client, model: str, window: Window, size: int, model_version: str | None = None) -> list[Recorded]:
    """Up to ``size`` replayable events of the window, the same ones on every call."""
    version = "" if model_version is None else "AND model_version = {v:String}"
    rows = client.query(
        f"""
        SELECT event_id, model_version, model_digest, protocol, endpoint, input_payload, output_payload,
               prediction, prediction_label, output_values, output_text
        FROM inferences FINAL
        WHERE model = {{m:String}} AND NOT is_replay AND {window.sql()} {version}
          AND input_payload != '' AND NOT payload_truncated AND status < 400 AND error_class = ''
        ORDER BY cityHash64(event_id), event_id
        LIMIT {{n:UInt32}}
        """,
        parameters={"m": model, "v": model_version or "", "n": size},
    ).result_rows
    return [
        Recorded(
            event_id=eid if isinstance(eid, uuid.UUID) else uuid.UUID(str(eid)),
            model_version=ver,
            model_digest=digest,
            protocol=proto,
            endpoint=endpoint,
            input_payload=inp,
            output_payload=out,
            prediction=pred,
            prediction_label=label,
            output_values=tuple(values),
            output_text=text,
        )
        for eid, ver, digest, proto, endpoint, inp, out, pred, label, values, text in rows
    ]


def compute_replay(
    client: Client,
    model: str,
    window: Window,
    settings: ReplayConfig,
    *,
    model_version: str | None = None,
    http: httpx.Client | None = None,
) -> list[ReproducibilityResult]:
    """Replay a sample of ``window`` through the collector; one result per model version and digest."""
    recorded = sample(client, model, window, settings.sample_size, model_version)
    if not recorded:
        return []
    own = http is None
    http = http or httpx.Client(timeout=settings.timeout.total_seconds(), trust_env=False)
    groups: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: {"ok": [], "bad": [], "failed": []})
    try:
        for event in recorded:
            group = groups[(event.model_version, event.model_digest)]
            try:
                answer = _send(http, settings.collector_url, event)
            except _Failed as exc:
                group["failed"].append({"event_id": str(event.event_id), "error": str(exc)})
                continue
            reason = compare(event, answer, settings.tolerance, settings.text_similarity)
            if reason is None:
                group["ok"].append(str(event.event_id))
            else:
                group["bad"].append({"event_id": str(event.event_id), "reason": reason})
    finally:
        if own:
            http.close()
    if not any(g["ok"] or g["bad"] for g in groups.values()):
        first = next(iter(groups.values()))["failed"][0]
        raise ReplayError(
            f"none of {len(recorded)} replays to {settings.collector_url} succeeded; first: "
            f"event {first['event_id']}: {first['error']}"
        )
    out = []
    for (ver, digest), group in sorted(groups.items()):
        checked = len(group["ok"]) + len(group["bad"])
        if not checked:
            continue
        details = {
            "sampled": checked + len(group["failed"]),
            "mismatches": group["bad"][:MAX_DETAILS],
            "failed": group["failed"][:MAX_DETAILS],
            "failed_count": len(group["failed"]),
            "text_similarity": settings.text_similarity,
        }
        out.append(
            ReproducibilityResult(
                model=model,
                model_version=ver,
                model_digest=digest,
                kind="replay",
                current_start=window.start,
                current_end=window.end,
                checked=checked,
                mismatches=len(group["bad"]),
                rate=1.0 - len(group["bad"]) / checked,
                tolerance=settings.tolerance,
                details=json.dumps(details, sort_keys=True),
                input_hash=content_hash(
                    {
                        "detector": "replay",
                        "model": model,
                        "model_version": ver,
                        "model_digest": digest,
                        "window": [window.start, window.end],
                        "events": sorted(group["ok"] + [b["event_id"] for b in group["bad"]]),
                        "tolerance": settings.tolerance,
                        "text_similarity": settings.text_similarity,
                        "method": "replay through the collector, compared with the recorded output",
                    }
                ),
            )
        )
    return out


class _Failed(Exception):
    pass


def _send(http: httpx.Client, base_url: str, event: Recorded) -> Any:
    url = base_url + (event.endpoint if event.endpoint.startswith("/") else "/" + event.endpoint)
    try:
        response = http.post(
            url,
            content=event.input_payload.encode(),
            headers={"content-type": "application/json", REPLAY_HEADER: str(event.event_id)},
        )
    except httpx.HTTPError as exc:
        raise _Failed(f"{type(exc).__name__}: {exc}") from None
    if response.status_code >= 400:
        raise _Failed(f"HTTP {response.status_code}: {response.text[:200]}")
    try:
        return response.json()
    except ValueError:
        raise _Failed("the answer is not JSON") from None


def compare(event: Recorded, answer: Any, tolerance: float, text_similarity: float) -> str | None:
    """Why the replayed ``answer`` differs from the recorded event, or None when it reproduces it."""
    recorded = _json(event.output_payload)
    if recorded is not None:
        return _same(_comparable(recorded), _comparable(answer), tolerance, text_similarity, "$")
    return _compare_fields(event, answer, tolerance, text_similarity)


def _json(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _comparable(document: Any) -> Any:
    """The part of a response that is the model's output, without what changes on every call."""
    if isinstance(document, dict) and isinstance(document.get("outputs"), list):  # Open Inference Protocol
        return {str(t.get("name")): t.get("data") for t in document["outputs"] if isinstance(t, dict) and "name" in t}
    if isinstance(document, dict) and isinstance(document.get("choices"), list):  # OpenAI-compatible
        return [_strip(c) for c in document["choices"]]
    return _strip(document)


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE_KEYS and k != "logprobs"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _same(a: Any, b: Any, tolerance: float, similarity: float, path: str) -> str | None:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return None if a == b else f"{path}: recorded {a!r}, replayed {b!r}"
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return None if _close(float(a), float(b), tolerance) else f"{path}: recorded {a!r}, replayed {b!r}"
    if isinstance(a, str) and isinstance(b, str):
        return _same_text(a, b, similarity, path)
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{path}: keys differ: recorded {sorted(a)}, replayed {sorted(b)}"
        for key in sorted(a):
            reason = _same(a[key], b[key], tolerance, similarity, f"{path}.{key}")
            if reason:
                return reason
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} values recorded, {len(b)} replayed"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            reason = _same(x, y, tolerance, similarity, f"{path}[{i}]")
            if reason:
                return reason
        return None
    return None if a == b else f"{path}: recorded {_short(a)}, replayed {_short(b)}"


def _close(a: float, b: float, tolerance: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))


def _is_free_text(text: str) -> bool:
    return len(text) > 64 or any(ch.isspace() for ch in text)


def _same_text(a: str, b: str, similarity: float, path: str) -> str | None:
    if a == b:
        return None
    if _is_free_text(a) or _is_free_text(b):
        ratio = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
        if ratio >= similarity:
            return None
        return f"{path}: text similarity {ratio:.3f} below {similarity}"
    return f"{path}: recorded {a!r}, replayed {b!r}"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _compare_fields(event: Recorded, answer: Any, tolerance: float, similarity: float) -> str | None:
    """Compare with the recorded columns when the response body itself was not kept."""
    if isinstance(answer, dict) and isinstance(answer.get("choices"), list) and answer["choices"]:
        choice = answer["choices"][0]
        text = choice.get("text") if "text" in choice else (choice.get("message") or {}).get("content")
        return _same_text(event.output_text, str(text or ""), similarity, "$.choices[0]")
    outputs = answer.get("outputs") if isinstance(answer, dict) else None
    if not isinstance(outputs, list) or not outputs or not isinstance(outputs[0], dict):
        return "the recorded response body was not kept and the answer has no OIP outputs or OpenAI choices"
    first = _flat(outputs[0].get("data"))
    if first:
        head = first[0]
        if event.prediction is not None and isinstance(head, (int, float)) and not isinstance(head, bool):
            reason = _same(event.prediction, head, tolerance, similarity, "$.prediction")
        else:
            reason = _same_text(event.prediction_label, str(head), similarity, "$.prediction_label")
        if reason:
            return reason
    if event.output_values:
        numbers = [
            float(v)
            for t in outputs
            if isinstance(t, dict)
            for v in _flat(t.get("data"))
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        return _same(list(event.output_values), numbers, tolerance, similarity, "$.output_values")
    return None


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for item in data:
        out.extend(_flat(item) if isinstance(item, list) else [item])
    return out
