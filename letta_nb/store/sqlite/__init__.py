"""The SQLite backend: everything that speaks SQLite rather than portable SQLAlchemy.

Here live the driver choice and pragmas (driver.py), the raw DB-API writers that the hot paths need
(step_writer.py: group commit with ``BEGIN IMMEDIATE``; file_writer.py: one ``json_each`` insert a file),
the WAL checkpointer, the lease rows (leases.py), the vector store over ``passages.embedding`` with its
triggers, ``rowid`` bookkeeping and sqlite-vec (vectors.py), the read-only query connection and the
network-filesystem check. The rest of ``letta_nb.store`` (reads, migrations, the :class:`Store` facade)
stays portable; what the runtime may rely on from a backend is spelled out in ``store/backend.py``.
"""
