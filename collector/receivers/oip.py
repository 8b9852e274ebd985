"""Open Inference Protocol (KServe v2, MLServer, Triton): ``POST /v2/models/{name}[/versions/{v}]/infer``.

Inputs are named tensors. Each tensor of shape ``[N, ...]`` contributes one
feature per column: a tensor of one value per row is the feature of its
name (MLServer's pandas codec sends one tensor per column); a 2-D tensor's
columns are named from the configured ``oip.columns[tensor]``, else from the
tensor's ``parameters.columns``/``parameters.feature_names``, else
``<tensor>_<i>``. Numeric datatypes become numeric features, ``BYTES`` (and
any string) categorical ones — except text and embeddings:

* a ``BYTES`` tensor named in ``oip.text`` (by default ``text``, ``texts``,
  ``prompt``, ``document``, ``query``, ``sentence``, ``input_text``, ``review``)
  holds free text: each row's value is the text feature of the tensor's name;
* a 2-D float tensor named in ``oip.embeddings``, or with at least
  ``oip.embedding_min_dim`` (32) values per row and no configured or declared
  column names, holds embeddings: each row is the embedding feature of the
  tensor's name (an output tensor too: an embedding model's vectors).

Outputs: the first element of the first output is the ``prediction`` when it is
numeric, the ``prediction_label`` when it is a string; every numeric output
goes to ``output_names``/``output_values``.

Batches: a request with N rows yields N events, one per row, sharing the trace
id, latency and byte counts of the request. Drift is a property of the rows a
model sees, not of how clients batch them; one event per request would weight a
row by its batch's size and hide all but one row. When payloads are sampled,
each row's event stores that row alone as a valid single-row request and
response, so a replay re-sends exactly one row.

Binary tensors (the KServe v2 / Triton binary data extension, tritonclient's
default): with ``Inference-Header-Content-Length: N`` the first N bytes are
the JSON header and the raw tensors follow in order, each
``parameters.binary_data_size`` bytes, little-endian, row-major (``BYTES``
elements as 4-byte length + bytes). They are decoded like inline ``data``, and
the stored payload is the equivalent JSON request with the data inline.

Inference on a classical model server is deterministic, so events are marked
``deterministic=True`` and the reproducibility detector compares outputs of
equal inputs.
"""

from __future__ import annotations

import dataclasses
import math
import re
import uuid
from typing import Any

from driftwarden.collector.event import Event
from driftwarden.collector.exchange import Exchange
from driftwarden.collector.processors.hashing import canonical_hash, features_hash
from driftwarden.collector.receivers.base import Captured, as_float, base_event, flatten, parse_json

INFER_PATH = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")


@dataclasses.dataclass(slots=True)
class _Tensor:
    name: str
    rows: int
    per_row: int
    values: list[Any]
    numeric: bool
    columns: list[str]
    source: dict[str, Any]
    kind: str = "feature"  # feature | text | embedding (inputs only)

    def row(self, i: int) -> list[Any]:
        if self.rows == 1:
            i = 0
        elif i >= self.rows:
            return []
        return self.values[i * self.per_row : (i + 1) * self.per_row]


