"""competitors and competitor articles

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "competitors",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("domain", sa.String(length=260), nullable=False),
        sa.Column("name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "check_frequency_hours", sa.Integer(), server_default=sa.text("24"), nullable=False
        ),
        sa.Column(
            "next_check_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_check_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.Column("lease_expire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "metadata", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("create_request_id", sa.Uuid(), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
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
        sa.CheckConstraint(
            "check_frequency_hours BETWEEN 1 AND 720",
            name=op.f("ck_competitors_check_frequency_hours_range"),
        ),
        sa.CheckConstraint("length(domain) > 0", name=op.f("ck_competitors_domain_not_empty")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_competitors_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_competitors")),
        sa.UniqueConstraint(
            "user_id", "create_request_id", name=op.f("uq_competitors_user_id_create_request_id")
        ),
        sa.UniqueConstraint("user_id", "domain", name=op.f("uq_competitors_user_id_domain")),
    )
    op.create_index(
        "ix_competitors_create_time_id", "competitors", ["create_time", "id"], unique=False
    )
    # ClaimDueCompetitors scans active competitors by next_check_time.
    op.create_index(
        "ix_competitors_next_check_time_active",
        "competitors",
        ["next_check_time"],
        unique=False,
        postgresql_where=sa.text("is_active"),
    )
    op.create_index(
        "ix_competitors_user_id_create_time_id",
        "competitors",
        ["user_id", "create_time", "id"],
        unique=False,
    )
    op.create_table(
        "competitor_articles",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("competitor_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), server_default="", nullable=False),
        sa.Column("publish_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("author", sa.String(length=200), server_default="", nullable=False),
        sa.Column("word_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("main_topics", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("keywords", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("social_shares", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("backlinks", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "discover_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("analyze_time", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "word_count >= 0 AND social_shares >= 0 AND backlinks >= 0",
            name=op.f("ck_competitor_articles_counts_not_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["competitor_id"],
            ["competitors.id"],
            name=op.f("fk_competitor_articles_competitor_id_competitors"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_competitor_articles")),
        sa.UniqueConstraint(
            "competitor_id", "url", name=op.f("uq_competitor_articles_competitor_id_url")
        ),
    )
    op.create_index(
        "ix_competitor_articles_competitor_id_discover_time",
        "competitor_articles",
        ["competitor_id", "discover_time"],
        unique=False,
    )
    # ListCompetitorArticles: newest publish date first, keyset on (publish_date, id).
    op.create_index(
        "ix_competitor_articles_competitor_id_publish_date_id",
        "competitor_articles",
        [
            "competitor_id",
            sa.literal_column("publish_date DESC NULLS LAST"),
            sa.literal_column("id DESC"),
        ],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_competitor_articles_competitor_id_publish_date_id", table_name="competitor_articles"
    )
    op.drop_index(
        "ix_competitor_articles_competitor_id_discover_time", table_name="competitor_articles"
    )
    op.drop_table("competitor_articles")
    op.drop_index("ix_competitors_user_id_create_time_id", table_name="competitors")
    op.drop_index(
        "ix_competitors_next_check_time_active",
        table_name="competitors",
        postgresql_where=sa.text("is_active"),
    )
    op.drop_index("ix_competitors_create_time_id", table_name="competitors")
    op.drop_table("competitors")
