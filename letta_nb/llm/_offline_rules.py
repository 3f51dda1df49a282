"""The decision rules of the offline model: from a chat history to one :class:`Plan`.

Everything here is pure and synchronous: no I/O, no clock, no randomness, so the same messages and tools
always give the same plan. :mod:`letta_nb.llm.offline` turns a plan into a stream of events. The rules
look only at the last message (a user message or a batch of tool results) plus the core memory parsed
from the system prompt (reading the text is :mod:`letta_nb.llm._offline_reading`'s job). Invariants: a
plan only names tools present in ``tools`` (``/call`` lines excepted: they are a test hook and are emitted
verbatim), and a tool called
:data:`MAX_SAME_TOOL_CALLS` times since the last user message is not called again.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from letta_nb.llm._offline_kernel import after_kernel_tool, on_data_question
from letta_nb.llm._offline_reading import (
    _args,
    _results,
    _text,
    _unwrap_status,
    _user_text,
    _write_content,
    is_question,
    keywords,
    parse_core_memory,
)
from letta_nb.llm._offline_summary import answer_from_summary, is_summary_request, summarise

__all__ = ["MAX_SAME_TOOL_CALLS", "Plan", "decide"]

MAX_SAME_TOOL_CALLS = 3
CORE_WRITE_TOOLS = frozenset(
    {"core_memory_append", "core_memory_replace", "memory_insert", "memory_replace", "memory_rethink"}
)
WRITE_TOOLS = CORE_WRITE_TOOLS | {"archival_memory_insert"}
# Where each write tool keeps the text it saves, in the order we look for it.


_GREETING = re.compile(r"^(?:(?:hi|hello|hey|greetings|good (?:morning|afternoon|evening))\b[\s,!.:;-]*)+", re.I)
_REMEMBER = re.compile(r"^(?:please\s+)?(?:(?:remember|note)\b(?:\s+that\b)?|fact\s*:)[\s:,-]*(?P<x>.+)$", re.I | re.S)
_NAME = re.compile(r"\b(?:my name is|call me)\s+(?P<name>[^.,!?;\n]+)", re.I)
_FACT = re.compile(
    r"^(?:i\s+(?:am|like|love|prefer|work|live|study|use|have|enjoy|hate|dislike|own|speak|need|want)"
    r"|i['\u2019](?:m|ve)|my\s+[\w'\u2019 -]{1,40}?\s+(?:is|are|was|were))\b",
    re.I,
)
_ERROR_PREFIX = re.compile(r"\s*(?:[\w.]*(?:error|exception)\b|failed\b|edit failed\b)", re.I)


@dataclass(frozen=True, slots=True)
class Plan:
    """What the model does this turn: a reasoning sentence plus tool calls, or a plain final ``answer``."""

    reasoning: str
    calls: tuple[tuple[str, str], ...] = ()  # (tool name, arguments JSON text)
    answer: str | None = None
    explicit: bool = False  # a /call line: emitted verbatim, whatever tool_choice says (a test hook)


def _quote(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n|\n(?=\s*[-*#|])")


def _excerpt(texts: list[str], wanted: frozenset[str], limit: int) -> str:
    """The passage sentence sharing most words with the question (earlier results win ties), quoted.

    Uploaded files are cut into ~1500-character passages; the fact asked about can sit anywhere in one,
    so a long passage is quoted by its best sentence rather than by its first ``limit`` characters.
    """
    best, best_score = texts[0], -1
    for text in texts:
        parts = [text] if len(" ".join(text.split())) <= limit else [p for p in _SENTENCE_END.split(text) if p.strip()]
        for part in parts:
            score = len(wanted & keywords(part))
            if score > best_score:
                best, best_score = part, score
    return _quote(best, limit)


# json.dumps(args, ensure_ascii=False), cheaper: the encoder is built once, and arguments that are all
# strings (send_message's, most plans') are joined around the C string encoder that encoder would use
# (json.dumps builds an encoder, then a C encoder, per call: ~3 us of a turn's ~20 us of decisions).
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode
_STRING = json.encoder.encode_basestring


def _dumps(**args: Any) -> str:
    if all(type(v) is str for v in args.values()):
        return "{" + ", ".join(f"{_STRING(k)}: {_STRING(v)}" for k, v in args.items()) + "}"
    return _ENCODE(args)


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).rstrip("?.! ")


# The runtime sends the same tool list object step after step (runtime/session.py keeps it): its reading is
# kept by identity, holding the list so its id cannot be reused. Up to _TOOLS_KEPT agents' lists: with 512, a
# thousand agents taking turns in round robin cleared it before any list came back, and every step read its
# list again (issue 19). A kept list is a few small dicts per tool (their parameter schemas are the specs').
_TOOLS_KEPT = 4096
_TOOLS_SEEN: dict[int, tuple[list[dict[str, Any]], int, dict[str, bool]]] = {}


def _heartbeat_params(tools: list[dict[str, Any]]) -> dict[str, bool]:
    """Tool name -> whether its schema takes ``request_heartbeat`` (Letta-style tools)."""
    seen = _TOOLS_SEEN.get(id(tools))
    if seen is not None and seen[0] is tools and seen[1] == len(tools):  # the same list, not grown in place
        return seen[2]
    params: dict[str, bool] = {}
    for t in tools:
        fn = t.get("function", t)
        props = (fn.get("parameters") or {}).get("properties") or {}
        params[fn.get("name", "")] = "request_heartbeat" in props
    if len(_TOOLS_SEEN) >= _TOOLS_KEPT:
        _TOOLS_SEEN.clear()
    _TOOLS_SEEN[id(tools)] = (tools, len(tools), params)
    return params


class _Ctx:
    """Per-call view of the conversation that the rules share."""

    def __init__(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]):
        self.messages = messages
        self.heartbeat_params = _heartbeat_params(tools)
        system = messages[0] if messages and messages[0].get("role") == "system" else None
        self.blocks = parse_core_memory(_text(system["content"])) if system else MappingProxyType({})
        self.user_index = -1
        self.user_text = ""
        for i in range(len(messages) - 1, -1, -1):
            if messages[i].get("role") == "user" and (text := _user_text(messages[i])) is not None:
                self.user_index, self.user_text = i, text
                break

    def has(self, name: str) -> bool:
        return name in self.heartbeat_params

    def reply(self, reasoning: str, text: str) -> Plan:
        if self.has("send_message"):
            return Plan(reasoning, (("send_message", _dumps(message=text)),))
        return Plan(reasoning, answer=text)

    def call(self, reasoning: str, name: str, **args: Any) -> Plan:
        if self.heartbeat_params.get(name):  # Letta-style schemas: ask for another step to report back
            args["request_heartbeat"] = True
        return Plan(reasoning, ((name, _dumps(**args)),))

    def turn_counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for m in self.messages[self.user_index + 1 :]:
            for c in m.get("tool_calls") or ():
                counts[c["function"]["name"]] += 1
        return counts

    def dont_know(self, query: str) -> Plan:
        return self.reply(
            "Nothing in my memory matches; saying so plainly.",
            f"I don't know that yet. I'm the offline model, and nothing in my memory matches \"{_quote(query, 200)}\".",
        )


def decide(messages: list[dict[str, Any]], tools: list[dict[str, Any]], tool_choice: Any = None) -> Plan:
    """The plan for the next assistant turn, with the loop guard applied and ``tool_choice`` honoured."""
    if is_summary_request(messages):  # the runtime folding evicted messages into its summary (compaction)
        return Plan("Summarising the messages leaving the context window.", answer=summarise(messages))
    ctx = _Ctx(messages, tools)
    return _honour(ctx, _decide(ctx, messages), tool_choice, tools)


_PLACEHOLDERS: dict[str, Any] = {"integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}


def _honour(ctx: _Ctx, plan: Plan, tool_choice: Any, tools: list[dict[str, Any]]) -> Plan:
    """The plan under OpenAI's ``tool_choice``: ``"required"`` turns an answer into a call of the first tool
    offered, a named function into a call of that tool, ``"none"`` a call into an answer. Arguments of a
    call the plan did not choose are made from the tool's schema (strings: the user's words)."""
    if plan.explicit or tool_choice in (None, "auto"):
        return plan
    if tool_choice == "none":
        if not plan.calls:
            return plan
        said = [_args(a).get("message") for n, a in plan.calls if n == "send_message"]
        return Plan(plan.reasoning, answer=str(said[0]) if said and said[0] else plan.reasoning)
    if tool_choice == "required" and plan.calls:
        return plan
    schemas = {t.get("function", t).get("name"): t.get("function", t) for t in tools}
    forced = tool_choice.get("function") or {} if isinstance(tool_choice, dict) else {}
    name = forced.get("name") if forced else next(iter(schemas), None)
    if not isinstance(name, str) or name not in schemas or (plan.calls and all(n == name for n, _ in plan.calls)):
        return plan
    text = plan.answer or plan.reasoning
    args: dict[str, Any] = {}
    props = (schemas[name].get("parameters") or {}).get("properties") or {}
    for key in (schemas[name].get("parameters") or {}).get("required") or ():
        prop = props.get(key) or {}
        args[key] = (prop["enum"][0] if prop.get("enum") else text if key == "message"
                     else _PLACEHOLDERS.get(str(prop.get("type")), ctx.user_text))
    return ctx.call(f"A tool rule requires calling {name} now.", name, **args)


def _decide(ctx: _Ctx, messages: list[dict[str, Any]]) -> Plan:
    end = len(messages)
    while end and messages[end - 1].get("role") == "user" and _user_text(messages[end - 1]) is None:
        end -= 1  # heartbeats hand control back: decide as if on the message before them
    last = messages[end - 1] if end else {}
    role = last.get("role")
    if role == "tool":
        plan = _after_tools(ctx, end)
    elif role == "assistant":
        plan = Plan("The last message is my own; waiting for the user.")
    else:
        plan = _on_user(ctx)
    if all(name == "send_message" for name, _ in plan.calls):
        return plan  # the loop guard spares send_message: no need to count this turn's calls
    counts = ctx.turn_counts()
    for name, _ in plan.calls:
        if name != "send_message" and counts[name] >= MAX_SAME_TOOL_CALLS:
            return ctx.reply(
                f"I already called {name} {counts[name]} times for this message; stopping.",
                f"I stopped calling {name}: it already ran {counts[name]} times for this message "
                "without settling the answer. I'm the offline model, so my tool use is simple.",
            )
    return plan


# -- user messages -----------------------------------------------------------------------------------------


def _on_user(ctx: _Ctx) -> Plan:
    raw = ctx.user_text
    explicit = []
    for line in raw.splitlines():
        line = line.strip()
        if line.startswith("/call ") and line[6:].strip():
            name, *args = line[6:].split(None, 1)
            explicit.append((name, args[0].strip() if args else "{}"))
    if explicit:
        return Plan("Explicit /call request: calling " + ", ".join(n for n, _ in explicit) + ".", tuple(explicit),
                    explicit=True)

    text = _GREETING.sub("", raw.strip()).strip() or raw.strip()
    if m := _REMEMBER.match(text):
        fact = m.group("x").strip().rstrip(". ")
        if fact:
            return _save(ctx, fact, "The user asked me to remember something", prefer_core=False)
    if is_question(text):
        return on_data_question(ctx, text) or _on_question(ctx, text)  # the kernel's data: llm/_offline_kernel.py
    if m := _NAME.search(text):
        return _save(ctx, "Name: " + m.group("name").strip(), "The user told me their name", prefer_core=True)
    if _FACT.match(text):
        return _save(ctx, "User: " + " ".join(text.split()).rstrip(". "), "The user stated a fact", prefer_core=True)
    # First contact = no earlier user message (stops at the first one found, and no slice of the window is
    # copied: O(1) in long chats).
    earlier = itertools.islice(ctx.messages, max(ctx.user_index, 0))
    if not any(m.get("role") == "user" and _user_text(m) is not None for m in earlier):
        return ctx.reply(
            "First message of the conversation; introducing myself.",
            "Hello! I'm letta_nb's offline model: deterministic and needing no API key. "
            'Tell me facts ("my name is ...", "remember that ...") and I\'ll store them; '
            "ask me questions and I'll look them up in my memory.",
        )
    return ctx.reply(
        "The user said something that is neither a fact nor a question; acknowledging it.",
        f'Noted: "{_quote(text, 200)}". I\'m the offline model, so I only store facts you state '
        "and look them up when you ask.",
    )


def _save(ctx: _Ctx, content: str, why: str, *, prefer_core: bool) -> Plan:
    """Core memory (the ``human`` block) for facts about the user when they fit, archival memory otherwise."""
    human = ctx.blocks.get("human")
    fits = (
        human is not None
        and not human.read_only
        and (human.chars_limit is None or human.chars_current + len(content) + 1 <= human.chars_limit)
    )
    core_tool = next((t for t in ("core_memory_append", "memory_insert") if ctx.has(t)), None)
    archival = ctx.has("archival_memory_insert")
    if core_tool and fits and (prefer_core or not archival):
        key = "content" if core_tool == "core_memory_append" else "new_str"
        return ctx.call(f"{why}; saving it to core memory.", core_tool, label="human", **{key: content})
    if archival:
        if not prefer_core:
            reason = ""
        elif human is None:
            reason = ", and I have no human block"
        elif human.read_only:
            reason = ", but my human block is read-only"
        elif not fits:
            reason = ", but core memory is full"
        else:
            reason = ", but I have no core memory tool"
        return ctx.call(f"{why}{reason}; saving it to archival memory.", "archival_memory_insert", content=content)
    return ctx.reply(
        f"{why}, but I have no memory tool to save it with.",
        f'I can\'t save "{_quote(content, 200)}": none of my memory tools are available.',
    )


def _on_question(ctx: _Ctx, text: str) -> Plan:
    wanted = keywords(text)
    best, best_score = None, 0
    for label, block in ctx.blocks.items():
        if label == "persona":
            continue
        for line, kws in block.lines:
            score = len(wanted & kws)
            if score > best_score:
                best, best_score = line, score
    # Answer from core memory only when a line covers at least half of what was asked; a single shared
    # word ("batching") is not an answer to "what did the second paper say about batching?".
    if best is not None and 2 * best_score >= len(wanted):
        return ctx.reply(
            "The user asked a question; the answer is in my core memory.",
            f'From my core memory: "{_quote(best, 300)}".',
        )
    system = ctx.messages[0] if ctx.messages and ctx.messages[0].get("role") == "system" else {}
    if (fact := answer_from_summary(_text(system.get("content")), text)) is not None:
        return ctx.reply("The user asked a question; the summary of our earlier conversation answers it.",
                         f'From the summary of our earlier conversation: "{_quote(fact, 300)}".')
    query = text.strip().rstrip("?").strip()
    if ctx.has("archival_memory_search"):
        return ctx.call(
            "The user asked a question my core memory doesn't answer; searching archival memory.",
            "archival_memory_search",
            query=query,
        )
    if ctx.has("conversation_search"):
        return ctx.call(
            "The user asked a question my core memory doesn't answer; searching our conversation.",
            "conversation_search",
            query=query,
        )
    return ctx.dont_know(query)


# -- tool results --------------------------------------------------------------------------------------------


def _failed(content: str, *, write: bool) -> bool:
    """Error results: "Error: ...", the executor's "SomeError: ..." shape, or (for writes) any mention of a limit."""
    return bool(_ERROR_PREFIX.match(content)) or (write and "limit" in content.lower())


