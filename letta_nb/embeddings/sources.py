"""What an upload reads: the files under the paths it was given, and opening each one safely.

A folder is whatever is on disk, and one bad entry must not cost the rest (an upload's report has a row
per file): every entry that cannot be read becomes a row that says why, and the walk goes on.

- **Symlinks.** A symlinked *file* is followed wherever it points (inside the folder or not) and keeps
  its name in the folder. A symlinked *directory* inside a folder is not walked into: it could loop back
  (``sub/self -> ..``) or pull in a whole other tree; it is a ``skipped`` row naming its target, which
  can be uploaded by name. A path named explicitly is resolved (a symlink to a folder is walked).
- **Unreadable entries** are ``error`` rows: a dangling symlink, a symlink loop, permission denied, a
  directory that cannot be listed, a file deleted between the listing and the reading.
- **Never opened:** FIFOs, sockets and devices. Opening a FIFO for reading blocks until a writer comes,
  which would hang the upload; :func:`open_regular` opens without blocking and checks the type on the
  open descriptor, so an entry swapped for a FIFO after the listing cannot hang it either.

This module imports nothing heavy: chunking worker processes use :func:`open_regular`.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from typing import BinaryIO, NamedTuple

from letta_nb.errors import FileIngestError, InvalidArgumentError

__all__ = ["SKIP_DIRS", "Found", "discover", "explain_os_error", "open_regular"]

SKIP_DIRS = frozenset({"__pycache__", "node_modules", ".git", ".hg", ".svn", ".ipynb_checkpoints"})
_ACCEPTS = ("path_or_paths must be a file or directory path (a str or os.PathLike such as pathlib.Path) "
            "or a list of them")


class Found(NamedTuple):
    """One entry of an upload: a file to read, or a row saying why it is not read."""

    path: str
    error: str | None = None  # cannot be uploaded: an ``error`` row
    skipped: str | None = None  # left out on purpose: a ``skipped`` row


def discover(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Found]:
    """The entries of an upload, in order, each path once: named files as given, directories walked
    (sorted; hidden entries and caches skipped) for files of a type chunking knows.
    InvalidArgumentError if ``paths`` is not a path or a list of paths."""
    from letta_nb.embeddings.chunking import KNOWN_SUFFIXES  # chunking imports this module

    out: list[Found] = []
    real_dirs: dict[str, str] = {}
    for raw in _path_list(paths):
        given = os.path.abspath(os.path.expanduser(raw))
        if os.path.islink(given) and not os.path.exists(given):  # dangling or looping: name the link itself
            out.append(Found(given, _unreadable(given)))
            continue
        path = _resolve(given, real_dirs)
        if os.path.isdir(path):
            out += _walk(path, KNOWN_SUFFIXES)
        elif (problem := _unreadable(path)) is not None:
            if problem == _NO_SUCH and not os.path.isabs(os.path.expanduser(raw)):
                problem += f" (relative paths start from the current directory, {os.getcwd()})"
            out.append(Found(path, problem))
        else:
            out.append(Found(path))
    seen: set[str] = set()
    return [f for f in out if not (f.path in seen or seen.add(f.path))]  # type: ignore[func-returns-value]


def open_regular(path: str) -> tuple[BinaryIO, int]:
    """``(binary file, size)`` for a regular file. Opens without blocking (a FIFO would wait for a writer)
    and checks the type of what was opened; FileIngestError saying why otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise FileIngestError(f"cannot read {path}: {explain_os_error(path, e)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileIngestError(f"cannot read {path}: {_not_regular(st.st_mode)}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


# ---- walking ---------------------------------------------------------------------------------------------

_NO_SUCH = "no such file or directory"


def _path_list(paths: object) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    elif isinstance(paths, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(f"{_ACCEPTS}, got {type(paths).__name__}: pass a str (os.fsdecode(path) for "
                                   "a bytes path); to store text you hold in memory use client.agents.passages.create")
    elif not isinstance(paths, Iterable) or isinstance(paths, dict):
        raise InvalidArgumentError(f"{_ACCEPTS}, got {type(paths).__name__} {_short(paths)}")
    out = []
    for i, raw in enumerate(paths):
        text = os.fspath(raw) if isinstance(raw, (str, os.PathLike)) else raw
        if not isinstance(text, str):
            raise InvalidArgumentError(f"{_ACCEPTS}; item {i} is {type(raw).__name__} {_short(raw)}")
        if not text.strip():  # "" would be the current directory: never what was meant
            raise InvalidArgumentError(f"{_ACCEPTS}; item {i} is an empty path: name a file or a directory "
                                       "('.' for the current one)")
        out.append(text)
    return out


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _resolve(path: str, real_dirs: dict[str, str]) -> str:
    """``Path(path).resolve()``, each directory resolved once per upload: a list of many files (what a
    notebook passes after a glob) otherwise pays a symlink walk of every parent for each file."""
    if os.path.islink(path):
        return os.path.realpath(path)
    head, name = os.path.split(path)
    if head not in real_dirs:
        real_dirs[head] = os.path.realpath(head)
    return os.path.join(real_dirs[head], name)


def _walk(top: str, wanted: frozenset[str]) -> list[Found]:
    """Files of a directory, then its subdirectories' (the order of os.walk), with a stack, not
    recursion: a hostile tree may be deeper than Python's recursion limit."""
    out: list[Found] = []
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            out.append(Found(directory, f"cannot list this directory: {explain_os_error(directory, e)}"))
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows a symlink; False if it dangles or loops
            except OSError:
                is_dir = False
            if is_dir and entry.name in SKIP_DIRS:
                continue
            if is_dir and entry.is_symlink():
                out.append(Found(entry.path, skipped=f"a symlink to the directory {os.path.realpath(entry.path)}; "
                                                     "not walked into (it could loop): upload that path by name"))
            elif is_dir:
                subdirs.append(entry.path)
            elif os.path.splitext(entry.name)[1].lower() in wanted:
                out.append(Found(entry.path, _unreadable(entry.path)))
        stack += reversed(subdirs)
    return out


# ---- why an entry cannot be read -------------------------------------------------------------------------


def _unreadable(path: str) -> str | None:
    """None for a regular file (following symlinks), else why it is not one."""
    try:
        st = os.stat(path)
    except OSError as e:
        return explain_os_error(path, e)
    return None if stat.S_ISREG(st.st_mode) else _not_regular(st.st_mode)


def explain_os_error(path: str, e: OSError) -> str:
    """Why ``path`` cannot be read, in words (no errno numbers)."""
    if e.errno == errno.ELOOP:
        return "symlink loop: following its links never reaches a file"
    if e.errno == errno.ENOENT and os.path.islink(path):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"dangling symlink: it points to {target}, which does not exist"
    if e.errno == errno.ENOENT:
        return _NO_SUCH
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno == errno.ENOTDIR:
        return f"{_NO_SUCH} (a part of the path is a file, not a directory)"
    return (e.strerror or str(e)).lower()


def _not_regular(mode: int) -> str:
    kind = ("a directory" if stat.S_ISDIR(mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "not a regular file")
    return f"{kind}, not a regular file; not opened (only regular files are uploaded)"
