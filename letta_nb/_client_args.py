"""The public API's arguments, checked and turned into runtime values (letta_client's shapes accepted).

Each check names the argument, what was wrong and what is expected; none of them touches the runtime,
so a bad call fails before any work starts and writes nothing. API keys are never echoed back in an error.
Free text (messages, passages, block values, descriptions, metadata) is made valid Unicode here
(:mod:`letta_nb._text`: a lone surrogate becomes U+FFFD), names are refused instead; numbers are bounded
so that a typo fails now, not as an OverflowError deep in SQLite.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

from letta_nb._text import check_name_text, check_no_nul, clean_json, clean_text, has_surrogates
from letta_nb.errors import InvalidArgumentError
from letta_nb.schemas import DEFAULT_BLOCK_LIMIT, Block
from letta_nb.store.ids import new_id

__all__ = ["DEFAULT_PERSONA", "agent_and_item", "agent_name", "agent_ref", "block_limit", "block_value",
           "checked_api_keys", "flag", "function_arg", "input_text", "memory_blocks_from", "metadata_arg",
           "new_block_label", "optional_text", "positive_int", "store_where", "tag_match_mode_arg", "tags_arg",
           "text_arg", "timeout_arg", "tool_name_arg", "tool_ref", "tools_arg"]

_BLOCK_KEYS = {"label", "value", "limit", "description", "read_only"}
_AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\- ]{0,199}")
_LABEL_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_TOOL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,63}")
MAX_BLOCK_LIMIT = 1_000_000  # characters; a block is in every prompt, and this is ~250k tokens already
MAX_TIMEOUT_S = 86_400.0  # a day: past any tool call; a larger number is a unit mistake (ms for s)
DEFAULT_PERSONA = "I am a helpful assistant living in a Jupyter kernel. I remember what matters."


def checked_api_keys(keys: Any) -> dict[str, str]:
    if keys is None:
        return {}
    if not isinstance(keys, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in keys.items()):
        # Never echo the value: it is a secret.
        raise InvalidArgumentError("api_keys must be a dict of provider name -> non-empty key string, "
                                   "e.g. {'openai': os.environ['MY_KEY']}")
    for provider, key in keys.items():
        if not key.isascii() or not key.isprintable() or key != key.strip():
            # An HTTP header cannot carry it (a newline from a file, a non-ASCII paste): refuse now, not at the
            # first request, and say which key without showing it.
            raise InvalidArgumentError(
                f"api_keys[{clean_text(provider)[:40]!r}] holds whitespace, a control character or non-ASCII text; "
                "an API key is printable ASCII: strip it (e.g. open(...).read().strip()).")
    return {k.strip().lower(): v for k, v in keys.items()}


def store_where(where: Any) -> Any:
    """``connect(where)``: None, a path (str or os.PathLike) or a URL; refused here, before the runtime starts."""
    if where is None:
        return None
    if isinstance(where, os.PathLike):
        where = os.fspath(where)
    if not isinstance(where, str):
        raise InvalidArgumentError(f"where must be a path, ':memory:' or a database URL, got {type(where).__name__}; "
                                   "e.g. letta_nb.connect('notes.db').")
    if not where.strip():
        raise InvalidArgumentError(
            "where must not be empty; omit it for the default store, or pass a path or ':memory:'."
        )
    if has_surrogates(where) or any(not c.isprintable() for c in where):
        raise InvalidArgumentError(f"where {where[:200]!a} holds a control character or invalid Unicode; pass the "
                                   "store's path as plain text.")
    return where


def agent_name(name: Any, argument: str = "name") -> str:
    """An agent name: 1-200 printable characters, letters, digits, space, '_', '-', '.', starting with a
    letter or digit."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"{argument} must be a string, got {type(name).__name__}; e.g. name='sam'.")
    check_name_text(name, argument, max_len=200)
    if not _AGENT_NAME.fullmatch(name):
        raise InvalidArgumentError(
            f"{argument} must be 1-200 characters of letters, digits, space, '_', '-', '.', starting with a letter "
            f"or digit; got {name!r}")
    return name


def agent_ref(agent: Any) -> Any:
    """An agent reference (name, id or AgentState) as the runtime resolves it: a string made valid Unicode,
    so a name with a lone surrogate is simply not found (no stored name holds one) instead of breaking the query."""
    if not isinstance(agent, str):
        return agent
    if len(agent) > 200:  # no name or id is longer: say so instead of echoing the whole string back
        raise InvalidArgumentError(f"agent must be an agent name or id (at most 200 characters), got a "
                                   f"{len(agent):,}-character string starting {agent[:40]!r}.")
    return clean_text(agent)


