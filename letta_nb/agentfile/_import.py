"""Importing an Agent File: check it, map every part to letta_nb's, then write it all in one transaction.

Order matters for "nothing half-imported": the file is read and checked (:mod:`._schema`), then every agent,
block, tool, rule and message is mapped and every name and spec resolved, and only then does
:meth:`Store.insert_imported` write the new tools, agents and messages in one transaction. A failure at any
point before leaves the store as it was; a failure inside rolls the transaction back.

Choices (documented in the README):
- A model or embedding letta_nb cannot run is an error naming ``model=`` / ``embedding=``, the override
  applied to every agent of the file. A spec naming the file's own endpoint (``?base_url=``) is not signed as
  the user's (runtime/trust.py): no API key goes there until ``agents.update(model=...)`` adopts it.
- An agent whose name is taken is an error; ``name=`` renames the file's first (main) agent and
  ``suffix=`` is appended to every agent's name.
- A tool whose name is already stored is reused when it is the same tool; otherwise an error, unless
  ``existing_tools="keep"`` (the agents use the stored tool). A stub never replaces a stored tool.
- Letta's agent types map to letta_nb's two (``memgpt_agent``, ``letta_v1_agent``); what letta_nb does not
  keep as such (the original type, description, group, the configs an override replaced) is kept under the
  agent's metadata key ``letta_agent_file``, so an export gives Letta back what it gave.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from letta_nb._client_args import agent_name, block_limit, metadata_arg, new_block_label, positive_int
from letta_nb._text import clean_text
from letta_nb.agentfile._messages import import_messages
from letta_nb.agentfile._models import embedding_spec, model_spec
from letta_nb.agentfile._report import ImportReport
from letta_nb.agentfile._schema import META_KEY, AgentFile, AgentFileError, read_agent_file
from letta_nb.agentfile._tools import ToolPlan, plan_tool, same_tool
from letta_nb.errors import AlreadyExistsError, LettaNBError
from letta_nb.llm.registry import redact_spec
from letta_nb.runtime import trust
from letta_nb.runtime.memory import DEFAULT_SYSTEM
from letta_nb.runtime.tool_rules import normalize
from letta_nb.schemas import AgentState, Block, Message
from letta_nb.store.ids import new_id, utcnow

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["META_KEY", "import_agent_file", "letta_nb_type"]

_UNSUPPORTED = {
    "files": "letta_nb attaches no file sources (upload files to archival memory: client.agents.files.upload)",
    "sources": "letta_nb attaches no file sources (upload files to archival memory: client.agents.files.upload)",
    "mcp_servers": "letta_nb connects to no MCP servers (their tools are stubs)",
    "skills": "letta_nb has no skills",
}
_V1_TYPES = ("letta_v1_agent", "react_agent", "sleeptime_agent", "workflow_agent", "voice_convo_agent",
             "voice_sleeptime_agent", "split_thread_agent")


def letta_nb_type(letta_type: str | None) -> str:
    """letta_nb's agent type for Letta's: MemGPT-style agents reply through send_message, the rest in content."""
    return "letta_v1_agent" if letta_type in _V1_TYPES else "memgpt_agent"


async def import_agent_file(rt: Runtime, source: Any, *, model: str | None = None, embedding: str | None = None,
                            name: str | None = None, suffix: str = "", existing_tools: str = "error",
                            max_steps: int = 10) -> ImportReport:
    if existing_tools not in ("error", "keep"):
        raise AgentFileError(f"existing_tools must be 'error' or 'keep', got {existing_tools!r}.")
    if not isinstance(suffix, str):
        raise AgentFileError(f"suffix must be a string, got {type(suffix).__name__}.")
    positive_int(max_steps, "max_steps", hi=100)
    for value, argument in ((model, "model"), (embedding, "embedding")):
        if value is not None and not isinstance(value, str):
            raise AgentFileError(f"{argument} must be a letta_nb spec string or None, got {type(value).__name__}.")
    if model is not None:
        rt.llm(model)  # the user's own: checked as they would be by agents.create
    if embedding is not None:
        rt.embedder(embedding)
    af = read_agent_file(source)
    shown = (os.fspath(source) if isinstance(source, str | os.PathLike) else "a dict" if isinstance(source, Mapping)
             else f"{len(source):,} bytes")
    report = ImportReport(source=str(shown), double_encoded=af.double_encoded)
    tools = await _plan_tools(rt, af, report, existing_tools)
    taken = set(await rt.store.agent_names())
    states: list[AgentState] = []
    messages: list[Message] = []
    file_ids: dict[str, AgentState] = {}
    for i, agent in enumerate(af.agents):
        final = _final_name(agent["name"], i, name, suffix, taken | {s.name for s in states})
        state, msgs = _agent(rt, af, agent, i, final, tools, report, model, embedding, max_steps)
        states.append(state)
        messages += msgs
        file_ids[agent["id"]] = state
    _groups(af, file_ids, report)
    for kind, why in _UNSUPPORTED.items():
        entities = af.unused(kind)
        if entities:
            labels = [str(e.get("name") or e.get("file_name") or e.get("server_name") or e.get("id") or "?")
                      if isinstance(e, dict) else str(e) for e in entities]
            report.add(kind, f"{len(entities)} {kind}", "unsupported", "", f"{why}: {', '.join(labels)[:300]}")
    new_tools = [p.record for p in tools.values() if p.kind in ("custom", "shim", "stub") and p.record is not None
                 and p.note != "reused"]
    await rt.store.insert_imported(states, messages, new_tools)
    rt.agent_cache.clear()  # sessions resolve tools by name: a new tool row must be seen
    report.agents = [await rt.store.load_agent(s.id) for s in states]
    return report


async def _plan_tools(rt: Runtime, af: AgentFile, report: ImportReport, existing_tools: str) -> dict[str, ToolPlan]:
    stored = {t.name: t for t in await rt.store.tool_rows()}
    plans: dict[str, ToolPlan] = {}
    by_name: dict[str, ToolPlan] = {}
    for i, tool in enumerate(af.doc.get("tools") or []):
        plan = plan_tool(tool, f"tools[{i}]")
        if plan.name in by_name:  # the same tool listed twice (by two agents of one export)
            plans[tool["id"]] = by_name[plan.name]
            continue
        old = stored.get(plan.name)
        if plan.record is not None and old is not None:
            if same_tool(old, plan.record):
                plan = ToolPlan(plan.name, plan.kind, plan.record, "reused")
                report.add("tool", plan.name, "reused", "", "the same tool is already stored")
            elif plan.kind == "stub" or existing_tools == "keep":
                plan = ToolPlan(plan.name, "kept", None, "reused")
                report.add("tool", plan.name, "kept", "", "a tool of this name is already stored; the agents use it")
            else:
                raise AgentFileError(
                    f"tools[{i}] {plan.name!r}: a different tool of that name is already stored. Pass "
                    "existing_tools='keep' to give the imported agents the stored one, or rename or delete it "
                    "first.")
        else:
            action = {"base": "imported", "custom": "sandboxed", "shim": "mapped", "stub": "stub"}[plan.kind]
            detail = {"base": "letta_nb's base tool of the same name"}.get(plan.kind, plan.note)
            report.add("tool", plan.name, action, "", detail)
        plans[tool["id"]] = by_name[plan.name] = plan
    return plans


def _final_name(file_name: str, index: int, name: str | None, suffix: str, taken: set[str]) -> str:
    base = name if (name is not None and index == 0) else file_name
    argument = "name" if name is not None and index == 0 else f"agents[{index}].name"
    final = agent_name(clean_text(base) + suffix, argument)
    if final in taken:
        raise AlreadyExistsError(
            f"An agent named {final!r} already exists; the Agent File's agents[{index}] has that name. Pass name='...' "
            "(renames the file's main agent) or suffix='-2' (appended to every imported agent's name).")
    return final


def _spec(rt: Runtime, agent: dict[str, Any], where: str, kind: str, override: str | None) -> tuple[str, str]:
    """(letta_nb spec, the file's own name for it); an error naming the override when it cannot be used."""
    spec, shown = (model_spec if kind == "model" else embedding_spec)(agent)
    if override is not None:
        return override, shown
    example = "model='offline' (no key) or model='openai/gpt-4o-mini'" if kind == "model" else \
        "embedding='hash' (no key) or embedding='local'"
    if spec is None:
        raise AgentFileError(f"{where} ({agent['name']!r}) uses the {kind} {shown!r}, which letta_nb cannot run. Pass "
                             f"{kind}=... to import it with another, e.g. {example}.")
    try:
        rt.llm(spec, trusted=False) if kind == "model" else rt.embedder(spec, trusted=False)
    except LettaNBError as e:
        raise AgentFileError(f"{where} ({agent['name']!r}): its {kind} {shown!r} maps to {redact_spec(spec)!r}, which "
                             f"cannot be used here ({e}). Pass {kind}=... to import it with another, e.g. "
                             f"{example}.") from None
    return spec, shown


def _agent(rt: Runtime, af: AgentFile, agent: dict[str, Any], i: int, final: str, tools: dict[str, ToolPlan],
           report: ImportReport, model: str | None, embedding: str | None,
           max_steps: int) -> tuple[AgentState, list[Message]]:
    where = f"agents[{i}]"
    model_s, model_shown = _spec(rt, agent, where, "model", model)
    emb_s, emb_shown = _spec(rt, agent, where, "embedding", embedding)
    kept: dict[str, Any] = {}
    for kind, spec, shown, override, cfg in (("model", model_s, model_shown, model, "llm_config"),
                                             ("embedding", emb_s, emb_shown, embedding, "embedding_config")):
        same = override is None and redact_spec(spec) == shown
        report.add(kind, shown, "imported" if same else "mapped", final,
                   f"{'override ' if override else ''}{redact_spec(spec)}")
        if override is not None and agent.get(cfg):
            kept[kind], kept[cfg] = spec, agent[cfg]
    letta_type = agent.get("agent_type") or "memgpt_agent"
    agent_type = letta_nb_type(letta_type)
    if letta_type != agent_type:
        kept["agent_type"] = letta_type
        report.add("agent", final, "mapped", final, f"agent type {letta_type} runs as {agent_type}")
    if agent.get("description"):
        kept["description"] = agent["description"]
    agent_id = new_id("agent")
    blocks = _blocks(af, agent, where, final, report)
    names = list(dict.fromkeys(tools[t].name for t in agent.get("tool_ids") or []))
    rules = []
    for j, rule in enumerate(normalize(agent.get("tool_rules") or [], f"{where}.tool_rules")):
        if rule["tool_name"] in names:
            rules.append(rule)
            report.add("rule", f"{rule['type']}({rule['tool_name']})", "imported", final)
        else:
            report.add("rule", f"{rule['type']}({rule['tool_name']})", "dropped", final,
                       f"{where}.tool_rules[{j}] names a tool this agent does not have")
    metadata = metadata_arg(agent.get("metadata") or {})
    metadata.pop(META_KEY, None)
    if kept:
        metadata[META_KEY] = kept
    messages, start, dropped = import_messages(agent, agent_id, where)
    # A spec naming the file's own endpoint is not the user's: no key goes there until agents.update adopts it.
    foreign = [s for s, o in ((model_s, model), (emb_s, embedding)) if o is None and "base_url=" in s]
    signature = None if foreign else trust.sign("agent", trust.agent_fields(agent_id, model_s, emb_s))
    for spec in foreign:
        report.add("endpoint", redact_spec(spec), "mapped", final, "the file's own endpoint: no API key is sent "
                   "there until you adopt it with client.agents.update(agent, model=..., embedding=...)")
    state = AgentState(id=agent_id, name=final, model=model_s, embedding=emb_s,
                       system=clean_text(agent.get("system") or DEFAULT_SYSTEM), blocks=blocks, tools=names,
                       max_steps=max_steps, created_at=utcnow(), metadata=metadata, context_start_seq=start,
                       last_seq=len(messages), agent_type=agent_type, tool_rules=rules,
                       tags=[clean_text(str(t)) for t in agent.get("tags") or []], signature=signature)
    report.add("agent", final, "imported", final, f"from {agent['id']} ({agent['name']!r}), {letta_type}")
    report.add("messages", f"{len(messages)} messages", "imported", final,
               f"context window from seq {start} ({len(messages) - start + 1} messages)")
    for part, n in sorted(dropped.items()):
        report.add("messages", f"{n} {part}(s)", "dropped", final, "letta_nb keeps message text, tool calls and "
                   "results only")
    return state, messages


def _blocks(af: AgentFile, agent: dict[str, Any], where: str, final: str, report: ImportReport) -> list[Block]:
    blocks: list[Block] = []
    for j, ref in enumerate(agent.get("block_ids") or []):
        raw, at = af.blocks[ref], f"{where}.block_ids[{j}] ({ref})"
        label = new_block_label(raw["label"], f"{at}.label")
        if any(b.label == label for b in blocks):
            raise AgentFileError(f"{at}: agent {agent['name']!r} has two blocks labelled {label!r}.")
        value = clean_text(raw["value"])
        limit = block_limit(raw.get("limit") or 5000, f"{at}.limit")
        shared = [a["name"] for a in af.agents if a is not agent and ref in (a.get("block_ids") or [])]
        note = f"; shared with {', '.join(shared)} in Letta: each agent gets its own copy" if shared else ""
        if len(value) > limit:
            report.add("block", label, "raised", final, f"limit {limit} raised to {len(value)} to fit its value{note}")
            limit = block_limit(len(value), f"{at}.value (longer than any block letta_nb keeps)")
        else:
            report.add("block", label, "imported", final, f"{len(value)}/{limit} chars"
                       + (", read-only" if raw.get("read_only") else "") + note)
        blocks.append(Block(label=label, value=value, limit=limit, description=clean_text(raw.get("description") or ""),
                            read_only=bool(raw.get("read_only")), id=new_id("block")))
    return blocks


def _groups(af: AgentFile, agents: dict[str, AgentState], report: ImportReport) -> None:
    """A group is kept on its agents' metadata (letta_nb runs each agent on its own) and reported."""
    for group in af.unused("groups"):
        config = dict(group.get("manager_config") or {})
        manager = config.get("manager_agent_id")
        members: Sequence[str] = [a for a in group["agent_ids"] if a != manager]
        ident = new_id("group")
        for ref in ([manager] if manager else []) + list(members):
            agents[ref].metadata.setdefault(META_KEY, {})["group"] = {
                "id": ident, "role": "manager" if ref == manager else "member",
                "description": group.get("description") or "",
                "manager_config": {k: v for k, v in config.items() if k != "manager_agent_id"}}
        names = ", ".join(agents[a].name for a in members)
        head = f"{agents[manager].name} (main) with " if manager else ""
        report.add("group", str(config.get("manager_type") or "group"), "imported", agents[manager].name if manager
                   else "", f"{head}{names}; letta_nb runs each agent on its own (a sleep-time agent does not run "
                   "in the background: message it yourself)")
