"""PostgreSQL-only schema: the per-agent passage sequence the in-memory vector copy refreshes by.

The copy of an agent's vectors (store/vector_cache.py) appends the rows committed since it was read, so it
needs an order in which rows become visible. A serial (or ``rowid``-like) column is not that order on
PostgreSQL: ids are drawn at insert time and commit in any order, so a reader can see 7 before 6 commits
and never look back. Here every passage insert bumps its agent's row in ``passage_versions`` (``inserts``)
from a trigger and takes the new value as ``passages.pseq``; the bumped row stays locked until commit, so
one agent's ``pseq`` values are handed out and committed in the same order, and "rows with ``pseq`` above
the last one I saw" misses nothing. Deletes bump ``deletes`` (the copy then reloads), exactly like SQLite's
trigger-bumped counters (sqlite/vectors.py).

The lease functions (postgres/leases.py ``DDL``: a grant in one round trip) are made with them.

Made by :func:`ensure` when a store opens, after the migrations and under the same advisory lock
(migrations.py), with ``IF NOT EXISTS`` / ``OR REPLACE``: idempotent, and no migration for SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa

from letta_nb.store.migrations import lock_migrations
from letta_nb.store.postgres import leases

__all__ = ["ensure"]

_DDL = (
    "CREATE TABLE IF NOT EXISTS passage_versions (agent_id varchar(64) PRIMARY KEY "
    "REFERENCES agents (id) ON DELETE CASCADE, inserts bigint NOT NULL, deletes bigint NOT NULL)",
    "ALTER TABLE passages ADD COLUMN IF NOT EXISTS pseq bigint",
    "CREATE INDEX IF NOT EXISTS ix_passages_agent_pseq ON passages (agent_id, pseq)",
    """CREATE OR REPLACE FUNCTION letta_nb_passage_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO passage_versions AS v (agent_id, inserts, deletes) VALUES (NEW.agent_id, 1, 0)
  ON CONFLICT (agent_id) DO UPDATE SET inserts = v.inserts + 1 RETURNING v.inserts INTO NEW.pseq;
  RETURN NEW;
END $$""",
    """CREATE OR REPLACE FUNCTION letta_nb_passage_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE passage_versions SET deletes = deletes + 1 WHERE agent_id = OLD.agent_id;
  RETURN NULL;
END $$""",
    "CREATE OR REPLACE TRIGGER passages_seq BEFORE INSERT ON passages FOR EACH ROW "
    "EXECUTE FUNCTION letta_nb_passage_inserted()",
    "CREATE OR REPLACE TRIGGER passages_deleted AFTER DELETE ON passages FOR EACH ROW "
    "EXECUTE FUNCTION letta_nb_passage_deleted()",
)


def ensure(conn: sa.Connection) -> None:
    """Create (or keep) the PostgreSQL-only objects; ``conn`` is a sync connection of the store's engine."""
    lock_migrations(conn)
    for statement in (*_DDL, *leases.DDL):
        conn.exec_driver_sql(statement)
    conn.commit()
