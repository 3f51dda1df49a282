"""The offline model's rule for questions about the notebook's data (issue 15's kernel tools).

When an agent has ``describe_variable`` (``%letta tools kernel on``) and the user asks how many rows a
variable has, or a column's mean, min, max or spread, the offline model looks instead of guessing: it calls
``list_variables`` (unless the question names a variable in backticks) to find a variable the question names,
then ``describe_variable``, and answers with the numbers that tool returned, unrounded, so they equal pandas'
own. Pure and deterministic like the other rules (llm/_offline_rules.py): plans only, from the messages.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from letta_nb.llm._offline_rules import Plan, _Ctx

__all__ = ["KERNEL_READ_TOOLS", "after_kernel_tool", "on_data_question"]

KERNEL_READ_TOOLS = frozenset({"list_variables", "describe_variable"})
_DATA_WORDS = re.compile(r"\b(rows?|mean|average|avg|min(?:imum)?|max(?:imum)?|std|columns?|shape|dtypes?)\b", re.I)
_BACKTICKED = re.compile(r"`([A-Za-z_]\w*)`")
_STATS = (("mean", re.compile(r"\b(mean|average|avg)\b", re.I)), ("min", re.compile(r"\bmin(imum)?\b", re.I)),
          ("max", re.compile(r"\bmax(imum)?\b", re.I)), ("std", re.compile(r"\bstd\b|standard deviation", re.I)))


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_]\w*", text))


def on_data_question(ctx: _Ctx, text: str) -> Plan | None:
    """A question about a variable's data: look it up (``None``: not such a question, or no kernel tools)."""
    if not ctx.has("describe_variable") or not _DATA_WORDS.search(text):
        return None
    if named := _BACKTICKED.search(text):
        return _describe(ctx, f"The user asked about `{named.group(1)}`; describing it.", named.group(1))
    if ctx.has("list_variables"):
        return ctx.call("The user asked about data in the notebook; listing its variables.", "list_variables")
    return None


def after_kernel_tool(ctx: _Ctx, name: str, content: str, failed: bool) -> Plan | None:
    """The next step after ``list_variables`` or ``describe_variable`` (``None``: not one of them)."""
    if name not in KERNEL_READ_TOOLS:
        return None
    if failed:
        return ctx.reply(f"{name} failed; reporting it.", f"I couldn't read the notebook: {content[:300]}")
    try:
        data: Any = json.loads(content)
    except ValueError:
        return ctx.reply(f"{name} returned text I can't read; quoting it.", f"The notebook says: {content[:500]}")
    asked = _words(ctx.user_text)
    if name == "list_variables":
        variables = [v for v in data.get("variables", []) if isinstance(v, dict)]
        named = [v for v in variables if v.get("name") in asked]
        frames = [v for v in variables if v.get("type") in ("DataFrame", "Series", "ndarray")]
        if not named and not frames:
            return ctx.reply("No variable in the notebook matches the question.",
                             "I see no variable in the notebook that the question names: "
                             + (", ".join(str(v.get("name")) for v in variables) or "there are none") + ".")
        chosen = str((named or frames)[0]["name"])
        return _describe(ctx, f"The question is about {chosen}; describing it.", chosen)
    return ctx.reply("describe_variable returned the numbers; answering with them.", _answer(data, ctx.user_text))


def _describe(ctx: _Ctx, reasoning: str, variable: str) -> Plan:
    """A describe_variable call (``ctx.call`` takes the tool's name as ``name``, which is also this tool's
    argument)."""
    from letta_nb.llm._offline_rules import Plan  # that module imports this one

    args: dict[str, Any] = {"name": variable}
    if ctx.heartbeat_params.get("describe_variable"):
        args["request_heartbeat"] = True
    return Plan(reasoning, (("describe_variable", json.dumps(args, ensure_ascii=False)),))


def _answer(data: dict[str, Any], question: str) -> str:
    var = data.get("name", "the variable")
    shape = data.get("shape") or []
    rows = data.get("rows", shape[0] if shape else None)
    parts = []
    if rows is not None:
        cols = f" and {shape[1]} columns" if len(shape) > 1 else ""
        parts.append(f"{var} has {rows} rows{cols}")
    described: dict[str, dict[str, Any]] = data.get("describe") or {}
    if "stats" in data:  # an array: its stats are the whole array's
        described = {var: data["stats"]}
    asked = _words(question)
    columns = [c for c in described if c in asked] or list(described)[:5]
    stats = [s for s, pattern in _STATS if pattern.search(question)] or ["mean"]
    for column in columns:
        values = ", ".join(f"{s} {described[column][s]!r}" for s in stats if described[column].get(s) is not None)
        if values:
            parts.append(f"{column}: {values}" if column != var else values)
    if not parts:
        return f"describe_variable says: {json.dumps(data)[:500]}"
    return "From describe_variable: " + "; ".join(parts) + "."
