"""Article changes NOTIFY `blogstore_articles`, from the changing transaction

Each process keeps GetArticle replies in memory (server/article_cache.py). These triggers tell
every process, whoever made the change (a server, the CLI, retention, plain SQL, a cascade
from a user's purge): one NOTIFY per UPDATE or DELETE statement on articles, with the ids it
changed (`{"ids": [...]}`), or `{"all": true}` past 100 rows and for TRUNCATE, whereupon each
process forgets them. Statement-level, with a transition table: a bulk change sends one
notification, not one per row. INSERT sends nothing (a reply is only ever kept for an article
that exists). NOTIFY is delivered at commit, and not at all on rollback.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Only triggers: code from 0012 on runs beside them (it just does not listen).
compatible_since: str = "0012"

_MAX_IDS = 100  # 100 ids of 38 bytes: well inside NOTIFY's 8,000-byte payload

_FUNCTION = f"""
CREATE FUNCTION blogstore_notify_article() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids uuid[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('blogstore_articles', '{{"all": true}}');
        RETURN NULL;
    END IF;
    SELECT array_agg(id) INTO ids FROM (SELECT id FROM changed LIMIT {_MAX_IDS + 1}) AS first_ids;
    IF ids IS NULL THEN
        RETURN NULL;
    ELSIF cardinality(ids) > {_MAX_IDS} THEN
        PERFORM pg_notify('blogstore_articles', '{{"all": true}}');
    ELSE
        PERFORM pg_notify('blogstore_articles', json_build_object('ids', ids)::text);
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(_FUNCTION)
    op.execute(
        "CREATE TRIGGER articles_notify_update AFTER UPDATE ON articles "
        "REFERENCING NEW TABLE AS changed "
        "FOR EACH STATEMENT EXECUTE FUNCTION blogstore_notify_article()"
    )
    op.execute(
        "CREATE TRIGGER articles_notify_delete AFTER DELETE ON articles "
        "REFERENCING OLD TABLE AS changed "
        "FOR EACH STATEMENT EXECUTE FUNCTION blogstore_notify_article()"
    )
    op.execute(
        "CREATE TRIGGER articles_notify_truncate AFTER TRUNCATE ON articles "
        "FOR EACH STATEMENT EXECUTE FUNCTION blogstore_notify_article()"
    )


def downgrade() -> None:
    for name in ("truncate", "delete", "update"):
        op.execute(f"DROP TRIGGER articles_notify_{name} ON articles")
    op.execute("DROP FUNCTION blogstore_notify_article()")
