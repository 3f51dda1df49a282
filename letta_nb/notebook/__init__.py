"""The notebook surface of letta_nb: ``%letta`` / ``%%letta`` magics, :class:`ChatWidget`, rich display.

This is the only package that imports IPython and ipywidgets. ``%load_ext letta_nb`` lands in
:func:`load_ipython_extension`: it makes the kernel's :class:`NotebookSession` (one client, one runtime
thread, opened by the first command that needs the store) and registers the magics. It imports only what
its one line needs (IPython, the settings, the magics), not SQLAlchemy, numpy or the store, so it takes
less time than ``import IPython`` (tests/test_startup_imports.py keeps it so); once its cell has finished,
a daemon thread imports what the first command will need (see ``WARM_IMPORTS``).
:func:`unload_ipython_extension` undoes all of it -- magics removed, the client closed (running turns
finish or are cancelled, the store is closed, the runtime thread stops), the exit hook dropped -- so
``%reload_ext letta_nb`` starts from a clean slate. ipywidgets is imported only when a widget is made.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import threading
from collections.abc import Callable
from typing import Any

from letta_nb.errors import OptionalDependencyError

try:
    import IPython  # noqa: F401 - the `notebook` extra; the runtime itself never needs it
except ImportError as e:
    raise OptionalDependencyError(
        "the notebook surface (%load_ext letta_nb, ChatWidget) needs IPython and ipywidgets, which are not "
        "installed. Run: pip install 'letta-nb[notebook]' (or: pip install ipykernel ipywidgets).") from e

from letta_nb.notebook import _cells  # noqa: E402
from letta_nb.notebook._session import NotebookSession, current_session, set_session  # noqa: E402
from letta_nb.settings import current as current_settings  # noqa: E402

__all__ = [
    "ChatWidget",
    "NotebookSession",
    "current_session",
    "load_ipython_extension",
    "unload_ipython_extension",
]

_MAGIC_NAMES = ("letta",)


def load_ipython_extension(ipython: Any) -> None:
    from letta_nb.notebook.magics import LettaChatMagics, LettaCommandMagics

    old = set_session(NotebookSession())
    if old is not None:
        old.close()
    ipython.register_magics(LettaCommandMagics, LettaChatMagics)
    _cells.install(ipython)  # per-cell errors for {Err[n]}, %letta fix and the kernel tools
    atexit.register(_close_at_exit)
    _warm_after_this_cell(ipython)
    session = current_session()
    print(f"letta_nb: store {_store_location(session)}; new agents use model {session.defaults['model']!r} and "
          f"embedding {session.defaults['embedding']!r}. %letta? for help.")


def _store_location(session: NotebookSession) -> str:
    """Where the session's store is, without opening it: opening imports SQLAlchemy and the runtime (~0.5 s),
    which the first command that needs the store pays instead (issue 19). The default store is
    ``$LETTA_NB_HOME/letta_nb.db`` (letta_nb/store/engine.py: ``resolve_location``; tests/test_startup_imports.py
    checks that this is where the first command opens it)."""
    if session.connected:  # a session made with a client (a test's, a user's): ask it
        return session.client.store_location
    return str(current_settings().home / "letta_nb.db")


# ---- warming: the first command's imports, in the background once the %load_ext cell has finished ----------
# What the first command needs and %load_ext does not: the client (SQLAlchemy, numpy, httpx, the store, the
# runtime) and pandas (every table). Imports only: the store is opened by the first command, in its own cell,
# so its errors and warnings show there. Why this cannot deadlock with the user's next cell: a module is
# imported once, under its own lock; a thread waits for another's lock only while holding the locks of the
# modules it is importing, and nothing imported here imports letta_nb.notebook or a user's module, so no
# cycle of waits can form (letta_nb has no import cycles; a package's own cycles are entered through its
# __init__, which one thread imports while the other waits holding nothing of that package). Were one to
# form, Python's module locks detect it and raise in one thread instead of hanging.
WARM_IMPORTS = ("letta_nb.client", "pandas")
_warm_hooks: dict[int, Callable[..., None]] = {}  # id(shell) -> its pending post_execute hook
_warming: threading.Thread | None = None  # the last warming thread (tests and bench wait for it)


def _warm_after_this_cell(ipython: Any) -> None:
    """Start warming when the cell that ran ``%load_ext`` has finished (IPython's post_execute event), so the
    line %load_ext prints is not delayed, and a command run right after finds the imports done or under way."""
    _cancel_warming(ipython)

    def hook(*_: object) -> None:
        global _warming
        _cancel_warming(ipython)
        _warming = threading.Thread(target=_warm, name="letta_nb-warm-imports", daemon=True)
        _warming.start()

    _warm_hooks[id(ipython)] = hook
    ipython.events.register("post_execute", hook)


def _cancel_warming(ipython: Any) -> None:
    hook = _warm_hooks.pop(id(ipython), None)
    if hook is not None:
        with contextlib.suppress(ValueError):
            ipython.events.unregister("post_execute", hook)


def _warm() -> None:
    for module in WARM_IMPORTS:
        try:
            importlib.import_module(module)
        except Exception:  # best effort: the command that needs it imports it again and says what is wrong
            continue


def unload_ipython_extension(ipython: Any) -> None:
    manager = ipython.magics_manager
    for kind in ("line", "cell"):
        for name in _MAGIC_NAMES:
            manager.magics[kind].pop(name, None)
    for cls_name in ("LettaCommandMagics", "LettaChatMagics"):
        manager.registry.pop(cls_name, None)
    _cells.uninstall(ipython)
    _cancel_warming(ipython)
    atexit.unregister(_close_at_exit)
    old = set_session(None)
    if old is not None:
        old.close()


def _close_at_exit() -> None:
    old = set_session(None)
    if old is not None:
        old.close()


def __getattr__(name: str) -> Any:
    if name == "ChatWidget":
        from letta_nb.notebook.widget import ChatWidget

        return ChatWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
