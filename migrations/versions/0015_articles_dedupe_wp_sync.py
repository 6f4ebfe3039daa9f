"""articles: content dedupe and WordPress sync state

- ix_articles_content_hash_user_id: ListArticles' content_hash filter and the
  if_content_exists check of CreateArticle / BatchCreateArticles. content_hash leads, so one
  index serves a user's lookups and an admin's across users; not partial, so show_deleted
  lists use it too (deleted articles are few).
- wp_modified_time, wp_synced_version: the remote post's modified time and the article
  version PublishArticle last pushed. Both NULL for existing rows: nothing says whether an
  article published before this migration changed after its push, so it is not listed by
  needs_sync until PublishArticle records a push (no backfill, which would rewrite every
  published row and its search vectors and touch its update_time).
- ix_articles_needs_sync: partial, holding only published live articles past their pushed
  version, so the needs_sync list reads a small index at any table size. Its predicate
  tests `(version > wp_synced_version) IS TRUE`, and the statistics object
  articles_version_synced gives PostgreSQL that expression's true/false fractions: for a
  comparison of two columns it otherwise guesses 1/3, and at 100k articles (3 of them out
  of sync) it walked ix_articles_title, filtering, instead of reading this index.
- uq_articles_user_id_wp_post_id_live: a WordPress post belongs to at most one live article
  of a user. Existing duplicates make the migration stop before it changes anything, with a
  message listing them (which article should keep the post is the owner's call, not the
  migration's): clear wp_post_id on the others, or delete them, then migrate again.

Indexes are built CONCURRENTLY, so writes go on while they build. A duplicate created between
the check and the unique index's build fails the build; PostgreSQL leaves the index INVALID,
and a rerun (after fixing the duplicate) drops and rebuilds it: every step is rerunnable.

Revision ID: 0015
Revises: 0012
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand only: two nullable columns older code never reads, and indexes. Older code that
# gives a second live article the same wp_post_id now gets ALREADY_EXISTS.
compatible_since: str = "0012"

DUPLICATE_POSTS = """\
SELECT user_id, wp_post_id, array_agg(id::text ORDER BY create_time, id) AS ids
FROM articles
WHERE delete_time IS NULL AND wp_post_id IS NOT NULL
GROUP BY user_id, wp_post_id
HAVING count(*) > 1
ORDER BY user_id, wp_post_id
"""
_SHOWN = 50  # duplicates listed in the message

# (name, unique, columns, partial-index WHERE)
INDEXES = (
    ("ix_articles_content_hash_user_id", False, "content_hash, user_id", None),
    ("uq_articles_user_id_wp_post_id_live", True, "user_id, wp_post_id",
     "delete_time IS NULL AND wp_post_id IS NOT NULL"),
    ("ix_articles_needs_sync", False, "user_id, create_time, id",
     "status = 'published' AND delete_time IS NULL AND (version > wp_synced_version) IS TRUE"),
)  # fmt: skip
STATISTICS = "articles_version_synced"


def _refuse_duplicate_posts() -> None:
    rows = op.get_bind().exec_driver_sql(DUPLICATE_POSTS).all()
    if not rows:
        return
    listed = "\n".join(
        f"  user {user_id}, wp_post_id {post}: articles {', '.join(ids)}"
        for user_id, post, ids in rows[:_SHOWN]
    )
    more = f"\n  ... and {len(rows) - _SHOWN} more" if len(rows) > _SHOWN else ""
    raise RuntimeError(
        f"migration 0015 makes wp_post_id unique per user among live articles, but "
        f"{len(rows)} WordPress post(s) belong to more than one live article of the same "
        f"user (oldest article first):\n{listed}{more}\n"
        "Keep each post on one article (UpdateArticle with wp_post_id 0, or DeleteArticle, "
        "on the others), then run `blogstore migrate` again. Nothing was changed."
    )


def upgrade() -> None:
    _refuse_duplicate_posts()
    op.execute("ALTER TABLE articles ADD COLUMN IF NOT EXISTS wp_modified_time timestamptz")
    op.execute("ALTER TABLE articles ADD COLUMN IF NOT EXISTS wp_synced_version integer")
    op.execute(
        f"CREATE STATISTICS IF NOT EXISTS {STATISTICS} "
        "ON ((version > wp_synced_version)) FROM articles"
    )
    with op.get_context().autocommit_block():
        for name, unique, columns, where in INDEXES:
            # A rerun after a failed build finds the INVALID index it left: start over.
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.execute(
                f"CREATE {'UNIQUE ' if unique else ''}INDEX CONCURRENTLY {name} "
                f"ON articles ({columns})" + (f" WHERE {where}" if where else "")
            )
        # Fill the new statistics now (a 30,000-row sample) rather than at autovacuum's
        # next analyze: until then PostgreSQL would still guess for needs_sync.
        op.execute("ANALYZE articles")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, _unique, _columns, _where in reversed(INDEXES):
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    op.execute(f"DROP STATISTICS IF EXISTS {STATISTICS}")
    op.drop_column("articles", "wp_synced_version")
    op.drop_column("articles", "wp_modified_time")
