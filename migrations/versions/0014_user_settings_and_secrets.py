"""user_settings and user_secrets: per-user settings and write-only, encrypted secrets

- user_settings: one row per user that changed a setting (absent: the defaults), versioned
  for etags.
- user_secrets: named secrets per user, as AES-256-GCM ciphertext with its nonce and the id
  of the key (BLOGSTORE_SECRET_KEYS) it is under; never the value (storage/secrets.py).

Both are user-owned: ON DELETE CASCADE from users, and row-level security like migration
0012 (a user principal's transactions see only its own rows; the privileged role all).

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage import rls

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand only: two new tables that older code never touches.
compatible_since: str = "0012"

POLICY, ALL_POLICY = "blogstore_owner", "blogstore_all"  # as migration 0012 names them
_ME = "NULLIF(current_setting('blogstore.user_id', true), '')::uuid"
TABLES = ("user_settings", "user_secrets")


def upgrade() -> None:
    op.create_table(
        "user_settings",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("wordpress_site_url", sa.String(2000), server_default="", nullable=False),
        sa.Column("wordpress_username", sa.String(60), server_default="", nullable=False),
        sa.Column("default_publish_status", sa.String(20), server_default="draft", nullable=False),
        sa.Column("default_tags", sa.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("preferred_models", sa.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("usage_alert_percent", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "update_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "default_publish_status IN ('draft', 'publish', 'pending', 'private', 'future')",
            name="ck_user_settings_default_publish_status_known",
        ),
        sa.CheckConstraint(
            "usage_alert_percent BETWEEN 0 AND 100",
            name="ck_user_settings_usage_alert_percent_range",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_user_settings_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name="pk_user_settings"),
    )
    op.create_table(
        "user_secrets",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("preview", sa.String(4), server_default="", nullable=False),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "update_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("octet_length(nonce) = 12", name="ck_user_secrets_nonce_96_bits"),
        sa.CheckConstraint(
            "name ~ '^[a-z][a-z0-9_.-]{0,63}$'", name="ck_user_secrets_name_pattern"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_user_secrets_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "name", name="pk_user_secrets"),
    )
    for table in TABLES:
        # Default privileges (0012) grant these to the migrating user's new tables; said
        # again here in case another user runs this migration.
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {rls.APP_ROLE}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        owned = f"user_id = {_ME}"
        op.execute(f"CREATE POLICY {POLICY} ON {table} USING ({owned}) WITH CHECK ({owned})")
        op.execute(f"CREATE POLICY {ALL_POLICY} ON {table} TO {rls.ALL_ROLE} USING (true)")


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)  # its policies and grants go with it
