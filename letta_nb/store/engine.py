"""Where the store lives and how its engines are made.

``resolve_url`` turns what a user passes to ``letta_nb.connect`` into a SQLAlchemy URL: nothing means
``$LETTA_NB_HOME/letta_nb.db`` (default ``~/.letta_nb``), a path means that SQLite file, ``":memory:"``
means a throw-away file in a temporary directory (a real file, so WAL, several connections and the step
writer behave exactly as they do on disk), and a URL is used as is.

SQLite connections always come from :mod:`letta_nb.store.sqlite_driver` (pysqlite3 where the stdlib
cannot load sqlite-vec) with WAL, ``busy_timeout`` and foreign keys on. SQLAlchemy's "begin" hook
emits BEGIN itself because the driver runs in autocommit mode (see sqlite_driver).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from letta_nb.errors import InvalidArgumentError
from letta_nb.store.sqlite_driver import sqlalchemy_dbapi

__all__ = ["WRITE", "StoreLocation", "resolve_location", "default_home", "make_async_engine"]


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
    text = os.fspath(where)
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
    if path.is_dir():
        path = path / "letta_nb.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return StoreLocation(f"sqlite+aiosqlite:///{path}", str(path))


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
