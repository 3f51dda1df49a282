"""The PostgreSQL backend: everything that speaks asyncpg rather than portable SQLAlchemy.

The async engine (asyncpg under SQLAlchemy) serves the portable reads and administrative writes, exactly
as on SQLite; what lives here are the backend protocols of ``store/backend.py`` on raw asyncpg
connections: the step writer with adaptive group commit (step_writer.py; the statements of a group in
group_commit.py), lease rows locked with ``SELECT ... FOR UPDATE`` (leases.py), uploads with COPY
(file_writer.py), and the vector store whose exact
in-memory copy is fed from PostgreSQL by a per-agent passage sequence allocated in commit order
(vectors.py, schema.py), over pgvector columns with an opt-in HNSW index (pgvector.py).
:func:`open_backend` puts them together for ``Store.open``.

Imports are lazy: the migrations' model (store/migrations.py) takes the column type of pgvector.py while it
is itself being imported, before the modules here that read it (the step writer) can load.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PgBackend", "open_backend"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from letta_nb.store.postgres import backend

        return getattr(backend, name)
    raise AttributeError(name)
