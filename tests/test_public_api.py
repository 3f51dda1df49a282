"""The public surface, derived from the code rather than from a list kept by hand.

- ``letta_nb.__all__`` is exactly the public names of the ``letta_nb`` namespace (and the names it
  imports lazily), so a new export cannot be forgotten in ``__all__`` and ``__all__`` cannot name what
  is not there; every error and warning class letta_nb raises on purpose is exported.
- Every public method, sync and async, reached from a real client (``client.agents.messages...``), of
  ChatWidget, of the probes, and ``connect`` has a docstring (``help()`` and Jupyter's ``?`` show it).
- Every return annotation of a public method names only types exported by ``letta_nb`` (or builtins,
  ``typing``/``collections.abc`` and pandas): what the API returns, a user can import and annotate with.
"""

from __future__ import annotations
import __future__

import builtins
import collections.abc
import inspect
import typing
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest

import letta_nb
from letta_nb import errors, probes
from letta_nb.client import _Resource
from letta_nb.notebook.widget import ChatWidget

# IPython finds these by name in the module (``%load_ext letta_nb``); they are no part of the Python API.
IPYTHON_HOOKS = {"load_ipython_extension", "unload_ipython_extension"}


def _namespace_public_names() -> set[str]:
    """Public names bound in letta_nb's namespace: not ``_``-prefixed, not a submodule, not an IPython hook."""
    return {name for name, obj in vars(letta_nb).items()
            if not name.startswith("_") and not inspect.ismodule(obj) and name not in IPYTHON_HOOKS
            and not isinstance(obj, __future__._Feature)}