class OIPReceiver:
    """Reads Open Inference Protocol exchanges; see the module docstring."""

    name = "oip"

    def __init__(
        self,
        columns: dict[str, tuple[str, ...]] | None = None,
        *,
        text: tuple[str, ...] = (),
        embeddings: tuple[str, ...] = (),
        embedding_min_dim: int = 32,
    ) -> None:
        self._columns = dict(columns or {})
        self._text = frozenset(text)
        self._embeddings = frozenset(embeddings)
        self._embedding_min_dim = embedding_min_dim

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and INFER_PATH.search(path) is not None

    def capture(self, ex: Exchange, *, model: str, model_version: str, model_digest: str) -> Captured:
        match = INFER_PATH.search(ex.path)
        version = model_version or (match.group("version") if match and match.group("version") else "")
        base = base_event(ex, model=model, model_version=version, model_digest=model_digest, protocol="oip")
        base.deterministic = True
        request, ok = _parse(ex.request_body, ex.request_json_length, "inputs")
        inputs = self._tensors(request.get("inputs"), request) if ok and isinstance(request, dict) else None
        if inputs is None:
            base.error_class = "malformed_request"
            return Captured(events=[base], request_json=request if ok else None)
        if ex.response_cut:
            response, rok = None, False
        else:
            response, rok = _parse(ex.response_body, ex.response_json_length, "outputs")
        outputs = None
        if rok and isinstance(response, dict):
            outputs = self._tensors(response.get("outputs"), response)
            if not version and isinstance(response.get("model_version"), str):
                base.model_version = response["model_version"]
        if ex.status < 400 and outputs is None:
            base.error_class = "unparsed_response"
        params = request.get("parameters")
        base.params_hash = canonical_hash({"parameters": params or {}, "outputs": request.get("outputs") or []})

        n_rows = max((t.rows for t in inputs), default=1) or 1
        events = [self._row_event(base, inputs, outputs or [], i, n_rows) for i in range(n_rows)]
        row_payload = None
        if n_rows > 1 or ex.request_json_length >= 0 or ex.response_json_length >= 0:
            row_payload = _RowPayloads(request, response if outputs is not None else None, inputs, outputs or [])
        return Captured(
            events=events,
            request_json=request,
            response_json=response if rok else None,
            row_payload=row_payload,
        )

    def _row_event(self, base: Event, inputs: list[_Tensor], outputs: list[_Tensor], i: int, n_rows: int) -> Event:
        num_names: list[str] = []
        num_values: list[float] = []
        cat_names: list[str] = []
        cat_values: list[str] = []
        text_names: list[str] = []
        text_values: list[str] = []
        emb_names: list[str] = []
        emb_values: list[list[float]] = []
        for tensor in inputs:
            row = tensor.row(i)
            if tensor.kind == "text":
                for value in row[:1]:
                    text_names.append(tensor.name)
                    text_values.append(value if isinstance(value, str) else str(value))
            elif tensor.kind == "embedding":
                vector = [as_float(v) for v in row]
                if row and all(v is not None for v in vector):
                    emb_names.append(tensor.name)
                    emb_values.append(vector)  # type: ignore[arg-type]
            elif tensor.numeric:
                for name, value in zip(tensor.columns, row, strict=False):
                    number = as_float(value)
                    if number is None:
                        cat_names.append(name)
                        cat_values.append(str(value))
                    else:
                        num_names.append(name)
                        num_values.append(number)
            else:
                for name, value in zip(tensor.columns, row, strict=False):
                    cat_names.append(name)
                    cat_values.append(value if isinstance(value, str) else str(value))
        prediction: float | None = None
        label = ""
        out_names: list[str] = []
        out_values: list[float] = []
        for k, tensor in enumerate(outputs):
            row = tensor.row(i) if (tensor.rows == n_rows or tensor.rows == 1) else []
            if tensor.kind == "embedding":  # an embedding model's output: the row's vector, not a prediction
                vector = [as_float(v) for v in row]
                if row and all(v is not None for v in vector):
                    emb_names.append(tensor.name)
                    emb_values.append(vector)  # type: ignore[arg-type]
                continue
            if k == 0 and row:
                first = row[0]
                number = as_float(first) if tensor.numeric else None
                if number is not None and not math.isnan(number):
                    prediction = number
                elif first is not None:
                    label = first if isinstance(first, str) else str(first)
            if tensor.numeric:
                for name, value in zip(tensor.columns, row, strict=False):
                    number = as_float(value)
                    if number is not None:
                        out_names.append(name)
                        out_values.append(number)
        event = base if i == 0 else dataclasses.replace(base, event_id=uuid.uuid4())
        event.num_names = num_names
        event.num_values = num_values
        event.cat_names = cat_names
        event.cat_values = cat_values
        event.text_names = text_names
        event.text_values = text_values
        event.emb_names = emb_names
        event.emb_values = emb_values
        event.prediction = prediction
        event.prediction_label = label
        event.output_names = out_names
        event.output_values = out_values
        if text_names or emb_names:
            event.input_hash = features_hash(num_names, num_values, cat_names, cat_values, text_names, text_values)
            if emb_names:
                event.input_hash = canonical_hash([event.input_hash, emb_names, emb_values])
        else:
            event.input_hash = features_hash(num_names, num_values, cat_names, cat_values)
        if outputs:
            event.output_hash = features_hash(out_names, out_values, label)
        return event

    def _tensors(self, specs: Any, body: dict[str, Any]) -> list[_Tensor] | None:
        if not isinstance(specs, list) or not specs:
            return None
        tensors = []
        for spec in specs:
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or "data" not in spec:
                return None
            tensor = self._tensor(spec)
            if tensor is None:
                return None
            tensors.append(tensor)
        return tensors

    def _tensor(self, spec: dict[str, Any]) -> _Tensor | None:
        name = spec["name"]
        values = flatten(spec["data"])
        shape = spec.get("shape")
        if isinstance(shape, list) and shape and all(isinstance(d, int) and d >= 0 for d in shape):
            rows = shape[0]
            per_row = 1
            for dim in shape[1:]:
                per_row *= dim
        else:
            rows, per_row = len(values), 1
        if rows * per_row != len(values):
            if rows and len(values) % rows == 0:
                per_row = len(values) // rows
            else:
                return None
        datatype = str(spec.get("datatype", "")).upper()
        numeric = datatype != "BYTES" and not (values and isinstance(values[0], str))
        columns = self._column_names(name, per_row, spec.get("parameters"))
        kind = "feature"
        if not numeric and name in self._text:
            kind = "text"
        elif numeric and per_row > 1 and datatype.startswith("FP"):
            named = columns != [f"{name}_{j}" for j in range(per_row)]
            if name in self._embeddings or (per_row >= self._embedding_min_dim and not named):
                kind = "embedding"
        return _Tensor(
            name=name,
            rows=rows,
            per_row=per_row,
            values=values,
            numeric=numeric,
            columns=columns,
            source=spec,
            kind=kind,
        )

    def _column_names(self, name: str, per_row: int, parameters: Any) -> list[str]:
        if per_row == 1:
            return [name]
        configured = self._columns.get(name)
        if configured and len(configured) == per_row:
            return list(configured)
        if isinstance(parameters, dict):
            for key in ("columns", "feature_names"):
                given = parameters.get(key)
                if isinstance(given, list) and len(given) == per_row and all(isinstance(c, str) for c in given):
                    return given
        return [f"{name}_{j}" for j in range(per_row)]


