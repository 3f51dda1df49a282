"""Named, append-only schema migrations: the one definition of the schema.

Letta users lost data to schema drift, so the schema is never declared twice. Each migration is a
function that calls a few operations (create a table, add a column, create an index) on a
:class:`_Ops` object. Replaying every migration against an empty ``MetaData`` yields the *current*
tables that the queries use (:data:`METADATA`); replaying the ones a store lacks against its
connection upgrades it. A store records each applied migration in ``schema_migrations``; opening a
store written by a newer letta_nb is refused rather than guessed at.

Rules: never edit or reorder a released migration, only append; only portable SQL (SQLAlchemy types,
no SQLite-only DDL), so the same list drives PostgreSQL.

Both dialects: :class:`_Ops` makes the types dialect-aware in one place (a ``sa.JSON`` column is JSONB on
PostgreSQL; ``LargeBinary`` is bytea and ``DateTime(timezone=True)`` timestamptz by SQLAlchemy's own
mapping); SQLite serialises migrators with ``BEGIN IMMEDIATE`` (engine.WRITE), PostgreSQL with
``pg_advisory_xact_lock`` taken first in each migration's transaction (:func:`lock_migrations`). Objects only
one backend has (SQLite's vector tables and triggers, PostgreSQL's passage sequence) are made by that
backend when it opens, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.schema import CreateColumn

from letta_nb.errors import SchemaVersionError
from letta_nb.store.ids import utcnow

__all__ = ["MIGRATIONS", "METADATA", "SCHEMA_VERSION", "migrate", "applied_versions", "lock_migrations"]


_JSON = sa.JSON().with_variant(JSONB(), "postgresql")  # JSONB: indexable, compared by value, no reparse


def _dialect_aware(item: Any) -> Any:
    """A column with dialect-aware types (the one place a portable type gets a dialect's better one)."""
    if isinstance(item, sa.Column) and type(item.type) is sa.JSON:
        item.type = _JSON
    return item


class _Ops:
    """Operations a migration may use; each updates the model and (when bound) the database."""

    def __init__(self, metadata: sa.MetaData, conn: sa.Connection | None):
        self.metadata = metadata
        self.conn = conn

    def create_table(self, name: str, *items: Any) -> None:
        table = sa.Table(name, self.metadata, *(_dialect_aware(i) for i in items))
        if self.conn is not None:
            table.create(self.conn)

    def add_column(self, table_name: str, column: sa.Column[Any]) -> None:
        table = self.metadata.tables[table_name]
        table.append_column(_dialect_aware(column))
        if self.conn is not None:
            ddl = CreateColumn(column).compile(dialect=self.conn.dialect)
            self.conn.exec_driver_sql(f"ALTER TABLE {table_name} ADD COLUMN {ddl}")

    def create_index(self, name: str, table_name: str, *columns: str, unique: bool = False) -> None:
        table = self.metadata.tables[table_name]
        index = sa.Index(name, *(table.c[c] for c in columns), unique=unique)
        if self.conn is not None:
            index.create(self.conn)

    def dialect_sql(self, statements: dict[str, tuple[str, ...]]) -> None:
        """Run the statements of the connection's dialect (objects only one backend has, such as a full-text
        index, outside the portable model: the queries that use them are that backend's own)."""
        if self.conn is not None:
            for statement in statements.get(self.conn.dialect.name, ()):
                self.conn.exec_driver_sql(statement)


def _fk_agent() -> sa.Column[Any]:
    return sa.Column("agent_id", sa.String(64), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False)


def m0001_core(op: _Ops) -> None:
    """Agents, their core-memory blocks, recall messages and tools."""
    op.create_table(
        "agents",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("embedding", sa.String(200), nullable=False),
        sa.Column("system", sa.Text, nullable=False),
        sa.Column("max_steps", sa.Integer, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "blocks",
        sa.Column("id", sa.String(64), primary_key=True),
        _fk_agent(),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("char_limit", sa.Integer, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("read_only", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("agent_id", "label", name="uq_blocks_agent_label"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.String(64), primary_key=True),
        _fk_agent(),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("step_id", sa.String(64), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=True),
        sa.Column("tool_calls", sa.JSON, nullable=True),
        sa.Column("tool_call_id", sa.String(64), nullable=True),
        sa.Column("name", sa.String(100), nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # The hot query is "messages of one agent in order"; this unique index serves it and makes a
        # second writer that lost the per-agent lock fail loudly instead of interleaving.
        sa.UniqueConstraint("agent_id", "seq", name="uq_messages_agent_seq"),
    )
    op.create_table(
        "tools",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("json_schema", sa.JSON, nullable=False),
        sa.Column("source", sa.Text, nullable=True),
        sa.Column("parallel_safe", sa.Boolean, nullable=False),
        sa.Column("sandbox", sa.Boolean, nullable=False),
        sa.Column("timeout", sa.Float, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "agent_tools",
        sa.Column("agent_id", sa.String(64), sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tool_name", sa.String(64), primary_key=True),
    )


def m0002_archival_steps_context(op: _Ops) -> None:
    """Archival passages, per-step metrics, and the context-window window (start + summary) per agent."""
    op.create_table(
        "passages",
        sa.Column("id", sa.String(64), primary_key=True),
        _fk_agent(),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=True),
        sa.Column("embedding_model", sa.String(200), nullable=True),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_passages_agent_created", "passages", "agent_id", "created_at")
    op.create_table(
        "steps",
        sa.Column("id", sa.String(64), primary_key=True),
        _fk_agent(),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("n_messages", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("llm_ms", sa.Float, nullable=False),
        sa.Column("tools_ms", sa.Float, nullable=False),
        sa.Column("total_ms", sa.Float, nullable=False),
        sa.Column("stop_reason", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_steps_agent_created", "steps", "agent_id", "created_at")
    op.add_column("agents", sa.Column("context_start_seq", sa.Integer, nullable=False, server_default="0"))
    op.add_column("agents", sa.Column("context_summary", sa.Text, nullable=True))


def m0003_files(op: _Ops) -> None:
    """Uploaded files per agent (content hash for idempotent re-uploads) and the passages cut from them."""
    op.create_table(
        "files",
        sa.Column("id", sa.String(64), primary_key=True),
        _fk_agent(),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("chunks", sa.Integer, nullable=False),
        # Splitter, chunk size/overlap and embedder: re-uploading with other settings replaces the file.
        sa.Column("chunking", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("agent_id", "path", name="uq_files_agent_path"),
    )
    op.add_column("passages", sa.Column("file_id", sa.String(64), nullable=True))
    op.create_index("ix_passages_file", "passages", "file_id")


def m0004_signatures_isolation(op: _Ops) -> None:
    """Whose rows are these (runtime/trust.py): this user's HMAC of an agent's model/embedding specs and of
    a tool's content; a tool's isolation as a mode (``"off"``, ``"on"``, ``"strict"``) and whether its
    sandbox may use the network. Rows written before have no signature: they count as someone else's."""
    op.add_column("agents", sa.Column("signature", sa.String(64), nullable=True))
    op.add_column("tools", sa.Column("signature", sa.String(64), nullable=True))
    op.add_column("tools", sa.Column("sandbox_mode", sa.String(16), nullable=True))
    op.add_column("tools", sa.Column("network", sa.Boolean, nullable=False, server_default=sa.false()))


def m0005_leases(op: _Ops) -> None:
    """Many processes, one store (runtime/leases.py): a lease row per agent whose ``token`` only grows (the
    fencing token every step commit checks), a queue of waiting processes in arrival order, the agent's
    ``version`` (bumped by every change that is not a step: blocks, tools, settings) and counters of
    store-wide changes (``tools_version``) that tell other processes their caches are stale."""
    op.add_column("agents", sa.Column("version", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "agent_leases",
        sa.Column("agent_id", sa.String(64), sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("token", sa.Integer, nullable=False),
        sa.Column("holder", sa.String(200), nullable=True),  # NULL: free
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("host", sa.String(200), nullable=True),
        sa.Column("since", sa.Float, nullable=True),  # epoch seconds
        sa.Column("expires_at", sa.Float, nullable=True),
    )
    op.create_table(
        "lease_waiters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),  # arrival order
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),  # a waiter that stops polling drops out
    )
    op.create_index("ix_lease_waiters_agent", "lease_waiters", "agent_id", "id")
    op.create_table(
        "store_counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )


def m0006_agent_type_rules_tags(op: _Ops) -> None:
    """Letta compatibility: the agent's loop type (``memgpt_agent`` replies through send_message,
    ``letta_v1_agent`` with its own text), its tool rules (Letta's JSON shapes, runtime/tool_rules.py) and
    its tags (``agents.list(tags=...)``)."""
    op.add_column("agents", sa.Column("agent_type", sa.String(32), nullable=False, server_default="memgpt_agent"))
    op.add_column("agents", sa.Column("tool_rules", sa.JSON, nullable=False, server_default="[]"))
    op.add_column("agents", sa.Column("tags", sa.JSON, nullable=False, server_default="[]"))


def m0007_approvals(op: _Ops) -> None:
    """Human approval of tool calls (runtime/approvals.py): a tool registered with ``requires_approval`` asks
    a person before each call. A waiting call needs no table: it is the agent's last assistant message, kept
    with status ``approval``, whose call has no tool message yet."""
    op.add_column("tools", sa.Column("requires_approval", sa.Boolean, nullable=False, server_default=sa.false()))


def m0008_shared_blocks(op: _Ops) -> None:
    """Shared core-memory blocks (store/shared_blocks.py): a block attached to several agents has a canonical
    row in ``shared_blocks`` and a mirror row per agent in ``blocks`` naming it by ``shared_id``; a trigger
    carries a mirror's new value to the others and bumps those agents' versions. Existing blocks stay each
    agent's own (``shared_id`` NULL)."""
    op.create_table(
        "shared_blocks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("char_limit", sa.Integer, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("read_only", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("blocks", sa.Column("shared_id", sa.String(64), nullable=True))
    op.create_index("ix_blocks_shared", "blocks", "shared_id")
    if op.conn is not None:
        from letta_nb.store.shared_blocks import DDL  # it reads METADATA: imported only when a store is migrated

        op.dialect_sql(DDL)


def m0009_fulltext(op: _Ops) -> None:
    """Full-text search of passages and messages (store/fulltext.py), indexing the rows already there: FTS5
    tables kept by triggers on SQLite, generated ``tsvector`` columns with GIN indexes on PostgreSQL."""
    if op.conn is None:
        return  # nothing in the portable model: each backend's search queries its own objects
    if op.conn.dialect.name == "postgresql":
        from letta_nb.store.postgres.fulltext import DDL as POSTGRES_DDL

        op.dialect_sql({"postgresql": POSTGRES_DDL})
    else:
        from letta_nb.store.sqlite.fulltext import DDL as SQLITE_DDL

        op.dialect_sql({"sqlite": SQLITE_DDL})


def m0010_pgvector(op: _Ops) -> None:
    """Embeddings in pgvector on PostgreSQL (store/postgres/pgvector.py): ``passages.embedding`` becomes a
    typmod-less ``vector`` at each passage's native dimension (rows already there converted); SQLite keeps its
    float32 BLOB. The model's type is bytes in Python on both (VectorType)."""
    from letta_nb.store.postgres.pgvector import CONVERT_DDL, VectorType

    op.metadata.tables["passages"].c.embedding.type = VectorType()
    op.dialect_sql({"postgresql": CONVERT_DDL})


def m0011_deferred_message_fulltext(op: _Ops) -> None:
    """SQLite indexes messages for full-text search in batches, off the step's commit (store/sqlite/fulltext.py:
    the insert trigger cost ~120 of a step transaction's ~295 us): a watermark table says which rows are
    indexed, set to every row already there. PostgreSQL's generated ``tsvector`` columns stay as they are."""
    if op.conn is None or op.conn.dialect.name != "sqlite":
        return
    from letta_nb.store.sqlite.fulltext import DEFERRED_DDL

    op.dialect_sql({"sqlite": DEFERRED_DDL})


MIGRATIONS: tuple[Callable[[_Ops], None], ...] = (
    m0001_core, m0002_archival_steps_context, m0003_files, m0004_signatures_isolation, m0005_leases,
    m0006_agent_type_rules_tags, m0007_approvals, m0008_shared_blocks, m0009_fulltext, m0010_pgvector,
    m0011_deferred_message_fulltext,
)
SCHEMA_VERSION = len(MIGRATIONS)

_LEDGER = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)


def _build_metadata() -> sa.MetaData:
    metadata = sa.MetaData()
    ops = _Ops(metadata, None)
    for migration in MIGRATIONS:
        migration(ops)
    return metadata


METADATA = _build_metadata()


_MIGRATION_LOCK = 0x6C6E_6264  # "lnbd": the advisory lock PostgreSQL migrators take, one at a time


def lock_migrations(conn: sa.Connection) -> None:
    """Begin a migrator's transaction holding the store-wide migration lock: on PostgreSQL an advisory lock
    released at commit (SQLite's ``BEGIN IMMEDIATE`` already holds the write lock)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))


def applied_versions(conn: sa.Connection) -> list[int]:
    _LEDGER.create(conn, checkfirst=True)
    return sorted(conn.execute(sa.select(_LEDGER.c.version)).scalars())


def migrate(conn: sa.Connection, *, target: int = SCHEMA_VERSION) -> list[str]:
    """Apply the missing migrations up to ``target``, one transaction each; return their names.

    Runs on a sync connection (``await conn.run_sync(migrate)``) whose transactions take the write lock
    first (see engine.WRITE; on PostgreSQL an advisory lock, :func:`lock_migrations`), and re-reads the ledger
    inside each transaction, so several processes opening a new store at once apply each migration exactly
    once. The model of tables already applied is rebuilt as it goes so later ``add_column`` calls find their
    tables.
    """
    metadata = sa.MetaData()
    names = []
    for version, migration in enumerate(MIGRATIONS[:target], start=1):
        lock_migrations(conn)
        done = applied_versions(conn)
        if done and max(done) > SCHEMA_VERSION:
            conn.rollback()
            raise SchemaVersionError(
                f"This store has schema version {max(done)}, newer than this letta_nb understands "
                f"({SCHEMA_VERSION}). Upgrade letta_nb (`pip install -U letta-nb`) or open another store."
            )
        if version in done:
            migration(_Ops(metadata, None))
        else:
            migration(_Ops(metadata, conn))
            conn.execute(_LEDGER.insert().values(version=version, name=migration.__name__, applied_at=utcnow()))
            names.append(migration.__name__)
        conn.commit()
    return names