def _after_tools(ctx: _Ctx, end: int) -> Plan:
    start = end
    while start and ctx.messages[start - 1].get("role") == "tool":
        start -= 1
    calls: dict[str | None, dict[str, Any]] = {}
    if start and ctx.messages[start - 1].get("role") == "assistant":
        calls = {c.get("id"): c["function"] for c in ctx.messages[start - 1].get("tool_calls") or ()}
    batch = []
    for m in ctx.messages[start:end]:
        fn = calls.get(m.get("tool_call_id"), {})
        content, status_failed = _unwrap_status(_text(m.get("content")))
        batch.append((fn.get("name") or m.get("name") or "unknown", fn.get("arguments") or "", content, status_failed))
    if len(batch) == 1:
        return _after_tool(ctx, *batch[0])
    parts = []
    for name, args, content, status_failed in batch:
        if status_failed or _failed(content, write=name in WRITE_TOOLS):
            parts.append(f"{name} failed: {_quote(content, 200)}")
        elif name in WRITE_TOOLS:
            parts.append(f'{name} saved "{_quote(_write_content(args), 200)}"')
        else:
            parts.append(f"{name} returned: {_quote(content, 200)}")
    return ctx.reply(f"{len(batch)} tools returned; summarising their results.", "Done. " + "; ".join(parts) + ".")


