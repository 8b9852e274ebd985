"""Redaction of personal data before an event leaves the process.

Two kinds of rule:

* field names: the value of any JSON key named in ``fields`` (case-insensitive,
  ``-`` and ``_`` alike) is replaced whole, whatever it looks like (rule ``field``);
* patterns, matched in all text that is stored (payloads, generated text,
  categorical values, labels): e-mail addresses (``email``), payment card
  numbers that pass the Luhn check (``card``), IBANs whose mod-97 check is 1
  (``iban``), national identifiers: US SSN and UK National Insurance numbers
  (``national_id``), phone numbers written with a ``+`` country code or in
  North-American form (``phone``), and any extra named regular expressions.

A match is replaced by ``[redacted:RULE:HEX]`` where HEX is the first 16 hex
digits of HMAC-SHA256(key, value) (``mode: hash``: the same value always gives
the same pseudonym, so joins and counts still work) or by ``[redacted:RULE]``
(``mode: mask``). Checksums keep false positives down: a 16-digit number that
fails the Luhn check is left alone.

Thread safety: a :class:`Redactor` is immutable after construction and may be
shared; counts are returned per call, never kept.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections import Counter
from collections.abc import Iterable
from typing import Any

_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b",
    "national_id": (
        r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"  # US SSN
        r"|\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"  # UK NINO
    ),
    "card": r"(?<![\w.])\d(?:[ -]?\d){12,18}(?![\w.])",
    # Phone numbers: international with a + country code, or North-American (555) 123-4567 / 555-123-4567.
    "phone": r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}(?!\w)",
    "phone_paren": r"(?<!\w)\(\d{3}\) ?\d{3}[ .-]\d{4}(?!\w)",
    "phone_plain": r"(?<![\w.-])\d{3}[.-]\d{3}[.-]\d{4}(?![\w.-])",
}
# Rules are applied one after the other in this order; a rule whose characters are absent is skipped
# (a cheap ``in`` test), which makes redaction of numeric JSON a few microseconds.
_ORDER = ("email", "iban", "national_id", "card", "phone")
_NEEDS: dict[str, tuple[str, ...]] = {
    "email": ("@",),
    "phone": ("+",),
    "phone_paren": ("(",),
    "phone_plain": ("-", "."),
}
_SUBRULES = {"phone": ("phone", "phone_paren", "phone_plain")}
# What any match of a rule contains, as a simpler pattern that one fast scan finds or rules out: two capitals, a
# digit and six more capitals, digits or spaces (IBAN, UK NINO); a digit and ten more digits, spaces or dashes (US
# SSN, card); a digit and eleven more digits, dots or dashes (phone). Text with none of a rule's hints (most numeric
# JSON, such as Open Inference Protocol tensors, and most prose) skips its slower pattern; text with one runs it.
_HINTS: dict[str, re.Pattern[str]] = {
    "letters": re.compile(r"[A-Z]{2} ?\d[ A-Z0-9]{6}"),
    "digits": re.compile(r"\d[\d -]{10}"),
    "dotted": re.compile(r"\d[\d .-]{11}"),
}
_HINTED: dict[str, tuple[str, ...]] = {
    "iban": ("letters",),
    "national_id": ("letters", "digits"),
    "card": ("digits",),
    "phone_plain": ("dotted",),
}


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters to numbers, mod 97 == 1."""
    s = text.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    try:
        return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1
    except ValueError:
        return False


