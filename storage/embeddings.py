"""Embeddings: the pgvector schema, the vector column type, and whether this database has them.

The `vector` extension (pgvector) is optional: Debian's PostgreSQL has no package for it, the
embedded pgserver ships it. The tables exist only where the extension does, so they are not
declared on the models' MetaData (alembic check would otherwise want them everywhere):
migration 0018 creates them when `CREATE EXTENSION vector` succeeds, and `blogstore
enable-embeddings` (ensure_schema) creates them later, once an operator has installed the
extension, or re-types them for another BLOGSTORE_EMBEDDING_DIMENSIONS while they are empty.

A vector column needs a fixed dimension for an HNSW index: the column is vector(<dimensions>)
as configured when the tables were made; a server configured otherwise refuses embedding calls
with FAILED_PRECONDITION saying so (and warns at start-up), it never stores a mismatch.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, DateTime, Float, MetaData, Table, Text, cast, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.types import UserDefinedType

from storage import rls
from storage.engine import create_extension
from storage.errors import FailedPrecondition, SchemaNotReady

log = logging.getLogger(__name__)

EXTENSION = "vector"
DEFAULT_DIMENSIONS = 1536
MAX_DIMENSIONS = 2000  # pgvector's HNSW limit for the vector type
MAX_MODEL_CHARS = 200
# HNSW build settings (pgvector's defaults; BENCHMARKS.md "Similarity search" measured them).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
ARTICLE_TABLE = "article_embeddings"
COMPETITOR_TABLE = "competitor_article_embeddings"
TABLES = (ARTICLE_TABLE, COMPETITOR_TABLE)


class Vector(UserDefinedType):
    """pgvector's `vector`, bound as its text form '[x,y,...]' and cast on the server side."""

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "vector"

    def bind_processor(self, dialect: Any) -> Any:
        def process(value: Any) -> str | None:
            if value is None:
                return None
            # 9 significant digits round-trip a float32 exactly.
            return "[" + ",".join(format(float(x), ".9g") for x in value) + "]"

        return process

    def bind_expression(self, bindvalue: Any) -> Any:
        return cast(bindvalue, self)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        def process(value: Any) -> list[float] | None:
            if value is None:
                return None
            return [float(x) for x in str(value).strip("[]").split(",") if x]

        return process

    class comparator_factory(UserDefinedType.Comparator):  # noqa: N801 - SQLAlchemy's name
        def cosine_distance(self, other: Any) -> Any:
            """pgvector's `<=>`: 1 - cosine similarity, from 0 (same direction) to 2."""
            return self.op("<=>", return_type=Float)(other)


