"""pipelines

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Every committed change is announced on one channel. The payload is the row itself when it
# fits NOTIFY's 8000-byte limit (watchers then need no query), else just id and version.
CREATE_NOTIFY = """
CREATE FUNCTION blogstore_notify_pipeline() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    payload text := row_to_json(NEW)::text;
BEGIN
    IF octet_length(payload) > 7900 THEN
        payload := json_build_object('id', NEW.id, 'version', NEW.version)::text;
    END IF;
    PERFORM pg_notify('blogstore_pipeline', payload);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "pipelines",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("article_id", sa.Uuid(), nullable=True),
        sa.Column("state", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column(
            "input_config",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "stage_results",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "errors",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'"),
            nullable=False,
        ),
        sa.Column(
            "warnings",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'"),
            nullable=False,
        ),
        sa.Column("retry_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("execution_time_ms", sa.BigInteger(), nullable=True),
        sa.Column(
            "total_cost_micros", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("llm_tokens_used", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("api_calls_made", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
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
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("create_request_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_pipelines_state_valid"),
        ),
        sa.CheckConstraint("retry_count >= 0", name=op.f("ck_pipelines_retry_count_positive")),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["articles.id"],
            name=op.f("fk_pipelines_article_id_articles"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_pipelines_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipelines")),
    )
    op.create_index(op.f("ix_pipelines_article_id"), "pipelines", ["article_id"], unique=False)
    op.create_index("ix_pipelines_create_time", "pipelines", ["create_time", "id"], unique=False)
    op.create_index(
        "ix_pipelines_state_create_time", "pipelines", ["state", "create_time", "id"], unique=False
    )
    op.create_index(
        "ix_pipelines_user_id_create_time",
        "pipelines",
        ["user_id", "create_time", "id"],
        unique=False,
    )
    op.create_index(
        "ix_pipelines_user_id_state_create_time",
        "pipelines",
        ["user_id", "state", "create_time", "id"],
        unique=False,
    )
    op.create_index(
        "uq_pipelines_user_id_create_request_id",
        "pipelines",
        ["user_id", "create_request_id"],
        unique=True,
    )
    op.create_foreign_key(
        op.f("fk_articles_pipeline_id_pipelines"),
        "articles",
        "pipelines",
        ["pipeline_id"],
        ["id"],
        ondelete="SET NULL",
        # Existing rows keep unchecked links (no pipelines existed before); new writes are checked.
        postgresql_not_valid=True,
    )
    op.execute(
        "CREATE TRIGGER pipelines_set_update_time BEFORE UPDATE ON pipelines "
        "FOR EACH ROW EXECUTE FUNCTION blogstore_set_update_time()"
    )
    op.execute(CREATE_NOTIFY)
    op.execute(
        "CREATE TRIGGER pipelines_notify AFTER INSERT OR UPDATE ON pipelines "
        "FOR EACH ROW EXECUTE FUNCTION blogstore_notify_pipeline()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER pipelines_notify ON pipelines")
    op.execute("DROP FUNCTION blogstore_notify_pipeline()")
    op.execute("DROP TRIGGER pipelines_set_update_time ON pipelines")
    op.drop_constraint(op.f("fk_articles_pipeline_id_pipelines"), "articles", type_="foreignkey")
    op.drop_index("uq_pipelines_user_id_create_request_id", table_name="pipelines")
    op.drop_index("ix_pipelines_user_id_state_create_time", table_name="pipelines")
    op.drop_index("ix_pipelines_user_id_create_time", table_name="pipelines")
    op.drop_index("ix_pipelines_state_create_time", table_name="pipelines")
    op.drop_index("ix_pipelines_create_time", table_name="pipelines")
    op.drop_index(op.f("ix_pipelines_article_id"), table_name="pipelines")
    op.drop_table("pipelines")
