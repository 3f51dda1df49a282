"""The records the store takes and returns, and the one place their fields meet column names.

The runtime hands the store domain objects, never rows: a step's :class:`~letta_nb.schemas.Message`
objects, :class:`PassageRecord`, :class:`StepRecord`, :class:`ToolRecord` and :class:`FileRecord`; reads
give them back. How a record becomes a row is the backend's business (the SQLite step and file writers
bind the attributes straight into prepared statements, portable writes pass :func:`columns`), so column
names appear only under ``store/``.

Invariant: a record's field names are its table's column names (``tests/test_store_backend.py`` checks
each against the migrated schema), which is what lets a writer bind ``getattr(record, column)`` for every
column of a statement generated from the table: a migration that adds a column fails that test until its
record has the field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any, TypeVar

from letta_nb.llm.base import ToolCall
from letta_nb.schemas import Message, Passage
from letta_nb.store.ids import aware

__all__ = [
    "FileRecord", "PassageRecord", "StepRecord", "ToolRecord",
    "columns", "from_row", "passage_from_row", "row_to_message", "tool_calls_value",
]

R = TypeVar("R")


@dataclass(frozen=True)
class PassageRecord:
    """An archival passage as stored: its text, its vector (float32 bytes) and the embedder that made it."""

    id: str
    agent_id: str
    text: str
    embedding: bytes | None
    embedding_model: str | None
    tags: tuple[str, ...]
    created_at: dt.datetime
    file_id: str | None = None  # the uploaded file it was cut from (store/files.py)

    def passage(self, score: float | None = None) -> Passage:
        return Passage(self.id, self.agent_id, self.text, tuple(self.tags), self.created_at, score)


@dataclass(frozen=True)
class StepRecord:
    """The metrics row of one step (one model call and its tool calls)."""

    id: str
    agent_id: str
    run_id: str
    step_index: int
    model: str
    n_messages: int
    prompt_tokens: int
    completion_tokens: int
    llm_ms: float
    tools_ms: float
    total_ms: float
    stop_reason: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class ToolRecord:
    """A registered tool as stored. Its signature (runtime/trust.py) covers every field but the
    bookkeeping ones (``id``, ``created_at``, ``updated_at``, ``signature``); the store assigns those three."""

    name: str
    description: str
    json_schema: dict[str, Any]
    source: str | None
    parallel_safe: bool
    sandbox: bool
    sandbox_mode: str | None  # "off", "on", "strict"; None in rows older than migration 0004
    network: bool
    timeout: float | None
    requires_approval: bool = False  # migration 0007; signed only when True (see trust.tool_fields)
    signature: str | None = None
    id: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@dataclass(frozen=True)
class FileRecord:
    """Which content (sha256), chunking and embedder an agent's passages from one path came from."""

    id: str
    agent_id: str
    path: str
    content_hash: str
    size_bytes: int
    chunks: int
    chunking: str
    created_at: dt.datetime
    updated_at: dt.datetime


def columns(record: Any) -> dict[str, Any]:
    """A record as a row keyed by column (its fields are named after its table's columns)."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def from_row(cls: type[R], row: Any) -> R:
    """A record from a row of its table, times as aware UTC (SQLite hands them back naive)."""
    return cls(**{k: aware(v) if isinstance(v, dt.datetime) else v for k, v in row._mapping.items()})


def tool_calls_value(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]] | None:
    """A message's tool calls as the JSON value of its ``tool_calls`` column (NULL when it made none); a call
    recovered from JSON text in the content (llm/text_calls.py) says so."""
    return [{"id": c.id, "name": c.name, "arguments": c.arguments, **({"recovered": True} if c.recovered else {})}
            for c in calls] or None


def row_to_message(r: Any) -> Message:
    return Message(
        id=r.id,
        agent_id=r.agent_id,
        seq=r.seq,
        role=r.role,
        content=r.content,
        created_at=aware(r.created_at),
        tool_calls=tuple(ToolCall(c["id"], c["name"], c["arguments"], bool(c.get("recovered")))
                         for c in (r.tool_calls or ())),
        tool_call_id=r.tool_call_id,
        name=r.name,
        step_id=r.step_id,
        status=r.status,
    )


def passage_from_row(r: Any, score: float | None = None) -> Passage:
    return Passage(id=r.id, agent_id=r.agent_id, text=r.text, tags=tuple(r.tags or ()), created_at=aware(r.created_at),
                   score=score)