class Redactor:
    """Applies the configured rules; see the module docstring."""

    def __init__(
        self,
        *,
        mode: str = "hash",
        key: bytes | str | None = None,
        fields: Iterable[str] = (),
        rules: Iterable[str] = _ORDER,
        patterns: dict[str, str] | None = None,
    ) -> None:
        if mode not in ("hash", "mask"):
            raise ValueError(f"redaction mode {mode!r}: accepted are 'hash' and 'mask'")
        self.mode = mode
        # Without a configured key the pseudonyms are still keyed, but only stable for this process's lifetime.
        self.key_is_ephemeral = key is None
        raw_key = secrets.token_bytes(32) if key is None else key
        self._key = raw_key.encode("utf-8") if isinstance(raw_key, str) else raw_key
        self.fields = frozenset(_norm(f) for f in fields)
        # For bodies that cannot be parsed (cut at the size cap, invalid JSON): `"name": scalar` in the text.
        self._field_regex = None
        if self.fields:
            names = "|".join(re.escape(f).replace("_", "[_-]") for f in sorted(self.fields))
            self._field_regex = re.compile(rf'("(?:{names})"\s*:\s*)("(?:[^"\\]|\\.)*"?|[^,}}\]\s]+)', re.IGNORECASE)
        enabled = set(rules)
        self._rules: list[tuple[str, re.Pattern[str], tuple[str, ...], tuple[str, ...]]] = [
            (name, re.compile(_PATTERNS[part]), _NEEDS.get(part, ()), _HINTED.get(part, ()))
            for name in _ORDER
            if name in enabled
            for part in _SUBRULES.get(name, (name,))
        ]
        self._rules += [(name, re.compile(pattern), (), ()) for name, pattern in (patterns or {}).items()]
        self._spellings = tuple(sorted({spelling for f in self.fields for spelling in (f, f.replace("_", "-"))}))

    def token(self, rule: str, value: str) -> str:
        """The replacement of ``value`` matched by ``rule``."""
        if self.mode == "mask":
            return f"[redacted:{rule}]"
        digest = hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
        return f"[redacted:{rule}:{digest}]"

    def text(self, text: str, counts: Counter[str]) -> str:
        """``text`` with every pattern match replaced; adds to ``counts`` per rule."""
        if not text:
            return text
        found: dict[str, bool] = {}  # which _HINTS the text has, each looked for once (until a rule changes it)
        for rule, regex, needs, hints in self._rules:
            if needs and not any(ch in text for ch in needs):
                continue
            if hints:
                for hint in hints:
                    if hint not in found:
                        found[hint] = _HINTS[hint].search(text) is not None
                    if found[hint]:
                        break
                else:
                    continue
            if regex.search(text) is not None:
                text = regex.sub(lambda m, rule=rule: self._replace(rule, m, counts), text)
                found.clear()
        return text

    def _replace(self, rule: str, match: re.Match[str], counts: Counter[str]) -> str:
        value = match.group()
        if rule == "card":
            if not luhn_valid(value.replace(" ", "").replace("-", "")):
                return value
        elif rule == "iban" and not iban_valid(value):
            return value
        counts[rule] += 1
        return self.token(rule, value)

    def is_field(self, name: str) -> bool:
        """Whether a key or feature of this name is redacted whole."""
        return _norm(name) in self.fields

    def json_fields(self, value: Any, counts: Counter[str]) -> tuple[Any, bool]:
        """A copy of the parsed JSON ``value`` with the values of redacted keys replaced; and whether any was."""
        if not self.fields:
            return value, False
        changed = [False]
        out = self._walk(value, counts, changed)
        return out, changed[0]

    def _walk(self, value: Any, counts: Counter[str], changed: list[bool]) -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if isinstance(k, str) and _norm(k) in self.fields and v is not None:
                    counts["field"] += 1
                    changed[0] = True
                    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(",", ":"))
                    out[k] = self.token("field", text)
                else:
                    out[k] = self._walk(v, counts, changed)
            return out
        if isinstance(value, list):
            return [self._walk(v, counts, changed) for v in value]
        return value

    def payload(self, text: str, parsed: Any, counts: Counter[str]) -> str:
        """A JSON body as stored: values of redacted fields replaced, then patterns.

        With the parsed body, fields are replaced in the parsed value (any
        nesting, any value type) and the body is re-serialised; without it (a
        body cut at the size cap or not valid JSON) ``"field": value`` pairs
        are replaced in the text.
        """
        if self._spellings and text:
            lowered = text.lower()
            if any(name in lowered for name in self._spellings):
                if isinstance(parsed, (dict, list)):
                    redacted, changed = self.json_fields(parsed, counts)
                    if changed:
                        text = json.dumps(redacted, ensure_ascii=False, separators=(",", ":"))
                elif self._field_regex is not None:
                    text = self._field_regex.sub(lambda m: self._replace_field(m, counts), text)
        return self.text(text, counts)

    def _replace_field(self, match: re.Match[str], counts: Counter[str]) -> str:
        counts["field"] += 1
        value = match.group(2)
        return f'{match.group(1)}"{self.token("field", value.strip(chr(34)))}"'


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")
