"""Where the store lives and how its engines are made.

``resolve_location`` turns what a user passes to ``letta_nb.connect`` into a SQLAlchemy URL: nothing means
``$LETTA_NB_HOME/letta_nb.db`` (default ``~/.letta_nb``), a path means that SQLite file (a directory: its
``letta_nb.db``), ``":memory:"`` means a throw-away file in a temporary directory (a real file, so WAL,
several connections and the step writer behave exactly as they do on disk), and a URL is used as is.

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
    return Path(os.environ.get("LETTA_NB_HOME") or Path.home() / ".letta_nb").expanduser()


@dataclass(frozen=True)
class StoreLocation:
    url: str
    sqlite_path: str | None  # the file, for SQLite stores
    temporary: tempfile.TemporaryDirectory | None = None

    @property
    def display(self) -> str:
        if self.temporary is not None:
            return ":memory: (temporary file)"
        return self.sqlite_path or sa.make_url(self.url).render_as_string(hide_password=True)


def resolve_location(where: str | os.PathLike | None) -> StoreLocation:
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
        url = sa.make_url(text)
        if url.get_backend_name() != "sqlite":
            raise InvalidArgumentError(
                f"store URL {url.render_as_string(hide_password=True)!r}: only SQLite stores are supported "
                "in this version (PostgreSQL + pgvector is planned). Pass a file path or ':memory:'."
            )
        path = url.database
        if not path or path == ":memory:":
            return resolve_location(":memory:")
        return resolve_location(path)
    path = Path(text).expanduser()
    try:
        if path.is_dir():
            path = path / "letta_nb.db"
    except OSError as e:  # e.g. a name longer than the filesystem allows
        raise StoreError(f"store path {text!r} cannot be used: {e.strerror}. Pass a shorter or valid path.") from None
    return StoreLocation(f"sqlite+aiosqlite:///{path}", str(path))


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


def make_async_engine(location: StoreLocation, *, pool_size: int = 5, max_overflow: int = 10) -> AsyncEngine:
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
