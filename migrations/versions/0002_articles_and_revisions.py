"""articles and revisions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Title A; excerpt, keywords and tags B; the first 100,000 characters of content C.
SEARCH_VECTOR = (
    "setweight(to_tsvector('english'::regconfig, coalesce(title, '')), 'A') || "
    "setweight(to_tsvector('english'::regconfig, coalesce(excerpt, '') || ' ' || "
    "coalesce(primary_keyword, '') || ' ' || blogstore_join(secondary_keywords) || ' ' || "
    "blogstore_join(tags)), 'B') || "
    "setweight(to_tsvector('english'::regconfig, left(content_markdown, 100000)), 'C')"
)
# IMMUTABLE wrapper: array_to_string is only STABLE, and generated columns need IMMUTABLE.
CREATE_JOIN = """
CREATE FUNCTION blogstore_join(text[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(array_to_string($1, ' '), '') $$
"""
# One trigger function keeps update_time for every table that has one.
CREATE_SET_UPDATE_TIME = """
CREATE FUNCTION blogstore_set_update_time() RETURNS trigger
LANGUAGE plpgsql
AS $$ BEGIN NEW.update_time := now(); RETURN NEW; END $$
"""


def upgrade() -> None:
    op.execute(CREATE_JOIN)
    op.execute(CREATE_SET_UPDATE_TIME)
    op.create_table(
        "articles",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("pipeline_id", sa.Uuid(), nullable=True),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("slug", sa.String(length=200), nullable=False),
        sa.Column("content_markdown", sa.Text(), nullable=False),
        sa.Column("content_html", sa.Text(), nullable=False),
        sa.Column("excerpt", sa.Text(), server_default="", nullable=False),
        sa.Column("meta_title", sa.String(length=160), server_default="", nullable=False),
        sa.Column("meta_description", sa.String(length=320), server_default="", nullable=False),
        sa.Column("primary_keyword", sa.String(length=100), server_default="", nullable=False),
        sa.Column(
            "secondary_keywords",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column("seo_score", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("wp_post_id", sa.BigInteger(), nullable=True),
        sa.Column("wp_url", sa.String(length=2000), server_default="", nullable=False),
        sa.Column("wp_status", sa.String(length=50), server_default="", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="draft", nullable=False),
        sa.Column("word_count", sa.Integer(), nullable=False),
        sa.Column("reading_time_minutes", sa.Integer(), nullable=False),
        sa.Column("internal_links", sa.Integer(), nullable=False),
        sa.Column("external_links", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("publish_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "update_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("delete_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("create_request_id", sa.Uuid(), nullable=True),
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed(
                SEARCH_VECTOR,
                persisted=True,
            ),
            nullable=False,
        ),
        sa.CheckConstraint(
            "slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'", name=op.f("ck_articles_slug_format")
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'published', 'archived')", name=op.f("ck_articles_status_valid")
        ),
        sa.CheckConstraint(
            "seo_score >= 0 AND seo_score <= 100", name=op.f("ck_articles_seo_score_range")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_articles_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_articles")),
    )
    op.create_index("ix_articles_create_time", "articles", ["create_time", "id"], unique=False)
    op.create_index("ix_articles_pipeline_id", "articles", ["pipeline_id"], unique=False)
    op.create_index(
        "ix_articles_search_vector",
        "articles",
        ["search_vector"],
        unique=False,
        postgresql_using="gin",
    )
    op.create_index("ix_articles_tags", "articles", ["tags"], unique=False, postgresql_using="gin")
    op.create_index(
        "ix_articles_user_id_create_time",
        "articles",
        ["user_id", "create_time", "id"],
        unique=False,
    )
    op.create_index(
        "ix_articles_user_id_primary_keyword",
        "articles",
        ["user_id", "primary_keyword", "create_time", "id"],
        unique=False,
    )
    op.create_index(
        "ix_articles_user_id_publish_time",
        "articles",
        [
            "user_id",
            sa.literal_column("publish_time DESC NULLS LAST"),
            sa.literal_column("id DESC"),
        ],
        unique=False,
    )
    op.create_index(
        "ix_articles_user_id_status_create_time",
        "articles",
        ["user_id", "status", "create_time", "id"],
        unique=False,
    )
    op.create_index(
        "ix_articles_user_id_title", "articles", ["user_id", "title", "id"], unique=False
    )
    op.create_index(
        "uq_articles_user_id_create_request_id",
        "articles",
        ["user_id", "create_request_id"],
        unique=True,
    )
    op.create_index(
        "uq_articles_user_id_slug_live",
        "articles",
        ["user_id", "slug"],
        unique=True,
        postgresql_where=sa.text("delete_time IS NULL"),
    )
    op.execute(
        "CREATE TRIGGER articles_set_update_time BEFORE UPDATE ON articles "
        "FOR EACH ROW EXECUTE FUNCTION blogstore_set_update_time()"
    )
    op.create_table(
        "article_revisions",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("article_id", sa.Uuid(), nullable=False),
        sa.Column("article_version", sa.Integer(), nullable=False),
        sa.Column("snapshot", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["articles.id"],
            name=op.f("fk_article_revisions_article_id_articles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_article_revisions")),
    )
    op.create_index(
        "ix_article_revisions_article_id_create_time",
        "article_revisions",
        ["article_id", "create_time", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER articles_set_update_time ON articles")
    op.drop_index("ix_article_revisions_article_id_create_time", table_name="article_revisions")
    op.drop_table("article_revisions")
    op.drop_index(
        "uq_articles_user_id_slug_live",
        table_name="articles",
        postgresql_where=sa.text("delete_time IS NULL"),
    )
    op.drop_index("uq_articles_user_id_create_request_id", table_name="articles")
    op.drop_index("ix_articles_user_id_title", table_name="articles")
    op.drop_index("ix_articles_user_id_status_create_time", table_name="articles")
    op.drop_index("ix_articles_user_id_publish_time", table_name="articles")
    op.drop_index("ix_articles_user_id_primary_keyword", table_name="articles")
    op.drop_index("ix_articles_user_id_create_time", table_name="articles")
    op.drop_index("ix_articles_tags", table_name="articles", postgresql_using="gin")
    op.drop_index("ix_articles_search_vector", table_name="articles", postgresql_using="gin")
    op.drop_index("ix_articles_pipeline_id", table_name="articles")
    op.drop_index("ix_articles_create_time", table_name="articles")
    op.drop_table("articles")
    op.execute("DROP FUNCTION blogstore_set_update_time()")
    op.execute("DROP FUNCTION blogstore_join(text[])")
