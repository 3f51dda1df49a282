"""Which store a benchmark runs on: ``--backend sqlite|postgres`` and ``--redis`` (``python -m letta_nb.bench``).

SQLite is a file in the benchmark's temporary directory. PostgreSQL is a throw-away server with pgvector
(letta_nb/testing/pgserver.py) started once per run, a fresh database per store copied from a migrated
template (so no benchmark times the migrations); ``--redis`` adds a throw-away Redis
(letta_nb/testing/redisserver.py) and every client of the run coordinates through it. Both servers run
with durability off (a test server's data is thrown away): PostgreSQL numbers are the runtime's overhead
over the server, not the disk's ``fsync``; each benchmark's baseline runs on the same server.
"""

from __future__ import annotations

import os
from typing import Any

from letta_nb.errors import InvalidArgumentError

__all__ = ["BACKENDS", "BenchBackend"]

BACKENDS = ("sqlite", "postgres")


class BenchBackend:
    """Stores (and a Redis URL) for one benchmark run; a context manager that starts and stops the servers."""

    def __init__(self, name: str = "sqlite", *, redis: bool = False):
        if name not in BACKENDS:
            raise InvalidArgumentError(f"--backend {name!r}: expected one of {', '.join(BACKENDS)}")
        if redis and name != "postgres":
            raise InvalidArgumentError("--redis coordinates kernels of a PostgreSQL store: add --backend postgres")
        self.name, self.redis = name, redis
        self._pg: Any = None
        self._template: str | None = None
        self._redis: Any = None
        self._databases: list[str] = []

    @property
    def label(self) -> str:
        return self.name + ("+redis" if self.redis else "")

    def __enter__(self) -> BenchBackend:
        try:
            if self.name == "postgres":
                from letta_nb.testing.pgserver import PgServer

                self._pg = PgServer().start()
                self._template = self._pg.migrated_template()
            if self.redis:
                from letta_nb.testing.redisserver import RedisServer

                self._redis = RedisServer().start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        if self._pg is not None:
            self._pg.stop()
            self._pg = None

    def store(self, tmp_dir: str, tag: str) -> str:
        """A fresh, empty store: a SQLite file ``tag.db`` in ``tmp_dir``, or a new PostgreSQL database's URL."""
        if self.name == "sqlite":
            return os.path.join(tmp_dir, f"{tag}.db")
        if self._pg is None:
            raise RuntimeError("BenchBackend.store() outside `with BenchBackend(...)`: the server is not running")
        name = self._pg.create_database(self._template, prefix=f"bench_{tag}"[:40])
        self._databases.append(name)
        return str(self._pg.url(name))

    def dsn(self, url: str) -> str:
        """asyncpg's DSN for a store URL of :meth:`store` (baselines talk to the server directly)."""
        return url.replace("postgresql+asyncpg://", "postgresql://", 1)

    @property
    def redis_url(self) -> str | None:
        return None if self._redis is None else str(self._redis.url)

    def connect(self, url: str, **kwargs: Any) -> Any:
        """``letta_nb.connect`` on a store of this backend (through Redis with ``--redis``)."""
        import letta_nb

        return letta_nb.connect(url, redis_url=self.redis_url, **kwargs)
