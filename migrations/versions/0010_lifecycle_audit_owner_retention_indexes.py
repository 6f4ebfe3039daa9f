"""lifecycle: the audit trail's owner column, competitor_articles.last_seen_time, retention indexes

- audit_events.user_id: the user whose resource an event is about, so ListAuditEvents can
  show a user the events about its own resources (also those an admin or service caused).
  Backfilled from the resources that still exist; blogstore_record_usage() now sets it.
- competitor_articles.last_seen_time: bumped by every upsert of the article, so retention
  can drop articles a crawler has not seen for N days. Existing rows start at the time of
  this migration (nothing becomes purgeable at once).
- Indexes for the retention walks (each an ordered range scan, never a table scan) and the
  audit filters. Built CONCURRENTLY, so writes go on while they build.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand only: code at 0009 writes audit events without an owner (only its actor then sees
# them as a user) and upserts competitor articles without bumping last_seen_time.
compatible_since: str = "0009"

# (name, table, columns, partial-index WHERE)
INDEXES = (
    ("ix_audit_events_user_id_create_time_id", "audit_events",
     ["user_id", "create_time", "id"], None),
    ("ix_audit_events_create_time_id", "audit_events", ["create_time", "id"], None),
    ("ix_articles_delete_time_id", "articles", ["delete_time", "id"], "delete_time IS NOT NULL"),
    ("ix_article_revisions_create_time_id", "article_revisions", ["create_time", "id"], None),
    ("ix_competitor_articles_last_seen_time_id", "competitor_articles",
     ["last_seen_time", "id"], None),
)  # fmt: skip

# Owners of existing events: through the resource where it still exists.
BACKFILL = (
    *(
        f"UPDATE audit_events AS e SET user_id = r.user_id FROM {table} AS r "
        f"WHERE e.resource_type = '{kind}' AND e.user_id IS NULL AND r.id::text = e.resource_id"
        for kind, table in (
            ("article", "articles"),
            ("pipeline", "pipelines"),
            ("competitor", "competitors"),
            ("api_key", "api_keys"),
            ("usage_event", "usage_events"),
        )
    ),
    "UPDATE audit_events SET user_id = resource_id::uuid "
    "WHERE resource_type = 'user' AND user_id IS NULL",
    "UPDATE audit_events SET user_id = (details->>'user_id')::uuid "
    "WHERE user_id IS NULL AND details ? 'user_id'",
    "UPDATE audit_events SET user_id = actor_id WHERE user_id IS NULL AND actor_kind = 'user'",
)

_OLD_AUDIT_INSERT = """\
    INSERT INTO audit_events (
        actor_kind, actor_id, actor_name, action, resource_type, resource_id, request_id,
        details)
    VALUES (p_actor_kind, p_actor_id, p_actor_name, 'usage.record', 'usage_event',
            ev.id::text, p_audit_request_id, jsonb_build_object('cost_micros', p_cost_micros));"""
_NEW_AUDIT_INSERT = """\
    INSERT INTO audit_events (
        actor_kind, actor_id, actor_name, action, resource_type, resource_id, request_id,
        details, user_id)
    VALUES (p_actor_kind, p_actor_id, p_actor_name, 'usage.record', 'usage_event',
            ev.id::text, p_audit_request_id, jsonb_build_object('cost_micros', p_cost_micros),
            p_user_id);"""


def _record_usage_0006() -> str:
    """The function as migration 0006 created it: one text, changed here in one place."""
    spec = importlib.util.spec_from_file_location(
        "migration_0006", Path(__file__).with_name("0006_record_usage_function.py")
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    body: str = module.RECORD_USAGE
    assert _OLD_AUDIT_INSERT in body, "0006's audit insert changed: update 0010"
    return body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("user_id", sa.Uuid(), nullable=True))
    for statement in BACKFILL:
        op.execute(statement)
    # now() is STABLE: PostgreSQL stores it once as the column's default for existing rows
    # (no table rewrite); new rows get their insert time.
    op.add_column(
        "competitor_articles",
        sa.Column(
            "last_seen_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )
    op.execute(_record_usage_0006().replace(_OLD_AUDIT_INSERT, _NEW_AUDIT_INSERT))
    with op.get_context().autocommit_block():
        for name, table, columns, where in INDEXES:
            op.create_index(
                name,
                table,
                columns,
                postgresql_concurrently=True,
                postgresql_where=sa.text(where) if where else None,
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, table, _columns, _where in reversed(INDEXES):
            op.drop_index(name, table, postgresql_concurrently=True)
    op.execute(_record_usage_0006())
    op.drop_column("competitor_articles", "last_seen_time")
    op.drop_column("audit_events", "user_id")
