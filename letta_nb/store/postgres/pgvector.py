"""Embeddings as pgvector ``vector`` on PostgreSQL: the column type, its codecs, and the opt-in HNSW index.

**One typmod-less ``vector`` column, not one ``vector(dim)`` column per dimension.** One table holds every
agent's passages and each agent has its own embedder (384 dimensions for MiniLM, 1536 for OpenAI's small
model, ...), so a fixed ``vector(dim)`` column would pad or refuse the others, and a column per dimension
would need a migration whenever a user tries a new embedder. pgvector stores each value of a typmod-less
``vector`` column at its own, native dimension (never padded); what needs a fixed dimension is an index,
so an HNSW index is an **expression index per dimension**, ``(embedding::vector(D))``, partial on
``vector_dims(embedding) = D`` (:func:`hnsw_ddl`). Migration ``m0010_pgvector`` converts the column
(store/migrations.py); SQLite keeps float32 bytes, and the model's column type (:class:`VectorType`) is
bytes on both sides of the API: the same ``PassageRecord.embedding`` everywhere.

Wire formats: the backend's asyncpg connections use pgvector's binary format (:func:`register`; COPY needs a
binary codec); SQLAlchemy's connections, which have no codec, send and read pgvector's text form.

**Exact search stays the default** (postgres/vectors.py: the in-memory copy, measured faster than pgvector's
exact scan). HNSW is opt-in per dimension (``PgVectorStore.set_index(dim, "hnsw")``): its upkeep is ~250x an
insert without it (shared/DESIGN.md). Its searches always run with ``hnsw.iterative_scan = relaxed_order``:
with a per-agent filter, the index returns its ``ef_search`` nearest rows of *all* agents and the filter then
drops the others' rows, silently leaving fewer than k (the known trap, tests/test_postgres_vectors.py);
iterative scan keeps scanning until k rows pass the filter. ``relaxed_order`` may return them slightly out of
order, so the hits are re-sorted by score here.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator, UserDefinedType

__all__ = ["CONVERT_DDL", "EF_SEARCH", "VectorType", "decode", "encode", "hnsw_ddl", "hnsw_params", "index_name",
           "register"]

EF_SEARCH = 100  # candidates HNSW keeps per search (pgvector's default 40 gave recall@10 < 0.95 at 100k x 384)


def encode(value: Any) -> bytes:
    """float32 bytes (or an array) -> pgvector's binary ``vector``: dim, unused, big-endian float32s."""
    arr = np.frombuffer(value, dtype="<f4") if isinstance(value, (bytes, bytearray, memoryview)) else \
        np.asarray(value, dtype="<f4")
    return struct.pack(">HH", arr.shape[0], 0) + arr.astype(">f4").tobytes()


def decode(data: bytes) -> bytes:
    """pgvector's binary ``vector`` -> float32 bytes (the store's ``embedding`` everywhere)."""
    dim = struct.unpack_from(">H", data)[0]
    return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype("<f4").tobytes()


async def register(conn: Any) -> None:
    """Give an asyncpg connection the binary codec (where the extension exists: a store not yet migrated to
    m0010 has none, and needs none)."""
    schema = await conn.fetchval("SELECT n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                                 "WHERE t.typname = 'vector' LIMIT 1")
    if schema is not None:
        await conn.set_type_codec("vector", schema=schema, encoder=encode, decoder=decode, format="binary")


class _PgVector(UserDefinedType[bytes]):
    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "vector"

    def bind_processor(self, dialect: Any) -> Any:
        def process(value: Any) -> Any:
            if value is None:
                return None
            # repr of a float32 widened to float64 reads back to the same float32
            return "[" + ",".join(map(repr, np.frombuffer(value, dtype="<f4").astype(float).tolist())) + "]"
        return process

    def bind_expression(self, bindvalue: Any) -> Any:
        return sa.cast(bindvalue, self)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        def process(value: Any) -> Any:
            if value is None or isinstance(value, bytes):
                return value
            return np.array(value.strip("[]").split(","), dtype="<f4").tobytes()
        return process


class VectorType(TypeDecorator[bytes]):
    """``passages.embedding``: float32 bytes in Python; ``vector`` on PostgreSQL, a BLOB on SQLite."""

    impl = sa.LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(_PgVector())
        return dialect.type_descriptor(sa.LargeBinary())


# m0010_pgvector on PostgreSQL: bytea float32 (little-endian) rows converted once, in SQL (the float is
# rebuilt from its bits: sign, exponent, mantissa; subnormals included), then the column's type changed.
CONVERT_DDL = (
    "CREATE EXTENSION IF NOT EXISTS vector",
    """CREATE OR REPLACE FUNCTION letta_nb_bytea_vector(b bytea) RETURNS vector LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE out real[] := '{}'; bits bigint; e int; m bigint; v double precision;
BEGIN
  IF b IS NULL THEN RETURN NULL; END IF;
  FOR i IN 0 .. length(b) / 4 - 1 LOOP
    bits := get_byte(b, 4*i) + get_byte(b, 4*i+1) * 256 + get_byte(b, 4*i+2) * 65536
            + get_byte(b, 4*i+3)::bigint * 16777216;
    e := (bits >> 23) & 255; m := bits & 8388607;
    v := CASE WHEN e = 0 THEN m * 2.0 ^ -149 ELSE (m + 8388608) * 2.0 ^ (e - 150) END;
    IF bits >= 2147483648 THEN v := -v; END IF;
    out := out || v::real;
  END LOOP;
  RETURN out::vector;
END $$""",
    "ALTER TABLE passages ALTER COLUMN embedding TYPE vector USING letta_nb_bytea_vector(embedding)",
    "DROP FUNCTION letta_nb_bytea_vector(bytea)",
)


def index_name(dim: int) -> str:
    return f"ix_passages_hnsw_{int(dim)}"


def hnsw_params(dim: int) -> tuple[int, int]:
    """``(m, ef_construction)`` of the index of dimension ``dim``. pgvector's defaults (16, 64) reached recall@10
    0.95 on 384-dimensional embeddings only at ``ef_search`` 800, slower than the exact copy (bench vector,
    20k random unit vectors, their worst case); higher dimensions need more links per node and a wider build
    search for the same recall. The build is slower (paid once, by an opt-in index)."""
    if dim < 256:
        return 16, 100
    if dim < 1024:
        return 32, 200
    return 48, 256


def hnsw_ddl(dim: int) -> str:
    """The HNSW index of one dimension: an expression index partial on that dimension (module docstring);
    inner product, the same score as the exact path (unit vectors: cosine), with :func:`hnsw_params`."""
    d = int(dim)
    m, ef_construction = hnsw_params(d)
    return (f"CREATE INDEX IF NOT EXISTS {index_name(d)} ON passages USING hnsw ((embedding::vector({d})) "
            f"vector_ip_ops) WITH (m = {m}, ef_construction = {ef_construction}) WHERE vector_dims(embedding) = {d}")


def hnsw_query(dim: int) -> str:
    """The top-k of one agent through the index of ``dim`` ($1 agent, $2 query, $3 k)."""
    d = int(dim)
    return (f"SELECT id, -((embedding::vector({d})) <#> $2::vector({d})) AS score FROM passages "
            f"WHERE agent_id = $1 AND vector_dims(embedding) = {d} "
            f"ORDER BY (embedding::vector({d})) <#> $2::vector({d}) LIMIT $3")
