"""Message content of a GenAI span, from its attributes or its events, redacted and capped.

Instrumentations put the prompt and the answer in one of four places; the first found wins,
in this order, for the input and the output separately:

1. span attributes ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (current conventions:
   JSON arrays of ``{"role", "parts": [{"type": "text", "content": ...}]}``), and the older
   ``gen_ai.prompt`` / ``gen_ai.completion``;
2. the span event ``gen_ai.client.inference.operation.details`` with the same attributes
   (``gen_ai.input.messages``, ``gen_ai.output.messages``, ``gen_ai.system_instructions``);
3. the older span events ``gen_ai.content.prompt`` (attribute ``gen_ai.prompt``) and
   ``gen_ai.content.completion`` (attribute ``gen_ai.completion``);
4. the per-message events of the previous conventions: ``gen_ai.system.message``,
   ``gen_ai.user.message``, ``gen_ai.assistant.message``, ``gen_ai.tool.message`` (attributes
   ``content``, optionally ``role``, ``tool_calls``, ``id``) make the input, in their order;
   ``gen_ai.choice`` events (``index``, ``finish_reason``, ``message`` as a JSON object or a
   key-value list with ``role``, ``content``, ``tool_calls``) make the output, by index.

``gen_ai.system_instructions`` (an attribute or in the details event) is stored as the first
input message, ``{"role": "system", "parts": [...]}``, so that the input hash covers it.

Content is stored only when present, and passes through the collector's redaction
(``collector.processors.redaction``): field rules in the parsed JSON, then the patterns;
``output_text`` holds the text parts of the output, and the text features ``prompt`` (the last user message)
and ``completion`` (``output_text``) what text drift reads, as the collector's OpenAI receiver gives them. Each
stored text is cut at ``genai.max_content_bytes`` (``payload_truncated`` says so).

The same events sent as OpenTelemetry log records (``POST /v1/logs``, ``collector.receivers.otlp_logs``) are
stored one by one (:func:`event_piece`) and assembled once their call is known (:func:`assemble`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from driftwarden.collector.processors.hashing import canonical_hash
from driftwarden.collector.processors.redaction import Redactor
from driftwarden.collector.processors.truncation import cap_text

INPUT_KEYS = ("gen_ai.input.messages", "gen_ai.prompt")
OUTPUT_KEYS = ("gen_ai.output.messages", "gen_ai.completion")
INSTRUCTIONS_KEY = "gen_ai.system_instructions"
CONTENT_EVENTS = frozenset(
    {"gen_ai.client.inference.operation.details", "gen_ai.content.prompt", "gen_ai.content.completion"}
)
MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
CHOICE_EVENT = "gen_ai.choice"


@dataclass
class SpanContent:
    """The content columns of one call (``inferences``)."""

    output_text: str = ""
    input_payload: str = ""
    output_payload: str = ""
    payload_sampled: bool = False
    payload_truncated: bool = False
    input_hash: int = 0
    output_hash: int = 0
    params_hash: int = 0
    redactions: int = 0
    text_names: list[str] = field(default_factory=list)
    text_values: list[str] = field(default_factory=list)


def read_content(
    span: Any,
    input_messages: Any,
    prompt: Any,
    output_messages: Any,
    completion: Any,
    system_instructions: Any,
    params: dict[str, Any],
    redactor: Redactor,
    limit: int,
) -> SpanContent | None:
    """The span's content (see the module docstring), or None when it carries none.

    The attribute values are given as read (``value_of``); ``params`` are the request parameters
    whose hash is stored with the input.
    """
    found_in = input_messages if input_messages is not None else prompt
    found_out = output_messages if output_messages is not None else completion
    instructions = system_instructions
    if span.events and (found_in is None or found_out is None or instructions is None):
        found_in, found_out, instructions = _from_events(span.events, found_in, found_out, instructions)
    if found_in is None and found_out is None and instructions is None:
        return None
    return content_of(found_in, found_out, instructions, params, redactor, limit, features=True)


def content_of(
    found_in: Any,
    found_out: Any,
    instructions: Any,
    params: dict[str, Any],
    redactor: Redactor,
    limit: int,
    *,
    features: bool = False,
) -> SpanContent:
    """The content columns of an input, an output and system instructions as found (any of them None); with
    ``features``, the text features too (:func:`text_features`)."""
    content = SpanContent(payload_sampled=True)
    counts: Counter[str] = Counter()
    cut = False
    parsed_in = None
    if found_in is not None or instructions is not None:
        if instructions is None:
            parsed_in, text_in = _parsed(found_in), _as_text(found_in)
        else:
            parsed_in = _with_instructions(_parsed(instructions), None if found_in is None else _parsed(found_in))
            text_in = _as_text(parsed_in)
        content.input_hash = canonical_hash(parsed_in)
        content.params_hash = canonical_hash(params)
        content.input_payload, cut_in = cap_text(redactor.payload(text_in, parsed_in, counts), limit)
        cut = cut or cut_in
    if found_out is not None:
        parsed_out = _parsed(found_out)
        content.output_hash = canonical_hash(parsed_out)
        content.output_payload, cut_out = cap_text(redactor.payload(_as_text(found_out), parsed_out, counts), limit)
        text = output_text(parsed_out)
        if text:
            content.output_text, cut_text = cap_text(redactor.text(text, counts), limit)
            cut = cut or cut_text
        cut = cut or cut_out
    content.payload_truncated = cut
    content.redactions = min(sum(counts.values()), 0xFFFF)
    if features:
        text_features(content, prompt_text(parsed_in), redactor, limit)
    return content


def text_features(content: SpanContent, prompt: str | None, redactor: Redactor | None, limit: int) -> None:
    """The text features of a call, as the collector's OpenAI receiver gives them (and text drift reads them):
    ``prompt``, what the model was asked (:func:`prompt_text`; redacted by ``redactor`` unless it already is, and
    not counted again: it is a part of the input), and ``completion``, the text of the output (``output_text``)."""
    if prompt:
        if redactor is not None and redactor.is_field("prompt"):
            prompt = redactor.token("field", prompt)
        elif redactor is not None:
            prompt = redactor.text(prompt, Counter())
        prompt, cut = cap_text(prompt, limit)
        content.payload_truncated |= cut
        content.text_names.append("prompt")
        content.text_values.append(prompt)
    if content.output_text:
        content.text_names.append("completion")
        content.text_values.append(content.output_text)


def prompt_text(messages: Any) -> str | None:
    """What the model was asked: the text of the last user message (of the last message when none is the user's;
    system instructions are not asked), or the prompt when it is text."""
    if isinstance(messages, str):
        return messages
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list):
        return None
    dicts = [m for m in messages if isinstance(m, dict)]
    asked = [m for m in dicts if m.get("role") == "user"] or [m for m in dicts if m.get("role") != "system"]
    if not asked:
        return None
    return output_text(asked[-1:]) or None


LOG_EVENTS = CONTENT_EVENTS | MESSAGE_EVENTS.keys() | {CHOICE_EVENT}
"""The events whose log records carry a call's content (``POST /v1/logs``, ``collector.receivers.otlp_logs``)."""


