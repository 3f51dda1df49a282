"""Where the store lives and how its engines are made.

``resolve_location`` turns what a user passes to ``letta_nb.connect`` into a SQLAlchemy URL: nothing means
``$LETTA_NB_HOME/letta_nb.db`` (default ``~/.letta_nb``), a path means that SQLite file (a directory: its
``letta_nb.db``), ``":memory:"`` means a throw-away file in a temporary directory (a real file, so WAL,
several connections and the step writer behave exactly as they do on disk), a ``postgresql://`` or
``postgresql+asyncpg://`` URL is a PostgreSQL store on asyncpg (``?host=/socket/dir`` for a unix socket; the
engine's sessions end a transaction left idle for ``IDLE_IN_TRANSACTION_MS``), and a ``sqlite://`` URL is
its file.

:func:`check_store_file` refuses, before anything opens it for writing, a path that cannot be a letta_nb
store: a directory, a missing or non-directory parent, a file that is not SQLite (a text file, a PNG), a
damaged one, or another application's SQLite database (the migrations would add our tables to it). It
reads at most the header and, read-only, the table names; the file's bytes are never changed.

SQLite connections always come from :mod:`letta_nb.store.sqlite.driver` (the stdlib ``sqlite3``
unless ``LETTA_NB_SQLITE=pysqlite3``: one SQLite library per process, see there) with WAL,
``busy_timeout`` and foreign keys on, and without sqlite-vec (only the vector store loads it). SQLAlchemy's
"begin" hook emits BEGIN itself because the driver runs in autocommit mode (see sqlite/driver.py).
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from letta_nb.errors import InvalidArgumentError, StoreError
from letta_nb.store.sqlite.driver import sqlalchemy_dbapi, sqlite_module

__all__ = ["WRITE", "StoreLocation", "resolve_location", "check_store_file", "default_home", "make_async_engine"]

_SQLITE_HEADER = b"SQLite format 3\x00"


def default_home() -> Path:
    """``$LETTA_NB_HOME`` (or the config files' ``home``), default ``~/.letta_nb``: see letta_nb/settings.py."""
    from letta_nb.settings import current

    return current().home


@dataclass(frozen=True)
class StoreLocation:
    url: str
    sqlite_path: str | None  # the file, for SQLite stores
    temporary: tempfile.TemporaryDirectory[str] | None = None

    @property
    def display(self) -> str:
        if self.temporary is not None:
            return ":memory: (temporary file)"
        return self.sqlite_path or sa.make_url(self.url).render_as_string(hide_password=True)


def resolve_location(where: str | os.PathLike[str] | None) -> StoreLocation:
    if where is None:
        home = default_home()
        home.mkdir(parents=True, exist_ok=True)
        path = str(home / "letta_nb.db")
        return StoreLocation(f"sqlite+aiosqlite:///{path}", path)
    text = os.fspath(where) if isinstance(where, (str, os.PathLike)) else None
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgumentError(f"store location must be a path, ':memory:' or a database URL, got {where!r}")
    if text == ":memory:":
        tmp = tempfile.TemporaryDirectory(prefix="letta_nb_")
        path = os.path.join(tmp.name, "letta_nb.db")
        return StoreLocation(f"sqlite+aiosqlite:///{path}", path, tmp)
    if "://" in text:
        try:
            url = sa.make_url(text)
        except sa.exc.ArgumentError:
            raise InvalidArgumentError("store URL could not be parsed; expected e.g. 'postgresql://user@host/db' "
                                       "or 'sqlite:///path/letta_nb.db'") from None
        if url.get_backend_name() == "postgresql":
            return _postgres_location(url)
        if url.get_backend_name() != "sqlite":
            raise InvalidArgumentError(
                f"store URL {url.render_as_string(hide_password=True)!r}: letta_nb stores are SQLite files or "
                "PostgreSQL databases. Pass a file path, ':memory:', or 'postgresql://user@host/db'."
            )
        database = url.database
        if not database or database == ":memory:":
            return resolve_location(":memory:")
        return resolve_location(database)
    file = Path(text).expanduser()
    try:
        if file.is_dir():
            file = file / "letta_nb.db"
    except OSError as e:  # e.g. a name longer than the filesystem allows
        raise StoreError(f"store path {text!r} cannot be used: {e.strerror}. Pass a shorter or valid path.") from None
    return StoreLocation(f"sqlite+aiosqlite:///{file}", str(file))


def _postgres_location(url: sa.URL) -> StoreLocation:
    """``postgresql://``, ``postgresql+asyncpg://`` (any other driver is refused: the backend speaks asyncpg)."""
    if url.drivername not in ("postgresql", "postgresql+asyncpg"):
        raise InvalidArgumentError(
            f"store URL driver {url.drivername!r}: the PostgreSQL store runs on asyncpg. Write the URL as "
            "'postgresql://...' or 'postgresql+asyncpg://...'.")
    if not url.database:
        raise InvalidArgumentError(f"store URL {url.render_as_string(hide_password=True)!r} names no database; "
                                   "add it, e.g. 'postgresql://user@host/letta'.")
    return StoreLocation(url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False), None)


