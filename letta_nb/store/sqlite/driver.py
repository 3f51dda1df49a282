"""Which sqlite3 module opens our database, and whether sqlite-vec can be loaded into it.

Invariant: one SQLite library per process on a store file. The runtime uses the stdlib ``sqlite3``
module, always, unless the user opts in with ``LETTA_NB_SQLITE=pysqlite3``. Why: POSIX locks belong to
the process, and closing any descriptor of a file drops all of the process's locks on it; SQLite works
around that inside one library, but not across two (sqlite.org/howtocorrupt.html 2.2.1). When letta_nb
ran on pysqlite3 (a second SQLite) wherever the stdlib could not load extensions, a user peeking with
``pd.read_sql(..., sqlite3.connect(path))`` while a client was open lost data: measured, the next upload
failed with "disk I/O error", 8 of 33 messages vanished on close, and after four peeks the file was
"database disk image is malformed". ``LETTA_NB_SQLITE=pysqlite3`` is therefore an explicit, documented
trade: vec0 on a Python whose sqlite3 cannot load extensions, unsafe if anything else in the process
opens the store with the stdlib module. pysqlite3 is imported only then.

sqlite-vec is an accelerator, not a requirement: :func:`vec_version` says whether it loads through the
chosen module (many Python builds, pyenv's and python.org's macOS installer among them, compile the
stdlib ``sqlite3`` without ``enable_load_extension``). Without it, vectors stay in ``passages.embedding``
and are searched exactly in numpy (see vectors.py). Only the vector store's own connection loads it;
nothing else in the schema needs the module (no trigger writes a vec0 table).

The chosen module is wrapped for SQLAlchemy's aiosqlite dialect: SQLAlchemy maps driver exceptions by
reading them off the "aiosqlite" module it is given, so that module must expose the *chosen* module's
exception classes, or an IntegrityError from pysqlite3 would escape as a raw driver error.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Callable, Iterator
from typing import Any

import aiosqlite

from letta_nb.errors import SQLiteExtensionError

__all__ = ["sqlite_module", "sqlalchemy_dbapi", "connect_raw", "vec_version", "vec_unavailable_reason",
           "write_transaction"]

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


@functools.cache
def sqlite_module() -> types.ModuleType:
    """The DB-API module every connection of this process uses: the stdlib ``sqlite3`` unless
    ``LETTA_NB_SQLITE=pysqlite3`` (see the module docstring for why that is opt-in only)."""
    from letta_nb.settings import current

    # The ``sqlite`` setting; a bad value raises a SettingError that is also a SQLiteExtensionError.
    if current().sqlite != "pysqlite3":
        import sqlite3

        return sqlite3
    try:
        import pysqlite3.dbapi2 as pysqlite3
    except ImportError:
        raise SQLiteExtensionError(
            "LETTA_NB_SQLITE=pysqlite3, but pysqlite3 is not installed. Fix: `pip install 'letta-nb[vec0]'` "
            "(the pysqlite3-binary wheel, Linux), or unset LETTA_NB_SQLITE: the stdlib sqlite3 works everywhere "
            "and archival search then runs exactly in numpy."
        ) from None
    module: types.ModuleType = pysqlite3
    return module


def _load_vec(conn: Any) -> None:
    import sqlite_vec

    conn.enable_load_extension(True)
    try:
        sqlite_vec.load(conn)
    finally:
        conn.enable_load_extension(False)


@functools.cache
def _vec_probe(module: types.ModuleType) -> tuple[str | None, str]:
    """(sqlite-vec's version or None, why not), found once per module on a ``:memory:`` connection."""
    if not hasattr(module.Connection, "enable_load_extension"):
        return None, (f"this Python's {module.__name__} module was built without enable_load_extension; "
                      "archival search runs exactly in numpy instead")
    conn = module.connect(":memory:")
    try:
        _load_vec(conn)
        return conn.execute("select vec_version()").fetchone()[0], ""
    except Exception as e:  # ImportError, or the driver's OperationalError, whichever module it came from
        return None, f"sqlite-vec did not load into SQLite {module.sqlite_version}: {e}"
    finally:
        conn.close()


def vec_version() -> str | None:
    """sqlite-vec's version when it loads through :func:`sqlite_module`, else None."""
    return _vec_probe(sqlite_module())[0]


def vec_unavailable_reason() -> str:
    """Why :func:`vec_version` is None (empty when sqlite-vec is available)."""
    return _vec_probe(sqlite_module())[1]


def connect_raw(path: str, *, vec: bool = False, busy_timeout_ms: int = 10_000) -> Any:
    """Open a plain DB-API connection with our pragmas (and sqlite-vec when ``vec``). Runs in the caller's
    thread. ``vec=True`` where sqlite-vec cannot load is a :class:`SQLiteExtensionError` (check
    :func:`vec_version` first)."""
    module = sqlite_module()
    if vec and vec_version() is None:
        raise SQLiteExtensionError(f"sqlite-vec is not available: {vec_unavailable_reason()}.")
    # isolation_level=None: the driver never opens transactions behind our back; SQLAlchemy's "begin"
    # hook (see engine.py) emits BEGIN itself, which also makes DDL in migrations transactional.
    conn = module.connect(path, check_same_thread=False, timeout=busy_timeout_ms / 1000, isolation_level=None)
    try:
        if vec:
            _load_vec(conn)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys = ON")
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode keeps every committed transaction atomic and consistent across a process
            # crash; only a power loss can roll back the last commits. That is the trade Letta users expect.
            conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def sqlalchemy_dbapi(path: str, *, busy_timeout_ms: int = 10_000) -> tuple[Any, Callable[[], Any]]:
    """(dbapi module for ``create_async_engine(module=...)``, ``async_creator``) for a SQLite file."""
    from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi

    module = sqlite_module()
    shim = types.ModuleType("letta_nb_aiosqlite")
    for name in _ERROR_NAMES:
        setattr(shim, name, getattr(module, name))
    # setattr: a ModuleType has no such attributes to a type checker; this shim is built to carry them
    shim.__dict__.update(sqlite_version=module.sqlite_version, sqlite_version_info=module.sqlite_version_info,
                         Connection=aiosqlite.Connection)
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
