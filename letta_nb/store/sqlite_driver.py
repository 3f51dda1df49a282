"""Which sqlite3 module opens our database, and how sqlite-vec gets loaded into it.

Many Python builds (pyenv's default, python.org's macOS installer) compile the stdlib ``sqlite3`` without
``enable_load_extension``, so the sqlite-vec extension cannot be loaded through it. We then use
``pysqlite3`` (the ``pysqlite3-binary`` wheel bundles a recent SQLite that can), and fail with a message
that names the fix when neither module can. ``LETTA_NB_SQLITE=stdlib|pysqlite3`` forces a choice.

The chosen module is wrapped for SQLAlchemy's aiosqlite dialect: SQLAlchemy maps driver exceptions by
reading them off the "aiosqlite" module it is given, so when the connections come from pysqlite3 the
module we hand over must expose *pysqlite3's* exception classes, or an IntegrityError would escape as a
raw driver error.
"""

from __future__ import annotations

import contextlib
import functools
import os
import types
from collections.abc import Callable, Iterator
from typing import Any

import aiosqlite

from letta_nb.errors import SQLiteExtensionError

__all__ = ["sqlite_module", "sqlalchemy_dbapi", "connect_raw", "vec_available", "write_transaction"]

_ERROR_NAMES = (
    "Warning",
    "Error",
    "InterfaceError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
)


def _can_load_extensions(module: types.ModuleType) -> bool:
    return hasattr(module.Connection, "enable_load_extension")


@functools.cache
def sqlite_module() -> types.ModuleType:
    """The DB-API module to use: one whose connections can load extensions."""
    forced = os.environ.get("LETTA_NB_SQLITE", "").strip().lower()
    if forced not in ("", "stdlib", "pysqlite3"):
        raise SQLiteExtensionError(f"LETTA_NB_SQLITE={forced!r} is not valid; expected 'stdlib' or 'pysqlite3'.")
    import sqlite3

    if forced != "pysqlite3" and _can_load_extensions(sqlite3):
        return sqlite3
    if forced == "stdlib":
        raise SQLiteExtensionError(
            "LETTA_NB_SQLITE=stdlib, but this Python's sqlite3 was built without enable_load_extension, "
            "so sqlite-vec cannot be loaded. Unset LETTA_NB_SQLITE to fall back to pysqlite3."
        )
    try:
        import pysqlite3.dbapi2 as pysqlite3  # type: ignore[import-not-found]
    except ImportError:
        raise SQLiteExtensionError(
            "This Python's sqlite3 module cannot load extensions (it was built without "
            "enable_load_extension), and pysqlite3 is not installed. Fix: `pip install pysqlite3-binary` "
            "(Linux wheels) or use a Python whose sqlite3 supports extensions (e.g. Homebrew's or conda's)."
        ) from None
    if not _can_load_extensions(pysqlite3):  # pragma: no cover - every pysqlite3 build has it
        raise SQLiteExtensionError("pysqlite3 is installed but cannot load extensions either.")
    return pysqlite3


def _load_vec(conn: Any) -> None:
    import sqlite_vec

    conn.enable_load_extension(True)
    try:
        sqlite_vec.load(conn)
    except Exception as e:  # the driver's OperationalError, whichever module it came from
        raise SQLiteExtensionError(f"sqlite-vec failed to load into SQLite {conn.execute('select sqlite_version()').fetchone()[0]}: {e}") from e
    finally:
        conn.enable_load_extension(False)


def connect_raw(path: str, *, vec: bool = True, busy_timeout_ms: int = 10_000) -> Any:
    """Open a plain DB-API connection with our pragmas (and sqlite-vec). Runs in the caller's thread."""
    module = sqlite_module()
    # isolation_level=None: the driver never opens transactions behind our back; SQLAlchemy's "begin"
    # hook (see engine.py) emits BEGIN itself, which also makes DDL in migrations transactional.
    conn = module.connect(path, check_same_thread=False, timeout=busy_timeout_ms / 1000, isolation_level=None)
    if vec:
        _load_vec(conn)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA foreign_keys = ON")
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode keeps every committed transaction atomic and consistent across a process
        # crash; only a power loss can roll back the last commits. That is the trade Letta users expect.
        conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def vec_available() -> str:
    """sqlite-vec's version as loaded through the chosen module (raises SQLiteExtensionError if it cannot)."""
    conn = connect_raw(":memory:")
    try:
        return conn.execute("select vec_version()").fetchone()[0]
    finally:
        conn.close()


def sqlalchemy_dbapi(path: str, *, busy_timeout_ms: int = 10_000) -> tuple[Any, Callable[[], Any]]:
    """(dbapi module for ``create_async_engine(module=...)``, ``async_creator``) for a SQLite file."""
    from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi

    module = sqlite_module()
    shim = types.ModuleType("letta_nb_aiosqlite")
    for name in _ERROR_NAMES:
        setattr(shim, name, getattr(module, name))
    shim.sqlite_version = module.sqlite_version
    shim.sqlite_version_info = module.sqlite_version_info
    shim.Connection = aiosqlite.Connection
    dbapi = AsyncAdapt_aiosqlite_dbapi(shim, module)

    async def creator() -> aiosqlite.Connection:
        conn = aiosqlite.Connection(functools.partial(connect_raw, path, busy_timeout_ms=busy_timeout_ms), 64)
        conn._thread.daemon = True  # never keep the interpreter alive for an idle pool connection
        return await conn

    return dbapi, creator


@contextlib.contextmanager
def write_transaction(conn: Any) -> Iterator[Any]:
    """A cursor in a ``BEGIN IMMEDIATE`` transaction on a raw connection: committed when the block ends,
    rolled back if it raises. IMMEDIATE takes the write lock up front, so another process waits
    (busy_timeout) instead of failing halfway through."""
    cursor = conn.cursor()
    cursor.execute("BEGIN IMMEDIATE")
    try:
        yield cursor
        cursor.execute("COMMIT")
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    finally:
        cursor.close()