def check_store_file(path: str) -> None:
    """StoreError (naming the path, the problem and the fix) if ``path`` cannot be opened as a letta_nb
    store; nothing at all for a new file. Never writes the file (see the module docstring)."""
    where = Path(path)
    try:
        is_dir, parent_is_dir = where.is_dir(), where.parent.is_dir()
    except OSError as e:  # e.g. a name longer than the filesystem allows
        raise StoreError(f"store path {path!r} cannot be used: {e.strerror}. Pass a shorter or valid path.") from None
    if is_dir:
        raise StoreError(f"store path {path!r} is a directory, not a database file. Pass a file path, e.g. "
                         f"{str(where / 'store.db')!r}.")
    parent = where.parent
    if not parent_is_dir:
        problem = "is not a directory" if parent.exists() else "does not exist"
        raise StoreError(f"store path {path!r}: its folder {str(parent)!r} {problem}. Create the folder first "
                         "(os.makedirs(folder)) or fix the path.")
    try:
        with open(where, "rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        return  # a new store
    except OSError as e:
        raise StoreError(f"store path {path!r} cannot be read ({e.strerror}). Check its permissions, or pass "
                         "another path.") from None
    if not header:
        return  # an empty file: SQLite makes it a new database
    if header != _SQLITE_HEADER:
        raise StoreError(f"{path!r} is not a SQLite database (it does not start with SQLite's header), so it "
                         "cannot be a letta_nb store; letta_nb left it untouched. Pass the path of a letta_nb "
                         "store, or of a file that does not exist yet to create one.")
    tables = _table_names(path)
    if tables and "schema_migrations" not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreError(f"{path!r} is a SQLite database but not a letta_nb store (its tables: {shown}); "
                         "letta_nb will not add its tables to another application's database and left it "
                         "untouched. Pass another path (a new file is created).")


def _table_names(path: str) -> set[str]:
    """The file's table names, read on a read-only connection of the runtime's sqlite3 module."""
    module = sqlite_module()
    conn = None
    try:
        conn = module.connect(f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro", uri=True)
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except module.DatabaseError as e:
        if not isinstance(e, module.OperationalError):  # "file is not a database", "... malformed"
            raise StoreError(f"{path!r} is a damaged SQLite database ({e}); letta_nb left it untouched. Restore "
                             "a backup, or try `sqlite3 FILE .recover` into a new file.") from None
        return set()  # busy, locked, needs recovery: the real open decides (and says why)
    finally:
        if conn is not None:
            conn.close()


WRITE = {"letta_nb_write": True}
"""Execution options of a write transaction: it begins IMMEDIATE, taking SQLite's write lock up front, so
a concurrent writer in another process waits (busy_timeout) instead of failing on lock upgrade."""


def _emit_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("letta_nb_write") else "BEGIN")


IDLE_IN_TRANSACTION_MS = 60_000
"""PostgreSQL ends a session left idle inside a transaction this long (a cancelled task that never rolled
back, a paused kernel): its locks must not outlive it."""


def make_async_engine(location: StoreLocation, *, pool_size: int = 5, max_overflow: int = 10) -> AsyncEngine:
    if location.sqlite_path is None:  # PostgreSQL on asyncpg
        return create_async_engine(
            location.url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=False,
            connect_args={"server_settings": {
                "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS),
                "application_name": "letta_nb"}},
        )
    dbapi, creator = sqlalchemy_dbapi(location.sqlite_path)
    engine = create_async_engine(
        location.url,
        module=dbapi,
        async_creator=creator,
        pool_size=pool_size,
        max_overflow=max_overflow,
    )
    sa.event.listen(engine.sync_engine, "begin", _emit_begin)
    return engine
