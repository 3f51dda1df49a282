"""Archival memory of an agent (``client.agents.passages``).

A resource of the public API (:mod:`letta_nb.client` says how the sync and async twins are made).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, overload

from letta_nb._client_args import (
    agent_and_item,
    agent_ref,
    flag,
    positive_int,
    tag_match_mode_arg,
    tags_arg,
    text_arg,
)
from letta_nb._twins import async_twin, sync_twin
from letta_nb.api._base import _MAX_TOP_K, AgentRef, _page, _Resource
from letta_nb.errors import InvalidArgumentError
from letta_nb.runtime.search import DEFAULT_SEARCH_MODE, SearchMode, check_search_mode
from letta_nb.runtime.services import passages as _passages
from letta_nb.schemas import Passage

if TYPE_CHECKING:
    pass

__all__ = ['Passages']


class Passages(_Resource):
    """Archival memory of an agent."""

    async def _create(self, agent_id: AgentRef, text: str | list[str], *, tags: list[str] | None = None,
                      ) -> Passage | list[Passage]:
        """Embed ``text`` with the agent's embedder and store it as a passage (``tags`` to filter searches by).
        A list of texts is embedded in one call and stored in one commit; it returns the passages in order."""
        if isinstance(text, (list, tuple)):
            if not text:
                raise InvalidArgumentError("text must be a string or a non-empty list of strings, got an empty list")
            texts = [text_arg(t, f"text[{i}]") for i, t in enumerate(text)]
            return await _passages.create(self._rt, agent_ref(agent_id), texts, tags_arg(tags))
        text, tags = text_arg(text, "text"), tags_arg(tags)
        return await _passages.create(self._rt, agent_ref(agent_id), text, tags)

    async def _list(self, agent_id: AgentRef, *, before: str | None = None, after: str | None = None,
                    limit: int | None = None, ascending: bool = True) -> list[Passage]:
        """The passages of the agent's archival memory, oldest first (letta_client's cursor pagination:
        ``before``/``after`` a passage id, ``limit``, ``ascending=False`` newest first)."""
        found = await _passages.list_passages(self._rt, agent_ref(agent_id))
        return _page(found, before=before, after=after, limit=limit,
                     order="asc" if flag(ascending, "ascending") else "desc", what="passage of this agent")

    async def _search(self, agent_id: AgentRef, query: str, *, top_k: int = 5, tags: list[str] | None = None,
                      tag_match_mode: str = "any", start_datetime: dt.datetime | str | None = None,
                      end_datetime: dt.datetime | str | None = None,
                      search_mode: SearchMode = DEFAULT_SEARCH_MODE) -> list[Passage]:
        """Best-matching passages; ``start_datetime``/``end_datetime`` (datetime or ISO string) bound creation
        time. ``search_mode``: ``"hybrid"`` (default: words and meaning, fused), ``"vector"`` (meaning, exact)
        or ``"text"`` (words, full-text ranked)."""
        query, tags = text_arg(query, "query"), tags_arg(tags)
        positive_int(top_k, "top_k", hi=_MAX_TOP_K, hint=" For every passage use passages.list(agent).")
        tag_match_mode = tag_match_mode_arg(tag_match_mode)
        return await _passages.search(self._rt, agent_ref(agent_id), query, top_k=top_k, tags=tags,
                                      tag_match_mode=tag_match_mode, start_datetime=start_datetime,
                                      end_datetime=end_datetime, search_mode=check_search_mode(search_mode))

    async def _delete(self, memory_id: str | AgentRef | None = None, passage_id: str | None = None, *,
                      agent_id: AgentRef | None = None) -> None:
        """Remove one passage: ``delete(passage_id, agent_id=agent.id)`` (letta_client) or ``delete(agent,
        passage_id)``; InvalidArgumentError if the agent has none of that id."""
        agent, found = agent_and_item(memory_id, passage_id, agent_id, "passage id", "passages.delete")
        await _passages.delete(self._rt, agent, text_arg(found, "passage_id"))

    # Written out rather than twins: overloads tell a type checker that one text gives one Passage and a list
    # gives a list (a twin carries one signature); they run _create exactly as a twin would.
    @overload
    def create(self, agent_id: AgentRef, text: str, *, tags: list[str] | None = None) -> Passage: ...

    @overload
    def create(self, agent_id: AgentRef, text: list[str], *, tags: list[str] | None = None) -> list[Passage]: ...

    def create(self, agent_id: AgentRef, text: str | list[str], *, tags: list[str] | None = None,
               ) -> Passage | list[Passage]:
        return self._thread.run(self._create(agent_id, text, tags=tags))

    @overload
    async def acreate(self, agent_id: AgentRef, text: str, *, tags: list[str] | None = None) -> Passage: ...

    @overload
    async def acreate(self, agent_id: AgentRef, text: list[str], *, tags: list[str] | None = None,
                      ) -> list[Passage]: ...

    async def acreate(self, agent_id: AgentRef, text: str | list[str], *, tags: list[str] | None = None,
                      ) -> Passage | list[Passage]:
        return await self._thread.run_async(self._create(agent_id, text, tags=tags))

    create.__doc__ = acreate.__doc__ = _create.__doc__
    list, alist = sync_twin(_list), async_twin(_list)
    search, asearch = sync_twin(_search), async_twin(_search)
    delete, adelete = sync_twin(_delete), async_twin(_delete)
