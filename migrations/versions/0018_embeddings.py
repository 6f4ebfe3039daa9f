"""article_embeddings, competitor_article_embeddings: pgvector embeddings and HNSW indexes

Only where the server has the `vector` extension (pgvector): the migration tries
`CREATE EXTENSION IF NOT EXISTS vector` in a savepoint and, when that is refused (Debian's
PostgreSQL has no pgvector package; or the migrating user may not create it), logs why and
creates nothing, so that the migration and every other feature still work. Once the
extension is installed, `blogstore enable-embeddings` creates the tables (storage/embeddings.py).

- article_embeddings / competitor_article_embeddings: one row per (competitor) article that
  has an embedding: the owner (user_id, for row-level security and the owner filter), the
  model name and the vector, vector(BLOGSTORE_EMBEDDING_DIMENSIONS, default 1536), kept out
  of the article rows so that these stay small. Deleting the article deletes it (CASCADE).
- An HNSW index (vector_cosine_ops, m 16, ef_construction 64) on each, and (user_id, model).
- Row-level security like migration 0012: a user's transactions see only their rows.

Revision ID: 0018
Revises: 0012
Create Date: 2026-12-06
"""

import logging
import os
from collections.abc import Sequence

from alembic import op

from storage import embeddings

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand only: new tables that older code never touches.
compatible_since: str = "0012"

log = logging.getLogger("alembic.runtime.migration")


def _dimensions() -> int:
    raw = os.environ.get("BLOGSTORE_EMBEDDING_DIMENSIONS", "").strip()
    return embeddings.check_dimensions(int(raw) if raw else embeddings.DEFAULT_DIMENSIONS)


def upgrade() -> None:
    try:
        log.info("embeddings: %s", embeddings.ensure_schema(op.get_bind(), _dimensions()))
    except RuntimeError as error:
        log.warning("embeddings and similarity search stay unavailable: %s", error)


def downgrade() -> None:
    embeddings.drop_schema(op.get_bind())