@dataclass
class EventPiece:
    """What one content event (a log record) holds of its call, redacted and capped: a row of
    ``genai_content_events``. ``kind`` is ``whole`` (input and/or output messages: operation details,
    ``gen_ai.content.*``), ``message`` (one input message) or ``choice`` (one answer, ``choice_index``)."""

    kind: str
    choice_index: int = 0
    input: str = ""
    output: str = ""
    output_text: str = ""
    input_hash: int = 0
    output_hash: int = 0
    redactions: int = 0
    truncated: bool = False


def event_piece(name: str, fields: dict[str, Any], position: int, redactor: Redactor, limit: int) -> EventPiece | None:
    """The part of its call that the content event ``name`` holds in ``fields`` (a log record's attributes and the
    keys of its body), or None when it holds none. ``position`` is the index of a choice that gives none."""
    if name in MESSAGE_EVENTS:
        message = _message(name, fields)
        if "content" not in message and "tool_calls" not in message:
            return None  # the event of an instrumentation whose content capture is off
        c = content_of(message, None, None, {}, redactor, limit)
        return EventPiece("message", 0, c.input_payload, "", "", c.input_hash, 0, c.redactions, c.payload_truncated)
    if name == CHOICE_EVENT:
        choice = _choice(fields, position)
        if not any(key in choice for key in ("content", "tool_calls", "parts")):
            return None
        index = choice["index"] if isinstance(choice["index"], int) else position
        c = content_of(None, choice, None, {}, redactor, limit)
        return EventPiece(
            "choice", index, "", c.output_payload, c.output_text, 0, c.output_hash, c.redactions, c.payload_truncated
        )
    found_in = next((fields[key] for key in INPUT_KEYS if fields.get(key) is not None), None)
    found_out = next((fields[key] for key in OUTPUT_KEYS if fields.get(key) is not None), None)
    instructions = fields.get(INSTRUCTIONS_KEY)
    if found_in is None and found_out is None and instructions is None:
        return None
    c = content_of(found_in, found_out, instructions, {}, redactor, limit)
    return EventPiece(
        "whole", 0, c.input_payload, c.output_payload, c.output_text, c.input_hash, c.output_hash,
        c.redactions, c.payload_truncated,
    )  # fmt: skip


