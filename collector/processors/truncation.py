"""The payload size cap: bodies longer than the cap are cut and the event says so.

Cuts are made on a UTF-8 character boundary, so what is stored is valid text.
"""

from __future__ import annotations


def decode_capped(data: bytes, max_bytes: int) -> tuple[str, bool]:
    """``data`` as text, at most ``max_bytes`` UTF-8 bytes; and whether it was cut.

    Bytes that are not UTF-8 (binary bodies) become U+FFFD, so the column
    always holds valid text.
    """
    if len(data) <= max_bytes:
        return data.decode("utf-8", "replace"), False
    end = max_bytes
    while end > max_bytes - 3 and end > 0 and _continuation(data[end]):
        end -= 1  # do not split a character: back up to its first byte
    return data[:end].decode("utf-8", "replace"), True


def cap_text(text: str, max_bytes: int) -> tuple[str, bool]:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes; and whether it was cut."""
    if len(text) * 4 <= max_bytes:  # fast path: cannot exceed even if every character is 4 bytes
        return text, False
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text, False
    return encoded[:max_bytes].decode("utf-8", "ignore"), True


def _continuation(byte: int) -> bool:
    return (byte & 0xC0) == 0x80
