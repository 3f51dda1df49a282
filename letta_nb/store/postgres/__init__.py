"""The PostgreSQL backend: everything that speaks asyncpg rather than portable SQLAlchemy.

The async engine (asyncpg under SQLAlchemy) serves the portable reads and administrative writes, exactly
as on SQLite; what lives here are the backend protocols of ``store/backend.py`` on raw asyncpg
connections: the step writer with adaptive group commit (step_writer.py), lease rows locked with
``SELECT ... FOR UPDATE`` (leases.py), uploads with COPY (file_writer.py), and the vector store whose exact
in-memory copy is fed from PostgreSQL by a per-agent passage sequence allocated in commit order
(vectors.py, schema.py). :func:`open_backend` puts them together for ``Store.open``.
"""

from letta_nb.store.postgres.backend import PgBackend, open_backend

__all__ = ["PgBackend", "open_backend"]
