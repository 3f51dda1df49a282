"""The ``%letta`` subcommand registry: each subcommand is a function with its own ``magic_arguments`` parser.

A subcommand module declares ``@command("memory set", "...")`` above IPython's ``@magic_arguments`` and
``@argument`` decorators; the parser's help becomes part of ``%letta?``. Subcommands receive the parsed
arguments, the notebook session and the shell, and *return* what the cell should display (a DataFrame, a
display object, a widget) instead of printing. Bad input raises ``UsageError`` from the parser or from
:func:`dispatch`, which also turns every :class:`~letta_nb.errors.LettaNBError` into a ``UsageError``
(a message, no traceback).
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from IPython.core.error import UsageError
from IPython.utils.process import arg_split

from letta_nb.errors import LettaNBError

__all__ = ["COMMANDS", "Command", "command", "dispatch", "help_text", "parse"]


class Parsed(Protocol):
    """A subcommand function as ``@magic_arguments`` leaves it: it carries its argparse parser."""

    parser: argparse.ArgumentParser

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    func: Parsed

    @property
    def help(self) -> str:
        return self.func.__doc__ or ""


COMMANDS: dict[str, Command] = {}
# The order %letta? lists them in: the life of an agent first, introspection last.
_ORDER = ("agents", "create", "use", "delete", "memory", "memory set", "archival insert", "archival search", "load",
          "tools", "tool add", "chat", "stats", "context", "compact", "reset", "sql", "models", "config", "serve")


def _ordered() -> list[Command]:
    return sorted(COMMANDS.values(), key=lambda c: _ORDER.index(c.name) if c.name in _ORDER else len(_ORDER))


def command(name: str, summary: str) -> Callable[[F], F]:
    """Register a subcommand (``name`` may be two words, e.g. ``"archival search"``)."""

    def register(func: F) -> F:
        if not hasattr(func, "parser"):
            raise TypeError(f"%letta {name}: put @command above @magic_arguments")
        COMMANDS[name] = Command(name, summary, func)
        return func

    return register


def _split(line: str) -> tuple[Command, str]:
    words = line.strip().split(None, 2)
    if not words:
        raise UsageError(f"%letta needs a subcommand, one of: {_names()}. See %letta? for each one's options.")
    if len(words) >= 2 and f"{words[0]} {words[1]}" in COMMANDS:
        return COMMANDS[f"{words[0]} {words[1]}"], words[2] if len(words) == 3 else ""
    if words[0] in COMMANDS:
        return COMMANDS[words[0]], line.strip()[len(words[0]):]
    group = [n for n in COMMANDS if n.startswith(words[0] + " ")]
    if group:  # "archival" alone, or "archival frobnicate"
        got = f" {words[1]!r}" if len(words) > 1 else ""
        raise UsageError(f"%letta {words[0]} needs one of: {', '.join(n.split()[1] for n in group)}; "
                         f"got{got or ' nothing'}.")
    close = difflib.get_close_matches(words[0], {n.split()[0] for n in COMMANDS}, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UsageError(f"Unknown %letta subcommand {words[0]!r}.{hint} Subcommands: {_names()}.")


def _names() -> str:
    return ", ".join(dict.fromkeys(c.name.split()[0] for c in _ordered()))


def dispatch(line: str, session: Any, shell: Any) -> Any:
    cmd, rest = _split(line)
    try:
        # A subcommand marked raw_line (``sql``) takes the rest of the line verbatim: shell-style
        # parsing would strip the quotes out of SQL string literals.
        args = argparse.Namespace(line=rest.strip()) if getattr(cmd.func, "raw_line", False) else parse(cmd.func, rest)
    except UsageError as e:  # argparse says what is wrong; add which subcommand and its usage
        usage = cmd.func.parser.format_usage().replace("::", "").split()
        raise UsageError(f"%letta {cmd.name}: {e}. Usage: {' '.join(usage)}") from None
    try:
        return cmd.func(args, session, shell)
    except LettaNBError as e:
        raise UsageError(str(e)) from None


def parse(func: Parsed, argstring: str) -> Any:
    """Parse like a shell: quotes group words and are removed (IPython's own ``parse_argstring`` keeps them)."""
    try:
        argv = arg_split(argstring, posix=True)
    except ValueError as e:  # an unclosed quote
        raise UsageError(f"{e} in {argstring.strip()!r}; close the quote or escape it with a backslash.") from None
    return func.parser.parse_args(argv)


def help_text() -> str:
    """The ``%letta`` docstring: a summary table, then every subcommand's full usage."""
    width = max(len(n) for n in COMMANDS) + 2
    table = "\n".join(f"  %letta {c.name:<{width}}{c.summary}" for c in _ordered())
    details = "\n".join(c.help.rstrip() + "\n" for c in _ordered())
    return f"Talk to and inspect letta_nb agents.\n\nSubcommands:\n{table}\n\n{details}"
