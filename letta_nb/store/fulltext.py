"""Full-text search of passages (archival) and messages (recall), ranked by relevance, on either backend.

A passage's index entry is part of the row's transaction, never a separate write: on SQLite an FTS5 table
kept by plain SQL triggers on ``passages`` (store/sqlite/fulltext.py), on PostgreSQL a generated ``tsvector``
column with a GIN index (store/postgres/fulltext.py). Whoever writes a passage (uploads, the API, a step, a
cascade from deleting an agent) updates the index in the same commit, so a crash leaves rows and index
consistent, and a re-upload that replaces a file's passages replaces their index entries with them. Both are
made by migration ``m0009_fulltext``, which indexes the rows already there. Messages are the same on
PostgreSQL; on SQLite they are indexed in batches off the step's commit (migration m0011: it was ~40% of a
step's transaction), so a message search first calls ``Store.catch_up_fulltext()`` (runtime/archival.py
does): :func:`search_messages` alone sees the messages indexed so far; deletes and updates stay exact.

A query becomes an OR of its words (minus a few stopwords), so a paraphrase that shares any content word
still matches, and the backend's ranking (BM25 on SQLite, ``ts_rank`` on PostgreSQL) orders the matches;
fusing this ranking with vector similarity is runtime/search.py's. Results are ``(id, score)``, best
first, score higher-is-better; filters (tags, creation time, roles) are applied inside the query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from letta_nb.schemas import Message
from letta_nb.store.ids import sql_time
from letta_nb.store.migrations import METADATA
from letta_nb.store.records import row_to_message

__all__ = ["TextQuery", "messages_by_id", "query_terms", "search_messages", "search_passages"]

_WORD = re.compile(r"\w+", re.UNICODE)
# Words too common to say what a question is about; a query made only of them keeps them all.
STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "could", "did", "do", "does", "for",
    "from", "had", "has", "have", "he", "her", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its",
    "me", "my", "no", "not", "of", "on", "or", "our", "she", "so", "than", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "to", "was", "we", "were", "what", "when", "where", "which", "who", "whom",
    "why", "will", "with", "would", "you", "your"
})
MAX_TERMS = 32  # a pasted paragraph as the query: its first 32 distinct words are plenty to rank by


def query_terms(query: str) -> list[str]:
    """The distinct lowercase words of ``query`` worth matching, in order (stopwords dropped unless that
    leaves nothing)."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))
    kept = [w for w in words if w not in STOPWORDS] or words
    return kept[:MAX_TERMS]


@dataclass(frozen=True)
class TextQuery:
    """A full-text search of one agent's passages or messages; time bounds are aware datetimes or None."""

    agent_id: str
    terms: tuple[str, ...]
    limit: int
    tags: tuple[str, ...] = ()
    tag_match_mode: str = "any"
    start: Any = None
    end: Any = None
    roles: tuple[str, ...] = ()

    @property
    def start_text(self) -> str | None:
        return None if self.start is None else sql_time(self.start)

    @property
    def end_text(self) -> str | None:
        return None if self.end is None else sql_time(self.end)


def _module(conn: Any) -> Any:
    if conn.dialect.name == "postgresql":
        from letta_nb.store.postgres import fulltext
    else:
        from letta_nb.store.sqlite import fulltext  # type: ignore[no-redef]
    return fulltext


async def _search(engine: Any, query: TextQuery, what: str) -> list[tuple[str, float]]:
    """The dialect module's ``what`` (``search_passages`` or ``search_messages``) on a connection."""
    if not query.terms:
        return []
    async with engine.connect() as conn:
        hits: list[tuple[str, float]] = await conn.run_sync(lambda c: getattr(_module(c), what)(c, query))
    return hits


async def search_passages(engine: Any, query: TextQuery) -> list[tuple[str, float]]:
    """``(passage id, relevance)`` of the agent's passages matching any term, best first."""
    return await _search(engine, query, "search_passages")


async def search_messages(engine: Any, query: TextQuery) -> list[tuple[str, float]]:
    """``(message id, relevance)`` of the agent's messages (of ``query.roles``) matching any term, best first."""
    return await _search(engine, query, "search_messages")


async def messages_by_id(engine: Any, agent_id: str, ids: list[str]) -> dict[str, Message]:
    """id -> :class:`~letta_nb.schemas.Message` of the agent's messages among ``ids`` (a search's hits)."""
    m = METADATA.tables["messages"]
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(m).where(m.c.agent_id == agent_id, m.c.id.in_(ids)))
        return {r.id: row_to_message(r) for r in rows}
