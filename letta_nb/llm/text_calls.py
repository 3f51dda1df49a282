"""Tool calls written as JSON text: recognise a message content that is exactly a call of an offered tool.

Small local models often answer a tool-calling prompt with the call as text instead of the API's
``tool_calls`` (measured: Qwen2.5-Coder-0.5B under llama.cpp's OpenAI-compatible server writes
``{"name": "send_message", "arguments": {...}}`` as its content). Shown as the reply, that is raw JSON
to the user and the edit it asked for never happens. The shapes accepted are the ones such models write:
a bare object ``{"name": ..., "arguments": {...}}`` (Qwen, Hermes) or ``{"name": ..., "parameters":
{...}}`` (Llama 3.x), optionally with ``"type": "function"``, alone or inside a single ```` ```json ````
fence or ``<tool_call>...</tool_call>`` tags.

Invariant: recognition is strict, since a false positive runs a tool the user never asked for. The whole
content (bar surrounding whitespace) must be that one call, its name must be a tool offered in this
step, its arguments a JSON object (or a JSON string holding one), and no other keys may be present.
Anything else stays text. Pure and synchronous: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection

from letta_nb._text import clean_json

__all__ = ["MARKERS", "could_be_call", "parse_text_call"]

# What a content that may be a call starts with (after whitespace): until it is decided, streaming holds it.
MARKERS = ("{", "```", "<tool_call>")
_FENCED = re.compile(r"\A```[ \t]*(?:json|tool_call)?[ \t]*\n(?P<body>.*)\n[ \t]*```\Z", re.S | re.I)
_TAGGED = re.compile(r"\A<tool_call>(?P<body>.*)</tool_call>\Z", re.S)
_FENCE_LANGS = ("", "json", "tool_call")
_ARG_KEYS = ("arguments", "parameters")


def could_be_call(text: str) -> bool | None:
    """For content seen so far: True if it starts like a call (hold it until the end), False if it cannot be
    one (show it), None if too little has arrived to tell (hold it for now)."""
    head = text.lstrip()
    if not head:
        return None
    for marker in MARKERS:
        if head.startswith(marker):
            if marker == "```" and "\n" in head:  # the fence's language is known: ```python is not a call
                return head[3:head.index("\n")].strip().lower() in _FENCE_LANGS
            return True
        if marker.startswith(head):
            return None
    return False


def parse_text_call(content: str | None, offered: Collection[str]) -> tuple[str, str] | None:
    """``(tool name, arguments JSON text)`` when ``content`` is exactly one call of a tool in ``offered``."""
    if not content:
        return None
    text = content.strip()
    for pattern in (_FENCED, _TAGGED):
        m = pattern.match(text)
        if m:
            text = m.group("body").strip()
            break
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    name = value.get("name")
    arg_keys = [k for k in _ARG_KEYS if k in value]
    allowed = {"name", *_ARG_KEYS, "type"}
    if (not isinstance(name, str) or name not in offered or len(arg_keys) != 1 or set(value) - allowed
            or value.get("type", "function") != "function"):
        return None
    args = value[arg_keys[0]]
    if isinstance(args, str):  # the API's own shape: arguments as JSON text
        try:
            args = json.loads(args)
        except (ValueError, RecursionError):
            return None
    if not isinstance(args, dict):
        return None
    return name, json.dumps(clean_json(args), ensure_ascii=False)
