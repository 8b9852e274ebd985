"""Model names: what every entry point accepts as the name of a monitored model.

A model name is whatever a model server or an OpenTelemetry span carries: Hugging Face ids
(``org/model-name``), tags (``llama3:8b``), dots, spaces, any printable Unicode. It is
stored as a ClickHouse ``String``, shown in pages (escaped), used as a path in URLs
(percent-encoded) and as a Prometheus label value. Refused at entry, with the reason:

- an empty name (or one of only spaces): it cannot tell models apart;
- a name longer than :data:`MAX_LENGTH` characters;
- control characters (tabs, newlines, escape sequences, DEL, C1 controls) and Unicode line
  separators: they break log lines, metric exposition and terminals;
- a ``/``-separated part that is ``.`` or ``..``: URLs resolve such parts away, so the
  model's pages could not be opened.
"""

from __future__ import annotations

import unicodedata

from driftwarden.errors import UserError

MAX_LENGTH = 256
_REFUSED_CATEGORIES = {"Cc": "a control character", "Zl": "a line separator", "Zp": "a paragraph separator"}


def model_name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid model name, or None when it is."""
    if not isinstance(name, str):
        return f"a model name must be text, got {type(name).__name__}"
    if not name.strip():
        return "a model name must not be empty"
    if len(name) > MAX_LENGTH:
        return f"a model name must be at most {MAX_LENGTH} characters, this one has {len(name)}"
    for position, char in enumerate(name, start=1):
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES:
            return (
                f"a model name must not contain {_REFUSED_CATEGORIES[category]} "
                f"(U+{ord(char):04X} at character {position})"
            )
        if category == "Cs":
            return f"a model name must be valid Unicode (lone surrogate U+{ord(char):04X} at character {position})"
    if any(part in (".", "..") for part in name.split("/")):
        return "a model name must not have '.' or '..' between slashes: URLs resolve them away"
    return None


def check_model_name(name: str) -> str:
    """Return ``name`` when it is a valid model name; else raise :class:`UserError` saying why.

    >>> check_model_name("org/model-name:tag")
    'org/model-name:tag'
    """
    problem = model_name_problem(name)
    if problem:
        raise UserError(f"model name {_shown(name)} is refused: {problem}")
    return name


def _shown(name: object) -> str:
    """The name as it is safe to print on one line: repr escapes controls; long names are cut."""
    text = repr(name)
    return text if len(text) <= 80 else text[:60] + "…" + text[-15:]
