"""Credential changes NOTIFY `blogstore_credentials`, from the changing transaction

Each process keeps live API keys and access tokens in memory (server/credential_cache.py).
These triggers tell every process, whoever made the change (a server, the CLI, retention):
a revoke_time, expire_time, owner or digest change or a delete of an API key or access
token (table sessions), and an is_active, is_admin or password change or a delete of a user, send
`{"user_id": ...}`; each process forgets that user's cached credentials. NOTIFY is delivered
at commit (and not at all on rollback); identical payloads of one transaction arrive once.
Usage bookkeeping (usage_count, last_used_time) sends nothing.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Only triggers: code from 0012 on runs beside them (it just does not listen).
compatible_since: str = "0012"

_FUNCTION = """
CREATE FUNCTION blogstore_notify_credential() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_user uuid;
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        row_user := CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END;
    ELSE
        row_user := CASE WHEN TG_OP = 'DELETE' THEN OLD.user_id ELSE NEW.user_id END;
        IF TG_OP = 'UPDATE' AND OLD.user_id IS DISTINCT FROM NEW.user_id THEN
            PERFORM pg_notify('blogstore_credentials',
                              json_build_object('user_id', OLD.user_id)::text);
        END IF;
    END IF;
    PERFORM pg_notify('blogstore_credentials', json_build_object('user_id', row_user)::text);
    RETURN NULL;
END
$$
"""

_CREDENTIAL_CHANGED = (
    "OLD.revoke_time IS DISTINCT FROM NEW.revoke_time"
    " OR OLD.expire_time IS DISTINCT FROM NEW.expire_time"
    " OR OLD.user_id IS DISTINCT FROM NEW.user_id"
    " OR OLD.secret_hash IS DISTINCT FROM NEW.secret_hash"
)
_USER_CHANGED = (
    "OLD.is_active IS DISTINCT FROM NEW.is_active"
    " OR OLD.is_admin IS DISTINCT FROM NEW.is_admin"
    " OR OLD.password_hash IS DISTINCT FROM NEW.password_hash"
)
_TRIGGERS = (
    ("api_keys", _CREDENTIAL_CHANGED),
    ("sessions", _CREDENTIAL_CHANGED),
    ("users", _USER_CHANGED),
)


def upgrade() -> None:
    op.execute(_FUNCTION)
    for table, changed in _TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {table}_credential_update AFTER UPDATE ON {table} "
            f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION blogstore_notify_credential()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_credential_delete AFTER DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION blogstore_notify_credential()"
        )


def downgrade() -> None:
    for table, _ in _TRIGGERS:
        op.execute(f"DROP TRIGGER {table}_credential_delete ON {table}")
        op.execute(f"DROP TRIGGER {table}_credential_update ON {table}")
    op.execute("DROP FUNCTION blogstore_notify_credential()")
