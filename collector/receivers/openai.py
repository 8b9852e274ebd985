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
name is the categorical feature ``request_model``.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from driftwarden.collector.exchange import Exchange
from driftwarden.collector.processors.hashing import canonical_hash
from driftwarden.collector.receivers.base import Captured, base_event, parse_json

_ENDPOINTS = ("/chat/completions", "/completions", "/embeddings")
_PROMPT_KEYS = ("messages", "prompt", "input")
_NOT_PARAMS = frozenset({"messages", "prompt", "input", "stream", "stream_options", "user", "metadata", "store"})
_NUMERIC_PARAMS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "seed")


class OpenAIReceiver:
    """Reads OpenAI-compatible exchanges; see the module docstring."""

    name = "openai"

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and path.endswith(_ENDPOINTS)

    def capture(self, ex: Exchange, *, model: str, model_version: str, model_digest: str) -> Captured:
        event = base_event(ex, model=model, model_version=model_version, model_digest=model_digest, protocol="openai")
        request, ok = parse_json(ex.request_body)
        if not ok or not isinstance(request, dict):
            event.error_class = event.error_class or "malformed_request"
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
        return Captured(events=[event], request_json=request, response_json=response)

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
        if isinstance(response.get("model"), str) and not event.model_version:
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
            if isinstance(chunk.get("model"), str) and not event.model_version:
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
