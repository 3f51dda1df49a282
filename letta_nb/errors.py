"""Exceptions that letta_nb raises on purpose.

Every error a user can cause is a :class:`LettaNBError` subclass, so code can catch the family and the
notebook layer can turn it into an IPython ``UsageError`` without a traceback. Messages say what was
wrong, what was expected and how to fix it; lookups of unknown names carry close-match suggestions.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "LettaNBError",
    "InvalidArgumentError",
    "NotFoundError",
    "AgentNotFoundError",
    "BlockNotFoundError",
    "ToolNotFoundError",
    "ModelNotFoundError",
    "AlreadyExistsError",
    "BlockLimitError",
    "ReadOnlyBlockError",
    "MemoryEditError",
    "ToolSchemaError",
    "StoreError",
    "SQLiteExtensionError",
    "SchemaVersionError",
    "RuntimeClosedError",
    "EmbeddingError",
    "ProviderError",
    "OptionalDependencyError",
    "DimensionMismatchError",
    "SettingError",
    "ProviderNotAllowedError",
    "FileIngestError",
    "UploadedFileNotFoundError",
    "TurnCancelledError",
    "ReentrantTurnError",
    "SandboxUnavailableError",
    "StaleCommitError",
    "AgentBusyError",
    "ApprovalError",
    "PendingApprovalError",
    "StoreWarning",
    "OptionalDependencyWarning",
]


class LettaNBError(Exception):
    """Base class of every error letta_nb raises deliberately."""


class InvalidArgumentError(LettaNBError, ValueError):
    """An argument had the wrong type or value; the message names the argument and what was expected."""


class NotFoundError(LettaNBError, LookupError):
    """A named thing does not exist. ``suggestions`` holds close matches among the names that do."""

    kind = "object"

    def __init__(self, name: str, known: Iterable[str] = (), hint: str = ""):
        self.name = name
        known = list(known)
        self.suggestions = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        msg = f"No {self.kind} named {name!r}."
        if self.suggestions:
            msg += " Did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        elif known:
            shown = ", ".join(repr(k) for k in sorted(known)[:10])
            msg += f" Known {self.kind}s: {shown}" + (" ..." if len(known) > 10 else "") + "."
        else:
            msg += f" There are no {self.kind}s yet."
        if hint:
            msg += " " + hint
        super().__init__(msg)


class AgentNotFoundError(NotFoundError):
    kind = "agent"


class BlockNotFoundError(NotFoundError):
    kind = "memory block"


class ToolNotFoundError(NotFoundError):
    kind = "tool"


class ModelNotFoundError(NotFoundError):
    kind = "model"


class AlreadyExistsError(LettaNBError, ValueError):
    """A create would collide with an existing unique name."""


class MemoryEditError(LettaNBError, ValueError):
    """A core-memory edit cannot be applied (e.g. the text to replace is not in the block)."""


class BlockLimitError(MemoryEditError):
    """A block value would exceed the block's character limit."""

    def __init__(self, label: str, length: int, limit: int):
        self.label, self.length, self.limit = label, length, limit
        super().__init__(
            f"Edit failed: block {label!r} would hold {length} characters, over its limit of {limit}. "
            f"Shorten the text, move details to archival memory, or raise the block's limit."
        )


class ReadOnlyBlockError(MemoryEditError):
    """The block is marked read_only; agents (and their tools) may not change it."""


class ToolSchemaError(LettaNBError, TypeError):
    """A Python function cannot be turned into a tool JSON schema (e.g. an unsupported annotation)."""


class StoreError(LettaNBError):
    """The store could not be opened or used."""


class SQLiteExtensionError(StoreError):
    """No available sqlite3 module can load the sqlite-vec extension."""


class SchemaVersionError(StoreError):
    """The store was written by a newer letta_nb than this one."""


class RuntimeClosedError(LettaNBError, RuntimeError):
    """The runtime (and its event loop thread) has been shut down."""


class ProviderError(LettaNBError):
    """A model or embedding endpoint failed after retries (HTTP status and URL in the message, never the key)."""

    def __init__(self, message: str, *, status: int | None = None):
        self.status = status
        super().__init__(message)


class EmbeddingError(ProviderError):
    """Some chunks could not be embedded. ``failed`` maps each failed input index to its reason."""

    def __init__(self, failed: dict[int, str], total: int, *, status: int | None = None):
        self.failed = dict(sorted(failed.items()))
        shown = ", ".join(f"#{i}: {why}" for i, why in list(self.failed.items())[:5])
        more = f" (and {len(self.failed) - 5} more)" if len(self.failed) > 5 else ""
        super().__init__(
            f"{len(self.failed)} of {total} chunks could not be embedded: {shown}{more}. Use embed_report() to "
            "keep the vectors that succeeded, or fix the inputs / endpoint and retry.",
            status=status,
        )


class OptionalDependencyError(LettaNBError, ImportError):
    """A feature needs an optional package that is not installed; the message has the pip command."""


class DimensionMismatchError(InvalidArgumentError):
    """A query vector's dimension differs from the stored vectors it would be compared with."""