def assemble(pieces: list[EventPiece], params: dict[str, Any], limit: int) -> SpanContent:
    """A call's content from its content events (``pieces``, in the order they were recorded), as
    :func:`read_content` assembles the same events on a span: the input of the first ``whole`` event that has one,
    else the ``message`` events in order; the output of the first ``whole`` event that has one, else the choices by
    index. Each part is already redacted; its hash is the hash of the one event's part before redaction, or, for
    several messages or choices, the canonical hash of the list of theirs."""
    content = SpanContent(payload_sampled=True)
    whole_in = next((p for p in pieces if p.kind == "whole" and p.input), None)
    messages = [whole_in] if whole_in else [p for p in pieces if p.kind == "message"]
    if messages:
        content.input_payload, content.input_hash = _joined(messages, "input", limit, content)
        content.params_hash = canonical_hash(params)
    whole_out = next((p for p in pieces if p.kind == "whole" and p.output), None)
    by_index = sorted((p for p in pieces if p.kind == "choice"), key=attrgetter("choice_index"))
    choices = [whole_out] if whole_out else by_index
    if choices:
        content.output_payload, content.output_hash = _joined(choices, "output", limit, content)
        text = "\n".join(p.output_text for p in choices if p.output_text)
        content.output_text, cut = cap_text(text, limit)
        content.payload_truncated |= cut
    used = {id(p): p for p in messages + choices}.values()  # a details event may give both
    content.payload_truncated |= any(p.truncated for p in used)
    content.redactions = min(sum(p.redactions for p in used), 0xFFFF)
    if whole_in:  # already redacted; a cut JSON array does not say what was asked
        asked = None if whole_in.truncated else _parsed(whole_in.input)
    else:
        asked = [_parsed(p.input) for p in messages]  # a cut message is text, and left out
    text_features(content, prompt_text(asked), None, limit)
    return content


def _joined(pieces: list[EventPiece], part: str, limit: int, content: SpanContent) -> tuple[str, int]:
    """One event's part as it is; several as a JSON array of them, cut at ``limit``; with the hash (see
    :func:`assemble`)."""
    hashes = [getattr(p, f"{part}_hash") for p in pieces]
    if len(pieces) == 1 and pieces[0].kind == "whole":
        return getattr(pieces[0], part), hashes[0]
    text, cut = cap_text("[" + ",".join(getattr(p, part) for p in pieces) + "]", limit)
    content.payload_truncated |= cut
    return text, canonical_hash(hashes)


