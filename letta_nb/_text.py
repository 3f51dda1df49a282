"""One policy for text that enters the runtime: it is made valid Unicode, or refused if it names something.

Python strings may hold lone surrogates (``"\\ud800"``): JSON's ``\\ud800`` escape decodes to one, as do
``surrogateescape``-decoded bytes and text a tool builds by hand. They cannot be encoded as UTF-8, so
SQLite, HTTP bodies and the kernel's display messages all refuse them, and a turn carrying one used to
fail at commit and lose the user's message. At every boundary where text comes in (the public API's
arguments, the model's reply and tool-call arguments, tool results, the loopback server's requests)
:func:`clean_text` replaces each lone surrogate with U+FFFD and joins a correctly paired surrogate pair
written as two code points into the real character, so the text is stored whole and answered.

NUL (``"\x00"``) is valid Unicode, but PostgreSQL's text and jsonb refuse it (SQLite stores it), so on
PostgreSQL a message holding one failed at commit, after the model was paid for. The same on both backends:
text a user passes to the API is refused with :func:`check_no_nul` (the argument and the position named,
nothing written: silently dropping a character of what the user wrote would change it), and text that
arises inside a turn (the model's reply, tool arguments and results) has each NUL made U+FFFD by
:func:`clean_text`, like a lone surrogate, so the turn is stored whole.

Identifiers are different: replacing a character in an agent name, a block label or a tool name would
silently name something else, so :func:`check_name_text` refuses them with an error naming the argument.

The checks are cheap on the hot path: ASCII strings (``str.isascii`` is O(1) in CPython) and strings
that encode as UTF-8 are returned as they are; only broken text pays for the repair.
"""

from __future__ import annotations

from typing import Any

from letta_nb.errors import InvalidArgumentError

__all__ = ["check_name_text", "check_no_nul", "clean_json", "clean_text", "has_surrogates"]

REPLACEMENT = "\ufffd"


def has_surrogates(text: str) -> bool:
    """True when ``text`` holds a surrogate code point (paired or not): it cannot be encoded as UTF-8."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def clean_text(text: str) -> str:
    """``text`` as valid, storable Unicode: surrogate pairs joined, lone surrogates and NULs replaced by U+FFFD."""
    if "\x00" in text:  # memchr: cheap on the hot path
        text = text.replace("\x00", REPLACEMENT)
    if not has_surrogates(text):
        return text
    # UTF-16 with surrogatepass writes every code point as its 16-bit units; decoding joins a high+low
    # pair into one character and turns each unit that pairs with nothing into U+FFFD.
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def clean_json(value: Any) -> Any:
    """``value`` (parsed JSON, metadata) with every string in it, keys included, made valid Unicode.

    Returns the same object when nothing needed repair, so clean input costs one walk and no copies."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        items = [(clean_json(k), clean_json(v)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items(), strict=True)):
            return value
        return dict(items)
    if isinstance(value, list | tuple):
        items = [clean_json(v) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return items if isinstance(value, list) else tuple(items)
    return value


def check_no_nul(value: str, argument: str) -> None:
    """Refuse text holding NUL (``"\\x00"``): PostgreSQL cannot store it, and replacing it would change what
    the user wrote. Raises InvalidArgumentError naming ``argument`` and the first NUL's position."""
    at = value.find("\x00")
    if at >= 0:
        raise InvalidArgumentError(
            f"{argument} holds a NUL character ('\\x00') at position {at:,} (of {len(value):,}); the store cannot "
            f"keep it (PostgreSQL's text refuses it). Remove it, e.g. {argument}.replace('\\x00', ''), or pass "
            "binary data encoded (base64) rather than as text.")


def check_name_text(value: str, argument: str, *, max_len: int) -> None:
    """Refuse a name that replacing characters would silently change, or that would not print on one line.

    ``value`` is already known to be a string. Raises InvalidArgumentError naming ``argument``; the
    value is shown with ``ascii()`` so an invisible character is visible in the message."""
    if not value.strip():
        raise InvalidArgumentError(f"{argument} must be a non-blank string; pass a short name such as 'sam'.")
    if len(value) > max_len:
        raise InvalidArgumentError(f"{argument} must be at most {max_len} characters, got {len(value):,}.")
    if has_surrogates(value):
        raise InvalidArgumentError(
            f"{argument} must be valid Unicode: {value[:80]!a} holds a lone surrogate (e.g. from a JSON \\ud800 "
            "escape), and a name cannot be repaired without changing it; pass it as valid text.")
    bad = next((c for c in value if not c.isprintable()), None)  # space is printable; tabs, newlines are not
    if bad is not None:
        raise InvalidArgumentError(
            f"{argument} must be printable text on one line: {value[:80]!a} holds the control or invisible "
            f"character {bad!a}; remove it (a trailing newline from input() or a file is the usual cause).")