_NUMPY_TYPES = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


def _parse(body: bytes, json_length: int, key: str) -> tuple[Any, bool]:
    """The JSON document of a body; with the binary extension, tensors' raw data decoded into ``data``."""
    if json_length < 0:
        return parse_json(body)
    if json_length > len(body):
        return None, False
    doc, ok = parse_json(body[:json_length])
    if not ok or not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        return doc, ok
    offset = json_length
    specs = []
    for spec in doc[key]:
        params = spec.get("parameters") if isinstance(spec, dict) else None
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if not isinstance(size, int):
            specs.append(spec)
            continue
        data = _decode(body[offset : offset + size], str(spec.get("datatype", "")).upper())
        offset += size
        if data is None:
            return doc, False
        rest = {k: v for k, v in params.items() if k not in ("binary_data_size", "binary_data")}
        clean = {k: v for k, v in spec.items() if k != "parameters"}
        if rest:
            clean["parameters"] = rest
        clean["data"] = data
        specs.append(clean)
    return {**doc, key: specs}, True


def _decode(raw: bytes, datatype: str) -> list[Any] | None:
    if datatype == "BYTES":
        out, i = [], 0
        while i + 4 <= len(raw):
            n = int.from_bytes(raw[i : i + 4], "little")
            out.append(raw[i + 4 : i + 4 + n].decode("utf-8", "replace"))
            i += 4 + n
        return out if i == len(raw) else None
    dtype = _NUMPY_TYPES.get(datatype)
    if dtype is None:
        return None
    import numpy as np

    try:
        return np.frombuffer(raw, dtype=dtype).tolist()
    except ValueError:
        return None


class _RowPayloads:
    """Builds the single-row request and response of row ``i`` of a batched exchange."""

    def __init__(self, request: dict[str, Any], response: Any, inputs: list[_Tensor], outputs: list[_Tensor]) -> None:
        self._request = request
        self._response = response
        self._inputs = inputs
        self._outputs = outputs

    def __call__(self, i: int) -> tuple[Any, Any]:
        request = {**self._request, "inputs": [_row_tensor(t, i) for t in self._inputs]}
        response = None
        if isinstance(self._response, dict):
            response = {**self._response, "outputs": [_row_tensor(t, i) for t in self._outputs]}
        return request, response


def _row_tensor(tensor: _Tensor, i: int) -> dict[str, Any]:
    shape = tensor.source.get("shape")
    row_shape = [1, *shape[1:]] if isinstance(shape, list) and shape else [1]
    return {**tensor.source, "shape": row_shape, "data": tensor.row(i)}