def _from_events(events: Any, found_in: Any, found_out: Any, instructions: Any) -> tuple[Any, Any, Any]:
    """What the span events add to the content found in the attributes (the first found wins)."""
    messages: list[dict[str, Any]] = []
    choices: list[dict[str, Any]] = []
    for event in events:
        name = event.name
        if name in CONTENT_EVENTS:
            for kv in event.attributes:
                key = kv.key
                if found_in is None and key in INPUT_KEYS:
                    found_in = value_of(kv.value)
                elif found_out is None and key in OUTPUT_KEYS:
                    found_out = value_of(kv.value)
                elif instructions is None and key == INSTRUCTIONS_KEY:
                    instructions = value_of(kv.value)
        elif name in MESSAGE_EVENTS:
            messages.append(_message(name, {kv.key: value_of(kv.value) for kv in event.attributes}))
        elif name == CHOICE_EVENT:
            attributes = {kv.key: value_of(kv.value) for kv in event.attributes}
            choices.append(_choice(attributes, len(choices)))
    if found_in is None and messages:
        found_in = messages
    if found_out is None and choices:
        choices.sort(key=lambda c: c["index"] if isinstance(c["index"], int) else 0)
        found_out = choices
    return found_in, found_out, instructions


def _message(name: str, attributes: dict[str, Any]) -> dict[str, Any]:
    """A ``gen_ai.*.message`` event as an input message: ``{"role", "content", "tool_calls", "id"}`` as present."""
    message: dict[str, Any] = {"role": _role(attributes.get("role"), MESSAGE_EVENTS[name])}
    for key in ("content", "tool_calls", "id"):
        if attributes.get(key) is not None:
            message[key] = _parsed(attributes[key]) if key == "tool_calls" else attributes[key]
    return message


def value_of(any_value: Any) -> Any:
    """An OTLP ``AnyValue`` as a Python value (lists and dicts for arrays and key-value lists)."""
    which = any_value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [value_of(v) for v in any_value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, which)


def _choice(attributes: dict[str, Any], position: int) -> dict[str, Any]:
    """A ``gen_ai.choice`` event as an output message: ``{"index", "finish_reason", "role", "content", ...}``."""
    message = _parsed(attributes.get("message"))
    if not isinstance(message, dict):
        message = {} if message is None else {"content": message}
    choice: dict[str, Any] = {"index": attributes.get("index", position)}
    if attributes.get("finish_reason") is not None:
        choice["finish_reason"] = attributes["finish_reason"]
    choice["role"] = _role(message.get("role"), "assistant")
    choice.update((k, v) for k, v in message.items() if k != "role")
    return choice


def _role(value: Any, default: str) -> str:
    return value if isinstance(value, str) and value else default


def _with_instructions(instructions: Any, messages: Any) -> list[Any]:
    """The system instructions as the first message, before the input messages."""
    parts = instructions if isinstance(instructions, list) else [{"type": "text", "content": instructions}]
    system = {"role": "system", "parts": parts}
    if messages is None:
        return [system]
    if isinstance(messages, list):
        return [system, *messages]
    return [system, {"role": "user", "parts": [{"type": "text", "content": messages}]}]


def _parsed(value: Any) -> Any:
    """Content as structured data: JSON text of an array or object parsed; other text (``"4"`` too) stays text."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def output_text(messages: Any) -> str:
    """The text parts of output messages (GenAI conventions: ``[{"role", "parts": [{"type": "text", ...}]}]``)."""
    if isinstance(messages, str):
        return messages
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list):
        return ""
    pieces: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        parts = message.get("parts")
        if isinstance(parts, list):
            for part in parts:
                if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("content"), str):
                    pieces.append(part["content"])
        elif isinstance(message.get("content"), str):
            pieces.append(message["content"])
    return "\n".join(pieces)
