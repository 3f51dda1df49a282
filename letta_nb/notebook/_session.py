"""The notebook's letta_nb state: one client, the current agent, and defaults for ``%letta create``.

A kernel has one :class:`NotebookSession` at a time (``%load_ext`` opens it, ``%unload_ext`` closes it).
Magics, ``%%letta`` and :class:`~letta_nb.notebook.widget.ChatWidget` share it, so a widget and a cell
talk to the same agents through the same runtime thread. The session opens its client lazily (the first
command that needs the store pays for it, not ``import``); a client passed in by the user is borrowed and
never closed here.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Literal, overload

from IPython.core.error import UsageError

from letta_nb.settings import current as current_settings

if TYPE_CHECKING:
    from letta_nb.client import Client

__all__ = ["NotebookSession", "current_session", "set_session"]

_lock = threading.Lock()
_current: NotebookSession | None = None


class NotebookSession:
    """Client + current agent + ``create`` defaults. ``where`` is passed to :func:`letta_nb.connect`."""

    def __init__(self, where: Any = None, *, client: Client | None = None):
        self._where = where
        self._client = client
        self._owns_client = client is None
        self._lock = threading.Lock()
        self.agent: str | None = None  # the current agent's name, set by create/use
        # %letta create's defaults: the settings' (letta_nb/settings.py) until `%letta config model X` changes them
        settings = client.runtime.settings if client is not None else current_settings()
        self.defaults: dict[str, str] = {"model": settings.default_model, "embedding": settings.default_embedding}

    @property
    def client(self) -> Client:
        with self._lock:
            if self._client is None:
                import letta_nb

                self._client = letta_nb.connect(self._where)
            return self._client

    @property
    def connected(self) -> bool:
        return self._client is not None

    def agent_or_current(self, name: str | None) -> str:
        """The agent a command acts on: the one named, else the current one, else a UsageError that says how."""
        if name:
            return name
        if self.agent:
            return self.agent
        names = [a.name for a in self.client.agents.list()]
        hint = f" Existing agents: {', '.join(names[:10])}." if names else ""
        raise UsageError(
            "No agent selected. Create one with `%letta create NAME` or pick one with `%letta use NAME`, "
            f"or name it in the command.{hint}"
        )

    def close(self) -> None:
        """Close the client if this session opened it (finishes running turns, stops the runtime thread)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._owns_client:
            client.close()


@overload
def current_session(create: Literal[True] = ...) -> NotebookSession: ...
@overload
def current_session(create: bool) -> NotebookSession | None: ...


def current_session(create: bool = True) -> NotebookSession | None:
    """The kernel's session; one is created (not yet connected) when asked and none exists."""
    global _current
    with _lock:
        if _current is None and create:
            _current = NotebookSession()
        return _current


def set_session(session: NotebookSession | None) -> NotebookSession | None:
    """Install ``session`` (or none) and return the one it replaces, which the caller closes."""
    global _current
    with _lock:
        old, _current = _current, session
        return old