class SettingError(InvalidArgumentError):
    """A setting (connect argument, LETTA_NB_* variable, config file) is invalid; see letta_nb/settings.py."""


class ProviderNotAllowedError(SettingError):
    """A model or embedder's provider is not in the ``allowed_providers`` setting."""


class FileIngestError(LettaNBError):
    """One file could not be uploaded (too large, unreadable, binary, empty); the batch goes on without it."""


class UploadedFileNotFoundError(NotFoundError):
    kind = "uploaded file"


class TurnCancelledError(LettaNBError):
    """The turn this call was waiting for was stopped by ``client.agents.messages.cancel(agent)`` (or the chat
    widget's Stop button) from elsewhere.

    What the agent had said is kept in recall memory, as after Ctrl-C; ``response`` is that partial turn (its
    ``stop_reason`` is ``"cancelled"``). A stream does not raise this: it ends with a ``cancelled`` StopEvent.
    """

    def __init__(self, agent: str, response: object = None):
        self.agent, self.response = agent, response
        super().__init__(
            f"The turn of agent {agent!r} was cancelled by client.agents.messages.cancel() while this call waited "
            f"for it; what it had said is kept (see .response and client.agents.messages.list({agent!r}))."
        )


class ReentrantTurnError(LettaNBError, RuntimeError):
    """A tool tried to send a message to the agent whose turn is running that tool.

    The new turn would wait for the running one, which waits for the tool: a deadlock. Tools may message
    other agents; to act on their own agent they use its memory tools or the ``agent_state`` argument.
    """

    def __init__(self, agent: str):
        self.agent = agent
        super().__init__(
            f"A tool cannot send a message to agent {agent!r}: that agent's turn is running this tool, and the "
            f"new turn would wait for it forever. Send to a different agent, or return the text from the tool "
            f"so the agent reads it in this turn."
        )


class SandboxUnavailableError(LettaNBError, RuntimeError):
    """``sandbox="strict"`` was asked for where isolation is unavailable; the message names what is missing
    and the fix (``letta_nb.runtime.sandbox.capabilities()`` says what this machine can guarantee)."""


class StaleCommitError(StoreError):
    """A commit was refused: the lease on the agent was lost (it expired while this process was paused or cut
    off, and another process took the agent), or another process moved the agent on.

    A turn recovers from a refused step by itself (it takes the lease again, reloads the agent and re-runs the
    step); it raises this only when refused more often than ``agent_loop.MAX_RECOVERIES`` allows. Nothing of
    the refused step was written, the user's message included when it was the turn's first step; steps the
    turn had already committed stay. A passage or upload commit refused raises it at once, nothing of it
    written. The cached session is reloaded, so sending again is safe.
    """

    def __init__(self, agent: str):
        self.agent = agent
        super().__init__(
            f"The store refused a step of agent {agent!r}: this process no longer held the agent's lease (it "
            f"expired and another process took the agent). Nothing of that step was stored; send the message "
            f"again (the agent now reads the store's latest state).")


class AgentBusyError(LettaNBError):
    """Another process kept the agent's lease longer than this call was willing to wait (``lease_timeout``).

    ``holder`` says who: ``{"pid": ..., "host": ..., "since": datetime}``.
    """

    def __init__(self, agent: str, holder: dict[str, Any], waited_s: float):
        self.agent, self.holder, self.waited_s = agent, holder, waited_s
        since = holder.get("since")
        when = f" since {since:%H:%M:%S}" if since is not None else ""
        who = (f"process {holder.get('pid')} on {holder.get('host')!r}{when}" if holder.get("pid") is not None
               else "processes queued before this one")
        super().__init__(
            f"Agent {agent!r} is busy in another process: {who}; waited {waited_s:.1f} s. Try again when its "
            f"turn ends, or pass a longer lease_timeout to letta_nb.connect().")


class ApprovalError(LettaNBError, ValueError):
    """An answer to a tool call waiting for approval that cannot be taken: the call is unknown, was already
    answered, or the answer is malformed. Nothing was run or stored; the message lists the calls that wait."""


class PendingApprovalError(LettaNBError):
    """A message was sent to an agent whose turn waits for approval of a tool call (runtime/approvals.py).

    As in Letta, the waiting call must be answered first: ``client.agents.messages.approve(agent, call_id,
    approve=True|False, reason=...)``. ``pending`` lists the waiting calls (``ToolCall`` objects)."""

    def __init__(self, agent: str, pending: list[Any]):
        self.agent, self.pending = agent, pending
        calls = ", ".join(f"{c.name} ({c.id})" for c in pending)
        first = pending[0].id if pending else "CALL_ID"
        super().__init__(
            f"Agent {agent!r} waits for approval of {calls}; answer it before sending a new message: "
            f"client.agents.messages.approve({agent!r}, {first!r}, approve=True) (or approve=False, reason='...'), "
            f"or `%letta approve {first}` in a notebook.")


class StoreWarning(UserWarning):
    """The store works, but something about where it lives can lose data (e.g. a network filesystem)."""


class OptionalDependencyWarning(UserWarning):
    """An optional package is missing, so a feature falls back to a simpler way; the message names the extra."""