def agent_and_item(first: Any, second: Any, agent_id: Any, item: str, example: str) -> tuple[Any, Any]:
    """An agent and the thing of it a call names, in either shape: letta_client's ``(item, agent_id=...)`` or
    letta_nb's positional ``(agent, item)``. ``example`` is the call to show when neither shape is met."""
    if agent_id is not None:
        if second is not None or first is None:
            raise InvalidArgumentError(f"name the agent once and the {item} once: {example}(ITEM, agent_id=AGENT) "
                                       f"as letta_client does, or {example}(AGENT, ITEM).")
        return agent_ref(agent_id), first
    if first is None or second is None:
        raise InvalidArgumentError(f"{example} needs an agent and a {item}: {example}(ITEM, agent_id=AGENT) "
                                   f"or {example}(AGENT, ITEM).")
    return agent_ref(first), second


def block_label(label: Any) -> str:
    """A memory block label to look up (``blocks.retrieve``/``update``)."""
    if not isinstance(label, str) or not 1 <= len(label) <= 100:
        shown = f"a {len(label):,}-character string" if isinstance(label, str) else repr(label)
        raise InvalidArgumentError(f"label must name a memory block (a string of 1-100 characters such as "
                                   f"'human'), got {shown}.")
    return clean_text(label)


def new_block_label(label: Any, argument: str = "label") -> str:
    """The label of a block being made: a name like ``human``, or a path of such names like Letta's
    ``system/human/work`` (no empty part, no ``.`` or ``..``), at most 100 characters."""
    parts = label.split("/") if isinstance(label, str) and len(label) <= 100 else []
    if not parts or not all(_LABEL_PART.fullmatch(p) and p not in (".", "..") for p in parts):
        raise InvalidArgumentError(
            f"{argument} must be an identifier-like name of letters, digits, '_', '-' and '.' (e.g. 'human'), "
            f"or a '/'-separated path of such names (e.g. 'system/human'), at most 100 characters "
            f"with no empty part; got {label!r}")
    return str(label)


def tool_name_arg(name: Any) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str):
        raise InvalidArgumentError(f"name must be a string or None, got {type(name).__name__}")
    check_name_text(name, "name", max_len=64)
    if not _TOOL_NAME.fullmatch(name):
        raise InvalidArgumentError(f"name {name!r} is not a valid tool name: letters, digits and underscores, not "
                                   "starting with a digit, at most 64 characters (e.g. 'lookup_paper').")
    return name


def text_arg(value: Any, argument: str) -> str:
    """Free text that must say something: a non-blank string, made valid Unicode."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{argument} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidArgumentError(f"{argument} must not be empty or only whitespace.")
    check_no_nul(value, argument)
    return clean_text(value)


def optional_text(value: Any, argument: str) -> str | None:
    """Free text that may be empty or None (a description, a system prompt), made valid Unicode."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{argument} must be a string or None, got {type(value).__name__}")
    check_no_nul(value, argument)
    return clean_text(value)


def positive_int(value: Any, argument: str, *, hi: int, hint: str = "") -> int:
    """An integer from 1 to ``hi`` (booleans are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
        raise InvalidArgumentError(f"{argument} must be an integer from 1 to {hi:,}, got {value!r}.{hint}")
    return value


def flag(value: Any, argument: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{argument} must be True or False, got {value!r}")
    return value


def timeout_arg(value: Any, argument: str = "timeout") -> float | None:
    """Seconds (a finite number > 0, at most a day) or None for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"{argument} must be a number of seconds or None, got {type(value).__name__} "
                                   f"{value!r}; e.g. {argument}=5 (not {argument}='5').")
    if not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT_S:
        raise InvalidArgumentError(f"{argument} must be seconds, more than 0 and at most {MAX_TIMEOUT_S:g} (a day), "
                                   f"or None for no limit; got {value!r}.")
    return float(value)


def tags_arg(tags: Any) -> list[str] | None:
    if tags is None:
        return None
    if isinstance(tags, str) or not isinstance(tags, list | tuple):
        raise InvalidArgumentError(f"tags must be a list of strings, got {type(tags).__name__}; e.g. tags=['papers'].")
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or not tag.strip():
            raise InvalidArgumentError(f"tags[{i}] must be a non-empty string, got {tag!r}")
        check_no_nul(tag, f"tags[{i}]")
    return [clean_text(t) for t in tags]


