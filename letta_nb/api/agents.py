"""Agents: create, find, change, delete, import and export (``client.agents``).

A resource of the public API (:mod:`letta_nb.client` says how the sync and async twins are made).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from letta_nb import agentfile as _agentfile
from letta_nb._client_args import (
    agent_name,
    agent_ref,
    flag,
    memory_blocks_from,
    metadata_arg,
    optional_text,
    positive_int,
    tags_arg,
    text_arg,
    tools_arg,
)
from letta_nb._twins import async_twin, sync_twin
from letta_nb.agentfile import ImportReport
from letta_nb.api._base import AgentRef, _page, _Resource
from letta_nb.api.blocks import Blocks
from letta_nb.api.files import Files
from letta_nb.api.messages import Messages
from letta_nb.api.passages import Passages
from letta_nb.api.tools import AgentTools
from letta_nb.runtime.services import agents as _agents
from letta_nb.runtime.services import context as _context
from letta_nb.runtime.services import lookup as _lookup
from letta_nb.runtime.services.context import ContextWindow
from letta_nb.runtime.tool_rules import DEFAULT_AGENT_TYPE, agent_type_arg
from letta_nb.runtime.tool_rules import normalize as normalize_tool_rules
from letta_nb.runtime.tool_schema import ToolSpec
from letta_nb.schemas import AgentState, Block
from letta_nb.store.ids import new_id

if TYPE_CHECKING:
    from letta_nb.client import Client

__all__ = ['Agents']


class Agents(_Resource):
    """Create, find and delete agents; ``.messages``, ``.blocks``, ``.passages``, ``.tools`` per agent."""

    def __init__(self, client: Client):
        super().__init__(client)
        self.messages = Messages(client)
        self.blocks = Blocks(client)
        self.passages = Passages(client)
        self.tools = AgentTools(client)
        self.files = Files(client)

    async def _create(
        self,
        name: str | None = None,
        *,
        model: str | None = None,
        embedding: str | None = None,
        memory_blocks: Sequence[dict[str, Any] | Block] | None = None,
        tools: Sequence[Callable[..., Any] | ToolSpec | str] = (),
        system: str | None = None,
        max_steps: int = 10,
        include_base_tools: bool = True,
        metadata: dict[str, Any] | None = None,
        agent_type: str = DEFAULT_AGENT_TYPE,
        tool_rules: list[Any] | None = None,
        tags: list[str] | None = None,
        block_ids: Sequence[str] | None = None,
    ) -> AgentState:
        """Create an agent. ``tools`` may hold Python functions (registered on the fly) or tool names;
        ``model``/``embedding`` default to the ``default_model``/``default_embedding`` settings.

        ``agent_type`` is ``"memgpt_agent"`` (replies through send_message) or ``"letta_v1_agent"`` (the
        model's text is the reply); ``tool_rules`` are Letta's rule dicts (``{"type": "exit_loop",
        "tool_name": ...}``), ``tags`` strings to find the agent by; ``block_ids`` shared blocks
        (``client.blocks``) to attach."""
        name = agent_name(name if name is not None else f"agent-{new_id('x')[2:10]}")
        positive_int(max_steps, "max_steps", hi=100)
        system, metadata = optional_text(system, "system"), metadata_arg(metadata)
        include_base_tools = flag(include_base_tools, "include_base_tools")
        tools = tools_arg(tools)
        block_ids = [text_arg(b, f"block_ids[{i}]") for i, b in enumerate(tools_arg(block_ids or [], "block_ids"))]
        return await _agents.create(self._rt, name, model=model, embedding=embedding,
                                    blocks=memory_blocks_from(memory_blocks), tools=tools, system=system,
                                    max_steps=max_steps, include_base_tools=include_base_tools, metadata=metadata,
                                    agent_type=agent_type_arg(agent_type), tool_rules=normalize_tool_rules(tool_rules),
                                    tags=tags_arg(tags), block_ids=block_ids)

    async def _retrieve(self, agent_id: AgentRef) -> AgentState:
        """The agent as stored now (AgentNotFoundError, with close matches, otherwise)."""
        return await _lookup.agent_state(self._rt, agent_ref(agent_id))

    async def _update(self, agent_id: AgentRef, *, name: str | None = None, model: str | None = None,
                      embedding: str | None = None, system: str | None = None, max_steps: int | None = None,
                      metadata: dict[str, Any] | None = None, agent_type: str | None = None,
                      tool_rules: list[Any] | None = None, tags: list[str] | None = None) -> AgentState:
        """Change an agent's settings (between turns; its cached session is dropped in every process). Setting
        ``model``/``embedding`` also makes them yours: API keys go to an endpoint a spec names only if you
        wrote that spec (see runtime/trust.py). ``name`` renames it (a name in use is AlreadyExistsError)."""
        name = None if name is None else agent_name(name)
        max_steps = None if max_steps is None else positive_int(max_steps, "max_steps", hi=100)
        system = optional_text(system, "system")
        metadata = None if metadata is None else metadata_arg(metadata)
        return await _agents.update(
            self._rt, agent_ref(agent_id), name=name, model=model, embedding=embedding, system=system,
            max_steps=max_steps, metadata=metadata,
            agent_type=None if agent_type is None else agent_type_arg(agent_type),
            tool_rules=None if tool_rules is None else normalize_tool_rules(tool_rules), tags=tags_arg(tags))

    async def _list(self, *, name: str | None = None, tags: list[str] | None = None, match_all_tags: bool = False,
                    before: str | None = None, after: str | None = None, limit: int | None = None,
                    order: str | None = None) -> list[AgentState]:
        """Agents in the store, oldest first: ``name`` the one of that name, ``tags`` those with any of them
        (all of them with ``match_all_tags``); letta_client's cursor pagination (``order="desc"`` newest
        first, ``before``/``after`` an agent id, ``limit``)."""
        name = None if name is None else agent_name(name)
        wanted, every = tags_arg(tags), flag(match_all_tags, "match_all_tags")
        found = [a for a in await _agents.list_all(self._rt)
                 if (name is None or a.name == name)
                 and (not wanted or (all if every else any)(t in a.tags for t in wanted))]
        return _page(found, before=before, after=after, limit=limit,
                     order=order if order is not None or limit is None else "asc", what="agent")

    async def _delete(self, agent_id: AgentRef) -> None:
        """Delete the agent with its own blocks, messages, passages and files (between turns); shared blocks
        stay in ``client.blocks``."""
        await _agents.delete(self._rt, agent_ref(agent_id))

    async def _import_file(self, path_or_bytes: str | os.PathLike[str] | bytes | dict[str, Any], *,
                           model: str | None = None, embedding: str | None = None, name: str | None = None,
                           suffix: str = "", existing_tools: str = "error", max_steps: int = 10) -> ImportReport:
        """Import a Letta Agent File (``.af``: a path, its bytes, or the parsed dict); returns an ImportReport.

        Checked whole first, then written in one transaction: a malformed file changes nothing. ``model`` /
        ``embedding`` replace the file's for every agent (needed when letta_nb cannot run the file's, e.g.
        ``model="offline"``). ``name`` renames the file's first agent, ``suffix`` is appended to every agent's
        name (an existing name is an error). Custom tools are stored untrusted and sandboxed; a stored tool of
        the same name is reused if identical, else an error unless ``existing_tools="keep"``."""
        return await _agentfile.import_agent_file(
            self._rt, path_or_bytes, model=model, embedding=embedding, name=name, suffix=suffix,
            existing_tools=existing_tools, max_steps=max_steps)

    async def _export_file(self, agent_id: AgentRef, path: str | os.PathLike[str] | None = None) -> Any:
        """The agent as a Letta Agent File (with the rest of its sleep-time group, if imported with one): a dict,
        or written to ``path`` (returns the path). Never holds an API key."""
        found = await _lookup.agent_id(self._rt, agent_ref(agent_id))
        return await _agentfile.export_agent_file(self._rt, found, path)

    async def _context(self, agent_id: AgentRef) -> ContextWindow:
        """What fills the agent's context window: tokens of its system prompt, core memory, summary note, tool
        schemas and messages against the model's window, plus recall and archival counts (``.to_dataframe()``,
        ``.plot()``). Read from the session the next prompt is built from, so ``.total`` is what it budgets."""
        return await _context.context_window(self._rt, agent_ref(agent_id))

    create, acreate = sync_twin(_create), async_twin(_create)
    retrieve, aretrieve = sync_twin(_retrieve), async_twin(_retrieve)
    update, aupdate = sync_twin(_update), async_twin(_update)
    modify, amodify = update, aupdate  # letta_client spells it "modify"
    import_file, aimport_file = sync_twin(_import_file), async_twin(_import_file)
    export_file, aexport_file = sync_twin(_export_file), async_twin(_export_file)
    list, alist = sync_twin(_list), async_twin(_list)
    delete, adelete = sync_twin(_delete), async_twin(_delete)
    context, acontext = sync_twin(_context), async_twin(_context)
