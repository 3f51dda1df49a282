"""The public API's arguments, checked and turned into runtime values (letta_client's shapes accepted).

Each check names the argument, what was wrong and what is expected; none of them touches the runtime,
so a bad call fails before any work starts. API keys are never echoed back in an error.
"""

from __future__ import annotations

import re
from typing import Any

from letta_nb.errors import BlockLimitError, InvalidArgumentError
from letta_nb.schemas import DEFAULT_BLOCK_LIMIT, Block
from letta_nb.store.store import new_id

__all__ = ["DEFAULT_PERSONA", "check_block_value", "checked_api_keys", "input_text", "memory_blocks_from"]

_BLOCK_KEYS = {"label", "value", "limit", "description", "read_only"}
DEFAULT_PERSONA = "I am a helpful assistant living in a Jupyter kernel. I remember what matters."


def checked_api_keys(keys: Any) -> dict[str, str]:
    if keys is None:
        return {}
    if not isinstance(keys, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in keys.items()):
        # Never echo the value: it is a secret.
        raise InvalidArgumentError("api_keys must be a dict of provider name -> non-empty key string, "
                                   "e.g. {'openai': os.environ['MY_KEY']}")
    return {k.strip().lower(): v for k, v in keys.items()}


def input_text(input: Any, messages: list[dict] | None) -> str:
    if input is not None and messages is not None:
        raise InvalidArgumentError("pass either input=... or messages=[...], not both")
    if messages is not None:
        if not isinstance(messages, list) or len(messages) != 1 or not isinstance(messages[0], dict):
            raise InvalidArgumentError("messages must be a list with one {'role': 'user', 'content': ...} dict")
        msg = messages[0]
        if msg.get("role", "user") != "user":
            raise InvalidArgumentError(f"only role 'user' can be sent, got {msg.get('role')!r}")
        content = msg.get("content")
        if isinstance(content, list):  # letta_client's [{"type": "text", "text": ...}]
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        input = content
    if not isinstance(input, str) or not input.strip():
        raise InvalidArgumentError(f"input must be a non-empty string, got {input!r}")
    return input


def check_block_value(label: str, value: Any, limit: Any, *, where: str = "") -> None:
    """A block's value must be a string within its limit, a positive integer; ``where`` prefixes the
    argument names (``memory_blocks[0]['value']``), none for keyword arguments."""
    name = (lambda key: f"{where}[{key!r}]") if where else (lambda key: key)
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name('value')} must be a string, got {type(value).__name__}")
    if not isinstance(limit, int) or limit < 1:
        raise InvalidArgumentError(f"{name('limit')} must be a positive integer, got {limit!r}")
    if len(value) > limit:
        raise BlockLimitError(label, len(value), limit)


def memory_blocks_from(specs: list[dict[str, Any] | Block] | None) -> list[Block]:
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
            raise InvalidArgumentError(f"memory_blocks[{i}] has unknown keys {sorted(unknown)}; allowed: {sorted(_BLOCK_KEYS)}")
        label = spec.get("label")
        if not isinstance(label, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$", label):
            raise InvalidArgumentError(f"memory_blocks[{i}]['label'] must be an identifier-like string, got {label!r}")
        if any(b.label == label for b in blocks):
            raise InvalidArgumentError(f"memory_blocks has two blocks labelled {label!r}")
        value = spec.get("value", "")
        limit = spec.get("limit", DEFAULT_BLOCK_LIMIT)
        check_block_value(label, value, limit, where=f"memory_blocks[{i}]")
        blocks.append(Block(label=label, value=value, limit=limit, description=spec.get("description", ""),
                            read_only=bool(spec.get("read_only", False)), id=new_id("block")))
    return blocks
