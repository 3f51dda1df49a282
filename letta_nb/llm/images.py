"""Image parts in messages: how recall memory keeps them and how a model request carries them.

A message's ``content`` column is text, and old rows must read as they always did, so an image rides *in*
the text as a marker, ``[[image data:image/png;base64,...]]`` (:func:`image_marker`): no migration, no new
column, and an Agent File export keeps it. Three views read the marker:

- :func:`content_parts`: the OpenAI ``content`` of a message, a list of ``text`` and ``image_url`` parts when
  it holds an image (``schemas.Message.openai``), the plain string otherwise;
- :func:`placeholder_text`: "[image]" in its place, wherever a person or a search reads text
  (``Message.text``, recall's embeddings);
- :func:`content_tokens`: a fixed :data:`IMAGE_TOKENS` an image (OpenAI's low-detail cost), not its base64.

OpenAI-compatible APIs take image parts in user messages only, so :func:`images_after_tools` moves the
images of tool results (the figure tool's PNG) into a user message right after the tool results.
"""

from __future__ import annotations

import base64
import re
from typing import Any

__all__ = ["IMAGE_TOKENS", "content_parts", "content_tokens", "has_images", "image_marker", "images_after_tools",
           "placeholder_text"]

#: Tokens an image costs in estimates: OpenAI's low-detail image (any size, 85 tokens).
IMAGE_TOKENS = 85
_OPEN = "[[image data:image/"
_MARKER = re.compile(r"\[\[image (data:image/(?:png|jpeg|gif|webp);base64,[A-Za-z0-9+/]+={0,2})\]\]")


def image_marker(data: bytes, mime: str = "image/png") -> str:
    """The text that stands for an image in a message's content."""
    if mime not in ("image/png", "image/jpeg", "image/gif", "image/webp"):
        raise ValueError(f"mime must be image/png, image/jpeg, image/gif or image/webp, got {mime!r}")
    return f"[[image data:{mime};base64,{base64.b64encode(data).decode('ascii')}]]"


def has_images(text: str | None) -> bool:
    return bool(text and _OPEN in text and _MARKER.search(text))


def placeholder_text(text: str | None) -> str:
    """``text`` with each image as "[image]" (what a person or a search reads)."""
    if not text or _OPEN not in text:
        return text or ""
    return _MARKER.sub("[image]", text)


def content_parts(text: str | None) -> str | list[dict[str, Any]] | None:
    """OpenAI message content: ``text`` itself, or text and ``image_url`` parts when it holds images."""
    if not text or _OPEN not in text:
        return text
    parts: list[dict[str, Any]] = []
    at = 0
    for m in _MARKER.finditer(text):
        if text[at:m.start()].strip():
            parts.append({"type": "text", "text": text[at:m.start()].strip()})
        parts.append({"type": "image_url", "image_url": {"url": m.group(1), "detail": "low"}})
        at = m.end()
    if text[at:].strip():
        parts.append({"type": "text", "text": text[at:].strip()})
    return parts if any(p["type"] == "image_url" for p in parts) else text


def content_tokens(content: Any, per_char: int = 4) -> int:
    """Estimated tokens of an OpenAI ``content`` (a string or parts): ~4 characters a token, an image
    :data:`IMAGE_TOKENS`."""
    if not content:
        return 0
    if isinstance(content, str):
        if _OPEN in content:
            images = len(_MARKER.findall(content))
            return (len(_MARKER.sub("", content)) + per_char - 1) // per_char + images * IMAGE_TOKENS
        return (len(content) + per_char - 1) // per_char
    if isinstance(content, list):
        return sum(IMAGE_TOKENS if isinstance(p, dict) and p.get("type") == "image_url"
                   else content_tokens(p.get("text", "") if isinstance(p, dict) else str(p)) for p in content)
    return (len(str(content)) + per_char - 1) // per_char


def images_after_tools(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with the image parts of tool results moved into a user message after the run of tool
    results they came in (tool messages keep their text, "[image]" where an image was). Messages without
    images are returned as they are (the same list when none has one)."""
    if not any(m.get("role") == "tool" and isinstance(m.get("content"), list) for m in messages):
        return messages
    out: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        content = m.get("content")
        if m.get("role") == "tool" and isinstance(content, list):
            images = [p for p in content if p.get("type") == "image_url"]
            text = " ".join(p.get("text", "") if p.get("type") == "text" else "[image]" for p in content)
            out.append({**m, "content": text})
            if images:
                held.append({"type": "text", "text": f"The image(s) returned by tool {m.get('name') or 'call'} "
                                                      f"({m.get('tool_call_id')}):"})
                held.extend(images)
        else:
            out.append(m)
        if held and (i + 1 == len(messages) or messages[i + 1].get("role") != "tool"):
            out.append({"role": "user", "content": held})
            held = []
    return out
