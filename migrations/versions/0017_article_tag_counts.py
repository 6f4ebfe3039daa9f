"""article_tag_counts: each user's tags with the number of live articles carrying them

ListTags reads this table (an index range per user) instead of unnesting every article.
Triggers on articles keep it:

- Statement-level AFTER INSERT / UPDATE / DELETE triggers with transition tables add the
  statement's net change per (user, lower(tag)) to article_tag_count_changes: an article
  counts once per tag key while live (delete_time NULL); inserts, tag changes, soft delete
  and undelete, hard delete and an owner's deletion (cascading to articles) all pass here.
  An UPDATE that changes neither tags, delete_time nor the owner adds nothing.
- The first statement of a transaction that stages anything also stages a marker row
  (delta 0), whose DEFERRABLE INITIALLY DEFERRED constraint trigger runs at commit: it sums
  the transaction's staged changes and applies them to article_tag_counts in (user_id,
  tag_key) order, then empties the staging. Count rows are thus locked only at commit and
  always in one order, so two batch imports sharing common tags queue for a moment rather
  than deadlock (a batch inserts in several statements; locking at each statement would
  interleave). A count that falls to zero is deleted.
- Spelling: a key's row keeps the spelling it was first counted with (the smallest in byte
  order, so upper case first, when one transaction or the backfill brings several), until
  its count falls to zero.

The backfill runs in this migration's transaction; CREATE TRIGGER has locked articles
against writes by then, so no change slips between the backfill and the triggers. Writes
to articles wait for it (measured at 1M articles: see the README, "Tags").

Revision ID: 0017
Revises: 0012
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage import rls

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand only: new tables and triggers; code at 0012 writes articles as before.
compatible_since: str = "0012"

_SCOPE = "current_setting('blogstore.scope', true)"
_ME = "NULLIF(current_setting('blogstore.user_id', true), '')::uuid"
# Row-level security like migration 0012's tables (tests/test_rls.py reads this).
OWNED_ROWS = {
    "article_tag_counts": f"user_id = {_ME}",
    "article_tag_count_changes": f"user_id = {_ME}",
}
POLICY, ALL_POLICY, ALL_ROLE = "blogstore_owner", "blogstore_all", rls.ALL_ROLE

# One article's distinct tag keys (with their smallest spelling) for the live rows of `rows`.
_LIVE_TAGS = """
    SELECT a.id, a.user_id, lower(t.tag) AS tag_key, min(t.tag) AS tag
    FROM {rows} a CROSS JOIN LATERAL unnest(a.tags) AS t(tag)
    WHERE a.delete_time IS NULL
    GROUP BY a.id, a.user_id, lower(t.tag)
"""
_CHANGED = (
    "o.tags IS DISTINCT FROM n.tags OR o.user_id <> n.user_id "
    "OR (o.delete_time IS NULL) <> (n.delete_time IS NULL)"
)
_NEW_LIVE = _LIVE_TAGS.format(
    rows=f"(SELECT n.* FROM new_rows n JOIN old_rows o USING (id) WHERE {_CHANGED})"
)
_OLD_LIVE = _LIVE_TAGS.format(
    rows=f"(SELECT o.* FROM old_rows o JOIN new_rows n USING (id) WHERE {_CHANGED})"
)
STAGE_FUNCTION = f"""
CREATE FUNCTION blogstore_stage_tag_counts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_rows bigint;
    v_user uuid;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO article_tag_count_changes (user_id, tag_key, tag, delta)
        SELECT user_id, tag_key, min(tag), count(*)
        FROM ({_LIVE_TAGS.format(rows="new_rows")}) live
        GROUP BY user_id, tag_key;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        SELECT user_id INTO v_user FROM new_rows LIMIT 1;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO article_tag_count_changes (user_id, tag_key, tag, delta)
        SELECT user_id, tag_key, min(tag), -count(*)
        FROM ({_LIVE_TAGS.format(rows="old_rows")}) live
        GROUP BY user_id, tag_key;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        SELECT user_id INTO v_user FROM old_rows LIMIT 1;
    ELSE
        INSERT INTO article_tag_count_changes (user_id, tag_key, tag, delta)
        SELECT user_id, tag_key, min(tag), sum(delta)
        FROM (
            SELECT live.*, 1 AS delta FROM ({_NEW_LIVE}) live
            UNION ALL
            SELECT live.*, -1 AS delta FROM ({_OLD_LIVE}) live
        ) changed
        GROUP BY user_id, tag_key
        HAVING sum(delta) <> 0;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        SELECT user_id INTO v_user FROM new_rows LIMIT 1;
    END IF;
    IF v_rows > 0 AND coalesce(current_setting('blogstore.tag_counts_staged', true), '') = ''
    THEN
        -- The marker: its deferred trigger applies the transaction's changes at commit.
        INSERT INTO article_tag_count_changes (user_id, tag_key, tag, delta)
        VALUES (v_user, '', '', 0);
        PERFORM set_config('blogstore.tag_counts_staged', '1', true);
    END IF;
    RETURN NULL;
