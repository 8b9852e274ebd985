"""OpenAI-compatible APIs: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``.

The prompt (``messages``, ``prompt`` or ``input``) is hashed into
``input_hash`` and kept in ``input_payload`` when sampled; the inference
parameters (every other request key: model, temperature, top_p, seed,
max_tokens, tools, ...) are hashed into ``params_hash``, and the request is
``deterministic`` when temperature is 0 or a seed is set.

Responses give ``output_text`` (choice 0), ``finish_reason`` and token usage.
For a server-sent-event stream the text is reassembled from the chunks,
``ttft_ms`` is the time from the request's arrival to the first chunk that
carries content, and usage is read from the chunk that has it (sent when the
client asks for ``stream_options.include_usage``; 0 otherwise: the collector
does not guess token counts).

A few numeric features describe the request for drift: ``prompt_chars``,
``messages`` and the sampling parameters that are set; the requested model
name is the categorical feature ``request_model``. The text features ``prompt``
(the last user message, the prompt, or the input to embed) and ``completion``
(choice 0's text) and the embedding feature ``embedding`` (the first vector of
an embeddings response) are what text and embedding drift read.

The GenAI columns are the ones an OpenTelemetry GenAI span fills
(``collector.receivers.genai_spans``), so both land the same fields:
``operation_name`` (``chat``, ``text_completion``, ``embeddings``),
``provider_name`` (``genai.provider_name``, default ``openai``),
``request_model``/``response_model``, ``temperature``, ``top_p``, ``max_tokens``
(or ``max_completion_tokens``), ``seed``, ``server_address`` (the upstream's host)
and ``cost`` from the price table; the GenAI metrics are observed here
(``collector.genai_metrics``) with the error class the pipeline will store.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

from driftwarden.collector.exchange import Exchange
from driftwarden.collector.genai_metrics import GenAIRecorder
from driftwarden.collector.processors.hashing import canonical_hash
from driftwarden.collector.receivers.base import Captured, base_event, parse_json

_ENDPOINTS = ("/chat/completions", "/completions", "/embeddings")
_PROMPT_KEYS = ("messages", "prompt", "input")
_NOT_PARAMS = frozenset({"messages", "prompt", "input", "stream", "stream_options", "user", "metadata", "store"})
_NUMERIC_PARAMS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "seed")


_OPERATIONS = (("/chat/completions", "chat"), ("/completions", "text_completion"), ("/embeddings", "embeddings"))


class OpenAIReceiver:
    """Reads OpenAI-compatible exchanges; see the module docstring."""

    name = "openai"

    def __init__(
        self, genai: GenAIRecorder | None = None, *, server_address: str = "", provider_name: str = "openai"
    ) -> None:
        self.genai = genai or GenAIRecorder()
        self.server_address = server_address
        self.provider_name = provider_name

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and path.endswith(_ENDPOINTS)

    def capture(self, ex: Exchange, *, model: str, model_version: str, model_digest: str) -> Captured:
        event = base_event(ex, model=model, model_version=model_version, model_digest=model_digest, protocol="openai")
        request, ok = parse_json(ex.request_body)
        if not ok or not isinstance(request, dict):
            event.error_class = event.error_class or "malformed_request"
            self._genai(event, ex, {})  # a failed call all the same: counted with its error type
            return Captured(events=[event], request_json=request if ok else None)

        prompt = next((request[k] for k in _PROMPT_KEYS if k in request), None)
        params = {k: v for k, v in request.items() if k not in _NOT_PARAMS}
        event.input_hash = canonical_hash(prompt) if prompt is not None else 0
        event.params_hash = canonical_hash(params)
        temperature = request.get("temperature")
        zero_temperature = isinstance(temperature, (int, float)) and temperature == 0
        event.deterministic = zero_temperature or request.get("seed") is not None
        self._features(event, request, prompt)

        streamed = "text/event-stream" in ex.response_content_type
        response: Any = None
        if ex.status >= 400 or not ex.response_body:
            pass
        elif streamed:
            if not self._stream(event, ex):
                event.error_class = event.error_class or "unparsed_response"
        else:
            response, rok = parse_json(ex.response_body) if not ex.response_cut else (None, False)
            if rok and isinstance(response, dict):
                self._response(event, response, embeddings=ex.path.endswith("/embeddings"))
            else:
                event.error_class = event.error_class or "unparsed_response"
        if not model_version and not event.model_version and isinstance(request.get("model"), str):
            event.model_version = request["model"]
        self._genai(event, ex, request)
        _text_and_embedding(event, prompt, response)
        return Captured(events=[event], request_json=request, response_json=response)

    def _genai(self, event: Any, ex: Exchange, request: dict[str, Any]) -> None:
        """The GenAI columns (as a span would give them), the price, and the GenAI metrics."""
        event.operation_name = next((op for suffix, op in _OPERATIONS if ex.path.endswith(suffix)), "")
        event.provider_name = self.provider_name
        event.server_address = self.server_address
        if isinstance(request.get("model"), str):
            event.request_model = request["model"]
        event.temperature = _number(request.get("temperature"))
        event.top_p = _number(request.get("top_p"))
        limit = request.get("max_tokens", request.get("max_completion_tokens"))
        event.max_tokens = limit if _integer(limit) and 0 <= limit < 2**32 else None
        seed = request.get("seed")
        event.seed = seed if _integer(seed) and -(2**63) <= seed < 2**63 else None
        event.cost = self.genai.price(event)
        # The error class the pipeline will store (collector.pipeline._error_class), for the metric's error_type.
        stored_class = event.error_class
        event.error_class = (
            ex.error_class
            or ("upstream_5xx" if ex.status >= 500 else "")
            or stored_class
            or ("upstream_4xx" if ex.status >= 400 else "")
        )
        try:
            self.genai.observe([event])
        finally:
            event.error_class = stored_class

    @staticmethod
    def _features(event: Any, request: dict[str, Any], prompt: Any) -> None:
        names: list[str] = []
        values: list[float] = []
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
            chars = sum(len(m["content"]) for m in prompt if isinstance(m, dict) and isinstance(m.get("content"), str))
            names += ["prompt_chars", "messages"]
            values += [float(chars), float(len(prompt))]
        elif isinstance(prompt, str):
            names.append("prompt_chars")
            values.append(float(len(prompt)))
        for key in _NUMERIC_PARAMS:
            value = request.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                names.append(key)
                values.append(float(value))
        event.num_names = names
        event.num_values = values
        if isinstance(request.get("model"), str):
            event.cat_names = ["request_model"]
            event.cat_values = [request["model"]]

    @staticmethod
    def _response(event: Any, response: dict[str, Any], *, embeddings: bool) -> None:
        usage = response.get("usage")
        if isinstance(usage, dict):
            event.prompt_tokens = _count(usage.get("prompt_tokens"))
            event.completion_tokens = _count(usage.get("completion_tokens"))
        if isinstance(response.get("model"), str):
            event.response_model = response["model"]
            if not event.model_version:
                event.model_version = response["model"]
        if embeddings:
            data = response.get("data")
            vectors = [d.get("embedding") for d in data if isinstance(d, dict)] if isinstance(data, list) else []
            event.output_hash = canonical_hash(vectors)
            return
        choices = response.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            choice = choices[0]
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else choice.get("text")
            event.output_text = text if isinstance(text, str) else ""
            event.finish_reason = str(choice.get("finish_reason") or "")
            tool_calls = message.get("tool_calls") if isinstance(message, dict) else None
            event.output_hash = canonical_hash([event.output_text, tool_calls])

    @staticmethod
    def _stream(event: Any, ex: Exchange) -> bool:
        """Reassemble a server-sent-event stream; False when no chunk parsed."""
        # Offsets below are counted on the body with LF line ends; with CRLF they are slightly early.
        body = ex.response_body.replace(b"\r\n", b"\n")
        marks = ex.chunk_marks or []
        offsets = [m[1] for m in marks]
        parts: list[str] = []
        parsed_any = False
        first_token_at: float | None = None
        position = 0
        for block in body.split(b"\n\n"):
            position += len(block) + 2
            data = b"\n".join(line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:"))
            if not data or data == b"[DONE]":
                continue
            chunk, ok = parse_json(data)
            if not ok or not isinstance(chunk, dict):
                continue
            parsed_any = True
            if isinstance(chunk.get("model"), str):
                event.response_model = event.response_model or chunk["model"]
                if not event.model_version:
                    event.model_version = chunk["model"]
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                event.prompt_tokens = _count(usage.get("prompt_tokens"))
                event.completion_tokens = _count(usage.get("completion_tokens"))
            choices = chunk.get("choices")
            if not isinstance(choices, list):
                continue
            for choice in choices:
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta")
                piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                has_tool = isinstance(delta, dict) and bool(delta.get("tool_calls"))
                if isinstance(piece, str) and piece:
                    parts.append(piece)
                if (piece or has_tool) and first_token_at is None and marks:
                    # The chunk that completed this event (an event is complete at its blank line).
                    at = min(bisect_left(offsets, position), len(marks) - 1)
                    first_token_at = marks[at][0]
                if choice.get("finish_reason"):
                    event.finish_reason = str(choice["finish_reason"])
        event.output_text = "".join(parts)
        event.output_hash = canonical_hash(event.output_text)
        if first_token_at is not None:
            event.ttft_ms = (first_token_at - ex.t_start) * 1000.0
        return parsed_any


def _count(value: Any) -> int:
    return value if isinstance(value, int) and 0 <= value < 2**32 else 0


def _text_and_embedding(event: Any, prompt: Any, response: Any) -> None:
    """The text features ``prompt`` (what the model was asked: the last user message, the prompt, or the
    input to embed) and ``completion`` (choice 0's text), and the embedding feature ``embedding`` (the
    first vector of an embeddings response). A batched request contributes its first prompt and vector."""
    asked = _prompt_text(prompt)
    if asked is not None:
        event.text_names.append("prompt")
        event.text_values.append(asked)
    if event.output_text:
        event.text_names.append("completion")
        event.text_values.append(event.output_text)
    data = response.get("data") if isinstance(response, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        vector = _vector(data[0].get("embedding"))
        if vector is not None:
            event.emb_names.append("embedding")
            event.emb_values.append(vector)


def _prompt_text(prompt: Any) -> str | None:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        if isinstance(prompt[0], str):
            return prompt[0]
        messages = [m for m in prompt if isinstance(m, dict)]
        users = [m for m in messages if m.get("role") == "user"] or messages
        if users:
            return _content_text(users[-1].get("content"))
    return None


def _content_text(content: Any) -> str | None:
    """A message's content as text: the string, or the text parts of a list of parts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "\n".join(parts) if parts else None
    return None


def _vector(value: Any) -> list[float] | None:
    """An embedding as floats: a JSON list of numbers, or base64 little-endian float32 (encoding_format=base64)."""
    if isinstance(value, list) and value:
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return [float(v) for v in value]
        return None
    if isinstance(value, str) and value:
        import base64
        import binascii

        import numpy as np

        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) % 4:
            return None
        return np.frombuffer(raw, dtype="<f4").astype(float).tolist()
    return None


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> float | None:
    """A finite JSON number as a float, else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
