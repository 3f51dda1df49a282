"""The notebook surface of letta_nb: ``%letta`` / ``%%letta`` magics, :class:`ChatWidget`, rich display.

This is the only package that imports IPython and ipywidgets. ``%load_ext letta_nb`` lands in
:func:`load_ipython_extension`: it opens the kernel's :class:`NotebookSession` (one client, one runtime
thread) and registers the magics. :func:`unload_ipython_extension` undoes all of it -- magics removed, the
client closed (running turns finish or are cancelled, the store is closed, the runtime thread stops), the
exit hook dropped -- so ``%reload_ext letta_nb`` starts from a clean slate. ipywidgets is imported only
when a widget is made.
"""

from __future__ import annotations

import atexit
from typing import Any

from letta_nb.errors import OptionalDependencyError

try:
    import IPython  # noqa: F401 - the `notebook` extra; the runtime itself never needs it
except ImportError as e:
    raise OptionalDependencyError(
        "the notebook surface (%load_ext letta_nb, ChatWidget) needs IPython and ipywidgets, which are not "
        "installed. Run: pip install 'letta-nb[notebook]' (or: pip install ipykernel ipywidgets).") from e

from letta_nb.notebook._session import NotebookSession, current_session, set_session  # noqa: E402

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
    atexit.register(_close_at_exit)
    session = current_session()
    client = session.client
    print(f"letta_nb: store {client.store_location}; new agents use model {session.defaults['model']!r} and "
          f"embedding {session.defaults['embedding']!r}. %letta? for help.")


def unload_ipython_extension(ipython: Any) -> None:
    manager = ipython.magics_manager
    for kind in ("line", "cell"):
        for name in _MAGIC_NAMES:
            manager.magics[kind].pop(name, None)
    for cls_name in ("LettaCommandMagics", "LettaChatMagics"):
        manager.registry.pop(cls_name, None)
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