END $$
"""
APPLY_FUNCTION = """
CREATE FUNCTION blogstore_apply_tag_count_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_count integer;
BEGIN
    PERFORM set_config('blogstore.tag_counts_staged', '', true);
    -- Only this transaction's rows are visible: others' are uncommitted, and every
    -- transaction empties the table before it commits.
    FOR r IN
        SELECT user_id, tag_key, min(tag) FILTER (WHERE delta > 0) AS tag,
               sum(delta)::integer AS delta
        FROM article_tag_count_changes
        WHERE delta <> 0
        GROUP BY user_id, tag_key
        HAVING sum(delta) <> 0
        ORDER BY user_id, tag_key  -- one lock order for every transaction
    LOOP
        IF r.delta > 0 THEN
            INSERT INTO article_tag_counts AS c (user_id, tag_key, tag, article_count)
            VALUES (r.user_id, r.tag_key, r.tag, r.delta)
            ON CONFLICT (user_id, tag_key)
            DO UPDATE SET article_count = c.article_count + EXCLUDED.article_count;
        ELSE
            SELECT article_count INTO v_count FROM article_tag_counts
            WHERE user_id = r.user_id AND tag_key = r.tag_key FOR UPDATE;
            -- No row: the owner was deleted with its counts (cascade) in this transaction.
            IF v_count + r.delta <= 0 THEN
                DELETE FROM article_tag_counts
                WHERE user_id = r.user_id AND tag_key = r.tag_key;
            ELSIF v_count IS NOT NULL THEN
                UPDATE article_tag_counts SET article_count = article_count + r.delta
                WHERE user_id = r.user_id AND tag_key = r.tag_key;
            END IF;
        END IF;
    END LOOP;
    DELETE FROM article_tag_count_changes;
    RETURN NULL;
END $$
"""
BACKFILL = f"""
INSERT INTO article_tag_counts (user_id, tag_key, tag, article_count)
SELECT user_id, tag_key, min(tag), count(*)
FROM ({_LIVE_TAGS.format(rows="articles")}) live
GROUP BY user_id, tag_key
"""
TRIGGERS = {
    "articles_stage_tag_counts_insert": (
        "AFTER INSERT ON articles REFERENCING NEW TABLE AS new_rows"
    ),
    "articles_stage_tag_counts_update": (
        "AFTER UPDATE ON articles REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
    ),
    "articles_stage_tag_counts_delete": (
        "AFTER DELETE ON articles REFERENCING OLD TABLE AS old_rows"
    ),
}


def upgrade() -> None:
    op.create_table(
        "article_tag_counts",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("tag_key", sa.Text(collation="C"), nullable=False),
        sa.Column("tag", sa.Text(), nullable=False),
        sa.Column("article_count", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "article_count > 0", name=op.f("ck_article_tag_counts_article_count_positive")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_article_tag_counts_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "tag_key", name=op.f("pk_article_tag_counts")),
    )
    op.create_index(
        "ix_article_tag_counts_user_id_article_count",
        "article_tag_counts",
        ["user_id", sa.literal_column("article_count DESC"), "tag_key"],
    )
    op.create_table(
        "article_tag_count_changes",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("tag_key", sa.Text(collation="C"), nullable=False),
        sa.Column("tag", sa.Text(), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
    )
    for table, owned in OWNED_ROWS.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {POLICY} ON {table} USING ({owned}) WITH CHECK ({owned})")
        op.execute(f"CREATE POLICY {ALL_POLICY} ON {table} TO {ALL_ROLE} USING (true)")
    op.execute(STAGE_FUNCTION)
    op.execute(APPLY_FUNCTION)
    for name, event in TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER {name} {event} FOR EACH STATEMENT "
            "EXECUTE FUNCTION blogstore_stage_tag_counts()"
        )
    op.execute(
        "CREATE CONSTRAINT TRIGGER article_tag_count_changes_apply "
        "AFTER INSERT ON article_tag_count_changes DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW WHEN (NEW.delta = 0) EXECUTE FUNCTION blogstore_apply_tag_count_changes()"
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    for name in reversed(TRIGGERS):
        op.execute(f"DROP TRIGGER {name} ON articles")
    op.execute("DROP TRIGGER article_tag_count_changes_apply ON article_tag_count_changes")
    op.execute("DROP FUNCTION blogstore_apply_tag_count_changes()")
    op.execute("DROP FUNCTION blogstore_stage_tag_counts()")
    op.drop_table("article_tag_count_changes")
    op.drop_index("ix_article_tag_counts_user_id_article_count", table_name="article_tag_counts")
    op.drop_table("article_tag_counts")
