"""Generic JSON: features and predictions read at configured paths of the request and response.

Paths are a small subset of JSONPath: dotted keys and ``[i]`` indexes under a
root, ``request.features.temp`` or ``response.outputs[0].score`` (a leading
``$.`` is allowed and means ``request.``). With ``rows: request.instances[*]``
every element of that array is one event (as in TensorFlow Serving's
``{"instances": [...]}``), paths under ``row.`` are read inside the element,
and ``response_rows: response.predictions[*]`` pairs the i-th prediction
(``prediction_row.``) with the i-th row. A missing path leaves the feature out
of that event (the detectors count it as missing).
"""

from __future__ import annotations

import dataclasses
import math
import re
import uuid
from typing import Any

from driftwarden.collector.config import GenericConfig
from driftwarden.collector.exchange import Exchange
from driftwarden.collector.processors.hashing import canonical_hash, features_hash
from driftwarden.collector.receivers.base import Captured, as_float, base_event, parse_json

_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+|\*)\]")
_MISSING = object()


def compile_path(path: str) -> tuple[str, tuple[str | int, ...]]:
    """``request.a[0].b`` -> ``("request", ("a", 0, "b"))``; ``[*]`` is kept as ``"*"`` (rows only)."""
    if path.startswith("$."):
        path = "request." + path[2:]
    steps: list[str | int] = []
    for key, index in _TOKEN.findall(path):
        if key:
            steps.append(key)
        elif index == "*":
            steps.append("*")
        else:
            steps.append(int(index))
    root = str(steps[0])
    return root, tuple(steps[1:])


def resolve(roots: dict[str, Any], compiled: tuple[str, tuple[str | int, ...]]) -> Any:
    """The value at a compiled path, or ``_MISSING``."""
    root, steps = compiled
    value = roots.get(root, _MISSING)
    for step in steps:
        if value is _MISSING or step == "*":
            break
        if isinstance(step, int):
            value = value[step] if isinstance(value, list) and -len(value) <= step < len(value) else _MISSING
        else:
            value = value.get(step, _MISSING) if isinstance(value, dict) else _MISSING
    return value


class GenericReceiver:
    """Reads any JSON API through a configured mapping; see the module docstring."""

    name = "generic"

    def __init__(self, mapping: GenericConfig) -> None:
        self._numeric = [(name, compile_path(p)) for name, p in mapping.numeric.items()]
        self._categorical = [(name, compile_path(p)) for name, p in mapping.categorical.items()]
        self._outputs = [(name, compile_path(p)) for name, p in mapping.outputs.items()]
        self._prediction = compile_path(mapping.prediction) if mapping.prediction else None
        self._label = compile_path(mapping.prediction_label) if mapping.prediction_label else None
        self._text = compile_path(mapping.output_text) if mapping.output_text else None
        self._rows = compile_path(mapping.rows) if mapping.rows else None
        self._response_rows = compile_path(mapping.response_rows) if mapping.response_rows else None
        self._paths = mapping.paths

    def matches(self, method: str, path: str) -> bool:
        if self._paths:
            return path.startswith(self._paths)
        return method == "POST"

    def capture(self, ex: Exchange, *, model: str, model_version: str, model_digest: str) -> Captured:
        base = base_event(ex, model=model, model_version=model_version, model_digest=model_digest, protocol="generic")
        request, ok = parse_json(ex.request_body)
        if not ok:
            base.error_class = base.error_class or "malformed_request"
            return Captured(events=[base])
        response, rok = parse_json(ex.response_body) if not ex.response_cut else (None, False)
        if not rok and ex.status < 400:
            base.error_class = base.error_class or "unparsed_response"
        roots: dict[str, Any] = {"request": request, "response": response if rok else _MISSING}
        rows = self._list(roots, self._rows)
        predictions = self._list(roots, self._response_rows)
        if rows is None:
            return Captured(events=[self._fill(base, roots, rok)], request_json=request, response_json=response)
        events = []
        for i, row in enumerate(rows):
            event = base if i == 0 else dataclasses.replace(base, event_id=uuid.uuid4())
            row_roots = {**roots, "row": row}
            if predictions is not None and i < len(predictions):
                row_roots["prediction_row"] = predictions[i]
            events.append(self._fill(event, row_roots, rok))
        return Captured(events=events or [base], request_json=request, response_json=response)

    @staticmethod
    def _list(roots: dict[str, Any], compiled: tuple[str, tuple[str | int, ...]] | None) -> list[Any] | None:
        if compiled is None:
            return None
        value = resolve(roots, compiled)
        return value if isinstance(value, list) else None

    def _fill(self, event: Any, roots: dict[str, Any], response_ok: bool) -> Any:
        num_names: list[str] = []
        num_values: list[float] = []
        cat_names: list[str] = []
        cat_values: list[str] = []
        for name, compiled in self._numeric:
            value = resolve(roots, compiled)
            number = _number(value)
            if number is not None:
                num_names.append(name)
                num_values.append(number)
        for name, compiled in self._categorical:
            value = resolve(roots, compiled)
            if value is not _MISSING and value is not None:
                cat_names.append(name)
                cat_values.append(value if isinstance(value, str) else str(value))
        event.num_names, event.num_values = num_names, num_values
        event.cat_names, event.cat_values = cat_names, cat_values
        event.input_hash = features_hash(num_names, num_values, cat_names, cat_values)
        if not response_ok:
            return event
        if self._prediction is not None:
            number = _number(resolve(roots, self._prediction))
            event.prediction = None if number is None or math.isnan(number) else number
        if self._label is not None:
            label = resolve(roots, self._label)
            if label is not _MISSING and label is not None:
                event.prediction_label = label if isinstance(label, str) else str(label)
        names: list[str] = []
        values: list[float] = []
        for name, compiled in self._outputs:
            number = _number(resolve(roots, compiled))
            if number is not None:
                names.append(name)
                values.append(number)
        event.output_names, event.output_values = names, values
        if self._text is not None:
            text = resolve(roots, self._text)
            event.output_text = text if isinstance(text, str) else ""
        event.output_hash = canonical_hash([event.prediction, event.prediction_label, names, values, event.output_text])
        return event


def _number(value: Any) -> float | None:
    if value is _MISSING:
        return None
    number = as_float(value)
    if number is None and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return number
