"""articles: GIN over (search_vector, create_time) where btree_gin exists (issue 17)

Bounded phrase searches then read only the posting entries of their create_time range (see
storage/phrase_index.py). The index replaces ix_articles_search_vector. Where the
`btree_gin` extension cannot be created (the embedded PostgreSQL has no contrib modules, or
the migrating user may not create it) the migration logs why and changes nothing; `blogstore
enable-phrase-index` does it later. Building it reads every article's search_vector: minutes
at a million articles (measured in BENCHMARKS.md), during which writes to articles wait.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

import logging
from collections.abc import Sequence

from alembic import op

from storage import phrase_index

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# An index only: older code runs the same statements.
compatible_since: str = "0012"

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    try:
        log.info("phrase index: %s", phrase_index.ensure(op.get_bind()))
    except RuntimeError as error:
        log.warning("phrase searches keep the single-column index: %s", error)


def downgrade() -> None:
    phrase_index.drop(op.get_bind())