def test_all_is_exactly_the_public_names_of_the_namespace() -> None:
    exported = letta_nb.__all__
    assert len(set(exported)) == len(exported), "a name is listed twice in __all__"
    in_namespace = _namespace_public_names()
    assert in_namespace - set(exported) == set(), "public names missing from letta_nb.__all__"
    for name in exported:
        obj = getattr(letta_nb, name)  # the lazy ones too (imported on first use by the module's __getattr__)
        if isinstance(obj, type) or inspect.isfunction(obj):  # (AgentRef is a type alias: a Union)
            assert obj.__module__.startswith("letta_nb"), f"{name} is {obj.__module__}'s, not letta_nb's"
    lazy = set(exported) - _namespace_public_names()  # once asked for, a lazy name is bound in the namespace
    assert lazy == set(), f"names in __all__ that letta_nb neither defines nor imports lazily: {lazy}"
    namespace: dict[str, Any] = {}
    exec("from letta_nb import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(exported)
    assert set(dir(letta_nb)) >= set(exported)  # tab completion offers the lazy names too
    with pytest.raises(AttributeError, match="lsit"):
        letta_nb.lsit  # noqa: B018  (a misspelt name is an AttributeError, not a silent None)
    assert isinstance(letta_nb.__version__, str)


def test_every_error_and_warning_letta_nb_raises_is_exported_and_in_the_family() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert getattr(letta_nb, name, None) is cls, f"letta_nb.errors.{name} is not exported by letta_nb"
        assert issubclass(cls, (errors.LettaNBError, Warning)), name
    for name in letta_nb.__all__:
        obj = getattr(letta_nb, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, errors.LettaNBError), f"{name} is an exception outside the LettaNBError family"


def _client_methods(obj: object, path: str) -> Iterator[tuple[str, Callable[..., Any]]]:
    """Every public method reachable from a client: its own, and those of each resource under it."""
    for name in dir(obj):
        if name.startswith("_"):
            continue
        value = getattr(obj, name)
        if isinstance(value, _Resource):
            yield from _client_methods(value, f"{path}.{name}")
        elif callable(value):
            yield f"{path}.{name}", value


def _public_callables(client: letta_nb.Client) -> list[tuple[str, Callable[..., Any]]]:
    found = list(_client_methods(client, "client"))
    found.append(("letta_nb.connect", letta_nb.connect))
    found += [(f"ChatWidget.{n}", getattr(ChatWidget, n)) for n, v in vars(ChatWidget).items()
              if not n.startswith("_") and callable(v)]
    found += [(f"probes.{n}", getattr(probes, n)) for n in probes.__all__]
    return found


def test_the_walk_reaches_every_resource_and_both_surfaces(client: letta_nb.Client) -> None:
    names = {path for path, _ in _public_callables(client)}
    for expected in ("client.agents.list", "client.agents.alist", "client.agents.messages.acreate",
                     "client.agents.messages.stream", "client.agents.blocks.amodify", "client.agents.files.upload",
                     "client.agents.passages.asearch", "client.agents.tools.attach",
                     "client.tools.aupsert_from_function", "client.query", "client.aquery", "client.close",
                     "ChatWidget.send", "probes.steps", "letta_nb.connect"):
        assert expected in names
    assert len(names) > 70


def test_every_public_method_has_a_docstring(client: letta_nb.Client) -> None:
    undocumented = [path for path, fn in _public_callables(client) if not (inspect.getdoc(fn) or "").strip()]
    assert undocumented == []


def _annotation_namespace() -> dict[str, Any]:
    """What a return annotation may name: letta_nb's exports, builtins, typing, collections.abc, pandas."""
    allowed: dict[str, Any] = {}
    for module in (builtins, typing, collections.abc):
        allowed.update({n: getattr(module, n) for n in dir(module) if not n.startswith("_")})
    allowed.update(pd=pd, pandas=pd)
    allowed.update({n: getattr(letta_nb, n) for n in letta_nb.__all__})
    return allowed


def _exported_class_methods() -> list[tuple[str, Callable[..., Any]]]:
    """The public methods of the classes letta_nb exports (an AgentState's ``block``, a report's ``summary``)."""
    found = []
    for name in letta_nb.__all__:
        cls = getattr(letta_nb, name)
        if isinstance(cls, type) and not issubclass(cls, BaseException):
            found += [(f"{name}.{n}", v) for n, v in vars(cls).items()
                      if not n.startswith("_") and inspect.isfunction(v)]
    return found


def test_every_return_annotation_names_only_exported_types(client: letta_nb.Client) -> None:
    allowed = _annotation_namespace()
    checked = 0
    for path, fn in _public_callables(client) + _exported_class_methods():
        annotation = inspect.signature(fn).return_annotation
        assert annotation is not inspect.Signature.empty, f"{path} has no return annotation"
        if isinstance(annotation, str):  # postponed annotations (from __future__ import annotations)
            try:
                eval(annotation, {"__builtins__": {}}, allowed)
            except NameError as e:
                pytest.fail(f"{path} returns {annotation!r}: {e}; export that type from letta_nb")
        checked += 1
    assert checked > 80


def test_the_types_a_turn_and_an_upload_produce_are_exported(client: letta_nb.Client, tmp_path: Any) -> None:
    """The runtime's own objects, not only the annotations: their classes are letta_nb's exports."""
    exported = {getattr(letta_nb, n) for n in letta_nb.__all__}
    agent = client.agents.create("types")
    assert type(agent) in exported
    events = list(client.agents.messages.stream(agent, "hello"))
    assert {type(e) for e in events} <= exported
    assert all(isinstance(e, letta_nb.StreamEvent) for e in events) and isinstance(events[-1], letta_nb.StopEvent)
    (tmp_path / "note.md").write_text("# Notes\n\nPaging moves memory between tiers.\n")
    report = client.agents.files.upload(agent, tmp_path / "note.md", progress=False)
    assert type(report) in exported and {type(f) for f in report.files} <= exported
    assert {type(f) for f in client.agents.files.list(agent)} <= exported
    assert type(client.tools.retrieve("send_message")) in exported
    assert {type(m) for m in client.agents.messages.list(agent)} <= exported
    assert {type(b) for b in client.agents.blocks.list(agent)} <= exported
