"""How the offline model reads a conversation: keywords, questions, core memory, tool results.

Pure text helpers shared by the decision rules (:mod:`letta_nb.llm._offline_rules`): no I/O and no state,
except that the core-memory parse is cached per system-prompt string, because the runtime sends the same
prompt on every step until memory changes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

_WRITE_CONTENT_KEYS = ("content", "new_content", "new_str", "new_memory")
_RESULT_TEXT_KEYS = ("text", "content", "message", "value")
_STOPWORDS = frozenset(
    """a an the and or but if of to in on at by for with about as into from up down out over under again then
    once here there all any both each few more most other some such no nor not only own same so than too very
    can will just should now i me my myself mine we our ours you your yours he him his she her it its they them
    their what which who whom whose this that these those am is are was were be been being have has had having
    do does did doing would could ought when where why how tell remind please know user
    ll re ve don didn doesn isn aren wasn won""".split()  # noqa: SIM905 - a word list reads best as prose; contraction pieces: "you're" -> "you", "re"
)
_QUESTION_WORDS = frozenset("what who when where why how which do does did is are can could should".split())  # noqa: SIM905
_WORD = re.compile(r"[a-z0-9]+")
_FIRST_WORD = re.compile(r"\s*([a-z]+)")
_MEMORY_SECTION = re.compile(r"<memory_blocks>(.*?)</memory_blocks>", re.S)
_BLOCK = re.compile(
    r"<(?P<label>[A-Za-z0-9_.-]+)>\s*"
    r"(?:<description>.*?</description>\s*)?"
    r"(?:<metadata>(?P<meta>.*?)</metadata>\s*)?"
    r"<value>\n?(?P<value>.*?)\n?</value>\s*</(?P=label)>",
    re.S,
)
_META = re.compile(r"^\s*-?\s*(chars_current|chars_limit|read_only)\s*=\s*(\w+)", re.M)
_NO_RESULTS = re.compile(r"^(?:\[\]|\{\}|none|null|no (?:results|matches|memories)\b.*)?$", re.I | re.S)


@dataclass(frozen=True, slots=True)
class Block:
    label: str
    value: str
    chars_current: int
    chars_limit: int | None
    read_only: bool
    lines: tuple[tuple[str, frozenset[str]], ...]  # non-empty lines with their keywords, parsed once


def keywords(text: str) -> frozenset[str]:
    """Content words of ``text``: lowercased, stopwords dropped, a simple plural ``s``/``ies`` stripped."""
    out = set()
    for w in _WORD.findall(text.lower().replace("'s", "").replace("\u2019s", "")):
        if w in _STOPWORDS or len(w) < 2:
            continue
        if len(w) > 4 and w.endswith("ies"):
            w = w[:-3] + "y"
        elif len(w) > 4 and w.endswith(("sses", "xes", "ches", "shes")):
            w = w[:-2]
        elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
            w = w[:-1]
        out.add(w)
    return frozenset(out)


def is_question(text: str) -> bool:
    t = text.strip().lower()
    if t.endswith("?") or t.startswith(("tell me", "remind me")):
        return True
    m = _FIRST_WORD.match(t)
    return m is not None and m.group(1) in _QUESTION_WORDS


# Up to a thousand agents' prompts: at 128, agents with memories of their own taking turns in round robin each
# missed it, and a parse is ~20 us of a ~400 us turn (a kept entry: the prompt, which the agent's session holds
# anyway, and its blocks).
@lru_cache(maxsize=1024)
def parse_core_memory(system_prompt: str) -> Mapping[str, Block]:
    """Blocks rendered in ``<memory_blocks>`` of the system prompt, by label (cached per prompt string)."""
    section = _MEMORY_SECTION.search(system_prompt)
    blocks: dict[str, Block] = {}
    for m in _BLOCK.finditer(section.group(1) if section else system_prompt):
        value = m.group("value")
        meta = dict(_META.findall(m.group("meta") or ""))
        lines = tuple((ln.strip(), keywords(ln)) for ln in value.splitlines() if ln.strip())
        limit = meta.get("chars_limit")
        current, read_only = meta.get("chars_current"), meta.get("read_only", "").lower() == "true"
        blocks[m.group("label")] = Block(
            m.group("label"),
            value,
            int(current) if current else len(value),
            int(limit) if limit else None,
            read_only,
            lines,
        )
    return MappingProxyType(blocks)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else json.dumps(content, ensure_ascii=False)


def _user_text(message: Mapping[str, Any]) -> str | None:
    """The user's words, unwrapping Letta's JSON packaging; ``None`` for heartbeats and system alerts."""
    text = _text(message.get("content"))
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return text
        if isinstance(data, dict):
            if data.get("type") in ("heartbeat", "system_alert", "login"):
                return None
            words = data.get("message")
            if isinstance(words, str):
                return words
    return text


def _unwrap_status(content: str) -> tuple[str, bool]:
    """Letta packages tool returns as ``{"status": "OK"|"Failed", "message": ...}``; unwrap that if present."""
    if content.lstrip().startswith("{") and '"status"' in content:
        try:
            data = json.loads(content)
        except ValueError:
            return content, False
        if isinstance(data, dict) and "status" in data:
            return _text(data.get("message")), str(data["status"]).lower() in ("failed", "error")
    return content, False


def _results(content: str) -> list[tuple[str, str | None]]:
    """Search results as (text, role or None), best first; ``[]`` when there are none."""
    s = content.strip()
    if _NO_RESULTS.match(s):
        return []
    if s[0] in "[{":
        try:
            data = json.loads(s)
        except ValueError:
            return [(s, None)]
        if isinstance(data, dict):
            data = data.get("results", [data])
        out = []
        for item in data if isinstance(data, list) else [data]:
            if isinstance(item, dict):
                text = next((item[k] for k in _RESULT_TEXT_KEYS if isinstance(item.get(k), str)), "")
                if text:
                    out.append((text, item.get("role")))
            elif isinstance(item, str) and item.strip():
                out.append((item, None))
        return out
    return [(s, None)]


def _args(arguments: str) -> dict[str, Any]:
    try:
        data = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _write_content(arguments: str) -> str:
    args = _args(arguments)
    return next((str(args[k]) for k in _WRITE_CONTENT_KEYS if args.get(k)), "")