metadata = MetaData()
article_embeddings = Table(
    ARTICLE_TABLE,
    metadata,
    Column("article_id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    Column("model", Text, nullable=False),
    Column("embedding", Vector, nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
competitor_embeddings = Table(
    COMPETITOR_TABLE,
    metadata,
    Column("competitor_article_id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    Column("model", Text, nullable=False),
    Column("embedding", Vector, nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# (No ForeignKey objects: articles are on the models' MetaData; the DDL below has them.)

# -- Schema (migration 0018 and `blogstore enable-embeddings`) -------------------------------
_ME = "NULLIF(current_setting('blogstore.user_id', true), '')::uuid"
_CREATE = {
    ARTICLE_TABLE: """
CREATE TABLE IF NOT EXISTS article_embeddings (
    article_id uuid PRIMARY KEY
        CONSTRAINT fk_article_embeddings_article_id_articles
        REFERENCES articles (id) ON DELETE CASCADE,
    user_id uuid NOT NULL
        CONSTRAINT fk_article_embeddings_user_id_users REFERENCES users (id) ON DELETE CASCADE,
    model text NOT NULL CONSTRAINT ck_article_embeddings_model
        CHECK (length(model) BETWEEN 1 AND {max_model}),
    embedding vector({dimensions}) NOT NULL,
    update_time timestamptz NOT NULL DEFAULT now()
)""",
    COMPETITOR_TABLE: """
CREATE TABLE IF NOT EXISTS competitor_article_embeddings (
    competitor_article_id uuid PRIMARY KEY
        CONSTRAINT fk_competitor_article_embeddings_competitor_article_id
        REFERENCES competitor_articles (id) ON DELETE CASCADE,
    user_id uuid NOT NULL
        CONSTRAINT fk_competitor_article_embeddings_user_id_users
        REFERENCES users (id) ON DELETE CASCADE,
    model text NOT NULL CONSTRAINT ck_competitor_article_embeddings_model
        CHECK (length(model) BETWEEN 1 AND {max_model}),
    embedding vector({dimensions}) NOT NULL,
    update_time timestamptz NOT NULL DEFAULT now()
)""",
}


def _indexes(table: str) -> list[str]:
    return [
        # The owner's vectors of one model: the exact (per-user) search and its count.
        f"CREATE INDEX IF NOT EXISTS ix_{table}_user_id_model ON {table} (user_id, model)",
        f"CREATE INDEX IF NOT EXISTS ix_{table}_embedding_hnsw ON {table} "
        f"USING hnsw (embedding vector_cosine_ops) "
        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})",
    ]


def _policies(table: str) -> list[str]:
    owned = f"user_id = {_ME}"
    return [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS blogstore_owner ON {table}",
        f"CREATE POLICY blogstore_owner ON {table} USING ({owned}) WITH CHECK ({owned})",
        f"DROP POLICY IF EXISTS blogstore_all ON {table}",
        f"CREATE POLICY blogstore_all ON {table} TO {rls.ALL_ROLE} USING (true)",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {rls.APP_ROLE}",
    ]


def check_dimensions(dimensions: int) -> int:
    if not 1 <= dimensions <= MAX_DIMENSIONS:
        raise ValueError(f"embedding dimensions must be 1 to {MAX_DIMENSIONS}, not {dimensions}")
    return dimensions


def extension_available(connection: Any) -> bool:
    """Whether the server has pgvector's files (pg_available_extensions), installed or not."""
    return bool(
        connection.scalar(
            text("SELECT 1 FROM pg_available_extensions WHERE name = :n"), {"n": EXTENSION}
        )
    )


def ensure_schema(connection: Any, dimensions: int) -> str:
    """Create the extension, tables, indexes and policies if they are missing; re-type empty
    tables whose dimension differs. Returns what it did, or raises RuntimeError saying why not.

    Runs inside the caller's transaction; the CREATE EXTENSION runs in a savepoint so that a
    refusal (no files, no privilege) leaves the transaction usable.
    """
    check_dimensions(dimensions)
    if not extension_available(connection):
        raise RuntimeError(
            f'PostgreSQL has no "{EXTENSION}" extension (pgvector) installed on the server: '
            "install it (e.g. the postgresql-<version>-pgvector package), then run "
            "`blogstore enable-embeddings`"
        )
    create_extension(connection, EXTENSION, "enable-embeddings")
    done = []
    for table in TABLES:
        current = column_dimensions(connection, table)
        if current is not None and current != dimensions:
            if connection.scalar(text(f"SELECT EXISTS (SELECT FROM {table})")):
                raise RuntimeError(
                    f"{table}.embedding is vector({current}) and holds rows: it cannot become "
                    f"vector({dimensions}); set BLOGSTORE_EMBEDDING_DIMENSIONS={current}, or "
                    "clear the embeddings first"
                )
            connection.execute(text(f"DROP TABLE {table}"))
            done.append(f"re-typed {table} from vector({current})")
        if current != dimensions:
            connection.execute(
                text(_CREATE[table].format(dimensions=dimensions, max_model=MAX_MODEL_CHARS))
            )
            done.append(f"created {table} vector({dimensions})")
        for statement in _indexes(table) + _policies(table):
            connection.execute(text(statement))
    return "; ".join(done) or f"embeddings already enabled with vector({dimensions})"


def drop_schema(connection: Any) -> None:
    """Migration 0018's downgrade: the tables go; the extension stays (other objects of the
    database may use it; `DROP EXTENSION vector` once none does)."""
    for table in reversed(TABLES):
        connection.execute(text(f"DROP TABLE IF EXISTS {table}"))


def column_dimensions(connection: Any, table: str) -> int | None:
    """The n of `table`.embedding's vector(n), or None when the table does not exist."""
    type_name = connection.scalar(
        text(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = to_regclass(:t) AND attname = 'embedding'"
        ),
        {"t": table},
    )
    if type_name is None:
        return None
    match = re.fullmatch(r"vector\((\d+)\)", type_name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class SchemaStatus:
    """What this database offers: `problem` is "" when embeddings work with `dimensions`."""

    problem: str
    extension_version: str | None = None

    @property
    def iterative_scan(self) -> bool:
        """pgvector >= 0.8 can continue an HNSW scan until a filter's rows are found."""
        if not self.extension_version:
            return False
        major, minor = (int(p) for p in self.extension_version.split(".")[:2])
        return (major, minor) >= (0, 8)


def schema_status(connection: Any, dimensions: int) -> SchemaStatus:
    if connection.scalar(text("SELECT to_regclass('alembic_version')")) is None:
        raise SchemaNotReady()  # never migrated: as every other call says, not "no pgvector"
    version = connection.scalar(
        text("SELECT extversion FROM pg_extension WHERE extname = :n"), {"n": EXTENSION}
    )
    if version is None:
        return SchemaStatus(
            f'the PostgreSQL extension "{EXTENSION}" (pgvector) is not installed in this '
            "database: embeddings and similarity search are unavailable (install pgvector, then "
            "run `blogstore enable-embeddings`)"
        )
    for table in TABLES:
        current = column_dimensions(connection, table)
        if current is None:
            return SchemaStatus(
                f'the extension "{EXTENSION}" is installed but table {table} is missing: run '
                "`blogstore enable-embeddings`",
                version,
            )
        if current != dimensions:
            return SchemaStatus(
                f"{table}.embedding is vector({current}) but BLOGSTORE_EMBEDDING_DIMENSIONS="
                f"{dimensions}: run `blogstore enable-embeddings` (re-types empty tables) or "
                "configure the stored dimension",
                version,
            )
    return SchemaStatus("", version)


class Availability:
    """Whether embedding calls can run here, remembered per process: once found working it
    stays so (a later problem surfaces as the statement's own error); a problem is re-checked
    after RECHECK_SECONDS, so that `blogstore enable-embeddings` takes effect without a restart.
    """

    RECHECK_SECONDS = 10.0

    def __init__(self, dimensions: int) -> None:
        self.dimensions = check_dimensions(dimensions)
        self._status: SchemaStatus | None = None
        self._checked = 0.0

    def require(self, session: Any) -> SchemaStatus:
        """The status, or FailedPrecondition naming what is missing (the `vector` extension)."""
        status = self._status
        now = time.monotonic()
        if status is None or (status.problem and now - self._checked > self.RECHECK_SECONDS):
            status = schema_status(session.connection(), self.dimensions)
            self._status, self._checked = status, now
        if status.problem:
            raise FailedPrecondition(status.problem)
        return status
