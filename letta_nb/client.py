"""The public Python API, shaped like ``letta_client`` (``client.agents.messages.create`` ...).

One design, two surfaces: each operation is written once as an ``async def _name`` that runs on the
runtime loop; ``name = sync_twin(_name)`` derives the blocking ``name`` (submits and waits; Ctrl-C cancels
cleanly) and ``aname = async_twin(_name)`` the awaitable ``aname`` (usable with top-level ``await`` in a cell or
inside any event loop). They are typed descriptors (:mod:`letta_nb._twins`), so mypy and editors see both
surfaces with the implementation's parameters and result. Each class declares its twins at the end of its
body: a class attribute named ``list`` would otherwise shadow the builtin in the annotations after it. A
parity test checks every sync method has its async twin with the same signature.

Agents can be named by id, by name or by the AgentState itself. The resources are in :mod:`letta_nb.api`,
one module each; this module keeps :class:`Client` and :func:`connect`.

A thin shell: each operation checks the shape of its arguments (:mod:`letta_nb._client_args`) and calls
one function of the runtime services (:mod:`letta_nb.runtime.services`), which hold the domain rules and
every read and write of the store; each change of an agent takes its lease there, in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from letta_nb._client_args import checked_api_keys, store_where
from letta_nb._twins import async_twin, sync_twin

# The resources live in letta_nb/api/, one module each; `X as X` keeps them importable from here.
from letta_nb.api._base import AgentRef as AgentRef
from letta_nb.api._base import _Resource as _Resource
from letta_nb.api.agents import Agents as Agents
from letta_nb.api.blocks import Blocks as Blocks
from letta_nb.api.blocks import SharedBlocks as SharedBlocks
from letta_nb.api.files import Files as Files
from letta_nb.api.messages import Messages as Messages
from letta_nb.api.passages import Passages as Passages
from letta_nb.api.tools import AgentTools as AgentTools
from letta_nb.api.tools import Tools as Tools
from letta_nb.runtime.loop_thread import RuntimeThread
from letta_nb.runtime.runtime import Runtime
from letta_nb.runtime.services import store_info as _store_info
from letta_nb.settings import Settings
from letta_nb.settings import resolve as resolve_settings

if TYPE_CHECKING:
    import pandas as pd

    from letta_nb.serve import ServeHandle

__all__ = ["AgentRef", "Client", "connect"]


class Client:
    """A connection to an in-process letta_nb runtime. Use :func:`connect`."""

    def __init__(self, where: Any = None, *, api_keys: dict[str, str] | None = None, lease_ttl: float | None = None,
                 lease_timeout: float | None = None, settings: Settings | None = None, redis_url: str | None = None):
        keys = checked_api_keys(api_keys)
        where = store_where(where)
        if settings is None:  # connect() resolves them; a Client made directly does the same
            settings = resolve_settings({"lease_ttl": lease_ttl, "lease_timeout": lease_timeout})
        self._thread = RuntimeThread()
        try:
            self._runtime: Runtime = self._thread.run(Runtime.open(
                where, lease_ttl=settings.lease_ttl, lease_timeout=settings.lease_timeout, settings=settings,
                redis_url=redis_url))
        except BaseException:
            self._thread.close()
            raise
        self._runtime.api_keys.update(keys)  # memory only: never stored, logged or shown
        self._thread.close_at_exit(self._runtime.close)  # a script that never calls close() still closes cleanly
        self.agents = Agents(self)
        self.blocks = SharedBlocks(self)
        self.tools = Tools(self)
        self._servers: list[ServeHandle] = []  # client.serve(): stopped by close()

    @property
    def runtime(self) -> Runtime:
        """The runtime behind this client, for probes and benchmarks: internals, not a stable API."""
        return self._runtime

    async def _query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run one read-only SQL statement on the store; a pandas DataFrame of its rows.

        The safe way to look into the store while this client has it open: it goes through the runtime's
        own sqlite3 module (a ``sqlite3.connect(path)`` of another SQLite library in the same process can
        break the runtime's locks). ``params`` fill ``?`` (a list) or ``:name`` (a dict). Writes, bad SQL
        and bad params raise InvalidArgumentError with SQLite's message; change data through the API.
        ``client.query("SELECT name, sql FROM sqlite_master")`` lists the tables and their columns."""
        return await _store_info.query(self._runtime, sql, params)

    @property
    def store_location(self) -> str:
        """Where the store is: a path, ``:memory:`` or a URL without its password."""
        return _store_info.location(self._runtime)

    def close(self) -> None:
        """Finish running turns, close the store and stop the runtime thread. Idempotent."""
        if self._thread.closed:
            return
        for server in list(self._servers):  # before the runtime: their requests call it
            server.stop()
        try:
            self._thread.run_closing(self._runtime.close())
        finally:
            self._thread.close()

    def serve(self, port: int = 0, token: str | None = None) -> ServeHandle:
        """Serve this client's agents over Letta's REST API on 127.0.0.1 (the letta-client SDK runs against
        it unchanged): ``Letta(base_url=handle.url, api_key=handle.token)``. ``port=0`` picks a free port;
        ``token`` defaults to a random one, required as a bearer token on every request. ``handle.stop()``
        or ``close()`` stops it. Needs the ``serve`` extra (README "Serve Letta's REST API")."""
        from letta_nb.serve import start

        return start(self, port=port, token=token)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._thread.closed else "open"
        return f"<letta_nb.Client {state} store={self.store_location!r}>"

    query, aquery = sync_twin(_query), async_twin(_query)


def connect(where: Any = None, *, api_keys: dict[str, str] | None = None, lease_ttl: float | None = None,
            lease_timeout: float | None = None, default_model: str | None = None, default_embedding: str | None = None,
            allowed_providers: Sequence[str] | None = None, redis_url: str | None = None) -> Client:
    """Open (or create) a store and start the runtime: a path, ``":memory:"``, or a URL; default
    ``$LETTA_NB_HOME/letta_nb.db`` (``~/.letta_nb``).

    ``api_keys`` maps a provider (``"openai"``, ``"ollama"``) to its key, for when the environment
    (``OPENAI_API_KEY``) should not hold it; keys stay in this process's memory only.

    The other arguments are settings (letta_nb/settings.py; README "Settings"): one left out (None) comes from
    its ``LETTA_NB_*`` environment variable, else the user's config file, else a site config file, else its
    default; ``client.runtime.settings`` holds the result and ``%letta config`` shows where each came from.
    Several processes (notebooks) may use one store: each turn holds its agent's lease. ``lease_ttl``: seconds
    a lease outlives a process that stopped renewing it (killed, paused; default 30); ``lease_timeout``: seconds
    a turn waits for another process's turn of the same agent before ``AgentBusyError`` (default 120).
    ``default_model``/``default_embedding``: what ``agents.create`` uses when not told (``"offline"``,
    ``"hash"``); ``allowed_providers``: the only providers models and embedders may use (e.g.
    ``["offline", "hash", "openai"]``; default all). ``redis_url`` (``"redis://host:6379/0"``, a PostgreSQL store
    only): agents' leases, their queues and change notices through Redis, every commit still fenced by the
    store (README "Sharing agents across kernels")."""
    settings = resolve_settings({"lease_ttl": lease_ttl, "lease_timeout": lease_timeout,
                                 "default_model": default_model, "default_embedding": default_embedding,
                                 "allowed_providers": allowed_providers})
    return Client(where, api_keys=api_keys, settings=settings, redis_url=redis_url)