def metadata_arg(metadata: Any) -> dict[str, Any]:
    """A JSON object with string keys (stored as JSON with the agent), strings made valid Unicode."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise InvalidArgumentError("metadata must be a dict with string keys, got "
                                   f"{type(metadata).__name__}; e.g. metadata={{'project': 'thesis'}}.")
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"metadata must hold only JSON values (str, int, finite float, bool, None, "
                                   f"lists, dicts): {e}.") from None
    _no_nul_in(metadata, "metadata")
    return dict(clean_json(metadata))


def _no_nul_in(value: Any, argument: str) -> None:
    """:func:`check_no_nul` on every string of a JSON value, keys included (jsonb refuses ``\\u0000`` too)."""
    if isinstance(value, str):
        check_no_nul(value, argument)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_no_nul(k, f"{argument} key {k[:40]!r}")
            _no_nul_in(v, f"{argument}[{k[:40]!r}]")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _no_nul_in(v, f"{argument}[{i}]")


def input_text(input: Any, messages: list[dict[str, Any]] | None) -> str:
    if input is not None and messages is not None:
        raise InvalidArgumentError("pass either input=... or messages=[...], not both")
    if messages is not None:
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise InvalidArgumentError("messages must be a non-empty list of {'role': 'user', 'content': ...} dicts")
        # Several user messages are one turn: sent as one message, their texts in order, a blank line apart.
        input = "\n\n".join(_message_text(i, msg) for i, msg in enumerate(messages))
    if not isinstance(input, str) or not input.strip():
        shown = repr(input) if isinstance(input, str) or input is None else type(input).__name__
        raise InvalidArgumentError(f"input must be a non-empty string, got {shown}")
    if messages is None:
        check_no_nul(input, "input")
    return clean_text(input)


def _message_text(i: int, msg: dict[str, Any]) -> str:
    if msg.get("role", "user") != "user":
        raise InvalidArgumentError(f"messages[{i}]['role']: only role 'user' can be sent, got {msg.get('role')!r}")
    content = msg.get("content")
    if isinstance(content, list):  # letta_client's [{"type": "text", "text": ...}]
        if not all(isinstance(part, dict) and isinstance(part.get("text", ""), str) for part in content):
            raise InvalidArgumentError(f"messages[{i}]['content'] must be a string or a list of "
                                       "{'type': 'text', 'text': ...} dicts")
        content = "".join(part.get("text", "") for part in content)
    if not isinstance(content, str) or not content.strip():
        raise InvalidArgumentError(f"messages[{i}]['content'] must be a non-empty string (or a list of text parts), "
                                   f"got {type(content).__name__}")
    check_no_nul(content, f"messages[{i}]['content']")
    return content


def block_value(value: Any, argument: str = "value") -> str:
    """A block's value: a string, made valid Unicode (whether it fits the block's limit is the domain's
    rule: runtime/services/blocks.py)."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{argument} must be a string, got {type(value).__name__}")
    check_no_nul(value, argument)
    return clean_text(value)


def block_limit(limit: Any, argument: str = "limit") -> int:
    """A block's limit in characters: an integer from 1 to MAX_BLOCK_LIMIT."""
    return positive_int(limit, argument, hi=MAX_BLOCK_LIMIT)


def memory_blocks_from(specs: Sequence[dict[str, Any] | Block] | None) -> list[Block]:
    if specs is None:
        specs = [{"label": "persona", "value": DEFAULT_PERSONA}, {"label": "human", "value": ""}]
    if not isinstance(specs, list | tuple):
        raise InvalidArgumentError(f"memory_blocks must be a list of dicts, got {type(specs).__name__}")
    blocks: list[Block] = []
    for i, spec in enumerate(specs):
        if isinstance(spec, Block):
            spec = {"label": spec.label, "value": spec.value, "limit": spec.limit, "description": spec.description,
                    "read_only": spec.read_only}
        if not isinstance(spec, dict):
            raise InvalidArgumentError(f"memory_blocks[{i}] must be a dict with 'label' and 'value', got {spec!r}")
        unknown = set(spec) - _BLOCK_KEYS
        if unknown:
            raise InvalidArgumentError(f"memory_blocks[{i}] has unknown keys {sorted(unknown)}; "
                                       f"allowed: {sorted(_BLOCK_KEYS)}")
        label = spec.get("label")
        label = new_block_label(label, f"memory_blocks[{i}]['label']")
        if any(b.label == label for b in blocks):
            raise InvalidArgumentError(f"memory_blocks has two blocks labelled {label!r}")
        value = block_value(spec.get("value", ""), f"memory_blocks[{i}]['value']")
        limit = block_limit(spec.get("limit", DEFAULT_BLOCK_LIMIT), f"memory_blocks[{i}]['limit']")
        description = optional_text(spec.get("description", ""), f"memory_blocks[{i}]['description']") or ""
        read_only = flag(spec.get("read_only", False), f"memory_blocks[{i}]['read_only']")
        blocks.append(Block(label=label, value=value, limit=limit,
                            description=description, read_only=read_only, id=new_id("block")))
    return blocks


def tools_arg(tools: Any, argument: str = "tools") -> list[Any]:
    """An agent's tools: a list (or tuple) of functions, ToolSpecs or tool names (or of ids: ``block_ids``)."""
    if isinstance(tools, str) or not isinstance(tools, list | tuple):
        raise InvalidArgumentError(f"{argument} must be a list, got {type(tools).__name__}; e.g. {argument}=['...'].")
    return list(tools)


def function_arg(func: Any) -> Any:
    """A Python function to register as a tool."""
    if not callable(func):
        raise InvalidArgumentError(f"func must be a Python function, got {type(func).__name__}")
    return func


def tool_ref(name: Any) -> str:
    """The name of a tool to look up (``tools.retrieve``/``trust``)."""
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"name must be a tool name, got {name!r}")
    return name


def tag_match_mode_arg(mode: Any) -> str:
    if mode not in ("any", "all"):
        raise InvalidArgumentError(f"tag_match_mode must be 'any' or 'all', got {mode!r}")
    checked: str = mode
    return checked
