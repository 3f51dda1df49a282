"""Tool rules enforced: which tools a step may offer, whether a call breaks a rule, whether a turn may end.

An agent's rules (Letta's JSON shapes, checked by runtime/tool_rules.py) constrain its calls within one
turn. :class:`RuleState` is those rules plus the calls this turn has run so far (their names, whether they
succeeded, their output), rebuilt from the turn's messages (:meth:`RuleState.from_messages`), so a turn
that re-runs a refused step, or an approved call resumed after a kernel restart, sees exactly the history
the store holds. Everything here is pure: no I/O, no clock.

What each rule means here (Letta's meaning, minus the cases its solver gets wrong, noted):
- ``run_first``: the turn's first call must be one of these tools (forced with ``tool_choice``). Rules
  naming tools the agent does not have are ignored (Letta offers them anyway).
- ``constrain_child_tools``: right after the tool, the next call must be one of ``children`` (forced).
- ``conditional``: right after the tool, its output picks the next tool from ``child_output_mapping``;
  no match gives ``default_child``, or, with ``require_output_mapping``, no tool at all (the model must
  answer in plain text), else any tool. Outputs match keys by value, not only by text: a tool returning
  ``True`` matches the key ``"true"`` or ``"True"``, ``1`` matches ``"1"`` and ``"1.0"``, and Letta's
  ``{"message": ...}`` packaging is unwrapped (Letta compares ``str(output)`` to the key, so ``True``
  never meets ``"true"``, and raises on an empty output).
- ``parent_last_tool``: each child may be called only right after one of its parents. Letta instead
  restricts the step after a parent to its children, and, with two parent rules for one child, allows it
  after neither; here the child is simply gated, by the union of its parents.
- ``max_count_per_step``: at most ``max_count_limit`` calls of the tool in one turn (Letta's "step").
- ``required_before_exit``: while one of these tools (that the agent has) has not run successfully this
  turn, the tools that end a turn (``send_message``, ``exit_loop`` tools) are withheld and a call is
  demanded; once the model tried to end the turn anyway (a refused exit call, or plain text, which gets a
  reminder), only the required tools are offered. A required tool that is itself an exit tool stays
  allowed (calling it satisfies the rule). Letta lets the turn end and reminds it afterwards.
- ``exit_loop``: a successful call ends the turn; later calls of the same step do not run (a reply through
  ``send_message`` ends it too, as without rules, and does not stop the calls after it).
- ``continue_loop``: the turn goes on after the tool, even when it is ``send_message``.
- ``requires_approval``: not a sequencing rule; :func:`needs_approval` is what runtime/approvals.py asks.

Several rules that constrain one step intersect (Letta's behaviour). Calls of one model step are checked in
order as if each earlier one had run; a call following a ``conditional`` tool in the same step is refused
(its branch is not known until that tool's output is). A refused call never runs: the model reads a tool
error starting with :data:`REFUSAL` that names the rule and what is allowed now.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from letta_nb.llm.base import ToolChoice
from letta_nb.runtime.base_tools import TERMINAL_TOOLS

__all__ = ["REFUSAL", "Offer", "Ran", "RuleState", "check_call", "needs_approval", "offered", "rule_rows"]

#: How a refused call's tool result starts (the executor's ``ErrorType: message`` shape).
REFUSAL = "ToolRuleError: "
_REQUIRED = "required_before_exit:"  # in a refusal or a reminder: the turn tried to end too early

@dataclass(frozen=True, slots=True)
class Ran:
    """A call this turn ran: its tool, whether it succeeded and the text the model read of its result."""

    name: str
    ok: bool = True
    output: str | None = None  # None: not known yet (a call earlier in the same step)


@dataclass(frozen=True, slots=True)
class Offer:
    """What one step may offer the model: tool names (in the agent's order) and OpenAI's ``tool_choice``
    (None: the model chooses; ``"required"``: some call; ``{"type": "function", ...}``: that call)."""

    tools: tuple[str, ...]
    tool_choice: ToolChoice = None


def needs_approval(rules: Iterable[Mapping[str, Any]], tool_name: str) -> bool:
    """Whether a ``requires_approval`` rule names ``tool_name``."""
    return any(r.get("type") == "requires_approval" and r.get("tool_name") == tool_name for r in rules)


@dataclass
class RuleState:
    """An agent's rules, the tools it has and the calls this turn has run (oldest first)."""

    rules: Sequence[Mapping[str, Any]]
    available: Collection[str]
    history: list[Ran] = field(default_factory=list)
    exit_tried: bool = False  # the turn tried to end before its required_before_exit tools ran

    def __post_init__(self) -> None:
        self._of: dict[str, list[Mapping[str, Any]]] = {}
        for rule in self.rules:
            self._of.setdefault(str(rule.get("type")), []).append(rule)

    @classmethod
    def from_messages(cls, rules: Sequence[Mapping[str, Any]], available: Collection[str],
                      messages: Sequence[Any]) -> RuleState:
        """The state of the turn ``messages`` end in (objects with ``role``, ``name``, ``status`` and
        ``content``, oldest first, like :class:`letta_nb.schemas.Message`; the agent's context window will
        do): the calls after the last user message (a :func:`reminder` is not one). Refused calls and
        calls of tools the agent lacks did not run and are not counted."""
        start = len(messages)
        while start and not _starts_turn(messages[start - 1]):
            start -= 1
        turn = messages[start:]
        history = [Ran(m.name, m.status != "error", m.content or "") for m in turn
                   if m.role == "tool" and m.name in available and not (m.content or "").startswith(REFUSAL)]
        tried = any(_REQUIRED in (m.content or "") and (m.content or "").startswith(
            REFUSAL if m.role == "tool" else '{"type": "heartbeat"') for m in turn if m.role in ("tool", "user"))
        return cls(rules, available, history, tried)

    @classmethod
    def of_turn(cls, rules: Sequence[Mapping[str, Any]], available: Collection[str], committed: Sequence[Any],
                pending: Sequence[Any] = ()) -> RuleState | None:
        """:meth:`from_messages` of the context window plus a step's uncommitted messages; None (nothing to
        enforce, nothing computed) when the agent has no rules. Only the current turn is read: the window is
        neither copied nor scanned (a step's cost must not grow with the conversation)."""
        if not rules:
            return None
        start = len(committed)
        if not any(map(_starts_turn, pending)):
            while start and not _starts_turn(committed[start - 1]):
                start -= 1
        return cls.from_messages(rules, available, [*committed[start:], *pending])

    def after(self, results: Iterable[tuple[str, bool, str]]) -> RuleState:
        """This state once the calls ``(tool, succeeded, output)`` have run."""
        ran = [Ran(name, ok, output) for name, ok, output in results if name in self.available]
        return RuleState(self.rules, self.available, [*self.history, *ran], self.exit_tried)

    # ---- the rules ------------------------------------------------------------------------------------
    def _named(self, kind: str, tool: str | None = None) -> list[Mapping[str, Any]]:
        return [r for r in self._of.get(kind, ()) if tool is None or r["tool_name"] == tool]

    def _first_tools(self) -> list[str]:
        return [r["tool_name"] for r in self._named("run_first") if r["tool_name"] in self.available]

    def exit_tools(self) -> set[str]:
        """Tools whose successful call ends the turn."""
        continuing = {r["tool_name"] for r in self._named("continue_loop")}
        return (set(TERMINAL_TOOLS) | {r["tool_name"] for r in self._named("exit_loop")}) - continuing

    def pending_required(self) -> list[str]:
        """``required_before_exit`` tools the agent has that have not yet run successfully this turn."""
        done = {r.name for r in self.history if r.ok}
        names = dict.fromkeys(r["tool_name"] for r in self._named("required_before_exit"))
        return [n for n in names if n in self.available and n not in done]

    def _next_after(self, last: Ran) -> tuple[list[str] | None, str]:
        """The tools allowed right after ``last`` by its child rules (None: no constraint) and why."""
        allowed: list[str] | None = None
        why = ""
        for rule in self._named("constrain_child_tools", last.name):
            children = list(rule["children"])
            allowed = children if allowed is None else [c for c in allowed if c in children]
            why = f"constrain_child_tools: after {last.name} the next call must be {_one_of(children)}"
        for rule in self._named("conditional", last.name):
            branch, why = _branch(rule, last)
            if branch is not None:
                allowed = branch if allowed is None else [c for c in allowed if c in branch]
        return allowed, why

    def refusal(self, tool_name: str) -> str | None:
        """Why calling ``tool_name`` now breaks a rule (the rule's type first), or None when it is allowed.
        Tools the agent does not have are the executor's to report (None here)."""
        if tool_name not in self.available:
            return None
        last = self.history[-1] if self.history else None
        first = self._first_tools()
        if last is None and first and tool_name not in first:
            return f"run_first: the first call of a turn must be {_one_of(first)}"
        if last is not None:
            allowed, why = self._next_after(last)
            if allowed is not None and tool_name not in allowed:
                return why
        parents = [r["tool_name"] for r in self._named("parent_last_tool") if tool_name in r["children"]]
        if parents and (last is None or last.name not in parents):
            return f"parent_last_tool: {tool_name} may only be called right after {_one_of(parents)}"
        for rule in self._named("max_count_per_step", tool_name):
            count = sum(r.name == tool_name for r in self.history)
            if count >= rule["max_count_limit"]:
                return (f"max_count_per_step: {tool_name} already ran {count} time(s) this turn "
                        f"(limit {rule['max_count_limit']})")
        pending = self.pending_required()
        if pending and tool_name in self.exit_tools() and tool_name not in pending:
            return f"{_REQUIRED} call {_all_of(pending)} before {tool_name} ends the turn"
        return None

    def offer(self) -> Offer:
        """The tools this step may offer and the ``tool_choice`` that forces a call where a rule demands one.
        Once the turn tried to end before its ``required_before_exit`` tools ran, only those are offered."""
        tools = tuple(name for name in self.available if self.refusal(name) is None)
        required = [name for name in self.pending_required() if name in tools]
        if self.exit_tried and required:
            tools = tuple(required)
        last = self.history[-1] if self.history else None
        demanded = ((last is None and bool(self._first_tools()))
                    or (last is not None and self._next_after(last)[0] is not None)
                    or bool(self.pending_required()))
        if not tools or not demanded:
            return Offer(tools)
        if len(tools) == 1:
            return Offer(tools, {"type": "function", "function": {"name": tools[0]}})
        return Offer(tools, "required")

    def screen(self, names: Sequence[str]) -> list[str | None]:
        """For the calls of one model step, in order: the refusal of each (None: it may run), checked as if
        each earlier allowed call had run."""
        sim = RuleState(self.rules, self.available, list(self.history), self.exit_tried)
        out: list[str | None] = []
        ended: str | None = None
        for name in names:
            last = sim.history[-1] if sim.history else None
            if ended is not None:
                why: str | None = f"exit_loop: {ended} ends the turn, so {name} was not run"
            elif last is not None and last.output is None and self._named("conditional", last.name):
                why = (f"conditional: {last.name} picks the next tool from its output; call {name} in a later "
                       f"step, after {last.name}'s result")
            else:
                why = sim.refusal(name)
            out.append(None if why is None else sim.message(name, why))
            if why is None and name in self.available:
                sim.history.append(Ran(name))
                if any(r["tool_name"] == name for r in self._named("exit_loop")):
                    ended = name
        return out

    def screen_calls(self, calls: Sequence[Any]) -> dict[str, str]:
        """:meth:`screen` for tool calls (objects with ``id`` and ``name``): call id -> tool error, refused
        calls only."""
        verdicts = self.screen([c.name for c in calls])
        return {c.id: why for c, why in zip(calls, verdicts, strict=True) if why is not None}

    def message(self, tool_name: str, why: str) -> str:
        """The tool error a refused call gets: the rule, and what may be called now."""
        # a refused exit while required tools wait: from now on only they are offered (see offer)
        after = dataclasses.replace(self, exit_tried=True) if why.startswith(_REQUIRED) else self
        allowed = after.offer().tools
        now = f"Allowed now: {', '.join(allowed)}." if allowed else "No tool is allowed now: answer in plain text."
        return f"{REFUSAL}{tool_name} was not run: {why}. {now}"

    def turn_ends(self, results: Sequence[tuple[str, bool]], default: bool) -> bool:
        """Whether the turn ends after a step whose calls ran (``(tool, succeeded)`` in order; none: the model
        only wrote text) and are in this state's history. ``default`` is the loop's own answer (a reply
        was sent, or no tool was called)."""
        if self.pending_required():
            return False  # not until they ran: a call is demanded next step (see reminder)
        if any(ok and name in self.exit_tools() for name, ok in results):
            return True
        if any(r["tool_name"] == name for name, _ in results for r in self._named("continue_loop")):
            return False
        return default

    def reminder(self) -> str:
        """The message a model gets when it tried to end the turn before its required tools ran: a Letta
        heartbeat (a user message that is not the user's words: it neither starts a turn nor is shown
        as one)."""
        reason = f"[Tool rules] {_REQUIRED} call {_all_of(self.pending_required())} before ending the turn."
        return json.dumps({"type": "heartbeat", "reason": reason})


def offered(schemas: list[dict[str, Any]], rules: RuleState | None) -> tuple[list[dict[str, Any]], ToolChoice | None]:
    """The tool schemas a step sends and its ``tool_choice`` (None: the model chooses): all of them without
    rules. One place for the agent loop and ``messages.preview``, so a preview is the request a step makes."""
    if rules is None:
        return schemas, None
    offer = rules.offer()
    return [s for s in schemas if s["function"]["name"] in offer.tools], offer.tool_choice


def check_call(state: RuleState, tool_name: str) -> str | None:
    """The tool error for calling ``tool_name`` now (a call approved later included), or None if it may run.

    Build ``state`` with ``RuleState.from_messages(agent.tool_rules, tool_names, turn_messages)``."""
    why = state.refusal(tool_name)
    return None if why is None else state.message(tool_name, why)


def rule_rows(rules: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per rule (index, type, tool and what it constrains), for a DataFrame."""
    rows = []
    for i, r in enumerate(rules):
        detail = {k: v for k, v in r.items() if k not in ("type", "tool_name") and v not in (None, False)}
        rows.append({"index": i, "type": r.get("type"), "tool_name": r.get("tool_name"),
                     "detail": json.dumps(detail, ensure_ascii=False) if detail else ""})
    return rows


# ---- helpers ------------------------------------------------------------------------------------------


def _starts_turn(m: Any) -> bool:
    """A user message that is the user's words (not a heartbeat, system alert or reminder)."""
    if m.role != "user":
        return False
    text = (m.content or "").lstrip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return True
        return not (isinstance(data, dict) and data.get("type") in ("heartbeat", "system_alert", "login"))
    return True


def _one_of(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else "one of " + ", ".join(names)


def _all_of(names: Sequence[str]) -> str:
    return " and ".join(names)


def _branch(rule: Mapping[str, Any], last: Ran) -> tuple[list[str] | None, str]:
    """A conditional rule's allowed tools after ``last`` (None: any) and why."""
    mapping: Mapping[str, str] = rule["child_output_mapping"]
    output = last.output or ""
    shown = output if len(output) <= 80 else output[:77] + "..."
    for key, child in mapping.items():
        if _matches(output, key):
            return [child], f"conditional: {last.name} returned {shown!r}, so the next call must be {child}"
    if rule.get("default_child"):
        child = rule["default_child"]
        return [child], (f"conditional: {last.name} returned {shown!r}, which matches none of "
                         f"{sorted(mapping)}, so the next call must be its default_child {child}")
    if rule.get("require_output_mapping"):
        return [], (f"conditional: {last.name} returned {shown!r}, which matches none of {sorted(mapping)} "
                    "(require_output_mapping), so no tool may follow it")
    return None, ""


def _matches(output: str, key: str) -> bool:
    """Whether a tool's output (the text the model read) matches a mapping key, by value where both read as
    one: booleans case-insensitively, numbers numerically, JSON strings and Letta's ``{"message": x}``
    unwrapped."""
    for value in _readings(output.strip()):
        if value == key.strip():
            return True
        low, k = value.lower(), key.strip().lower()
        if low in ("true", "false") and low == k:
            return True
        a, b = _number(value), _number(key)
        if a is not None and b is not None and a == b:
            return True
    return False


def _readings(output: str) -> list[str]:
    """The output as written, plus what it holds when it is a JSON string or ``{"message": ...}``."""
    readings = [output]
    if output[:1] in ('"', "{"):
        try:
            value = json.loads(output)
        except ValueError:
            return readings
        if isinstance(value, dict) and "message" in value:
            value = value["message"]
        if isinstance(value, str):
            readings.append(value.strip())
        elif isinstance(value, (bool, int, float)):
            readings.append(json.dumps(value))
    return readings


def _number(text: str) -> float | None:
    if text.lower() in ("true", "false"):
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
