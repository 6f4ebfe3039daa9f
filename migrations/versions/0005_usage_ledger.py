"""usage ledger

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_limits",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("cost_limit_micros", sa.BigInteger(), nullable=True),
        sa.Column("article_limit", sa.BigInteger(), nullable=True),
        sa.Column(
            "update_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "article_limit > 0", name=op.f("ck_usage_limits_article_limit_positive")
        ),
        sa.CheckConstraint(
            "cost_limit_micros > 0", name=op.f("ck_usage_limits_cost_limit_positive")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_usage_limits_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_usage_limits")),
    )
    op.create_table(
        "usage_monthly",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "articles_generated", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("input_tokens", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("api_calls", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("event_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "update_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "extract(day from month) = 1", name=op.f("ck_usage_monthly_month_first_day")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_usage_monthly_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "month", name=op.f("pk_usage_monthly")),
    )
    op.create_table(
        "usage_events",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("pipeline_id", sa.Uuid(), nullable=True),
        sa.Column("article_id", sa.Uuid(), nullable=True),
        sa.Column("service", sa.String(length=50), nullable=False),
        sa.Column("model", sa.String(length=100), server_default="", nullable=False),
        sa.Column("operation", sa.String(length=100), server_default="", nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "articles_generated", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("api_calls", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("api_calls >= 0", name=op.f("ck_usage_events_api_calls_non_negative")),
        sa.CheckConstraint(
            "articles_generated >= 0", name=op.f("ck_usage_events_articles_generated_non_negative")
        ),
        sa.CheckConstraint(
            "cost_micros >= 0", name=op.f("ck_usage_events_cost_micros_non_negative")
        ),
        sa.CheckConstraint(
            "input_tokens >= 0", name=op.f("ck_usage_events_input_tokens_non_negative")
        ),
        sa.CheckConstraint(
            "output_tokens >= 0", name=op.f("ck_usage_events_output_tokens_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["articles.id"],
            name=op.f("fk_usage_events_article_id_articles"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name=op.f("fk_usage_events_pipeline_id_pipelines"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_usage_events_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_events")),
    )
    op.create_index("ix_usage_events_article_id", "usage_events", ["article_id"], unique=False)
    op.create_index(
        "ix_usage_events_event_time", "usage_events", ["event_time", "id"], unique=False
    )
    op.create_index("ix_usage_events_pipeline_id", "usage_events", ["pipeline_id"], unique=False)
    op.create_index(
        "ix_usage_events_user_id_event_time",
        "usage_events",
        ["user_id", "event_time", "id"],
        unique=False,
    )
    op.create_index(
        "uq_usage_events_user_id_request_id", "usage_events", ["user_id", "request_id"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_usage_events_user_id_request_id", table_name="usage_events")
    op.drop_index("ix_usage_events_user_id_event_time", table_name="usage_events")
    op.drop_index("ix_usage_events_pipeline_id", table_name="usage_events")
    op.drop_index("ix_usage_events_event_time", table_name="usage_events")
    op.drop_index("ix_usage_events_article_id", table_name="usage_events")
    op.drop_table("usage_events")
    op.drop_table("usage_monthly")
    op.drop_table("usage_limits")