def _after_tool(ctx: _Ctx, name: str, arguments: str, content: str, status_failed: bool) -> Plan:
    if name == "send_message":
        return Plan("I already sent my reply; nothing more to do this turn.")
    failed = status_failed or _failed(content, write=name in WRITE_TOOLS)
    if (kernel := after_kernel_tool(ctx, name, content, failed)) is not None:
        return kernel
    if name in WRITE_TOOLS:
        saved = _write_content(arguments)
        if failed:
            if name in CORE_WRITE_TOOLS and saved and ctx.has("archival_memory_insert"):
                return ctx.call(f"{name} failed; retrying in archival memory.", "archival_memory_insert", content=saved)
            return ctx.reply(
                f"{name} failed; explaining the error.",
                f'I couldn\'t save "{_quote(saved, 200)}": {_quote(content, 300)}',
            )
        where = (
            "my archival memory"
            if name == "archival_memory_insert"
            else (f"my core memory ({_args(arguments).get('label', 'core')})")
        )
        return ctx.reply(
            "The memory write succeeded; confirming to the user.",
            f'Got it - I saved "{_quote(saved, 300)}" to {where}.',
        )
    query = str(_args(arguments).get("query") or ctx.user_text).strip()
    if name == "archival_memory_search":
        results = [] if failed else _results(content)
        # The hash embedder always returns *something*; only a passage sharing a word with the query counts.
        wanted = keywords(query)
        results = [r for r in results if not wanted or wanted & keywords(r[0])]
        if results:
            return ctx.reply(
                "Archival memory has a match; quoting the top result.",
                f'From my archival memory: "{_excerpt([r[0] for r in results], wanted, 300)}"',
            )
        if ctx.has("conversation_search"):
            return ctx.call(
                "Archival memory has nothing; searching our conversation.", "conversation_search", query=query
            )
        return ctx.dont_know(query)
    if name == "conversation_search":
        wanted, skip = keywords(query), {_norm(query), _norm(ctx.user_text)}
        best, best_score = None, -1
        for text, role in [] if failed else _results(content):
            said = _user_text({"content": text}) or ""
            if not said or (role not in (None, "user")) or _norm(said) in skip or is_question(said):
                continue
            score = len(wanted & keywords(said))
            if score > best_score and (score or not wanted):
                best, best_score = said, score
        if best is None:
            return ctx.dont_know(query)
        return ctx.reply("Our conversation has a match; quoting it.", f'You told me earlier: "{_quote(best, 300)}"')
    if failed:
        return ctx.reply(f"{name} failed; reporting it.", f"The tool {name} failed: {_quote(content, 500)}")
    return ctx.reply(f"{name} returned; reporting its result.", f"The tool {name} returned: {_quote(content, 500)}")
